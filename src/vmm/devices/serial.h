/*
 * 8250/16550A UART, enough for Linux's 8250 driver: transmit to a host fd,
 * receive from a bounded FIFO, THRE and RX interrupts, loopback for probing.
 */
#ifndef KILN_VMM_DEVICES_SERIAL_H
#define KILN_VMM_DEVICES_SERIAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SERIAL_COM1_PORT 0x3f8
#define SERIAL_COM1_IRQ 4
#define SERIAL_NPORTS 8

struct serial;

/* out_fd < 0: output discarded. out_limit: bytes written at most (0: no limit).
 * irq(ctx) pulses the UART's interrupt line. */
struct serial *serial_create(int out_fd, uint64_t out_limit, void (*irq)(void *), void *ctx);
void serial_free(struct serial *s);

/* io_fn for the port range. */
void serial_io(void *opaque, uint64_t off, uint8_t *data, uint32_t len, bool is_write);

/* Feed received bytes; returns how many fit in the FIFO. */
size_t serial_rx(struct serial *s, const uint8_t *buf, size_t len);
/* Room left in the receive FIFO. */
size_t serial_rx_room(struct serial *s);
/* Write out buffered output. */
void serial_flush(struct serial *s);

/* Snapshots: the registers (not the FIFOs), and back; restore raises the
 * interrupt line if the restored registers have one pending. */
struct snap_serial;
void serial_save(struct serial *s, struct snap_serial *out);
void serial_restore(struct serial *s, const struct snap_serial *in);

#endif
