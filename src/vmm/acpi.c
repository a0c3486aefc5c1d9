#include "vmm/acpi.h"

#include <errno.h>
#include <stddef.h>
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

/*
 * DSDT body (AML):
 *   Name (_S5, Package () { 5, 0 })
 *   Scope (\_SB) {
 *     Device (PEVT) {
 *       Name (_HID, "QEMU0001")
 *       Name (_CRS, ResourceTemplate () { IO (Decode16, 0x505, 0x505, 1, 1) })
 *     }
 *   }
 */
static const uint8_t dsdt_aml[] = {
	0x08, '_', 'S', '5', '_', 0x12, 0x05, 0x02, 0x0a, ACPI_S5_TYPE, 0x00,
	0x10, 0x2e, '_', 'S', 'B', '_',
	0x5b, 0x82, 0x27, 'P', 'E', 'V', 'T',
	0x08, '_', 'H', 'I', 'D', 0x0d, 'Q', 'E', 'M', 'U', '0', '0', '0', '1', 0x00,
	0x08, '_', 'C', 'R', 'S', 0x11, 0x0d, 0x0a, 0x0a,
	0x47, 0x01, PVPANIC_PORT & 0xff, PVPANIC_PORT >> 8, PVPANIC_PORT & 0xff, PVPANIC_PORT >> 8,
	0x01, 0x01,
	0x79, 0x00,
};

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

int acpi_build(struct guest_mem *m, unsigned ncpus, uint64_t *rsdp_gpa)
{
	struct acpi_out o = { m, BOOT_ACPI_START };
	uint8_t dsdt[sizeof(struct acpi_header) + sizeof(dsdt_aml)];
	uint8_t xsdt[sizeof(struct acpi_header) + 2 * 8];
	struct acpi_fadt fadt;
	struct acpi_rsdp rsdp;
	uint64_t dsdt_gpa, fadt_gpa, madt_gpa, xsdt_gpa, rsdp_at;
	int ret;

	*rsdp_gpa = 0;
	if (ncpus == 0 || ncpus > ACPI_MAX_CPUS)
		return -EINVAL;

	header_init((struct acpi_header *)dsdt, "DSDT", sizeof(dsdt), 2);
	memcpy(dsdt + sizeof(struct acpi_header), dsdt_aml, sizeof(dsdt_aml));
	ret = place_sdt(&o, dsdt, sizeof(dsdt), &dsdt_gpa);
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
