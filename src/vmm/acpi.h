/*
 * ACPI tables for a hardware-reduced platform: RSDP -> XSDT -> FADT (+DSDT),
 * MADT. The MADT lists one local APIC per vCPU (SMP bring-up) and the I/O
 * APIC; the DSDT declares the S5 sleep state (power-off through the FADT's
 * sleep control register), a pvpanic device (QEMU0001) on an I/O port, the
 * UART and the virtio-mmio devices with their interrupts.
 */
#ifndef KILN_VMM_ACPI_H
#define KILN_VMM_ACPI_H

#include <stdint.h>

#include "vmm/memory.h"

#define ACPI_SLEEP_CTL_PORT 0x3c0
#define ACPI_SLEEP_STS_PORT 0x3c1
#define ACPI_S5_TYPE 5          /* SLP_TYP written for power-off */
#define ACPI_SLP_EN 0x20
#define ACPI_SLP_TYP_SHIFT 2
#define ACPI_SLP_TYP_MASK 0x1c
#define ACPI_RESET_PORT 0x64    /* the i8042 command port ... */
#define ACPI_RESET_VALUE 0xfe   /* ... and its pulse-reset command */
#define PVPANIC_PORT 0x505

#define IOAPIC_ADDR 0xfec00000ULL
#define LAPIC_ADDR 0xfee00000ULL
#define ACPI_MAX_CPUS 255

#define ACPI_MAX_DEVICES 32

/* Devices described in the DSDT, so the guest maps their interrupts (a
 * hardware-reduced platform has no legacy PIC and no preallocated ISA IRQs). */
enum acpi_dev_kind {
	ACPI_DEV_UART,   /* PNP0501: I/O ports [base, base + size), ISA IRQ gsi */
	ACPI_DEV_VIRTIO, /* LNRO0005: MMIO [base, base + size), edge GSI gsi */
};

struct acpi_dev {
	enum acpi_dev_kind kind;
	uint64_t base;
	uint32_t size;
	uint32_t gsi;
};

/* Build the tables in [BOOT_ACPI_START, BOOT_ACPI_END). 0 or -errno. */
int acpi_build(struct guest_mem *m, unsigned ncpus, const struct acpi_dev *devs, unsigned ndevs,
	       uint64_t *rsdp_gpa);

#endif
