/*
 * Port-I/O and MMIO dispatch: one registry of non-overlapping ranges per bus,
 * filled during set-up and read-only while vCPUs run (so lookups take no lock;
 * handlers do their own locking). Accesses that hit no range are ignored
 * (reads return all ones), as on real hardware.
 */
#ifndef KILN_VMM_IO_H
#define KILN_VMM_IO_H

#include <stdbool.h>
#include <stdint.h>

#define IO_MAX_RANGES 64
#define IO_MAX_ACCESS 8 /* bytes: larger accesses are dropped */

/* off: offset inside the range; data: len bytes, filled on read. */
typedef void (*io_fn)(void *opaque, uint64_t off, uint8_t *data, uint32_t len, bool is_write);

struct io_range {
	uint64_t base;
	uint64_t len;
	io_fn fn;
	void *opaque;
};

struct io_bus {
	unsigned n;
	struct io_range ranges[IO_MAX_RANGES];
};

/* 0, -EINVAL (empty or wrapping range), -EEXIST (overlap) or -ENOSPC. */
int io_register(struct io_bus *bus, uint64_t base, uint64_t len, io_fn fn, void *opaque);

/* true when a range took the access. Accesses straddling a range end are refused. */
bool io_dispatch(const struct io_bus *bus, uint64_t addr, uint8_t *data, uint32_t len, bool is_write);

#endif
