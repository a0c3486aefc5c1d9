/* i8042 keyboard controller: only what a guest needs to reset the machine
 * (command 0xfe on port 0x64, as Linux does with reboot=k). */
#ifndef KILN_VMM_DEVICES_I8042_H
#define KILN_VMM_DEVICES_I8042_H

#include <stdbool.h>
#include <stdint.h>

#define I8042_DATA_PORT 0x60
#define I8042_CMD_PORT 0x64

struct i8042 {
	void (*reset)(void *ctx);
	void *ctx;
};

/* io_fn for port 0x60 (len 1) and 0x64 (len 1); opaque is a struct i8042. */
void i8042_io(void *opaque, uint64_t off, uint8_t *data, uint32_t len, bool is_write);

#endif
