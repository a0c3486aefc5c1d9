/*
 * virtio-net tests without KVM: a fake guest driver brings the device up over
 * MMIO (receive and transmit queues in fake guest RAM), posts rx buffers and
 * hand-builds tx chains, while the other end of a SOCK_SEQPACKET socketpair
 * plays kiln-net. The device's event thread runs for real, so everything here
 * waits with a timeout instead of assuming an order between threads.
 */
#include "virtio_fake.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util.h"
#include "vmm/virtio/net.h"

#define T_RAM (16ULL << 20)
#define T_WAIT_MS 5000
#define T_FEATURES (FAKE_VERSION_1 | VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX) | \
		    VIRTIO_BIT(VIRTIO_RING_F_INDIRECT_DESC) | \
		    VIRTIO_BIT(VIRTIO_NET_F_MAC) | VIRTIO_BIT(VIRTIO_NET_F_STATUS) | \
		    VIRTIO_BIT(VIRTIO_NET_F_MTU))

#define HDR VNET_HDR_LEN
#define MAX_FRAME (VNET_ETH_HLEN + VNET_DEFAULT_MTU)	/* 1514 */
#define QSIZE 256
/* What Linux posts without MRG_RXBUF or GSO: header + 1518 (VLAN room). */
#define RX_BUF_LEN (HDR + 1518)
#define RX_STRIDE 0x800ULL
#define RX_BASE 0x100000ULL
#define RX_BUFS 128			/* descriptors 0..127; the rest for odd chains */
#define TX_SLOTS 64			/* descriptors 0..127, a pair each; 128.. for odd chains */
#define TX_STRIDE 0x800ULL
#define TX_BASE 0x200000ULL
#define SPARE_BASE 0x300000ULL		/* buffers for hand-made chains */

static const uint8_t t_mac[6] = { 0x02, 0x6b, 0x69, 0x6c, 0x6e, 0x01 };

struct t {
	struct fake_guest g;
	struct vnet *v;
	int peer;		/* kiln-net's end */
	int dev_fd;		/* the device's end (ours to close) */
	struct fake_vq rxq, txq;
	uint16_t rx_seen;	/* rx used entries consumed */
	uint16_t tx_queued;	/* tx chains made available */
	unsigned irqs;
};

/* A frame as the guest or kiln-net would make it: 14-byte header, then a
 * pattern seeded by seq, with seq in the first payload bytes. */
static void mk_frame(uint8_t *f, size_t len, uint32_t seq)
{
	for (size_t i = 0; i < len; i++)
		f[i] = (uint8_t)((i * 131 + seq * 7919) >> 3);
	if (len >= 18)
		memcpy(f + 14, &seq, sizeof(seq));
}

static uint64_t cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* Nothing in the process may spin for ms: a busy loop would use it all. */
static void assert_idle(int ms)
{
	uint64_t c0 = cpu_ns();

	usleep((useconds_t)ms * 1000);
	assert_true(cpu_ns() - c0 < (uint64_t)ms * 1000000 / 5);
}

static void t_irq(void *ctx)
{
	__atomic_add_fetch(&((struct t *)ctx)->irqs, 1, __ATOMIC_RELAXED);
}

static void cfg_read(struct t *t, uint32_t off, void *buf, uint32_t len)
{
	assert_true(io_dispatch(&t->g.bus, FAKE_MMIO_BASE + R_CONFIG + off, buf, len, false));
}

static uint16_t cfg_status(struct t *t)
{
	uint16_t s;

	cfg_read(t, 6, &s, 2);
	return s;
}

/* ---- the fake driver ---- */

/* Post rx buffer i (descriptor i) of len bytes. */
static void rx_post_len(struct t *t, unsigned i, uint32_t len)
{
	fake_desc(&t->g, t->rxq.desc, (uint16_t)i, RX_BASE + i * RX_STRIDE, len,
		  VIRTQ_DESC_F_WRITE, 0);
	fake_avail_add(&t->g, &t->rxq, (uint16_t)i);
}

static void rx_post(struct t *t, unsigned i)
{
	rx_post_len(t, i, RX_BUF_LEN);
}

/* Negotiate, set up both queues, post rx_bufs rx buffers, DRIVER_OK. */
static void t_bring_up(struct t *t, unsigned rx_bufs)
{
	t->rxq = (struct fake_vq){ .size = QSIZE, .desc = 0x10000, .avail = 0x11000,
				   .used = 0x12000 };
	t->txq = (struct fake_vq){ .size = QSIZE, .desc = 0x20000, .avail = 0x21000,
				   .used = 0x22000 };
	assert_true(fake_negotiate(&t->g, T_FEATURES) & VIRTIO_STATUS_FEATURES_OK);
	fake_vq_clear(&t->g, &t->rxq);
	fake_vq_clear(&t->g, &t->txq);
	assert_int_equal(fake_queue_setup(&t->g, 0, &t->rxq), 1);
	assert_int_equal(fake_queue_setup(&t->g, 1, &t->txq), 1);
	t->rx_seen = 0;
	t->tx_queued = 0;
	for (unsigned i = 0; i < rx_bufs; i++)
		rx_post(t, i);
	fake_driver_ok(&t->g);
	assert_true(fake_rd(&t->g, R_STATUS) & VIRTIO_STATUS_DRIVER_OK);
	fake_notify(&t->g, 0);
}

static struct t *t_new_mtu(unsigned rx_bufs, unsigned mtu)
{
	struct t *t = calloc(1, sizeof(*t));
	struct vnet_params p = { .mtu = mtu };
	int sv[2];

	assert_non_null(t);
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	t->dev_fd = sv[0];
	t->peer = sv[1];
	p.fd = t->dev_fd;
	memcpy(p.mac, t_mac, sizeof(p.mac));
	assert_int_equal(vnet_create(&t->v, &p), 0);
	assert_int_equal(guest_mem_create(&t->g.mem, T_RAM), 0);
	assert_int_equal(virtio_mmio_create(&t->g.dev, &vnet_ops, t->v, t->g.mem, t_irq, t), 0);
	assert_int_equal(virtio_mmio_register(t->g.dev, &t->g.bus, FAKE_MMIO_BASE), 0);
	assert_int_equal(vnet_start(t->v, t->g.dev, false), 0);
	t_bring_up(t, rx_bufs);
	return t;
}

static struct t *t_new(unsigned rx_bufs)
{
	return t_new_mtu(rx_bufs, 0);
}

/* The VMM's order: stop the thread, free the transport, then the device. */
static void t_free(struct t *t)
{
	vnet_stop(t->v);
	virtio_mmio_free(t->g.dev);
	vnet_free(t->v);
	guest_mem_free(t->g.mem);
	close(t->dev_fd);
	if (t->peer >= 0)
		close(t->peer);
	free(t);
}

static struct vnet_stats t_stats(struct t *t)
{
	struct vnet_stats s;

	vnet_get_stats(t->v, &s);
	return s;
}

static bool t_wait_used(struct t *t, struct fake_vq *vq, uint16_t want, int ms)
{
	uint64_t end = now_ns() + (uint64_t)ms * 1000000;
	unsigned spins = 0;

	/* Until the used index reaches want (ring arithmetic). */
	while ((int16_t)(fake_used_idx(&t->g, vq) - want) < 0) {
		if (now_ns() > end)
			return false;
		if (++spins < 200)
			sched_yield();
		else
			usleep(100);
	}
	return true;
}

static void t_wait_reset(struct t *t)
{
	uint64_t end = now_ns() + (uint64_t)T_WAIT_MS * 1000000;

	while (!fake_needs_reset(&t->g)) {
		assert_true(now_ns() < end);
		usleep(1000);
	}
}

/*
 * The next rx used entry: copies the frame out (its length in *len), checks
 * the header, and returns the descriptor id. The buffer is not re-posted.
 */
static uint16_t t_rx_take(struct t *t, uint8_t *frame, size_t *len)
{
	static const struct virtio_net_hdr want = { .num_buffers = 1 };
	struct virtq_used_elem e;
	uint64_t buf;

	if (!t_wait_used(t, &t->rxq, (uint16_t)(t->rx_seen + 1), T_WAIT_MS)) {
		struct vnet_stats s = t_stats(t);

		fail_msg("no rx frame: used %u, seen %u, rx_frames %" PRIu64 ", link %d",
			 fake_used_idx(&t->g, &t->rxq), t->rx_seen, s.rx_frames,
			 vnet_link_up(t->v));
	}
	e = fake_used_elem(&t->g, &t->rxq, t->rx_seen);
	t->rx_seen++;
	assert_true(e.id < RX_BUFS);
	assert_true(e.len >= HDR + VNET_ETH_HLEN && e.len <= HDR + MAX_FRAME);
	buf = RX_BASE + e.id * RX_STRIDE;
	assert_memory_equal(fake_ptr(&t->g, buf, HDR), &want, HDR);
	*len = e.len - HDR;
	memcpy(frame, fake_ptr(&t->g, buf + HDR, *len), *len);
	return (uint16_t)e.id;
}

/* The next rx frame must be seq's of len bytes; its buffer goes back. */
static void t_rx_expect(struct t *t, size_t len, uint32_t seq)
{
	uint8_t got[MAX_FRAME], want[MAX_FRAME];
	size_t n;
	uint16_t id = t_rx_take(t, got, &n);

	mk_frame(want, len, seq);
	assert_int_equal(n, len);
	assert_memory_equal(got, want, len);
	rx_post(t, id);
	fake_notify(&t->g, 0);
}

/* Room for one more tx chain: its buffer, and its first descriptor in *d. */
static uint64_t t_tx_slot(struct t *t, uint16_t *d)
{
	uint16_t slot = t->tx_queued % TX_SLOTS;

	fake_wait_room(&t->g, &t->txq, t->tx_queued, TX_SLOTS, T_WAIT_MS);
	*d = (uint16_t)(2 * slot);
	return TX_BASE + slot * TX_STRIDE;
}

static void t_tx_publish(struct t *t, uint16_t head)
{
	fake_avail_add(&t->g, &t->txq, head);
	t->tx_queued++;
}

/* A zeroed virtio-net header then frame (flen bytes), in one descriptor or
 * in two (header, frame), published; no notify. */
static void t_tx_queue(struct t *t, const uint8_t *frame, size_t flen, bool split)
{
	uint16_t d;
	uint64_t buf = t_tx_slot(t, &d);

	memset(fake_ptr(&t->g, buf, HDR), 0, HDR);
	memcpy(fake_ptr(&t->g, buf + HDR, flen + 1), frame, flen);
	if (split) {
		fake_desc(&t->g, t->txq.desc, d, buf, HDR, VIRTQ_DESC_F_NEXT, (uint16_t)(d + 1));
		fake_desc(&t->g, t->txq.desc, (uint16_t)(d + 1), buf + HDR, (uint32_t)flen, 0, 0);
	} else {
		fake_desc(&t->g, t->txq.desc, d, buf, (uint32_t)(HDR + flen), 0, 0);
	}
	t_tx_publish(t, d);
}

static void t_tx(struct t *t, size_t flen, uint32_t seq, bool split)
{
	uint8_t f[MAX_FRAME + 16];

	mk_frame(f, flen, seq);
	t_tx_queue(t, f, flen, split);
	fake_notify(&t->g, 1);
}

/* Wait until the device has used every tx chain; each with length 0. */
static void t_tx_drain(struct t *t)
{
	assert_true(t_wait_used(t, &t->txq, t->tx_queued, T_WAIT_MS));
	for (uint16_t i = 1; i <= 8 && i <= t->tx_queued; i++)
		assert_int_equal(fake_used_elem(&t->g, &t->txq, (uint16_t)(t->tx_queued - i)).len, 0);
}

/* ---- kiln-net's side ---- */

/* One message within ms: its length, or -errno (-ETIMEDOUT). */
static ssize_t peer_recv(struct t *t, void *buf, size_t cap, int ms)
{
	struct pollfd p = { .fd = t->peer, .events = POLLIN };
	ssize_t r;

	if (poll(&p, 1, ms) == 0)
		return -ETIMEDOUT;
	r = recv(t->peer, buf, cap, MSG_DONTWAIT);
	return r < 0 ? -errno : r;
}

static void peer_expect(struct t *t, size_t len, uint32_t seq)
{
	uint8_t got[MAX_FRAME + 64], want[MAX_FRAME + 64];

	mk_frame(want, len, seq);
	assert_int_equal(peer_recv(t, got, sizeof(got), T_WAIT_MS), (ssize_t)len);
	assert_memory_equal(got, want, len);
}

static void peer_nothing(struct t *t, int ms)
{
	uint8_t b[16];

	assert_int_equal(peer_recv(t, b, sizeof(b), ms), -ETIMEDOUT);
}

static void peer_send_raw(struct t *t, const void *buf, size_t len)
{
	assert_int_equal(send(t->peer, buf, len, MSG_NOSIGNAL), (ssize_t)len);
}

static void peer_send(struct t *t, size_t len, uint32_t seq)
{
	uint8_t f[VNET_MAX_MTU + 64];

	assert_true(len <= sizeof(f));
	mk_frame(f, len, seq);
	peer_send_raw(t, f, len);
}

/* ---- tests ---- */

static void test_create_params(void **state)
{
	struct vnet_params p = { .mtu = 0 };
	struct vnet *v = (struct vnet *)&p;
	int sv[2], st[2], pf[2];

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, st), 0);
	assert_int_equal(pipe2(pf, O_CLOEXEC), 0);
	memcpy(p.mac, t_mac, sizeof(p.mac));

	p.fd = -1;
	assert_int_equal(vnet_create(&v, &p), -EINVAL);
	assert_null(v);
	p.fd = st[0];
	assert_int_equal(vnet_create(&v, &p), -EINVAL);
	p.fd = pf[0];
	assert_int_equal(vnet_create(&v, &p), -ENOTSOCK);
	p.fd = sv[0];
	p.mtu = VNET_MIN_MTU - 1;
	assert_int_equal(vnet_create(&v, &p), -EINVAL);
	p.mtu = VNET_MAX_MTU + 1;
	assert_int_equal(vnet_create(&v, &p), -EINVAL);
	p.mtu = 0;
	p.mac[0] |= 1;		/* multicast */
	assert_int_equal(vnet_create(&v, &p), -EINVAL);
	memset(p.mac, 0, sizeof(p.mac));
	assert_int_equal(vnet_create(&v, &p), -EINVAL);
	assert_null(v);

	memcpy(p.mac, t_mac, sizeof(p.mac));
	assert_int_equal(vnet_create(&v, &p), 0);
	assert_non_null(v);
	assert_true(vnet_link_up(v));
	vnet_free(v);
	vnet_free(NULL);
	/* The fd stays the caller's. */
	assert_int_equal(fcntl(sv[0], F_GETFD), FD_CLOEXEC);
	close(sv[0]);
	close(sv[1]);
	close(st[0]);
	close(st[1]);
	close(pf[0]);
	close(pf[1]);
}

static void test_config(void **state)
{
	struct t *t = t_new_mtu(0, 9000);
	uint8_t mac[6], b, pad[4];
	uint32_t lo, hi;
	uint16_t mtu;

	(void)state;
	assert_int_equal(fake_rd(&t->g, R_DEVICE_ID), VIRTIO_ID_NET);
	fake_wr(&t->g, R_DEV_FEATURES_SEL, 0);
	lo = fake_rd(&t->g, R_DEV_FEATURES);
	fake_wr(&t->g, R_DEV_FEATURES_SEL, 1);
	hi = fake_rd(&t->g, R_DEV_FEATURES);
	assert_true(lo & (1u << VIRTIO_NET_F_MAC));
	assert_true(lo & (1u << VIRTIO_NET_F_STATUS));
	assert_true(lo & (1u << VIRTIO_NET_F_MTU));
	/* No offloads, no merged buffers, no control queue. */
	assert_int_equal(lo & ((1u << VIRTIO_NET_F_CSUM) | (1u << VIRTIO_NET_F_GUEST_CSUM) |
			       (1u << VIRTIO_NET_F_GUEST_TSO4) | (1u << VIRTIO_NET_F_GUEST_TSO6) |
			       (1u << VIRTIO_NET_F_GUEST_UFO) | (1u << VIRTIO_NET_F_HOST_TSO4) |
			       (1u << VIRTIO_NET_F_HOST_TSO6) | (1u << VIRTIO_NET_F_HOST_UFO) |
			       (1u << VIRTIO_NET_F_MRG_RXBUF) | (1u << VIRTIO_NET_F_CTRL_VQ)), 0);
	assert_true(hi & 1u);	/* VERSION_1 */

	/* Config: byte by byte, as Linux reads the MAC. */
	for (unsigned i = 0; i < 6; i++) {
		cfg_read(t, i, &b, 1);
		mac[i] = b;
	}
	assert_memory_equal(mac, t_mac, 6);
	assert_int_equal(cfg_status(t), VIRTIO_NET_S_LINK_UP);
	cfg_read(t, 10, &mtu, 2);
	assert_int_equal(mtu, 9000);
	/* Past the config: zeroes. */
	memset(pad, 0xff, sizeof(pad));
	cfg_read(t, 12, pad, 4);
	assert_int_equal(pad[0] | pad[1] | pad[2] | pad[3], 0);

	/* Two queues of 256. */
	fake_wr(&t->g, R_QUEUE_SEL, 0);
	assert_int_equal(fake_rd(&t->g, R_QUEUE_NUM_MAX), QSIZE);
	fake_wr(&t->g, R_QUEUE_SEL, 1);
	assert_int_equal(fake_rd(&t->g, R_QUEUE_NUM_MAX), QSIZE);
	fake_wr(&t->g, R_QUEUE_SEL, 2);
	assert_int_equal(fake_rd(&t->g, R_QUEUE_NUM_MAX), 0);

	/* An offload never offered: FEATURES_OK refused. */
	assert_false(fake_negotiate(&t->g, T_FEATURES | VIRTIO_BIT(VIRTIO_NET_F_CSUM)) &
		     VIRTIO_STATUS_FEATURES_OK);
	assert_false(fake_negotiate(&t->g, T_FEATURES | VIRTIO_BIT(VIRTIO_NET_F_MRG_RXBUF)) &
		     VIRTIO_STATUS_FEATURES_OK);
	/* A driver that takes only VERSION_1 is fine. */
	assert_true(fake_negotiate(&t->g, FAKE_VERSION_1) & VIRTIO_STATUS_FEATURES_OK);
	t_free(t);
}

static void test_tx(void **state)
{
	struct t *t = t_new(0);
	struct virtio_net_hdr h = { 0 };
	struct vnet_stats s;
	uint8_t f[MAX_FRAME];
	uint64_t buf = SPARE_BASE;
	uint32_t seq = 0;

	(void)state;
	/* Header and frame apart, and together (as Linux pushes the header). */
	t_tx(t, 60, seq++, true);
	peer_expect(t, 60, 0);
	t_tx(t, 60, seq++, false);
	peer_expect(t, 60, 1);
	/* The smallest and the largest frames. */
	t_tx(t, VNET_ETH_HLEN, seq++, true);
	peer_expect(t, VNET_ETH_HLEN, 2);
	t_tx(t, MAX_FRAME, seq++, false);
	peer_expect(t, MAX_FRAME, 3);

	/* The header cut in two and the frame in three pieces. */
	mk_frame(f, 1000, seq);
	memcpy(fake_ptr(&t->g, buf, HDR), &h, HDR);
	memcpy(fake_ptr(&t->g, buf + 0x1000, 1000), f, 1000);
	fake_desc(&t->g, t->txq.desc, 200, buf, 5, VIRTQ_DESC_F_NEXT, 201);
	fake_desc(&t->g, t->txq.desc, 201, buf + 5, HDR - 5, VIRTQ_DESC_F_NEXT, 202);
	fake_desc(&t->g, t->txq.desc, 202, buf + 0x1000, 1, VIRTQ_DESC_F_NEXT, 203);
	fake_desc(&t->g, t->txq.desc, 203, buf + 0x1001, 0, VIRTQ_DESC_F_NEXT, 204);
	fake_desc(&t->g, t->txq.desc, 204, buf + 0x1001, 999, 0, 0);
	t_tx_publish(t, 200);
	fake_notify(&t->g, 1);
	peer_expect(t, 1000, seq++);

	/* Through an indirect table. */
	mk_frame(f, 300, seq);
	memcpy(fake_ptr(&t->g, buf + 0x2000, 300), f, 300);
	fake_desc(&t->g, FAKE_INDIRECT, 0, buf, HDR, VIRTQ_DESC_F_NEXT, 1);
	fake_desc(&t->g, FAKE_INDIRECT, 1, buf + 0x2000, 300, 0, 0);
	fake_desc(&t->g, t->txq.desc, 210, FAKE_INDIRECT, 32, VIRTQ_DESC_F_INDIRECT, 0);
	t_tx_publish(t, 210);
	fake_notify(&t->g, 1);
	peer_expect(t, 300, seq++);

	t_tx_drain(t);
	s = t_stats(t);
	assert_int_equal(s.tx_frames, 6);
	assert_int_equal(s.tx_bytes, 60 + 60 + 14 + 1514 + 1000 + 300);
	assert_int_equal(s.tx_drop_size + s.tx_drop_link + s.tx_drop_error + s.tx_drop_reset, 0);
	assert_true(__atomic_load_n(&t->irqs, __ATOMIC_RELAXED) > 0);
	peer_nothing(t, 50);
	t_free(t);
}

static void test_rx(void **state)
{
	static const struct virtio_net_hdr want = { .num_buffers = 1 };
	struct t *t = t_new(4);
	struct virtq_used_elem e;
	struct vnet_stats s;
	uint8_t f[MAX_FRAME];
	unsigned irqs;

	(void)state;
	irqs = __atomic_load_n(&t->irqs, __ATOMIC_RELAXED);
	peer_send(t, 60, 0);
	t_rx_expect(t, 60, 0);
	assert_true(__atomic_load_n(&t->irqs, __ATOMIC_RELAXED) > irqs);
	peer_send(t, MAX_FRAME, 1);
	t_rx_expect(t, MAX_FRAME, 1);
	peer_send(t, VNET_ETH_HLEN, 2);
	t_rx_expect(t, VNET_ETH_HLEN, 2);

	for (unsigned i = 0; i < 4; i++) {
		peer_send(t, 100, 10 + i);
		t_rx_expect(t, 100, 10 + i);
	}
	/* Use up the four posted buffers without posting them again... */
	for (unsigned i = 0; i < 4; i++)
		peer_send(t, 40, 20 + i);
	for (unsigned i = 0; i < 4; i++) {
		size_t n;

		t_rx_take(t, f, &n);
		assert_int_equal(n, 40);
	}
	/* ... so that the next frames land in these: header and data apart,
	 * and a header cut in two (7 + 5 bytes, then the frame). */
	fake_desc(&t->g, t->rxq.desc, 200, SPARE_BASE, HDR, FAKE_WNEXT, 201);
	fake_desc(&t->g, t->rxq.desc, 201, SPARE_BASE + 0x1000, 1518, VIRTQ_DESC_F_WRITE, 0);
	fake_avail_add(&t->g, &t->rxq, 200);
	fake_desc(&t->g, t->rxq.desc, 202, SPARE_BASE + 0x2000, 7, FAKE_WNEXT, 203);
	fake_desc(&t->g, t->rxq.desc, 203, SPARE_BASE + 0x3000, 600, VIRTQ_DESC_F_WRITE, 0);
	fake_avail_add(&t->g, &t->rxq, 202);
	fake_notify(&t->g, 0);
	peer_send(t, 1200, 30);
	peer_send(t, 500, 31);
	assert_true(t_wait_used(t, &t->rxq, (uint16_t)(t->rx_seen + 2), T_WAIT_MS));
	e = fake_used_elem(&t->g, &t->rxq, t->rx_seen);
	assert_int_equal(e.id, 200);
	assert_int_equal(e.len, HDR + 1200);
	assert_memory_equal(fake_ptr(&t->g, SPARE_BASE, HDR), &want, HDR);
	mk_frame(f, 1200, 30);
	assert_memory_equal(fake_ptr(&t->g, SPARE_BASE + 0x1000, 1200), f, 1200);
	e = fake_used_elem(&t->g, &t->rxq, (uint16_t)(t->rx_seen + 1));
	assert_int_equal(e.id, 202);
	assert_int_equal(e.len, HDR + 500);
	assert_memory_equal(fake_ptr(&t->g, SPARE_BASE + 0x2000, 7), &want, 7);
	assert_memory_equal(fake_ptr(&t->g, SPARE_BASE + 0x3000, 5), (const char *)&want + 7, 5);
	mk_frame(f, 500, 31);
	assert_memory_equal(fake_ptr(&t->g, SPARE_BASE + 0x3000 + 5, 500), f, 500);
	t->rx_seen += 2;

	s = t_stats(t);
	assert_int_equal(s.rx_frames, 3 + 4 + 4 + 2);
	assert_int_equal(s.rx_bytes, 60 + 1514 + 14 + 400 + 160 + 1700);
	assert_int_equal(s.rx_drop_size + s.rx_drop_buffer + s.rx_short_bufs + s.rx_errors, 0);
	t_free(t);
}

/* Frames wait in the socket while the guest has no buffers, without a spin. */
static void test_rx_no_buffers(void **state)
{
	struct t *t = t_new(0);

	(void)state;
	for (uint32_t i = 0; i < 5; i++)
		peer_send(t, 100 + i, i);
	assert_idle(300);
	assert_int_equal(fake_used_idx(&t->g, &t->rxq), 0);
	/* Two buffers take two frames, in order; the rest keep waiting. */
	rx_post(t, 0);
	rx_post(t, 1);
	fake_notify(&t->g, 0);
	assert_true(t_wait_used(t, &t->rxq, 2, T_WAIT_MS));
	usleep(50000);
	assert_int_equal(fake_used_idx(&t->g, &t->rxq), 2);
	for (uint32_t i = 0; i < 2; i++) {
		uint8_t f[MAX_FRAME], w[MAX_FRAME];
		size_t n;

		t_rx_take(t, f, &n);
		mk_frame(w, 100 + i, i);
		assert_int_equal(n, 100 + i);
		assert_memory_equal(f, w, n);
	}
	assert_idle(200);
	/* A notify on the tx queue alone wakes the device too: it looks for
	 * buffers on every wake-up. */
	rx_post(t, 2);
	rx_post(t, 3);
	rx_post(t, 4);
	fake_notify(&t->g, 1);
	for (uint32_t i = 2; i < 5; i++)
		t_rx_expect(t, 100 + i, i);
	assert_int_equal(t_stats(t).rx_frames, 5);
	t_free(t);
}

static void test_tx_size_drops(void **state)
{
	struct t *t = t_new(0);
	struct vnet_stats s;
	uint8_t f[MAX_FRAME + 16];
	uint64_t buf;
	uint16_t d;

	(void)state;
	mk_frame(f, sizeof(f), 99);
	t_tx_queue(t, f, 0, false);		/* header only */
	t_tx_queue(t, f, 0, true);		/* header, then an empty descriptor */
	t_tx_queue(t, f, VNET_ETH_HLEN - 1, true);
	t_tx_queue(t, f, MAX_FRAME + 1, false);
	t_tx_queue(t, f, MAX_FRAME + 1, true);
	/* Shorter than a header. */
	buf = t_tx_slot(t, &d);
	fake_desc(&t->g, t->txq.desc, d, buf, HDR - 4, 0, 0);
	t_tx_publish(t, d);
	fake_notify(&t->g, 1);
	t_tx_drain(t);
	s = t_stats(t);
	assert_int_equal(s.tx_drop_size, 6);
	assert_int_equal(s.tx_frames, 0);
	assert_false(fake_needs_reset(&t->g));
	/* Nothing reached kiln-net; the next good frame is the first it sees. */
	t_tx(t, 64, 1, true);
	peer_expect(t, 64, 1);
	peer_nothing(t, 50);
	t_free(t);
}

static void test_rx_drops(void **state)
{
	struct t *t = t_new(0);
	struct vnet_stats s;
	uint8_t f[MAX_FRAME];
	size_t n;

	(void)state;
	/* One buffer with room for 88 bytes of frame. */
	rx_post_len(t, 0, HDR + 88);
	fake_notify(&t->g, 0);
	peer_send(t, 1000, 1);		/* longer than the buffer */
	peer_send(t, 5, 2);		/* shorter than an Ethernet header */
	peer_send(t, 89, 3);		/* one byte too many */
	peer_send_raw(t, "", 0);		/* not a frame: ignored */
	peer_send(t, 88, 4);		/* fits exactly */
	assert_int_equal(t_rx_take(t, f, &n), 0);
	assert_int_equal(n, 88);
	{
		uint8_t w[88];

		mk_frame(w, 88, 4);
		assert_memory_equal(f, w, 88);
	}
	s = t_stats(t);
	assert_int_equal(s.rx_drop_buffer, 2);
	assert_int_equal(s.rx_drop_size, 1);
	assert_int_equal(s.rx_frames, 1);
	assert_true(vnet_link_up(t->v));

	/* A big buffer: more than an MTU's frame is dropped however it fits. */
	rx_post_len(t, 1, 4096);
	fake_notify(&t->g, 0);
	peer_send(t, MAX_FRAME + 1, 5);
	peer_send(t, 4000, 6);
	peer_send(t, MAX_FRAME, 7);
	assert_int_equal(t_rx_take(t, f, &n), 1);	/* not re-posted */
	{
		uint8_t w[MAX_FRAME];

		mk_frame(w, MAX_FRAME, 7);
		assert_int_equal(n, MAX_FRAME);
		assert_memory_equal(f, w, MAX_FRAME);
	}
	s = t_stats(t);
	assert_int_equal(s.rx_drop_size, 3);
	assert_int_equal(s.rx_drop_buffer, 2);

	/* A buffer too small for any frame comes back unused. */
	rx_post_len(t, 2, HDR + VNET_ETH_HLEN - 1);
	rx_post(t, 3);
	fake_notify(&t->g, 0);
	peer_send(t, 70, 8);
	assert_true(t_wait_used(t, &t->rxq, (uint16_t)(t->rx_seen + 2), T_WAIT_MS));
	assert_int_equal(fake_used_elem(&t->g, &t->rxq, t->rx_seen).id, 2);
	assert_int_equal(fake_used_elem(&t->g, &t->rxq, t->rx_seen).len, 0);
	t->rx_seen++;
	t_rx_expect(t, 70, 8);
	s = t_stats(t);
	assert_int_equal(s.rx_short_bufs, 1);
	assert_int_equal(s.rx_frames, 3);
	assert_false(fake_needs_reset(&t->g));
	t_free(t);
}

enum { BAD_TX_WRITABLE, BAD_TX_LOOP, BAD_TX_ADDR, BAD_TX_NEXT, BAD_RX_READABLE, BAD_RX_ADDR,
       BAD_COUNT };

/* A malformed chain needs a reset; the device works again after one. */
static void test_malformed(void **state)
{
	struct t *t = t_new(4);

	(void)state;
	for (int k = 0; k < BAD_COUNT; k++) {
		struct fake_vq *vq = k >= BAD_RX_READABLE ? &t->rxq : &t->txq;
		uint64_t b = SPARE_BASE;

		switch (k) {
		case BAD_TX_WRITABLE:
			fake_desc(&t->g, vq->desc, 200, b, HDR, VIRTQ_DESC_F_NEXT, 201);
			fake_desc(&t->g, vq->desc, 201, b + HDR, 60, VIRTQ_DESC_F_WRITE, 0);
			break;
		case BAD_TX_LOOP:
			fake_desc(&t->g, vq->desc, 200, b, HDR, VIRTQ_DESC_F_NEXT, 201);
			fake_desc(&t->g, vq->desc, 201, b + HDR, 60, VIRTQ_DESC_F_NEXT, 200);
			break;
		case BAD_TX_ADDR:
			fake_desc(&t->g, vq->desc, 200, T_RAM - 8, HDR + 60, 0, 0);
			break;
		case BAD_TX_NEXT:
			fake_desc(&t->g, vq->desc, 200, b, HDR + 60, VIRTQ_DESC_F_NEXT, QSIZE);
			break;
		case BAD_RX_READABLE:
			fake_desc(&t->g, vq->desc, 200, b, 2000, 0, 0);
			break;
		case BAD_RX_ADDR:
			fake_desc(&t->g, vq->desc, 200, ~0ULL - 100, 2000, VIRTQ_DESC_F_WRITE, 0);
			break;
		default:
			break;
		}
		if (vq == &t->rxq) {
			/* The four good buffers first, then the bad one. */
			for (uint32_t i = 0; i < 4; i++)
				peer_send(t, 50, i);
			for (uint32_t i = 0; i < 4; i++) {
				uint8_t f[MAX_FRAME];
				size_t n;

				t_rx_take(t, f, &n);
			}
			fake_avail_add(&t->g, vq, 200);
			fake_notify(&t->g, 0);
			peer_send(t, 50, 9);
		} else {
			t_tx_publish(t, 200);
			fake_notify(&t->g, 1);
		}
		t_wait_reset(t);
		/* Nothing more moves until the reset. */
		t_tx(t, 60, 1, true);
		peer_nothing(t, 50);
		if (vq == &t->rxq) {
			/* The frame that hit the bad chain is in the guest's
			 * memory or lost; drain what was queued behind it. */
			uint8_t f[64];

			while (recv(t->dev_fd, f, sizeof(f), MSG_DONTWAIT) >= 0)
				;
		}
		fake_wr(&t->g, R_STATUS, 0);
		t_bring_up(t, 4);
		assert_false(fake_needs_reset(&t->g));
		t_tx(t, 70, 2, false);
		peer_expect(t, 70, 2);
		peer_send(t, 80, 3);
		t_rx_expect(t, 80, 3);
	}
	t_free(t);
}

/* Backend full: the device waits for it without spinning, then catches up. */
static void test_tx_backpressure(void **state)
{
	struct t *t = t_new(0);
	uint32_t sent = 0, got = 0;
	uint64_t end;

	(void)state;
	/* Until the socket is full and the device holds a chain. */
	end = now_ns() + (uint64_t)T_WAIT_MS * 1000000;
	while (t_stats(t).tx_stalls == 0) {
		assert_true(now_ns() < end);
		if ((uint16_t)(t->tx_queued - fake_used_idx(&t->g, &t->txq)) < TX_SLOTS)
			t_tx(t, MAX_FRAME, sent++, true);
		else
			usleep(1000);
	}
	/* Fill the ring as well. */
	while ((uint16_t)(t->tx_queued - fake_used_idx(&t->g, &t->txq)) < TX_SLOTS)
		t_tx(t, MAX_FRAME, sent++, true);
	assert_idle(300);
	assert_true(t->tx_queued != fake_used_idx(&t->g, &t->txq));
	while (got < sent)
		peer_expect(t, MAX_FRAME, got++);
	t_tx_drain(t);
	assert_int_equal(t_stats(t).tx_frames, sent);
	peer_nothing(t, 50);
	t_free(t);
}

/* kiln-net goes away: what it sent is delivered, then the link is down. */
static void test_peer_closed(void **state)
{
	struct t *t = t_new(0);
	struct vnet_stats s;

	(void)state;
	peer_send(t, 60, 0);
	peer_send(t, 61, 1);
	close(t->peer);
	t->peer = -1;
	/* Nothing to receive into yet: no spin on the hang-up either. */
	assert_idle(200);
	rx_post(t, 0);
	rx_post(t, 1);
	rx_post(t, 2);
	fake_notify(&t->g, 0);
	t_rx_expect(t, 60, 0);
	t_rx_expect(t, 61, 1);
	{
		uint64_t end = now_ns() + (uint64_t)T_WAIT_MS * 1000000;

		while (vnet_link_up(t->v)) {
			assert_true(now_ns() < end);
			usleep(1000);
		}
	}
	assert_int_equal(cfg_status(t), 0);
	/* Tx keeps flowing into the void, counted; no reset needed. */
	for (uint32_t i = 0; i < 10; i++)
		t_tx(t, 100, i, i & 1);
	t_tx_drain(t);
	s = t_stats(t);
	assert_int_equal(s.tx_drop_link, 10);
	assert_int_equal(s.rx_frames, 2);
	assert_false(fake_needs_reset(&t->g));
	assert_idle(200);
	/* A reset does not bring it back. */
	fake_wr(&t->g, R_STATUS, 0);
	t_bring_up(t, 4);
	t_tx(t, 100, 0, true);
	t_tx_drain(t);
	assert_int_equal(t_stats(t).tx_drop_link, 11);
	assert_int_equal(cfg_status(t), 0);
	t_free(t);
}

/* kiln-net goes away while the device waits for it to drain. */
static void test_peer_closed_tx_stalled(void **state)
{
	struct t *t = t_new(0);
	struct vnet_stats s;
	uint64_t end;

	(void)state;
	end = now_ns() + (uint64_t)T_WAIT_MS * 1000000;
	while (t_stats(t).tx_stalls == 0) {
		assert_true(now_ns() < end);
		if ((uint16_t)(t->tx_queued - fake_used_idx(&t->g, &t->txq)) < TX_SLOTS)
			t_tx(t, MAX_FRAME, 0, true);
		else
			usleep(1000);
	}
	close(t->peer);
	t->peer = -1;
	t_tx_drain(t);
	s = t_stats(t);
	assert_false(vnet_link_up(t->v));
	assert_int_equal(s.tx_frames + s.tx_drop_link, t->tx_queued);
	assert_true(s.tx_drop_link >= 1);
	assert_idle(200);
	t_free(t);
}

static void test_reset(void **state)
{
	struct t *t = t_new(4);
	uint32_t sent = 0;
	uint64_t end;
	uint8_t f[MAX_FRAME];

	(void)state;
	t_tx(t, 60, 1, true);
	peer_expect(t, 60, 1);
	peer_send(t, 61, 2);
	t_rx_expect(t, 61, 2);
	fake_wr(&t->g, R_STATUS, 0);
	assert_int_equal(fake_rd(&t->g, R_STATUS), 0);
	t_bring_up(t, 4);
	t_tx(t, 62, 3, false);
	peer_expect(t, 62, 3);
	peer_send(t, 63, 4);
	t_rx_expect(t, 63, 4);

	/* Reset with a tx chain held (backend full) and an rx chain held (a
	 * dropped frame left it unused): neither may reach the new rings. */
	peer_send(t, MAX_FRAME + 1, 5);
	end = now_ns() + (uint64_t)T_WAIT_MS * 1000000;
	while (t_stats(t).rx_drop_size == 0) {
		assert_true(now_ns() < end);
		usleep(1000);
	}
	while (t_stats(t).tx_stalls == 0) {
		assert_true(now_ns() < end);
		if ((uint16_t)(t->tx_queued - fake_used_idx(&t->g, &t->txq)) < TX_SLOTS)
			t_tx(t, MAX_FRAME, 1000 + sent++, true);
		else
			usleep(1000);
	}
	fake_wr(&t->g, R_STATUS, 0);
	/* Drain what the old generation sent, then the new one must start clean. */
	while (peer_recv(t, f, sizeof(f), 100) > 0)
		;
	t_bring_up(t, 0);
	assert_idle(100);
	assert_int_equal(t_stats(t).tx_drop_reset, 1);
	/* Chains queued behind the held one were never popped: the reset
	 * threw them away with the ring. */
	assert_true(t_stats(t).tx_frames + 1 <= sent + 2);
	assert_int_equal(fake_used_idx(&t->g, &t->txq), 0);
	assert_int_equal(fake_used_idx(&t->g, &t->rxq), 0);
	peer_nothing(t, 50);
	t_tx(t, 64, 6, true);
	peer_expect(t, 64, 6);
	t_tx_drain(t);
	assert_int_equal(fake_used_idx(&t->g, &t->txq), 1);
	rx_post(t, 5);
	fake_notify(&t->g, 0);
	peer_send(t, 65, 7);
	assert_true(t_wait_used(t, &t->rxq, 1, T_WAIT_MS));
	assert_int_equal(fake_used_elem(&t->g, &t->rxq, 0).id, 5);
	t_rx_expect(t, 65, 7);
	t_free(t);
}

/* kiln-net keeps sending while the guest resets the device again and again. */
struct pump {
	int fd;
	int stop;
	unsigned sent;
};

static void *pump_thread(void *arg)
{
	struct pump *p = arg;
	uint8_t f[MAX_FRAME];
	bool idle;

	while (!__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE)) {
		mk_frame(f, 200, p->sent);
		idle = send(p->fd, f, 200, MSG_DONTWAIT | MSG_NOSIGNAL) != 200;
		if (!idle)
			p->sent++;
		/* The guest's tx frames: thrown away. */
		while (recv(p->fd, f, sizeof(f), MSG_DONTWAIT) > 0)
			idle = false;
		if (idle)
			usleep(200);
	}
	return NULL;
}

static void test_reset_under_load(void **state)
{
	struct t *t = t_new(RX_BUFS);
	struct pump p = { .fd = t->peer };
	uint8_t f[MAX_FRAME];
	pthread_t th;
	size_t n;

	(void)state;
	assert_int_equal(pthread_create(&th, NULL, pump_thread, &p), 0);
	for (int round = 0; round < 20; round++) {
		for (int i = 0; i < 10; i++) {
			uint16_t id = t_rx_take(t, f, &n);

			assert_int_equal(n, 200);
			rx_post(t, id);
			fake_notify(&t->g, 0);
			t_tx(t, 100, (uint32_t)i, i & 1);
		}
		fake_wr(&t->g, R_STATUS, 0);
		t_bring_up(t, RX_BUFS);
	}
	__atomic_store_n(&p.stop, 1, __ATOMIC_RELEASE);
	pthread_join(th, NULL);
	assert_false(fake_needs_reset(&t->g));
	assert_true(vnet_link_up(t->v));
	t_free(t);
}

/* ---- many frames both ways at once ---- */

#define BULK 2000

struct bulk_peer {
	struct t *t;
	unsigned done;
	bool ok;
};

static size_t bulk_len(uint32_t seq)
{
	return VNET_ETH_HLEN + (seq * 7919u) % (MAX_FRAME - VNET_ETH_HLEN + 1);
}

static void *bulk_writer(void *arg)
{
	struct bulk_peer *b = arg;
	uint8_t f[MAX_FRAME];

	b->ok = true;
	for (uint32_t i = 0; i < BULK && b->ok; i++) {
		mk_frame(f, bulk_len(i), i);
		b->ok = send(b->t->peer, f, bulk_len(i), MSG_NOSIGNAL) == (ssize_t)bulk_len(i);
		b->done = i + 1;
	}
	return NULL;
}

static void *bulk_reader(void *arg)
{
	struct bulk_peer *b = arg;
	uint8_t f[MAX_FRAME + 16], w[MAX_FRAME];
	struct pollfd p = { .fd = b->t->peer, .events = POLLIN };
	ssize_t n;

	b->ok = true;
	for (uint32_t i = 0; i < BULK && b->ok; i++) {
		b->ok = poll(&p, 1, T_WAIT_MS) == 1;
		n = b->ok ? recv(b->t->peer, f, sizeof(f), 0) : -1;
		mk_frame(w, bulk_len(1000000 + i), 1000000 + i);
		b->ok = n == (ssize_t)bulk_len(1000000 + i) && memcmp(f, w, (size_t)n) == 0;
		b->done = i + 1;
	}
	return NULL;
}

static void test_bulk(void **state)
{
	struct t *t = t_new(RX_BUFS);
	struct bulk_peer w = { .t = t }, r = { .t = t };
	uint8_t f[MAX_FRAME], want[MAX_FRAME];
	uint32_t txn = 0, rxn = 0;
	pthread_t tw, tr;
	struct vnet_stats s;
	uint64_t end;
	size_t n;

	(void)state;
	assert_int_equal(pthread_create(&tw, NULL, bulk_writer, &w), 0);
	assert_int_equal(pthread_create(&tr, NULL, bulk_reader, &r), 0);
	end = now_ns() + 60ULL * 1000000000;
	while (txn < BULK || rxn < BULK) {
		bool progress = false;

		assert_true(now_ns() < end);
		/* Queue tx chains while there is room, a kick per batch. */
		while (txn < BULK &&
		       (uint16_t)(t->tx_queued - fake_used_idx(&t->g, &t->txq)) < TX_SLOTS) {
			uint16_t d;
			uint64_t buf = t_tx_slot(t, &d);
			size_t len = bulk_len(1000000 + txn);

			memset(fake_ptr(&t->g, buf, HDR), 0, HDR);
			mk_frame(fake_ptr(&t->g, buf + HDR, len), len, 1000000 + txn);
			fake_desc(&t->g, t->txq.desc, d, buf, HDR, VIRTQ_DESC_F_NEXT,
				  (uint16_t)(d + 1));
			fake_desc(&t->g, t->txq.desc, (uint16_t)(d + 1), buf + HDR, (uint32_t)len,
				  0, 0);
			t_tx_publish(t, d);
			txn++;
			progress = true;
		}
		if (progress)
			fake_notify(&t->g, 1);
		/* Take rx frames and give the buffers back. */
		while (rxn < BULK && fake_used_idx(&t->g, &t->rxq) != t->rx_seen) {
			uint16_t id = t_rx_take(t, f, &n);

			mk_frame(want, bulk_len(rxn), rxn);
			assert_int_equal(n, bulk_len(rxn));
			assert_memory_equal(f, want, n);
			rx_post(t, id);
			rxn++;
			progress = true;
		}
		if (progress)
			fake_notify(&t->g, 0);
		else
			usleep(50);
	}
	pthread_join(tw, NULL);
	pthread_join(tr, NULL);
	assert_true(w.ok);
	assert_true(r.ok);
	assert_int_equal(w.done, BULK);
	assert_int_equal(r.done, BULK);
	t_tx_drain(t);
	s = t_stats(t);
	assert_int_equal(s.tx_frames, BULK);
	assert_int_equal(s.rx_frames, BULK);
	assert_int_equal(s.tx_drop_size + s.tx_drop_link + s.tx_drop_error, 0);
	assert_int_equal(s.rx_drop_size + s.rx_drop_buffer + s.rx_short_bufs + s.rx_errors, 0);
	peer_nothing(t, 50);
	assert_int_equal(fake_used_idx(&t->g, &t->rxq), t->rx_seen);
	t_free(t);
}

/* ---- under its seccomp filter ---- */

/*
 * In a child: the event thread filters itself (SECCOMP_ROLE_NET) and then
 * moves frames both ways, stalls on a full backend, sees a reset and a
 * hang-up. A call outside the role's list kills the child by SIGSYS. cmocka
 * asserts in the child would unwind into a copy of the test runner, so the
 * child only reports through its exit status.
 */
static int filtered_child(void)
{
	struct t *t = t_new(0);
	uint8_t f[MAX_FRAME];
	int ret = 1;

	vnet_stop(t->v);
	if (vnet_start(t->v, t->g.dev, true) != 0)
		goto out;
	rx_post(t, 0);
	fake_notify(&t->g, 0);
	peer_send(t, 60, 0);
	t_rx_expect(t, 60, 0);
	t_tx(t, 70, 1, true);
	peer_expect(t, 70, 1);
	while (t_stats(t).tx_stalls == 0)
		if ((uint16_t)(t->tx_queued - fake_used_idx(&t->g, &t->txq)) < TX_SLOTS)
			t_tx(t, MAX_FRAME, 2, true);
	while (peer_recv(t, f, sizeof(f), 50) > 0)
		;
	t_tx_drain(t);
	fake_wr(&t->g, R_STATUS, 0);
	t_bring_up(t, 4);
	peer_send(t, 80, 3);
	t_rx_expect(t, 80, 3);
	close(t->peer);
	t->peer = -1;
	t_tx(t, 90, 4, false);
	t_tx_drain(t);
	while (vnet_link_up(t->v))
		usleep(1000);
	ret = 0;
out:
	t_free(t);
	return ret;
}

static void test_seccomp_filter(void **state)
{
	int status = 0;
	pid_t pid;

	(void)state;
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(filtered_child());
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("filtered child: status 0x%x", status);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create_params),
		cmocka_unit_test(test_config),
		cmocka_unit_test(test_tx),
		cmocka_unit_test(test_rx),
		cmocka_unit_test(test_rx_no_buffers),
		cmocka_unit_test(test_tx_size_drops),
		cmocka_unit_test(test_rx_drops),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_tx_backpressure),
		cmocka_unit_test(test_peer_closed),
		cmocka_unit_test(test_peer_closed_tx_stalled),
		cmocka_unit_test(test_reset),
		cmocka_unit_test(test_reset_under_load),
		cmocka_unit_test(test_bulk),
		/* Last: a failing child would otherwise run the tests after it. */
		cmocka_unit_test(test_seccomp_filter),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
