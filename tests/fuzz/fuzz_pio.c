/*
 * The VMM's port-I/O devices as a guest reaches them (src/vmm/io.c and
 * src/vmm/devices/): the 16550 UART on COM1, the i8042 reset line, the ACPI
 * sleep and pvpanic ports and the boot timer, registered on one bus as
 * vmm.c does, driven by fuzzed IN/OUT instructions of 1 to 8 bytes at any
 * port, plus host console input (serial_rx).
 *
 * Input: operations, one byte each with arguments: an access (port, size,
 * direction, value), console input, a flush.
 *
 * Properties: no access crashes; the console never gets more than its
 * output limit; a read that no device takes returns all ones; the boot
 * timer's mark is taken once;
 * serial_rx never takes more than the room it reported.
 */
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"
#include "vmm/acpi.h"
#include "vmm/devices/boottimer.h"
#include "vmm/devices/i8042.h"
#include "vmm/devices/power.h"
#include "vmm/devices/serial.h"
#include "vmm/io.h"

#define OUT_LIMIT 4096

struct rig {
	struct io_bus bus;
	struct serial *serial;
	struct i8042 kbd;
	struct power power;
	struct boottimer timer;
	int out;
	unsigned irqs, resets, offs, panics, marks;
};

static void on_irq(void *ctx) { ((struct rig *)ctx)->irqs++; }
static void on_reset(void *ctx) { ((struct rig *)ctx)->resets++; }
static void on_off(void *ctx) { ((struct rig *)ctx)->offs++; }
static void on_panic(void *ctx) { ((struct rig *)ctx)->panics++; }
static void on_mark(void *ctx, uint64_t ns) { ((struct rig *)ctx)->marks++; }

static const uint16_t ports[] = { SERIAL_COM1_PORT, I8042_DATA_PORT, I8042_CMD_PORT,
				  ACPI_SLEEP_CTL_PORT, PVPANIC_PORT, BOOTTIMER_PORT, 0x80, 0xcf8 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz in = { data, size };
	struct rig r = { 0 };

	r.out = memfd_create("console", MFD_CLOEXEC);
	FZ_CHECK(r.out >= 0, "memfd_create");
	r.serial = serial_create(r.out, OUT_LIMIT, on_irq, &r);
	FZ_CHECK(r.serial, "serial_create");
	r.kbd = (struct i8042){ on_reset, &r };
	r.power = (struct power){ .poweroff = on_off, .panic = on_panic, .ctx = &r };
	r.timer = (struct boottimer){ .start_ns = 1, .marked = on_mark, .ctx = &r };
	FZ_CHECK(io_register(&r.bus, SERIAL_COM1_PORT, SERIAL_NPORTS, serial_io, r.serial) == 0 &&
			 io_register(&r.bus, I8042_DATA_PORT, I8042_CMD_PORT - I8042_DATA_PORT + 1,
				     i8042_io, &r.kbd) == 0 &&
			 io_register(&r.bus, ACPI_SLEEP_CTL_PORT, 2, power_sleep_io, &r.power) == 0 &&
			 io_register(&r.bus, PVPANIC_PORT, 1, power_pvpanic_io, &r.power) == 0 &&
			 io_register(&r.bus, BOOTTIMER_PORT, 4, boottimer_io, &r.timer) == 0,
		 "io_register");
	for (unsigned ops = 0; in.n && ops < 4096; ops++) {
		uint8_t op = fz_u8(&in);

		if (op < 0xe0) {
			uint8_t sel = fz_u8(&in), buf[8];
			uint64_t port = sel < 0xf8 ? ports[sel % 8] + (sel >> 3) % 10 : fz_u16(&in);
			uint32_t len = 1u << (op % 4);
			bool write = op & 4, took;
			uint64_t v = write ? fz_u64(&in) : 0;

			memcpy(buf, &v, 8);
			if (!write)
				memset(buf, 0x5a, sizeof(buf));
			took = io_dispatch(&r.bus, port, buf, len, write);
			if (!write && !took)
				for (unsigned i = 0; i < len; i++)
					FZ_CHECK(buf[i] == 0xff, "an unclaimed read of port %#llx gave %#x",
						 (unsigned long long)port, buf[i]);
		} else if (op < 0xf8) {
			const uint8_t *p;
			size_t room = serial_rx_room(r.serial), n = fz_take(&in, fz_u8(&in), &p);
			size_t took = serial_rx(r.serial, p, n);

			FZ_CHECK(took <= n && took <= room, "serial_rx took %zu of %zu (room %zu)", took,
				 n, room);
		} else {
			serial_flush(r.serial);
		}
	}
	serial_flush(r.serial);
	FZ_CHECK(lseek(r.out, 0, SEEK_END) <= OUT_LIMIT, "%lld console bytes, limit %d",
		 (long long)lseek(r.out, 0, SEEK_END), OUT_LIMIT);
	FZ_CHECK(r.marks <= 1, "boot mark taken %u times", r.marks);
	serial_free(r.serial);
	close(r.out);
	return 0;
}
