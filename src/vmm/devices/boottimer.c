#include "vmm/devices/boottimer.h"

#include <string.h>

#include "util.h"

void boottimer_io(void *opaque, uint64_t off, uint8_t *data, uint32_t len, bool is_write)
{
	struct boottimer *t = opaque;
	uint64_t expected = 0, now;
	uint32_t v;

	if (!is_write) {
		memset(data, 0, len);
		return;
	}
	if (off != 0 || len != 4)
		return;
	memcpy(&v, data, 4);
	if (v != BOOTTIMER_MAGIC)
		return;
	now = now_ns();
	/* First mark wins; vCPUs may race. */
	if (__atomic_compare_exchange_n(&t->mark_ns, &expected, now, false, __ATOMIC_SEQ_CST,
					__ATOMIC_SEQ_CST) &&
	    t->marked)
		t->marked(t->ctx, now - t->start_ns);
}
