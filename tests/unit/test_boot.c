/*
 * Boot-structure builders without KVM: the ELF loader against well-formed and
 * malformed vmlinux files, initrd placement, hvm_start_info and the memory map,
 * the ACPI tables, CPUID normalisation.
 */
#include <elf.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "vmm/acpi.h"
#include "vmm/boot.h"
#include "vmm/cpuid.h"
#include "vmm/memory.h"

#define LOAD_ADDR 0x1000000ULL
#define ENTRY (LOAD_ADDR + 0x100)

/* A minimal vmlinux: ELF header, two program headers (PT_LOAD, PT_NOTE), a Xen
 * PVH note and 4 KiB of "code". Tests corrupt fields of it. */
struct fake_elf {
	Elf64_Ehdr eh;
	Elf64_Phdr ph[2];
	Elf64_Nhdr nh;
	char name[4];
	uint64_t desc;
	uint8_t code[4096];
} __attribute__((packed));

static void fake_elf_init(struct fake_elf *f)
{
	memset(f, 0, sizeof(*f));
	memcpy(f->eh.e_ident, ELFMAG, SELFMAG);
	f->eh.e_ident[EI_CLASS] = ELFCLASS64;
	f->eh.e_ident[EI_DATA] = ELFDATA2LSB;
	f->eh.e_ident[EI_VERSION] = EV_CURRENT;
	f->eh.e_type = ET_EXEC;
	f->eh.e_machine = EM_X86_64;
	f->eh.e_version = EV_CURRENT;
	f->eh.e_phoff = offsetof(struct fake_elf, ph);
	f->eh.e_ehsize = sizeof(Elf64_Ehdr);
	f->eh.e_phentsize = sizeof(Elf64_Phdr);
	f->eh.e_phnum = 2;
	f->ph[0].p_type = PT_LOAD;
	f->ph[0].p_offset = offsetof(struct fake_elf, code);
	f->ph[0].p_paddr = LOAD_ADDR;
	f->ph[0].p_filesz = sizeof(f->code);
	f->ph[0].p_memsz = 2 * sizeof(f->code); /* bss part must be zeroed */
	f->ph[1].p_type = PT_NOTE;
	f->ph[1].p_offset = offsetof(struct fake_elf, nh);
	f->ph[1].p_filesz = sizeof(Elf64_Nhdr) + 4 + 8;
	f->nh.n_namesz = 4;
	f->nh.n_descsz = 8;
	f->nh.n_type = 18; /* XEN_ELFNOTE_PHYS32_ENTRY */
	memcpy(f->name, "Xen", 4);
	f->desc = ENTRY;
	memset(f->code, 0xcc, sizeof(f->code));
}

static int write_tmp(const void *buf, size_t len)
{
	char path[] = "/tmp/kiln-test-elf.XXXXXX";
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(write(fd, buf, len), (ssize_t)len);
	return fd;
}

static int load(const struct fake_elf *f, size_t len, struct guest_mem *m, struct boot_kernel *k,
		const char **why)
{
	int fd = write_tmp(f, len);
	int ret = boot_load_elf(m, fd, k, why);

	close(fd);
	return ret;
}

static struct guest_mem *mem_new(uint64_t size)
{
	struct guest_mem *m = NULL;

	assert_int_equal(guest_mem_create(&m, size), 0);
	return m;
}

static void test_elf_ok(void **state)
{
	struct guest_mem *m = mem_new(64 << 20);
	struct fake_elf f;
	struct boot_kernel k;
	const char *why = "unset";
	uint8_t *p;

	fake_elf_init(&f);
	/* Dirty the bss area: the loader must zero it. */
	memset(guest_mem_ptr(m, LOAD_ADDR, 8192), 0x55, 8192);
	assert_int_equal(load(&f, sizeof(f), m, &k, &why), 0);
	assert_null(why);
	assert_int_equal(k.entry, ENTRY);
	assert_int_equal(k.load_start, LOAD_ADDR);
	assert_int_equal(k.load_end, LOAD_ADDR + 8192);
	p = guest_mem_ptr(m, LOAD_ADDR, 8192);
	assert_int_equal(p[0], 0xcc);
	assert_int_equal(p[4095], 0xcc);
	assert_int_equal(p[4096], 0);
	assert_int_equal(p[8191], 0);

	/* A 4-byte descriptor is accepted too. */
	f.nh.n_descsz = 4;
	assert_int_equal(load(&f, sizeof(f), m, &k, &why), 0);
	assert_int_equal(k.entry, ENTRY);
	guest_mem_free(m);
}

/* Each case corrupts one thing; every one must fail cleanly with -ENOEXEC and a reason. */
static void test_elf_malformed(void **state)
{
	struct guest_mem *m = mem_new(64 << 20);
	struct boot_kernel k;
	const char *why;
	struct fake_elf f;
	static const struct {
		const char *name;
		const char *reason;
	} cases[] = {
		{ "bad magic", "not an ELF" },
		{ "32-bit class", "64-bit x86" },
		{ "wrong machine", "64-bit x86" },
		{ "shared object", "64-bit x86" },
		{ "no program headers", "program headers" },
		{ "too many program headers", "program headers" },
		{ "program headers past the file", "program headers" },
		{ "wrong phentsize", "program headers" },
		{ "segment past the file", "outside the file" },
		{ "filesz > memsz", "outside the file" },
		{ "segment beyond RAM", "does not fit" },
		{ "paddr + memsz overflows", "does not fit" },
		{ "segment in low memory", "does not fit" },
		{ "no PVH note", "no PVH entry note" },
		{ "note name size huge", "no PVH entry note" },
		{ "note desc size 2", "PVH note is malformed" },
		{ "note past the file", "PVH note is malformed" },
		{ "entry outside image", "entry point" },
		{ "entry above 4 GiB", "PVH note is malformed" },
		{ "truncated header", "not an ELF" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len = sizeof(f);

		fake_elf_init(&f);
		switch (i) {
		case 0: f.eh.e_ident[1] = 'X'; break;
		case 1: f.eh.e_ident[EI_CLASS] = ELFCLASS32; break;
		case 2: f.eh.e_machine = EM_AARCH64; break;
		case 3: f.eh.e_type = ET_DYN; break;
		case 4: f.eh.e_phnum = 0; break;
		case 5: f.eh.e_phnum = BOOT_ELF_MAX_PHDRS + 1; break;
		case 6: f.eh.e_phoff = sizeof(f) - 8; break;
		case 7: f.eh.e_phentsize = 32; break;
		case 8: f.ph[0].p_offset = sizeof(f) - 100; break;
		case 9: f.ph[0].p_memsz = 100; break;
		case 10: f.ph[0].p_paddr = (64 << 20) - 4096; break;
		case 11: f.ph[0].p_paddr = UINT64_MAX - 10; break;
		case 12: f.ph[0].p_paddr = 0x1000; break;
		case 13: f.nh.n_type = 5; break;
		case 14: f.nh.n_namesz = 0xfffffff0u; break;
		case 15: f.nh.n_descsz = 2; break;
		case 16: f.ph[1].p_offset = UINT64_MAX - 4; break;
		case 17: f.desc = 0x2000000; break;
		case 18: f.desc = 0x100000000ULL; break;
		case 19: len = 10; break;
		}
		why = NULL;
		int ret = load(&f, len, m, &k, &why);

		if (ret != -ENOEXEC || !why || !strstr(why, cases[i].reason))
			fail_msg("case '%s': ret %d, reason '%s'", cases[i].name, ret, why ? why : "(none)");
	}
	guest_mem_free(m);
}

static void test_initrd(void **state)
{
	struct guest_mem *m = mem_new(64 << 20);
	struct boot_kernel k = { .entry = ENTRY, .load_start = LOAD_ADDR, .load_end = LOAD_ADDR + (8 << 20) };
	static uint8_t data[100000];
	uint64_t gpa = 0;
	int fd;

	memset(data, 0x5a, sizeof(data));
	fd = write_tmp(data, sizeof(data));
	assert_int_equal(boot_load_initrd(m, fd, sizeof(data), &k, &gpa), 0);
	assert_true(gpa >= k.load_end);
	assert_int_equal(gpa % 4096, 0);
	assert_true(gpa + sizeof(data) <= (64 << 20));
	assert_memory_equal(guest_mem_ptr(m, gpa, sizeof(data)), data, sizeof(data));
	/* Does not fit next to a kernel that fills RAM. */
	k.load_end = (64 << 20) - 4096;
	assert_int_equal(boot_load_initrd(m, fd, sizeof(data), &k, &gpa), -E2BIG);
	/* Larger than RAM. */
	assert_int_equal(boot_load_initrd(m, fd, 128 << 20, &k, &gpa), -E2BIG);
	close(fd);
	guest_mem_free(m);
}

struct start_info {
	uint32_t magic, version, flags, nr_modules;
	uint64_t modlist, cmdline, rsdp, memmap;
	uint32_t memmap_entries, reserved;
};

struct memmap_entry {
	uint64_t addr, size;
	uint32_t type, reserved;
};

static void test_pvh_start_info(void **state)
{
	/* 4 GiB of RAM: 3 GiB below the hole, 1 GiB above 4 GiB (mapped lazily). */
	struct guest_mem *m = mem_new(4ULL << 30);
	struct start_info si;
	struct memmap_entry map[4];
	uint64_t mod[4];
	char cmd[64];
	char longcmd[BOOT_CMDLINE_MAX + 1];

	assert_int_equal(guest_mem_nregions(m), 2);
	assert_int_equal(boot_setup_pvh(m, "console=ttyS0", 0x2000000, 4096, 0xe0000), 0);
	assert_int_equal(guest_mem_read(m, BOOT_START_INFO, &si, sizeof(si)), 0);
	assert_int_equal(si.magic, 0x336ec578);
	assert_int_equal(si.version, 1);
	assert_int_equal(si.rsdp, 0xe0000);
	assert_int_equal(si.nr_modules, 1);
	assert_int_equal(si.memmap_entries, 4);
	assert_int_equal(guest_mem_read(m, si.cmdline, cmd, sizeof("console=ttyS0")), 0);
	assert_string_equal(cmd, "console=ttyS0");
	assert_int_equal(guest_mem_read(m, si.memmap, map, sizeof(map)), 0);
	assert_int_equal(map[0].addr, 0);
	assert_int_equal(map[0].type, 1);
	assert_int_equal(map[1].addr, BOOT_LOWMEM_END);
	assert_int_equal(map[1].type, 2);
	assert_int_equal(map[2].addr, BOOT_HIGHMEM_START);
	assert_int_equal(map[2].addr + map[2].size, MEM_HOLE_START);
	assert_int_equal(map[3].addr, MEM_4G);
	assert_int_equal(map[3].size, 1ULL << 30);
	assert_int_equal(guest_mem_read(m, si.modlist, mod, sizeof(mod)), 0);
	assert_int_equal(mod[0], 0x2000000);
	assert_int_equal(mod[1], 4096);

	memset(longcmd, 'a', sizeof(longcmd) - 1);
	longcmd[sizeof(longcmd) - 1] = 0;
	assert_int_equal(boot_setup_pvh(m, longcmd, 0, 0, 0), -E2BIG);
	guest_mem_free(m);
}

static uint8_t sum(const uint8_t *p, size_t n)
{
	uint8_t s = 0;

	while (n--)
		s = (uint8_t)(s + *p++);
	return s;
}

static const uint8_t *table_at(struct guest_mem *m, uint64_t gpa, const char *sig)
{
	const uint8_t *h = guest_mem_ptr(m, gpa, 36);
	uint32_t len;

	assert_non_null(h);
	assert_memory_equal(h, sig, 4);
	memcpy(&len, h + 4, 4);
	assert_non_null(guest_mem_ptr(m, gpa, len));
	assert_int_equal(sum(h, len), 0);
	return h;
}

static void test_acpi(void **state)
{
	struct guest_mem *m = mem_new(64 << 20);
	const uint8_t *rsdp, *xsdt, *fadt, *madt;
	uint64_t rsdp_gpa, xsdt_gpa, fadt_gpa, madt_gpa, dsdt_gpa;
	uint32_t len;
	unsigned lapics = 0;

	struct acpi_dev devs[ACPI_MAX_DEVICES] = { { ACPI_DEV_UART, 0x3f8, 8, 4 } };

	for (unsigned i = 1; i < ACPI_MAX_DEVICES; i++)
		devs[i] = (struct acpi_dev){ ACPI_DEV_VIRTIO, 0xd0000000 + 0x1000 * i, 0x200, 4 + i };
	for (unsigned ncpus = 1; ncpus <= 32; ncpus += 31) {
		assert_int_equal(acpi_build(m, ncpus, devs, ncpus == 1 ? 1 : ACPI_MAX_DEVICES, &rsdp_gpa), 0);
		assert_true(rsdp_gpa >= BOOT_ACPI_START && rsdp_gpa < BOOT_ACPI_END);
		rsdp = guest_mem_ptr(m, rsdp_gpa, 36);
		assert_memory_equal(rsdp, "RSD PTR ", 8);
		assert_int_equal(sum(rsdp, 20), 0);
		assert_int_equal(sum(rsdp, 36), 0);
		memcpy(&xsdt_gpa, rsdp + 24, 8);
		xsdt = table_at(m, xsdt_gpa, "XSDT");
		memcpy(&fadt_gpa, xsdt + 36, 8);
		memcpy(&madt_gpa, xsdt + 44, 8);
		fadt = table_at(m, fadt_gpa, "FACP");
		memcpy(&dsdt_gpa, fadt + 140, 8);
		const uint8_t *dsdt = table_at(m, dsdt_gpa, "DSDT");
		uint32_t dlen;

		memcpy(&dlen, dsdt + 4, 4);
		/* Every device's _HID string is in there. */
		assert_non_null(memmem(dsdt, dlen, "PNP0501", 8));
		assert_non_null(memmem(dsdt, dlen, "QEMU0001", 9));
		if (ncpus > 1) {
			assert_non_null(memmem(dsdt, dlen, "LNRO0005", 9));
			assert_non_null(memmem(dsdt, dlen, "VR1E", 4));
			assert_true(dlen > 64 * 31); /* multi-byte PkgLength for the scope */
		}
		madt = table_at(m, madt_gpa, "APIC");
		memcpy(&len, madt + 4, 4);
		lapics = 0;
		for (uint32_t off = 44; off < len; off += madt[off + 1]) {
			assert_true(madt[off + 1] >= 2);
			if (madt[off] == 0)
				lapics++;
		}
		assert_int_equal(lapics, ncpus);
	}
	assert_int_equal(acpi_build(m, 0, devs, 0, &rsdp_gpa), -EINVAL);
	assert_int_equal(acpi_build(m, ACPI_MAX_CPUS + 1, devs, 0, &rsdp_gpa), -EINVAL);
	assert_int_equal(acpi_build(m, 1, devs, ACPI_MAX_DEVICES + 1, &rsdp_gpa), -EINVAL);
	devs[0].gsi = 16; /* ISA IRQs stop at 15 */
	assert_int_equal(acpi_build(m, 1, devs, 1, &rsdp_gpa), -EINVAL);
	guest_mem_free(m);
}

static struct kvm_cpuid2 *fake_cpuid(void)
{
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + CPUID_MAX_ENTRIES * sizeof(c->entries[0]));
	struct kvm_cpuid_entry2 *e;

	assert_non_null(c);
	e = c->entries;
	e[0] = (struct kvm_cpuid_entry2){ .function = 0, .eax = 0xd };
	memcpy(&e[0].ebx, "Auth", 4);
	memcpy(&e[0].edx, "enti", 4);
	memcpy(&e[0].ecx, "cAMD", 4);
	e[1] = (struct kvm_cpuid_entry2){ .function = 1, .ebx = 0xff0800, .ecx = (1u << 5) | (1u << 15),
					  .edx = 0 };
	e[2] = (struct kvm_cpuid_entry2){ .function = 0xa, .eax = 0x7300403, .ebx = 1 };
	e[3] = (struct kvm_cpuid_entry2){ .function = 0x80000001, .ecx = (1u << 2) | (1u << 23) | 1 };
	e[4] = (struct kvm_cpuid_entry2){ .function = 0xb, .index = 0, .eax = 1, .ebx = 2 };
	e[5] = (struct kvm_cpuid_entry2){ .function = 0x8000000a, .eax = 1, .ebx = 8 };
	c->nent = 6;
	return c;
}

static const struct kvm_cpuid_entry2 *leaf(const struct kvm_cpuid2 *c, uint32_t fn, uint32_t idx)
{
	for (unsigned i = 0; i < c->nent; i++)
		if (c->entries[i].function == fn && c->entries[i].index == idx)
			return &c->entries[i];
	fail_msg("leaf 0x%x.%u missing", fn, idx);
	return &c->entries[0]; /* not reached: fail_msg ends the test */
}

static void test_cpuid(void **state)
{
	struct kvm_cpuid2 *c = fake_cpuid();

	assert_int_equal(cpuid_normalize(c, CPUID_MAX_ENTRIES, 3, 4, true), 0);
	assert_int_equal(leaf(c, 1, 0)->ebx >> 24, 3);            /* APIC ID */
	assert_int_equal((leaf(c, 1, 0)->ebx >> 16) & 0xff, 4);   /* logical count */
	assert_true(leaf(c, 1, 0)->ecx & (1u << 31));             /* hypervisor */
	assert_false(leaf(c, 1, 0)->ecx & (1u << 5));             /* VMX hidden */
	assert_false(leaf(c, 1, 0)->ecx & (1u << 15));            /* PDCM hidden */
	assert_true(leaf(c, 1, 0)->ecx & (1u << 24));             /* TSC deadline */
	assert_int_equal(leaf(c, 0xa, 0)->eax, 0);                /* no PMU */
	assert_false(leaf(c, 0x80000001, 0)->ecx & (1u << 2));    /* SVM hidden */
	assert_false(leaf(c, 0x80000001, 0)->ecx & (1u << 23));   /* no core perf counters */
	assert_int_equal(leaf(c, 0x8000000a, 0)->eax, 0);
	assert_int_equal(leaf(c, 0xb, 0)->ebx, 1);                /* 1 thread per core */
	assert_int_equal(leaf(c, 0xb, 1)->ebx, 4);                /* 4 cores */
	assert_int_equal(leaf(c, 0xb, 1)->edx, 3);                /* x2APIC ID */
	assert_int_equal(leaf(c, 0xb, 1)->eax, 2);                /* 2 bits of core ID */
	/* Capacity too small for the rewritten topology leaf. */
	free(c);
	c = fake_cpuid();
	assert_int_equal(cpuid_normalize(c, 7, 0, 1, false), -E2BIG);
	free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_elf_ok),
		cmocka_unit_test(test_elf_malformed),
		cmocka_unit_test(test_initrd),
		cmocka_unit_test(test_pvh_start_info),
		cmocka_unit_test(test_acpi),
		cmocka_unit_test(test_cpuid),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
