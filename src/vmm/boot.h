/*
 * Linux boot through the PVH entry point (x86/HVM direct boot ABI): load an
 * ELF vmlinux, place the initrd and command line, build hvm_start_info with
 * the guest's memory map. The vCPU then starts in 32-bit protected mode at
 * the PVH entry with EBX = BOOT_START_INFO.
 */
#ifndef KILN_VMM_BOOT_H
#define KILN_VMM_BOOT_H

#include <stddef.h>
#include <stdint.h>

#include "vmm/memory.h"

/* Low-memory layout (all below 1 MiB). */
#define BOOT_START_INFO 0x6000ULL  /* hvm_start_info, memmap, module list */
#define BOOT_CMDLINE 0x7000ULL
#define BOOT_CMDLINE_MAX 2048 /* Linux/x86 COMMAND_LINE_SIZE, NUL included */
#define BOOT_LOWMEM_END 0xA0000ULL /* [640 KiB, 1 MiB) is reserved */
#define BOOT_ACPI_START 0xE0000ULL
#define BOOT_ACPI_END 0x100000ULL
#define BOOT_HIGHMEM_START 0x100000ULL

#define BOOT_ELF_MAX_PHDRS 64
#define BOOT_ELF_MAX_NOTES 4096 /* bytes of PT_NOTE examined per segment */

struct boot_kernel {
	uint32_t entry;      /* PVH 32-bit entry point (physical) */
	uint64_t load_start; /* lowest physical byte loaded */
	uint64_t load_end;   /* one past the highest (memsz included) */
};

/* Load an ELF64 x86-64 vmlinux from fd. On error returns -errno and sets *why
 * to a one-line reason (static string). */
int boot_load_elf(struct guest_mem *m, int fd, struct boot_kernel *k, const char **why);

/* Copy the initrd (size bytes from fd) to the top of RAM below 4 GiB, above the
 * kernel. Sets *gpa. -E2BIG when it does not fit. */
int boot_load_initrd(struct guest_mem *m, int fd, uint64_t size, const struct boot_kernel *k,
		     uint64_t *gpa);

/* Write the command line, memory map and hvm_start_info. initrd_size 0: none. */
int boot_setup_pvh(struct guest_mem *m, const char *cmdline, uint64_t initrd_gpa,
		   uint64_t initrd_size, uint64_t rsdp_gpa);

#endif
