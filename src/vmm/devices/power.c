#include "vmm/devices/power.h"

#include <string.h>

#include "vmm/acpi.h"

#define PVPANIC_PANICKED 0x1
#define PVPANIC_CRASH_LOADED 0x2

void power_sleep_io(void *opaque, uint64_t off, uint8_t *data, uint32_t len, bool is_write)
{
	struct power *p = opaque;

	if (!is_write) {
		memset(data, 0, len); /* sleep status: nothing to report */
		return;
	}
	if (off != 0 || len != 1)
		return;
	if ((data[0] & ACPI_SLP_EN) &&
	    ((data[0] & ACPI_SLP_TYP_MASK) >> ACPI_SLP_TYP_SHIFT) == ACPI_S5_TYPE && p->poweroff)
		p->poweroff(p->ctx);
}

void power_pvpanic_io(void *opaque, uint64_t off, uint8_t *data, uint32_t len, bool is_write)
{
	struct power *p = opaque;

	if (!is_write) {
		/* Events the device supports. */
		memset(data, 0, len);
		data[0] = PVPANIC_PANICKED;
		return;
	}
	if (len >= 1 && (data[0] & PVPANIC_PANICKED) && p->panic)
		p->panic(p->ctx);
}
