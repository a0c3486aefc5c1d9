#include "vmm/io.h"

#include <errno.h>
#include <string.h>

int io_register(struct io_bus *bus, uint64_t base, uint64_t len, io_fn fn, void *opaque)
{
	uint64_t end;

	if (len == 0 || !fn || __builtin_add_overflow(base, len - 1, &end))
		return -EINVAL;
	for (unsigned i = 0; i < bus->n; i++) {
		const struct io_range *r = &bus->ranges[i];

		if (base <= r->base + (r->len - 1) && r->base <= end)
			return -EEXIST;
	}
	if (bus->n >= IO_MAX_RANGES)
		return -ENOSPC;
	bus->ranges[bus->n++] = (struct io_range){ base, len, fn, opaque };
	return 0;
}

bool io_dispatch(const struct io_bus *bus, uint64_t addr, uint8_t *data, uint32_t len, bool is_write)
{
	if (len == 0 || len > IO_MAX_ACCESS)
		return false;
	for (unsigned i = 0; i < bus->n; i++) {
		const struct io_range *r = &bus->ranges[i];
		uint64_t off;

		if (addr < r->base)
			continue;
		off = addr - r->base;
		if (off >= r->len)
			continue;
		if (len > r->len - off)
			break;
		r->fn(r->opaque, off, data, len, is_write);
		return true;
	}
	if (!is_write)
		memset(data, 0xff, len);
	return false;
}
