#include "vmm/devices/i8042.h"

#include <string.h>

#define I8042_CMD_RESET 0xfe

/* The opaque's low bit cannot carry the port, so the two ports share one
 * handler and tell themselves apart by the range offset: the VMM registers
 * the range [0x60, 0x65) and this handler ignores 0x61..0x63 (0x61 is the
 * in-kernel PIT's speaker port and never reaches us). */
void i8042_io(void *opaque, uint64_t off, uint8_t *data, uint32_t len, bool is_write)
{
	struct i8042 *k = opaque;
	uint64_t port = I8042_DATA_PORT + off;

	if (!is_write) {
		/* Status: output buffer empty, input buffer empty; data: 0. */
		memset(data, 0, len);
		return;
	}
	if (port == I8042_CMD_PORT && len == 1 && data[0] == I8042_CMD_RESET && k->reset)
		k->reset(k->ctx);
}
