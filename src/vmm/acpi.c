#include "vmm/acpi.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "vmm/boot.h"
#include "util.h"

struct acpi_header {
	char signature[4];
	uint32_t length;
	uint8_t revision;
	uint8_t checksum;
	char oem_id[6];
	char oem_table_id[8];
	uint32_t oem_revision;
	char creator_id[4];
	uint32_t creator_revision;
} __attribute__((packed));

struct acpi_gas {
	uint8_t space_id; /* 1 = system I/O */
	uint8_t bit_width;
	uint8_t bit_offset;
	uint8_t access_size; /* 1 = byte */
	uint64_t address;
} __attribute__((packed));

struct acpi_rsdp {
	char signature[8];
	uint8_t checksum;
	char oem_id[6];
	uint8_t revision;
	uint32_t rsdt_address;
	uint32_t length;
	uint64_t xsdt_address;
	uint8_t ext_checksum;
	uint8_t reserved[3];
} __attribute__((packed));

/* FADT, ACPI 6.x layout (276 bytes). */
struct acpi_fadt {
	struct acpi_header h;
	uint32_t firmware_ctrl;
	uint32_t dsdt;
	uint8_t reserved0;
	uint8_t pm_profile;
	uint16_t sci_int;
	uint32_t smi_cmd;
	uint8_t acpi_enable, acpi_disable, s4bios_req, pstate_cnt;
	uint32_t pm1a_evt_blk, pm1b_evt_blk, pm1a_cnt_blk, pm1b_cnt_blk;
	uint32_t pm2_cnt_blk, pm_tmr_blk, gpe0_blk, gpe1_blk;
	uint8_t pm1_evt_len, pm1_cnt_len, pm2_cnt_len, pm_tmr_len;
	uint8_t gpe0_blk_len, gpe1_blk_len, gpe1_base, cst_cnt;
	uint16_t p_lvl2_lat, p_lvl3_lat, flush_size, flush_stride;
	uint8_t duty_offset, duty_width, day_alrm, mon_alrm, century;
	uint16_t iapc_boot_arch;
	uint8_t reserved1;
	uint32_t flags;
	struct acpi_gas reset_reg;
	uint8_t reset_value;
	uint16_t arm_boot_arch;
	uint8_t minor_version;
	uint64_t x_firmware_ctrl;
	uint64_t x_dsdt;
	struct acpi_gas x_pm1a_evt_blk, x_pm1b_evt_blk, x_pm1a_cnt_blk, x_pm1b_cnt_blk;
	struct acpi_gas x_pm2_cnt_blk, x_pm_tmr_blk, x_gpe0_blk, x_gpe1_blk;
	struct acpi_gas sleep_control_reg;
	struct acpi_gas sleep_status_reg;
	uint64_t hypervisor_id;
} __attribute__((packed));

_Static_assert(sizeof(struct acpi_fadt) == 276, "FADT layout");
_Static_assert(sizeof(struct acpi_rsdp) == 36, "RSDP layout");

#define FADT_F_WBINVD (1u << 0)
#define FADT_F_PWR_BUTTON (1u << 4) /* no fixed power button */
#define FADT_F_SLP_BUTTON (1u << 5) /* no fixed sleep button */
#define FADT_F_RESET_REG_SUP (1u << 10)
#define FADT_F_HW_REDUCED (1u << 20)
#define BOOT_ARCH_VGA_NOT_PRESENT (1u << 2)
#define BOOT_ARCH_MSI_NOT_SUPPORTED (1u << 3)
#define BOOT_ARCH_CMOS_RTC_NOT_PRESENT (1u << 5)

/* A bounded byte buffer for AML; overflow is remembered, not written. */
struct aml {
	uint8_t *buf;
	size_t cap;
	size_t len;
	bool overflow;
};

static void aml_bytes(struct aml *a, const void *p, size_t n)
{
	if (a->overflow || n > a->cap - a->len) {
		a->overflow = true;
		return;
	}
	memcpy(a->buf + a->len, p, n);
	a->len += n;
}

static void aml_byte(struct aml *a, uint8_t b)
{
	aml_bytes(a, &b, 1);
}

static void aml_u16(struct aml *a, uint16_t v)
{
	aml_byte(a, (uint8_t)v);
	aml_byte(a, (uint8_t)(v >> 8));
}

static void aml_u32(struct aml *a, uint32_t v)
{
	aml_u16(a, (uint16_t)v);
	aml_u16(a, (uint16_t)(v >> 16));
}

/* Wrap a[start..] as the body of a PkgLength-prefixed object (ACPI 20.2.4):
 * the length counts its own encoding bytes. */
static void aml_wrap_pkg(struct aml *a, size_t start)
{
	size_t body = a->len - start, total = 0;
	uint8_t enc[4];
	unsigned n;

	if (a->overflow)
		return;
	for (n = 1; n <= 4; n++) {
		total = body + n;
		if ((n == 1 && total < 0x40) || (n > 1 && total < (1ULL << (4 + 8 * (n - 1)))))
			break;
	}
	if (n > 4 || n > a->cap - a->len) {
		a->overflow = true;
		return;
	}
	if (n == 1) {
		enc[0] = (uint8_t)total;
	} else {
		enc[0] = (uint8_t)(((n - 1) << 6) | (total & 0xf));
		for (unsigned i = 1; i < n; i++)
			enc[i] = (uint8_t)(total >> (4 + 8 * (i - 1)));
	}
	memmove(a->buf + start + n, a->buf + start, body);
	memcpy(a->buf + start, enc, n);
	a->len += n;
}

static void aml_name(struct aml *a, const char seg[4])
{
	aml_byte(a, 0x08); /* NameOp */
	aml_bytes(a, seg, 4);
}

static void aml_string(struct aml *a, const char *s)
{
	aml_byte(a, 0x0d);
	aml_bytes(a, s, strlen(s) + 1);
}

static void aml_integer(struct aml *a, uint32_t v)
{
	aml_byte(a, 0x0c); /* DWordConst */
	aml_u32(a, v);
}

/* Device (seg) { _HID, _UID, _CRS (resources) }. res: small/large resource
 * descriptors without the end tag. */
static void aml_device(struct aml *a, const char seg[4], const char *hid, uint32_t uid,
		       const uint8_t *res, size_t reslen)
{
	size_t dev, buf;

	aml_byte(a, 0x5b); /* ExtOpPrefix */
	aml_byte(a, 0x82); /* DeviceOp */
	dev = a->len;
	aml_bytes(a, seg, 4);
	aml_name(a, "_HID");
	aml_string(a, hid);
	aml_name(a, "_UID");
	aml_integer(a, uid);
	aml_name(a, "_CRS");
	aml_byte(a, 0x11); /* BufferOp */
	buf = a->len;
	aml_byte(a, 0x0b); /* BufferSize: WordConst */
	aml_u16(a, (uint16_t)(reslen + 2));
	aml_bytes(a, res, reslen);
	aml_byte(a, 0x79); /* End tag, checksum 0 */
	aml_byte(a, 0x00);
	aml_wrap_pkg(a, buf);
	aml_wrap_pkg(a, dev);
}

static size_t res_io(uint8_t *r, uint16_t port, uint8_t len)
{
	const uint8_t d[8] = { 0x47, 0x01, (uint8_t)port, (uint8_t)(port >> 8), (uint8_t)port,
			       (uint8_t)(port >> 8), 0x01, len };

	memcpy(r, d, sizeof(d));
	return sizeof(d);
}

static size_t res_mem32(uint8_t *r, uint32_t base, uint32_t len)
{
	r[0] = 0x86; /* Memory32Fixed */
	r[1] = 9;
	r[2] = 0;
	r[3] = 1; /* read/write */
	memcpy(r + 4, &base, 4);
	memcpy(r + 8, &len, 4);
	return 12;
}

static size_t res_irq_isa(uint8_t *r, unsigned irq)
{
	uint16_t mask = (uint16_t)(1u << irq); /* IRQNoFlags: edge, active high */

	r[0] = 0x22;
	memcpy(r + 1, &mask, 2);
	return 3;
}

static size_t res_irq_ext(uint8_t *r, uint32_t gsi)
{
	r[0] = 0x89; /* Extended Interrupt */
	r[1] = 6;
	r[2] = 0;
	r[3] = 0x03; /* consumer, edge-triggered, active high, exclusive */
	r[4] = 1;
	memcpy(r + 5, &gsi, 4);
	return 9;
}

/*
 * DSDT body:
 *   Name (_S5, Package () { 5, 0 })
 *   Scope (\_SB) {
 *     Device (PEVT) { _HID "QEMU0001", _CRS IO (0x505, 1) }      pvpanic
 *     Device (COM1) { _HID "PNP0501", _CRS IO, IRQNoFlags }      per UART
 *     Device (VRnn) { _HID "LNRO0005", _CRS Memory32Fixed, Interrupt }  per virtio-mmio
 *   }
 */
static int build_dsdt_body(struct aml *a, const struct acpi_dev *devs, unsigned ndevs)
{
	static const uint8_t s5[] = { 0x08, '_', 'S', '5', '_', 0x12, 0x05, 0x02,
				      0x0a, ACPI_S5_TYPE, 0x00 };
	uint8_t res[32];
	unsigned nuart = 0, nvirtio = 0;
	size_t scope, n;
	char seg[16]; /* 4 characters used */

	aml_bytes(a, s5, sizeof(s5));
	aml_byte(a, 0x10); /* ScopeOp */
	scope = a->len;
	aml_bytes(a, "_SB_", 4);
	n = res_io(res, PVPANIC_PORT, 1);
	aml_device(a, "PEVT", "QEMU0001", 0, res, n);
	for (unsigned i = 0; i < ndevs; i++) {
		const struct acpi_dev *d = &devs[i];

		switch (d->kind) {
		case ACPI_DEV_UART:
			if (d->base > 0xffff || d->size > 0xff || d->gsi > 15 || nuart > 9)
				return -EINVAL;
			snprintf(seg, sizeof(seg), "COM%u", ++nuart);
			n = res_io(res, (uint16_t)d->base, (uint8_t)d->size);
			n += res_irq_isa(res + n, d->gsi);
			aml_device(a, seg, "PNP0501", nuart - 1, res, n);
			break;
		case ACPI_DEV_VIRTIO:
			if (d->base > UINT32_MAX - d->size || nvirtio >= ACPI_MAX_DEVICES)
				return -EINVAL;
			snprintf(seg, sizeof(seg), "VR%02X", nvirtio);
			n = res_mem32(res, (uint32_t)d->base, d->size);
			n += res_irq_ext(res + n, d->gsi);
			aml_device(a, seg, "LNRO0005", nvirtio++, res, n);
			break;
		default:
			return -EINVAL;
		}
	}
	aml_wrap_pkg(a, scope);
	return a->overflow ? -ENOSPC : 0;
}

static uint8_t checksum(const void *p, size_t len)
{
	const uint8_t *b = p;
	uint8_t sum = 0;

	for (size_t i = 0; i < len; i++)
		sum = (uint8_t)(sum + b[i]);
	return (uint8_t)(0 - sum);
}

static void header_init(struct acpi_header *h, const char *sig, uint32_t len, uint8_t rev)
{
	memset(h, 0, sizeof(*h));
	memcpy(h->signature, sig, 4);
	h->length = len;
	h->revision = rev;
	memcpy(h->oem_id, "KILN  ", 6);
	memcpy(h->oem_table_id, "KILNVMM ", 8);
	memcpy(h->oem_table_id + 4, sig, 4);
	h->oem_revision = 1;
	memcpy(h->creator_id, "KILN", 4);
	h->creator_revision = 1;
}

/* Bump allocator over the ACPI window. */
struct acpi_out {
	struct guest_mem *m;
	uint64_t next;
};

static int place(struct acpi_out *o, void *table, size_t len, uint64_t *gpa)
{
	uint64_t at = ALIGN_UP(o->next, 16);
	int ret;

	if (at + len > BOOT_ACPI_END)
		return -ENOSPC;
	ret = guest_mem_write(o->m, at, table, len);
	if (ret)
		return ret;
	o->next = at + len;
	*gpa = at;
	return 0;
}

static int place_sdt(struct acpi_out *o, void *table, size_t len, uint64_t *gpa)
{
	struct acpi_header *h = table;

	h->checksum = 0;
	h->checksum = checksum(table, len);
	return place(o, table, len, gpa);
}

static struct acpi_gas gas_io8(uint16_t port)
{
	return (struct acpi_gas){ .space_id = 1, .bit_width = 8, .access_size = 1, .address = port };
}

/* MADT entry sizes: local APIC 8, I/O APIC 12, interrupt source override 10, LAPIC NMI 6. */
#define MADT_MAX (44 + ACPI_MAX_CPUS * 8 + 12 + 10 + 6)

static int build_madt(struct acpi_out *o, unsigned ncpus, uint64_t *gpa)
{
	uint8_t buf[MADT_MAX];
	struct acpi_header *h = (struct acpi_header *)buf;
	size_t n = sizeof(*h);
	uint32_t u32;

	memset(buf, 0, sizeof(buf));
	u32 = (uint32_t)LAPIC_ADDR;
	memcpy(buf + n, &u32, 4);
	n += 4;
	u32 = 1; /* PCAT_COMPAT: dual 8259 present (KVM's in-kernel PIC) */
	memcpy(buf + n, &u32, 4);
	n += 4;
	for (unsigned i = 0; i < ncpus; i++) {
		uint8_t e[8] = { 0, 8, (uint8_t)i, (uint8_t)i, 1, 0, 0, 0 };

		memcpy(buf + n, e, sizeof(e));
		n += sizeof(e);
	}
	{
		uint8_t e[12] = { 1, 12, (uint8_t)ncpus, 0 };

		u32 = (uint32_t)IOAPIC_ADDR;
		memcpy(e + 4, &u32, 4); /* GSI base 0 follows */
		memcpy(buf + n, e, sizeof(e));
		n += sizeof(e);
	}
	{
		/* ISA IRQ 0 (PIT) arrives on I/O APIC pin 2. */
		uint8_t e[10] = { 2, 10, 0, 0, 2, 0, 0, 0, 0, 0 };

		memcpy(buf + n, e, sizeof(e));
		n += sizeof(e);
	}
	{
		/* NMI on LINT1 of every processor. */
		uint8_t e[6] = { 4, 6, 0xff, 0, 0, 1 };

		memcpy(buf + n, e, sizeof(e));
		n += sizeof(e);
	}
	header_init(h, "APIC", (uint32_t)n, 4);
	return place_sdt(o, buf, n, gpa);
}

#define DSDT_MAX 4096

int acpi_build(struct guest_mem *m, unsigned ncpus, const struct acpi_dev *devs, unsigned ndevs,
	       uint64_t *rsdp_gpa)
{
	struct acpi_out o = { m, BOOT_ACPI_START };
	uint8_t dsdt[DSDT_MAX];
	struct aml body = { dsdt + sizeof(struct acpi_header), DSDT_MAX - sizeof(struct acpi_header),
			    0, false };
	uint8_t xsdt[sizeof(struct acpi_header) + 2 * 8];
	struct acpi_fadt fadt;
	struct acpi_rsdp rsdp;
	uint64_t dsdt_gpa, fadt_gpa, madt_gpa, xsdt_gpa, rsdp_at;
	int ret;

	*rsdp_gpa = 0;
	if (ncpus == 0 || ncpus > ACPI_MAX_CPUS || ndevs > ACPI_MAX_DEVICES)
		return -EINVAL;

	ret = build_dsdt_body(&body, devs, ndevs);
	if (ret)
		return ret;
	header_init((struct acpi_header *)dsdt, "DSDT",
		    (uint32_t)(sizeof(struct acpi_header) + body.len), 2);
	ret = place_sdt(&o, dsdt, sizeof(struct acpi_header) + body.len, &dsdt_gpa);
	if (ret)
		return ret;

	memset(&fadt, 0, sizeof(fadt));
	header_init(&fadt.h, "FACP", sizeof(fadt), 6);
	fadt.x_dsdt = dsdt_gpa;
	fadt.flags = FADT_F_WBINVD | FADT_F_PWR_BUTTON | FADT_F_SLP_BUTTON |
		     FADT_F_RESET_REG_SUP | FADT_F_HW_REDUCED;
	fadt.iapc_boot_arch = BOOT_ARCH_VGA_NOT_PRESENT | BOOT_ARCH_MSI_NOT_SUPPORTED |
			      BOOT_ARCH_CMOS_RTC_NOT_PRESENT;
	fadt.reset_reg = gas_io8(ACPI_RESET_PORT);
	fadt.reset_value = ACPI_RESET_VALUE;
	fadt.minor_version = 0;
	fadt.sleep_control_reg = gas_io8(ACPI_SLEEP_CTL_PORT);
	fadt.sleep_status_reg = gas_io8(ACPI_SLEEP_STS_PORT);
	memcpy(&fadt.hypervisor_id, "KILNVMM\0", 8);
	ret = place_sdt(&o, &fadt, sizeof(fadt), &fadt_gpa);
	if (ret)
		return ret;

	ret = build_madt(&o, ncpus, &madt_gpa);
	if (ret)
		return ret;

	header_init((struct acpi_header *)xsdt, "XSDT", sizeof(xsdt), 1);
	memcpy(xsdt + sizeof(struct acpi_header), &fadt_gpa, 8);
	memcpy(xsdt + sizeof(struct acpi_header) + 8, &madt_gpa, 8);
	ret = place_sdt(&o, xsdt, sizeof(xsdt), &xsdt_gpa);
	if (ret)
		return ret;

	memset(&rsdp, 0, sizeof(rsdp));
	memcpy(rsdp.signature, "RSD PTR ", 8);
	memcpy(rsdp.oem_id, "KILN  ", 6);
	rsdp.revision = 2;
	rsdp.length = sizeof(rsdp);
	rsdp.xsdt_address = xsdt_gpa;
	rsdp.checksum = checksum(&rsdp, 20);
	rsdp.ext_checksum = checksum(&rsdp, sizeof(rsdp));
	ret = place(&o, &rsdp, sizeof(rsdp), &rsdp_at);
	if (ret)
		return ret;
	*rsdp_gpa = rsdp_at;
	return 0;
}
