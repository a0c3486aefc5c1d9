#include "vmm/devices/serial.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"
#include "vmm/snapfile.h"

#define RX_FIFO 64
#define TX_BUF 256

#define IER_RDI 0x01
#define IER_THRI 0x02
#define IIR_NONE 0x01
#define IIR_THRI 0x02
#define IIR_RDI 0x04
#define IIR_FIFO 0xc0
#define FCR_ENABLE 0x01
#define LCR_DLAB 0x80
#define LSR_DR 0x01
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
#define MCR_DTR 0x01
#define MCR_RTS 0x02
#define MCR_OUT1 0x04
#define MCR_OUT2 0x08
#define MCR_LOOP 0x10
#define MSR_CTS 0x10
#define MSR_DSR 0x20
#define MSR_RI 0x40
#define MSR_DCD 0x80

struct serial {
	pthread_mutex_t lock;
	int out_fd;
	uint64_t out_limit;
	uint64_t out_written;
	void (*irq)(void *);
	void *irq_ctx;

	uint8_t ier, lcr, mcr, scr, dll, dlm, fcr;
	bool thre_pending;

	uint8_t rx[RX_FIFO];
	unsigned rx_head, rx_len;

	uint8_t tx[TX_BUF];
	size_t tx_len;
};

struct serial *serial_create(int out_fd, uint64_t out_limit, void (*irq)(void *), void *ctx)
{
	struct serial *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	pthread_mutex_init(&s->lock, NULL);
	s->out_fd = out_fd;
	s->out_limit = out_limit;
	s->irq = irq;
	s->irq_ctx = ctx;
	s->mcr = MCR_OUT2;
	s->dll = 12; /* 9600 baud */
	return s;
}

static void tx_flush_locked(struct serial *s)
{
	size_t n = s->tx_len;

	if (n && s->out_fd >= 0) {
		if (s->out_limit && s->out_written + n > s->out_limit)
			n = s->out_limit > s->out_written ? (size_t)(s->out_limit - s->out_written) : 0;
		if (n && write_full(s->out_fd, s->tx, n) == 0)
			s->out_written += n;
	}
	s->tx_len = 0;
}

void serial_flush(struct serial *s)
{
	pthread_mutex_lock(&s->lock);
	tx_flush_locked(s);
	pthread_mutex_unlock(&s->lock);
}

void serial_free(struct serial *s)
{
	if (!s)
		return;
	serial_flush(s);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

static uint8_t iir_locked(const struct serial *s)
{
	uint8_t fifo = (s->fcr & FCR_ENABLE) ? IIR_FIFO : 0;

	if ((s->ier & IER_RDI) && s->rx_len)
		return fifo | IIR_RDI;
	if ((s->ier & IER_THRI) && s->thre_pending)
		return fifo | IIR_THRI;
	return fifo | IIR_NONE;
}

static void tx_byte_locked(struct serial *s, uint8_t b)
{
	if (s->mcr & MCR_LOOP) {
		if (s->rx_len < RX_FIFO) {
			s->rx[(s->rx_head + s->rx_len) % RX_FIFO] = b;
			s->rx_len++;
		}
		return;
	}
	s->tx[s->tx_len++] = b;
	if (b == '\n' || s->tx_len == TX_BUF)
		tx_flush_locked(s);
}

static uint8_t read_reg_locked(struct serial *s, unsigned reg, bool *irq_cleared)
{
	uint8_t v = 0;

	switch (reg) {
	case 0:
		if (s->lcr & LCR_DLAB) {
			v = s->dll;
		} else if (s->rx_len) {
			v = s->rx[s->rx_head];
			s->rx_head = (s->rx_head + 1) % RX_FIFO;
			s->rx_len--;
		}
		break;
	case 1:
		v = (s->lcr & LCR_DLAB) ? s->dlm : s->ier;
		break;
	case 2:
		v = iir_locked(s);
		/* Reading IIR acknowledges a THRE interrupt. */
		if ((v & 0x0f) == IIR_THRI) {
			s->thre_pending = false;
			*irq_cleared = true;
		}
		break;
	case 3:
		v = s->lcr;
		break;
	case 4:
		v = s->mcr;
		break;
	case 5:
		v = LSR_THRE | LSR_TEMT | (s->rx_len ? LSR_DR : 0);
		break;
	case 6:
		if (s->mcr & MCR_LOOP) {
			v = (s->mcr & MCR_DTR ? MSR_DSR : 0) | (s->mcr & MCR_RTS ? MSR_CTS : 0) |
			    (s->mcr & MCR_OUT1 ? MSR_RI : 0) | (s->mcr & MCR_OUT2 ? MSR_DCD : 0);
		} else {
			v = MSR_DCD | MSR_DSR | MSR_CTS;
		}
		break;
	case 7:
		v = s->scr;
		break;
	default:
		break;
	}
	return v;
}

static void write_reg_locked(struct serial *s, unsigned reg, uint8_t v)
{
	switch (reg) {
	case 0:
		if (s->lcr & LCR_DLAB) {
			s->dll = v;
		} else {
			tx_byte_locked(s, v);
			s->thre_pending = true;
		}
		break;
	case 1:
		if (s->lcr & LCR_DLAB) {
			s->dlm = v;
		} else {
			/* Enabling THRI with an empty THR raises it at once. */
			if ((v & IER_THRI) && !(s->ier & IER_THRI))
				s->thre_pending = true;
			s->ier = v & 0x0f;
		}
		break;
	case 2:
		s->fcr = v;
		if (v & 0x02) { /* clear RX FIFO */
			s->rx_len = 0;
			s->rx_head = 0;
		}
		break;
	case 3:
		s->lcr = v;
		break;
	case 4:
		s->mcr = v & 0x1f;
		break;
	case 7:
		s->scr = v;
		break;
	default:
		break;
	}
}

void serial_io(void *opaque, uint64_t off, uint8_t *data, uint32_t len, bool is_write)
{
	struct serial *s = opaque;
	bool cleared = false, raise;
	uint8_t before;

	if (len != 1 || off >= SERIAL_NPORTS) {
		if (!is_write)
			memset(data, 0xff, len);
		return;
	}
	pthread_mutex_lock(&s->lock);
	before = iir_locked(s) & 0x0f;
	if (is_write)
		write_reg_locked(s, (unsigned)off, data[0]);
	else
		data[0] = read_reg_locked(s, (unsigned)off, &cleared);
	/* Pulse the (edge) line whenever a new interrupt condition appears. */
	raise = (iir_locked(s) & 0x0f) != IIR_NONE && (is_write || before == IIR_NONE) && !cleared;
	pthread_mutex_unlock(&s->lock);
	if (raise && s->irq)
		s->irq(s->irq_ctx);
}

size_t serial_rx_room(struct serial *s)
{
	size_t room;

	pthread_mutex_lock(&s->lock);
	room = RX_FIFO - s->rx_len;
	pthread_mutex_unlock(&s->lock);
	return room;
}

size_t serial_rx(struct serial *s, const uint8_t *buf, size_t len)
{
	size_t n = 0;
	bool raise;

	pthread_mutex_lock(&s->lock);
	while (n < len && s->rx_len < RX_FIFO) {
		s->rx[(s->rx_head + s->rx_len) % RX_FIFO] = buf[n++];
		s->rx_len++;
	}
	raise = n > 0 && (s->ier & IER_RDI);
	pthread_mutex_unlock(&s->lock);
	if (raise && s->irq)
		s->irq(s->irq_ctx);
	return n;
}

void serial_save(struct serial *s, struct snap_serial *out)
{
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&s->lock);
	*out = (struct snap_serial){ s->ier, s->lcr, s->mcr, s->scr, s->dll, s->dlm, s->fcr,
				     s->thre_pending };
	pthread_mutex_unlock(&s->lock);
}

void serial_restore(struct serial *s, const struct snap_serial *in)
{
	bool raise;

	pthread_mutex_lock(&s->lock);
	/* The masks the guest's own writes go through: nothing else is stored. */
	s->ier = in->ier & 0x0f;
	s->lcr = in->lcr;
	s->mcr = in->mcr & 0x1f;
	s->scr = in->scr;
	s->dll = in->dll;
	s->dlm = in->dlm;
	s->fcr = in->fcr;
	s->thre_pending = in->thre_pending != 0;
	raise = (iir_locked(s) & 0x0f) != IIR_NONE;
	pthread_mutex_unlock(&s->lock);
	/* An interrupt the guest was owed when it was saved is raised again
	 * (edge line: a spurious one is harmless, the driver reads IIR). */
	if (raise && s->irq)
		s->irq(s->irq_ctx);
}
