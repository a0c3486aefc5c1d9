/*
 * Boot timer: the guest writes BOOTTIMER_MAGIC (32 bits) to BOOTTIMER_PORT
 * once its userspace runs; the VMM records the time since its own start, so
 * boot time is measured without parsing console text.
 */
#ifndef KILN_VMM_DEVICES_BOOTTIMER_H
#define KILN_VMM_DEVICES_BOOTTIMER_H

#include <stdbool.h>
#include <stdint.h>

#define BOOTTIMER_PORT 0x440
#define BOOTTIMER_MAGIC 0x6b696c6eU /* "kiln" */

struct boottimer {
	uint64_t start_ns;
	uint64_t mark_ns; /* 0 until the guest writes the magic; written once */
	void (*marked)(void *ctx, uint64_t elapsed_ns);
	void *ctx;
};

/* io_fn for [BOOTTIMER_PORT, +4) */
void boottimer_io(void *opaque, uint64_t off, uint8_t *data, uint32_t len, bool is_write);

#endif
