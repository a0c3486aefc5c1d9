/*
 * Platform power events: the ACPI sleep control/status registers of a
 * hardware-reduced FADT (S5 = power-off) and the pvpanic I/O port.
 */
#ifndef KILN_VMM_DEVICES_POWER_H
#define KILN_VMM_DEVICES_POWER_H

#include <stdbool.h>
#include <stdint.h>

struct power {
	void (*poweroff)(void *ctx);
	void (*panic)(void *ctx);
	void *ctx;
};

/* io_fn for [ACPI_SLEEP_CTL_PORT, +2) */
void power_sleep_io(void *opaque, uint64_t off, uint8_t *data, uint32_t len, bool is_write);
/* io_fn for PVPANIC_PORT (len 1) */
void power_pvpanic_io(void *opaque, uint64_t off, uint8_t *data, uint32_t len, bool is_write);

#endif
