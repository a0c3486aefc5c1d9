/*
 * virtio-vsock tests without KVM: a fake guest driver brings the device up
 * over MMIO (three queues in fake guest RAM), posts and recycles rx buffers
 * and hand-builds tx packets, while real Unix sockets play the host side. The
 * device's event thread runs for real, so everything here waits with a
 * timeout instead of assuming an order between threads.
 */
#include "virtio_fake.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "util.h"
#include "vmm/snapfile.h"
#include "vmm/virtio/vsock.h"

#define T_RAM (16ULL << 20)
#define T_CID 3
#define T_HOST VIRTIO_VSOCK_HOST_CID
#define T_FEATURES (FAKE_VERSION_1 | VIRTIO_BIT(VIRTIO_RING_F_EVENT_IDX))
#define T_WAIT_MS 5000

#define HDR ((uint32_t)sizeof(struct virtio_vsock_hdr))
#define RXQ_SIZE 64
#define TXQ_SIZE 128
#define EVQ_SIZE 8
#define RX_BUFS 32			/* a descriptor pair each when split */
#define RX_PAYLOAD 4096
#define RX_STRIDE 0x2000ULL
#define TX_SLOTS (TXQ_SIZE / 2)		/* a descriptor pair each */
#define TX_STRIDE 0x11000ULL		/* a header and 64 KiB + 1 */
#define RX_BUF_BASE 0x100000ULL
#define TX_BUF_BASE 0x200000ULL
#define G_BUF_ALLOC (64u * 1024)	/* what the fake guest advertises */

#define OP_REQUEST VIRTIO_VSOCK_OP_REQUEST
#define OP_RESPONSE VIRTIO_VSOCK_OP_RESPONSE
#define OP_RST VIRTIO_VSOCK_OP_RST
#define OP_SHUTDOWN VIRTIO_VSOCK_OP_SHUTDOWN
#define OP_RW VIRTIO_VSOCK_OP_RW
#define OP_CREDIT_UPDATE VIRTIO_VSOCK_OP_CREDIT_UPDATE
#define OP_CREDIT_REQUEST VIRTIO_VSOCK_OP_CREDIT_REQUEST
#define SHUT_RCV_F VIRTIO_VSOCK_SHUTDOWN_RCV
#define SHUT_SEND_F VIRTIO_VSOCK_SHUTDOWN_SEND

struct t {
	struct fake_guest g;
	struct vsock *v;
	char dir[64];
	char path[96];
	struct fake_vq rxq, txq, evq;
	uint16_t rx_seen;	/* rx used entries consumed */
	uint16_t tx_queued;	/* tx chains written (published or not) */
	bool rx_split;		/* rx buffers as header + payload descriptors */
	bool rx_hold;		/* keep consumed rx buffers instead of re-posting */
	unsigned nheld;
	unsigned held[RX_BUFS];
	unsigned irqs;
};

/* The guest's side of one connection. */
struct gc {
	uint32_t gport, hport;
	uint32_t buf_alloc;	/* advertised by the guest */
	uint32_t fwd_cnt;	/* consumed by the guest */
	uint32_t fwd_told;	/* fwd_cnt in the last packet the guest sent */
	uint32_t tx_cnt;	/* sent by the guest */
	uint32_t peer_buf_alloc, peer_fwd_cnt;	/* the device's credit */
};

struct pkt {
	struct virtio_vsock_hdr h;
	uint32_t len;
	uint8_t data[RX_PAYLOAD];
};

static uint8_t pat(size_t i)
{
	return (uint8_t)((i * 2654435761u) >> 13);
}

static void t_irq(void *ctx)
{
	__atomic_add_fetch(&((struct t *)ctx)->irqs, 1, __ATOMIC_RELAXED);
}

static unsigned count_dir(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	unsigned n = 0;

	assert_non_null(d);
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

/* ---- the fake driver ---- */

static void t_rx_post(struct t *t, unsigned i)
{
	uint64_t buf = RX_BUF_BASE + i * RX_STRIDE;
	uint16_t d = (uint16_t)(t->rx_split ? 2 * i : i);

	if (t->rx_split) {
		fake_desc(&t->g, t->rxq.desc, d, buf, HDR, FAKE_WNEXT, (uint16_t)(d + 1));
		fake_desc(&t->g, t->rxq.desc, (uint16_t)(d + 1), buf + HDR, RX_PAYLOAD,
			  VIRTQ_DESC_F_WRITE, 0);
	} else {
		fake_desc(&t->g, t->rxq.desc, d, buf, HDR + RX_PAYLOAD, VIRTQ_DESC_F_WRITE, 0);
	}
	fake_avail_add(&t->g, &t->rxq, d);
}

/* Negotiate, set up the three queues, post every rx buffer, DRIVER_OK. */
static void t_bring_up(struct t *t)
{
	t->rxq = (struct fake_vq){ .size = RXQ_SIZE, .desc = 0x10000, .avail = 0x11000,
				   .used = 0x12000 };
	t->txq = (struct fake_vq){ .size = TXQ_SIZE, .desc = 0x20000, .avail = 0x21000,
				   .used = 0x22000 };
	t->evq = (struct fake_vq){ .size = EVQ_SIZE, .desc = 0x30000, .avail = 0x31000,
				   .used = 0x32000 };
	assert_true(fake_negotiate(&t->g, T_FEATURES) & VIRTIO_STATUS_FEATURES_OK);
	fake_vq_clear(&t->g, &t->rxq);
	fake_vq_clear(&t->g, &t->txq);
	fake_vq_clear(&t->g, &t->evq);
	assert_int_equal(fake_queue_setup(&t->g, 0, &t->rxq), 1);
	assert_int_equal(fake_queue_setup(&t->g, 1, &t->txq), 1);
	assert_int_equal(fake_queue_setup(&t->g, 2, &t->evq), 1);
	t->rx_seen = 0;
	t->tx_queued = 0;
	t->nheld = 0;
	for (unsigned i = 0; i < RX_BUFS; i++)
		t_rx_post(t, i);
	fake_driver_ok(&t->g);
	assert_true(fake_rd(&t->g, R_STATUS) & VIRTIO_STATUS_DRIVER_OK);
	fake_notify(&t->g, 0);
}

static struct t *t_new(unsigned max_conns, bool rx_split)
{
	struct t *t = calloc(1, sizeof(*t));

	assert_non_null(t);
	snprintf(t->dir, sizeof(t->dir), "/tmp/kiln-vsock-XXXXXX");
	assert_non_null(mkdtemp(t->dir));
	snprintf(t->path, sizeof(t->path), "%s/v.sock", t->dir);
	assert_int_equal(vsock_create(&t->v, &(struct vsock_params){ .guest_cid = T_CID,
								   .uds_path = t->path,
								   .max_conns = max_conns }), 0);
	assert_int_equal(guest_mem_create(&t->g.mem, T_RAM), 0);
	assert_int_equal(virtio_mmio_create(&t->g.dev, &vsock_ops, t->v, t->g.mem, t_irq, t), 0);
	assert_int_equal(virtio_mmio_register(t->g.dev, &t->g.bus, FAKE_MMIO_BASE), 0);
	assert_int_equal(vsock_start(t->v, t->g.dev, false), 0);
	t->rx_split = rx_split;
	t_bring_up(t);
	return t;
}

/* The VMM's order: stop the thread, free the transport, then the device. */
static void t_free(struct t *t)
{
	vsock_stop(t->v);
	virtio_mmio_free(t->g.dev);
	vsock_free(t->v);
	guest_mem_free(t->g.mem);
	/* Fails unless the device unlinked its socket. */
	assert_int_equal(rmdir(t->dir), 0);
	free(t);
}

static bool t_wait_used(struct t *t, struct fake_vq *vq, uint16_t seen, int ms)
{
	uint64_t end = now_ns() + (uint64_t)ms * 1000000;
	unsigned spins = 0;

	while (fake_used_idx(&t->g, vq) == seen) {
		if (now_ns() > end)
			return false;
		if (++spins < 200)
			sched_yield();
		else
			usleep(100);
	}
	return true;
}

/* The next rx packet within ms, copied out; its buffer goes back to the device. */
static bool t_recv_ms(struct t *t, struct pkt *p, int ms)
{
	struct virtq_used_elem e;
	uint64_t buf;
	unsigned i;

	if (!t_wait_used(t, &t->rxq, t->rx_seen, ms))
		return false;
	e = fake_used_elem(&t->g, &t->rxq, t->rx_seen);
	t->rx_seen++;
	i = t->rx_split ? e.id / 2 : e.id;
	assert_true(i < RX_BUFS);
	assert_true(e.len >= HDR && e.len <= HDR + RX_PAYLOAD);
	buf = RX_BUF_BASE + i * RX_STRIDE;
	memcpy(&p->h, fake_ptr(&t->g, buf, HDR), HDR);
	p->len = e.len - HDR;
	memcpy(p->data, fake_ptr(&t->g, buf + HDR, RX_PAYLOAD), p->len);
	assert_int_equal(p->h.len, p->len);
	assert_int_equal(p->h.src_cid, T_HOST);
	assert_int_equal(p->h.dst_cid, T_CID);
	assert_int_equal(p->h.type, VIRTIO_VSOCK_TYPE_STREAM);
	assert_int_equal(p->h.buf_alloc, VSOCK_BUF_ALLOC);
	if (p->h.op != OP_RW)
		assert_int_equal(p->len, 0);
	if (t->rx_hold) {
		t->held[t->nheld++] = i;
	} else {
		t_rx_post(t, i);
		fake_notify(&t->g, 0);
	}
	return true;
}

static void t_recv(struct t *t, struct pkt *p)
{
	assert_true(t_recv_ms(t, p, T_WAIT_MS));
}

static void t_no_packet(struct t *t, int ms)
{
	usleep((useconds_t)ms * 1000);
	assert_int_equal(fake_used_idx(&t->g, &t->rxq), t->rx_seen);
}

/* Room for one more tx chain: its buffer, and its first descriptor in *d. */
static uint64_t t_tx_slot(struct t *t, uint16_t *d)
{
	uint16_t slot = t->tx_queued % TX_SLOTS;

	fake_wait_room(&t->g, &t->txq, t->tx_queued, TX_SLOTS, T_WAIT_MS);
	*d = (uint16_t)(2 * slot);
	return TX_BUF_BASE + slot * TX_STRIDE;
}

/* Make chain d available, now or with the next publish. */
static void t_tx_add(struct t *t, uint16_t d, bool publish)
{
	struct virtq_avail *a = fake_ptr(&t->g, t->txq.avail, 4 + 2ULL * TXQ_SIZE);

	a->ring[t->tx_queued & (TXQ_SIZE - 1)] = d;
	t->tx_queued++;
	if (publish)
		fake_avail_set_idx(&t->g, &t->txq, t->tx_queued);
}

/* Chain d over [buf, buf + len), in two descriptors if split. */
static void t_tx_chain(struct t *t, uint16_t d, uint64_t buf, uint32_t len, uint32_t split,
		       bool publish)
{
	if (split && split < len) {
		fake_desc(&t->g, t->txq.desc, d, buf, split, VIRTQ_DESC_F_NEXT, (uint16_t)(d + 1));
		fake_desc(&t->g, t->txq.desc, (uint16_t)(d + 1), buf + split, len - split, 0, 0);
	} else {
		fake_desc(&t->g, t->txq.desc, d, buf, len, 0, 0);
	}
	t_tx_add(t, d, publish);
}

/* Header h then dlen bytes of data; the chain holds exactly that. */
static void t_queue(struct t *t, const struct virtio_vsock_hdr *h, const void *data,
		    uint32_t dlen, uint32_t split, bool publish)
{
	uint16_t d;
	uint64_t buf = t_tx_slot(t, &d);

	memcpy(fake_ptr(&t->g, buf, HDR), h, HDR);
	if (dlen)
		memcpy(fake_ptr(&t->g, buf + HDR, dlen), data, dlen);
	t_tx_chain(t, d, buf, HDR + dlen, split, publish);
}

static void t_publish_kick(struct t *t)
{
	fake_avail_set_idx(&t->g, &t->txq, t->tx_queued);
	fake_notify(&t->g, 1);
}

/* Wait until the device has consumed every tx chain. */
static void t_tx_drain(struct t *t)
{
	uint64_t end = now_ns() + (uint64_t)T_WAIT_MS * 1000000;

	while (fake_used_idx(&t->g, &t->txq) != t->tx_queued) {
		assert_true(now_ns() < end);
		usleep(100);
	}
}

static struct virtio_vsock_hdr gc_hdr(const struct gc *c, uint16_t op, uint32_t flags,
				      uint32_t len)
{
	return (struct virtio_vsock_hdr){
		.src_cid = T_CID, .dst_cid = T_HOST, .src_port = c->gport, .dst_port = c->hport,
		.len = len, .type = VIRTIO_VSOCK_TYPE_STREAM, .op = op, .flags = flags,
		.buf_alloc = c->buf_alloc, .fwd_cnt = c->fwd_cnt,
	};
}

static void gc_queue(struct t *t, struct gc *c, uint16_t op, uint32_t flags, const void *data,
		     uint32_t len, uint32_t split, bool publish)
{
	struct virtio_vsock_hdr h = gc_hdr(c, op, flags, len);

	t_queue(t, &h, data, len, split, publish);
	c->fwd_told = c->fwd_cnt;
	if (op == OP_RW)
		c->tx_cnt += len;
}

static void gc_send(struct t *t, struct gc *c, uint16_t op, uint32_t flags, const void *data,
		    uint32_t len)
{
	gc_queue(t, c, op, flags, data, len, 0, true);
	fake_notify(&t->g, 1);
}

static void gc_take(struct gc *c, const struct pkt *p)
{
	c->peer_buf_alloc = p->h.buf_alloc;
	c->peer_fwd_cnt = p->h.fwd_cnt;
}

static uint32_t gc_credit(const struct gc *c)
{
	return c->peer_buf_alloc - (c->tx_cnt - c->peer_fwd_cnt);
}

/* The next packet for c other than a credit update must be op. */
static void t_expect(struct t *t, struct gc *c, uint16_t op, struct pkt *p)
{
	do {
		t_recv(t, p);
		assert_int_equal(p->h.src_port, c->hport);
		assert_int_equal(p->h.dst_port, c->gport);
		gc_take(c, p);
	} while (p->h.op == OP_CREDIT_UPDATE && op != OP_CREDIT_UPDATE);
	assert_int_equal(p->h.op, op);
}

/* ---- the host side ---- */

static int h_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

static void h_write(int fd, const void *buf, size_t n)
{
	assert_int_equal(send(fd, buf, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* read() after waiting up to ms: bytes, 0 at EOF, or -errno (-ETIMEDOUT). */
static ssize_t h_read(int fd, void *buf, size_t n, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	ssize_t r;

	if (poll(&p, 1, ms) == 0)
		return -ETIMEDOUT;
	r = read(fd, buf, n);
	return r < 0 ? -errno : r;
}

static void h_read_exact(int fd, void *buf, size_t n)
{
	size_t got = 0;
	ssize_t r;

	while (got < n) {
		r = h_read(fd, (char *)buf + got, n - got, T_WAIT_MS);
		assert_true(r > 0);
		got += (size_t)r;
	}
}

/* Read until the device closes (EOF or reset); false on timeout. */
static bool h_eof(int fd, int ms)
{
	char buf[4096];
	ssize_t n;

	for (;;) {
		n = h_read(fd, buf, sizeof(buf), ms);
		if (n == 0 || n == -ECONNRESET)
			return true;
		if (n < 0)
			return false;
	}
}

static int t_listen(struct t *t, uint32_t port)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s_%u", t->path, port);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 64), 0);
	return fd;
}

static void t_unlisten(struct t *t, int fd, uint32_t port)
{
	char path[128];

	snprintf(path, sizeof(path), "%s_%u", t->path, port);
	close(fd);
	assert_int_equal(unlink(path), 0);
}

static int h_accept(int lfd)
{
	struct pollfd p = { .fd = lfd, .events = POLLIN };
	int fd;

	assert_int_equal(poll(&p, 1, T_WAIT_MS), 1);
	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	assert_true(fd >= 0);
	return fd;
}

/* CONNECT line, OP_REQUEST to the guest, OP_RESPONSE back, "OK <port>\n". */
static int t_host_connect(struct t *t, struct gc *c, uint32_t gport, const char *extra)
{
	char line[64], ok[32], got[32];
	struct pkt p;
	int fd = h_connect(t->path), n;

	n = snprintf(line, sizeof(line), "CONNECT %u\n%s", gport, extra ? extra : "");
	h_write(fd, line, (size_t)n);
	t_recv(t, &p);
	assert_int_equal(p.h.op, OP_REQUEST);
	assert_int_equal(p.h.dst_port, gport);
	assert_true(p.h.src_port >= 0x40000000u);
	*c = (struct gc){ .gport = gport, .hport = p.h.src_port, .buf_alloc = G_BUF_ALLOC };
	gc_take(c, &p);
	gc_send(t, c, OP_RESPONSE, 0, NULL, 0);
	n = snprintf(ok, sizeof(ok), "OK %u\n", c->hport);
	h_read_exact(fd, got, (size_t)n);
	assert_memory_equal(got, ok, (size_t)n);
	return fd;
}

/* Guest connect to host port hport from gport; returns the accepted host fd. */
static int t_guest_connect(struct t *t, struct gc *c, int lfd, uint32_t gport, uint32_t hport)
{
	struct pkt p;

	*c = (struct gc){ .gport = gport, .hport = hport, .buf_alloc = G_BUF_ALLOC };
	gc_send(t, c, OP_REQUEST, 0, NULL, 0);
	t_expect(t, c, OP_RESPONSE, &p);
	return h_accept(lfd);
}

/* ---- tests ---- */

static void test_create_params(void **state)
{
	char dir[] = "/tmp/kiln-vsock-XXXXXX", path[160], longp[120];
	unsigned fds = count_dir("/proc/self/fd");
	struct vsock *v = (struct vsock *)&v;	/* must come back NULL */
	struct vsock_params prm;
	struct stat st;
	int fd;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/v.sock", dir);
	/* CIDs 0-2 and -1 are reserved, the upper 32 bits too. */
	prm = (struct vsock_params){ .guest_cid = 2, .uds_path = path };
	assert_int_equal(vsock_create(&v, &prm), -EINVAL);
	assert_null(v);
	prm.guest_cid = 0xffffffffULL;
	assert_int_equal(vsock_create(&v, &prm), -EINVAL);
	prm.guest_cid = 1ULL << 32 | 3;
	assert_int_equal(vsock_create(&v, &prm), -EINVAL);
	prm = (struct vsock_params){ .uds_path = path, .max_conns = VSOCK_MAX_CONNS + 1 };
	assert_int_equal(vsock_create(&v, &prm), -EINVAL);
	assert_int_equal(vsock_create(&v, &(struct vsock_params){ .uds_path = "" }), -EINVAL);
	memset(longp, 'a', sizeof(longp) - 1);
	longp[0] = '/';
	longp[sizeof(longp) - 1] = 0;
	/* 100 bytes: fits sun_path alone, not with "_<port>". */
	longp[100] = 0;
	assert_int_equal(vsock_create(&v, &(struct vsock_params){ .uds_path = longp }),
			 -ENAMETOOLONG);

	/* Defaults; the path exists afterwards and a second device cannot take it. */
	assert_int_equal(vsock_create(&v, &(struct vsock_params){ .uds_path = path }), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	{
		struct vsock *v2;

		assert_int_equal(vsock_create(&v2, &(struct vsock_params){ .uds_path = path }),
				 -EADDRINUSE);
	}
	/* Free without start: nothing to join, the socket file goes. */
	vsock_free(v);
	assert_int_equal(stat(path, &st), -1);

	/* A file that replaced ours is not ours to unlink. */
	assert_int_equal(vsock_create(&v, &(struct vsock_params){ .uds_path = path }), 0);
	assert_int_equal(unlink(path), 0);
	fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	close(fd);
	vsock_free(v);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(rmdir(dir), 0);
	assert_int_equal(count_dir("/proc/self/fd"), fds);
}

static void test_identity(void **state)
{
	struct t *t = t_new(0, false);
	uint64_t cid = 0;
	uint32_t lo, hi;

	assert_int_equal(fake_rd(&t->g, R_DEVICE_ID), VIRTIO_ID_VSOCK);
	fake_wr(&t->g, R_DEV_FEATURES_SEL, 0);
	lo = fake_rd(&t->g, R_DEV_FEATURES);
	fake_wr(&t->g, R_DEV_FEATURES_SEL, 1);
	hi = fake_rd(&t->g, R_DEV_FEATURES);
	/* No device bits (no SEQPACKET); VERSION_1 from the transport. */
	assert_int_equal(lo & 0xffffff, 0);
	assert_true(hi & 1);
	assert_true(io_dispatch(&t->g.bus, FAKE_MMIO_BASE + R_CONFIG, (uint8_t *)&cid, 8, false));
	assert_int_equal(cid, T_CID);
	assert_int_equal(fake_rd(&t->g, R_CONFIG), T_CID);
	assert_int_equal(fake_rd(&t->g, R_CONFIG + 4), 0);
	fake_wr(&t->g, R_QUEUE_SEL, 2);
	assert_int_equal(fake_rd(&t->g, R_QUEUE_NUM_MAX), VSOCK_QUEUE_SIZE);
	fake_wr(&t->g, R_QUEUE_SEL, 3);
	assert_int_equal(fake_rd(&t->g, R_QUEUE_NUM_MAX), 0);
	t_free(t);
}

static void test_host_connect(void **state)
{
	struct t *t = t_new(0, false);
	char buf[32];
	struct pkt p;
	struct gc c;
	int fd;

	fd = t_host_connect(t, &c, 52, NULL);
	gc_send(t, &c, OP_RW, 0, "ping", 4);
	h_read_exact(fd, buf, 4);
	assert_memory_equal(buf, "ping", 4);
	h_write(fd, "pong!", 5);
	t_expect(t, &c, OP_RW, &p);
	assert_int_equal(p.len, 5);
	assert_memory_equal(p.data, "pong!", 5);
	/* Host closes: the guest hears SHUTDOWN SEND, closes too, gets the RST. */
	close(fd);
	t_expect(t, &c, OP_SHUTDOWN, &p);
	assert_int_equal(p.h.flags, SHUT_SEND_F);
	gc_send(t, &c, OP_SHUTDOWN, SHUT_RCV_F | SHUT_SEND_F, NULL, 0);
	t_expect(t, &c, OP_RST, &p);

	/* Bytes right behind the CONNECT line belong to the stream. */
	fd = t_host_connect(t, &c, 53, "early bytes");
	t_expect(t, &c, OP_RW, &p);
	assert_int_equal(p.len, 11);
	assert_memory_equal(p.data, "early bytes", 11);
	/* Guest resets: the host connection just closes. */
	gc_send(t, &c, OP_RST, 0, NULL, 0);
	assert_true(h_eof(fd, T_WAIT_MS));
	close(fd);
	t_no_packet(t, 50);
	t_free(t);
}

static void test_host_connect_refused(void **state)
{
	struct t *t = t_new(0, false);
	struct pkt p;
	struct gc c;
	char buf[8];
	int fd = h_connect(t->path);

	h_write(fd, "CONNECT 99\n", 11);
	t_recv(t, &p);
	assert_int_equal(p.h.op, OP_REQUEST);
	c = (struct gc){ .gport = 99, .hport = p.h.src_port };
	/* Nothing listens on 99: closed without an OK. */
	gc_send(t, &c, OP_RST, 0, NULL, 0);
	assert_int_equal(h_read(fd, buf, sizeof(buf), T_WAIT_MS), 0);
	close(fd);
	/* A response after the reset is for no connection: reset again. */
	gc_send(t, &c, OP_RESPONSE, 0, NULL, 0);
	t_expect(t, &c, OP_RST, &p);
	t_free(t);
}

static void test_connect_line_bad(void **state)
{
	static const char *const bad[] = {
		"FOO 52\n", "CONNECT\n", "CONNECT \n", "CONNECT 52x\n", "CONNECT 4294967296\n",
		"CONNECT -1\n", "connect 52\n", " CONNECT 52\n", "CONNECT  52\n",
		"CONNECT 52\r\n", "CONNECT 00000000052\n", "\n",
		"CONNECT 5555555555555555555555555555555555555\n",
		"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
	};
	struct t *t = t_new(0, false);
	struct pkt p;
	struct gc c;
	int fd;

	for (unsigned i = 0; i < ARRAY_SIZE(bad); i++) {
		fd = h_connect(t->path);
		h_write(fd, bad[i], strlen(bad[i]));
		assert_true(h_eof(fd, T_WAIT_MS));
		close(fd);
	}
	/* EOF in the middle of the line. */
	fd = h_connect(t->path);
	h_write(fd, "CONNECT 5", 9);
	shutdown(fd, SHUT_WR);
	assert_true(h_eof(fd, T_WAIT_MS));
	close(fd);
	/* None of that reached the guest. */
	t_no_packet(t, 50);
	/* A line in pieces is fine. */
	fd = h_connect(t->path);
	h_write(fd, "CONN", 4);
	usleep(20000);
	h_write(fd, "ECT 4294967", 11);
	usleep(20000);
	h_write(fd, "295\n", 4);
	t_recv(t, &p);
	assert_int_equal(p.h.op, OP_REQUEST);
	assert_int_equal(p.h.dst_port, 4294967295u);
	c = (struct gc){ .gport = p.h.dst_port, .hport = p.h.src_port };
	gc_send(t, &c, OP_RST, 0, NULL, 0);
	assert_true(h_eof(fd, T_WAIT_MS));
	close(fd);
	t_free(t);
}

static void test_timeouts(void **state)
{
	struct t *t = t_new(0, false);
	uint64_t start;
	struct pkt p;
	int fd1, fd2;

	fd1 = h_connect(t->path);
	h_write(fd1, "CONN", 4);
	fd2 = h_connect(t->path);
	h_write(fd2, "CONNECT 77\n", 11);
	t_recv(t, &p);
	assert_int_equal(p.h.op, OP_REQUEST);
	assert_int_equal(p.h.dst_port, 77);
	start = now_ns();
	/* Neither the line nor the guest's answer came in time. */
	assert_true(h_eof(fd1, VSOCK_LINE_TIMEOUT_MS + 2000));
	assert_true(h_eof(fd2, VSOCK_REQUEST_TIMEOUT_MS + 2000));
	assert_true(now_ns() - start > (VSOCK_LINE_TIMEOUT_MS - 1000) * 1000000ULL);
	/* The guest heard the request, so it hears the reset. */
	t_recv(t, &p);
	assert_int_equal(p.h.op, OP_RST);
	assert_int_equal(p.h.dst_port, 77);
	close(fd1);
	close(fd2);
	t_free(t);
}

struct h_io {
	int fd;
	size_t total;
	size_t done;
	bool slow;
	int err;
};

static void *h_writer(void *arg)
{
	struct h_io *w = arg;
	uint8_t buf[8191];
	ssize_t n;
	size_t len;

	while (w->done < w->total) {
		len = w->total - w->done < sizeof(buf) ? w->total - w->done : sizeof(buf);
		for (size_t i = 0; i < len; i++)
			buf[i] = pat(w->done + i);
		n = send(w->fd, buf, len, MSG_NOSIGNAL);
		if (n <= 0) {
			w->err = errno;
			break;
		}
		w->done += (size_t)n;
	}
	shutdown(w->fd, SHUT_WR);
	return NULL;
}

static void *h_reader(void *arg)
{
	struct h_io *r = arg;
	uint8_t buf[10007];
	ssize_t n;

	if (r->slow)
		usleep(300000);
	for (;;) {
		n = read(r->fd, buf, sizeof(buf));
		if (n <= 0) {
			r->err = n < 0 ? errno : 0;
			break;
		}
		for (ssize_t i = 0; i < n; i++)
			if (buf[i] != pat(r->done + (size_t)i) && !r->err)
				r->err = EBADMSG;
		r->done += (size_t)n;
		if (r->slow && r->done % 65536 < (size_t)n)
			usleep(2000);
	}
	return NULL;
}

/*
 * 4 MiB host to guest through 32 recycled rx buffers split header/payload.
 * The guest's application consumes in bursts and announces only every other
 * burst, so the device has to stop at the credit edge and ask for more.
 */
static void test_bulk_h2g(void **state)
{
	const size_t total = 4u << 20;
	struct t *t = t_new(0, true);
	struct h_io w = { .total = total };
	uint32_t unread = 0, bursts = 0, got = 0;
	unsigned requests = 0;
	pthread_t th;
	struct pkt p;
	struct gc c;

	w.fd = t_host_connect(t, &c, 1000, NULL);
	assert_int_equal(pthread_create(&th, NULL, h_writer, &w), 0);
	for (;;) {
		t_recv(t, &p);
		assert_int_equal(p.h.dst_port, c.gport);
		gc_take(&c, &p);
		if (p.h.op == OP_RW) {
			for (uint32_t i = 0; i < p.len; i++)
				if (p.data[i] != pat(got + i))
					fail_msg("byte %u differs", got + i);
			got += p.len;
			unread += p.len;
			/* Never more in flight than the guest said it has room for. */
			assert_true(got - c.fwd_told <= c.buf_alloc);
			if (unread >= 40000) {
				c.fwd_cnt += unread;
				unread = 0;
				if (bursts++ % 2)
					gc_send(t, &c, OP_CREDIT_UPDATE, 0, NULL, 0);
			}
		} else if (p.h.op == OP_CREDIT_REQUEST) {
			requests++;
			gc_send(t, &c, OP_CREDIT_UPDATE, 0, NULL, 0);
		} else {
			assert_int_equal(p.h.op, OP_SHUTDOWN);
			assert_int_equal(p.h.flags, SHUT_SEND_F);
			break;
		}
	}
	pthread_join(th, NULL);
	assert_int_equal(w.err, 0);
	assert_int_equal(got, total);
	assert_true(requests > 0);
	gc_send(t, &c, OP_SHUTDOWN, SHUT_RCV_F | SHUT_SEND_F, NULL, 0);
	t_expect(t, &c, OP_RST, &p);
	close(w.fd);
	t_free(t);
}

/* Take whatever the device says about c without waiting past ms. */
static void gc_poll(struct t *t, struct gc *c, int ms)
{
	struct pkt p;

	while (t_recv_ms(t, &p, ms)) {
		assert_int_equal(p.h.dst_port, c->gport);
		assert_int_equal(p.h.op, OP_CREDIT_UPDATE);
		gc_take(c, &p);
		ms = 0;
	}
}

/*
 * 4 MiB guest to host with a host that starts late and reads slowly: the
 * socket fills, the device buffers up to its buf_alloc and the guest has to
 * wait for credit updates. Packets of every size, some with a split header.
 */
static void test_bulk_g2h(void **state)
{
	const size_t total = 4u << 20;
	struct t *t = t_new(0, false);
	struct h_io r = { .total = total, .slow = true };
	uint8_t *data = malloc(total);
	uint32_t want, len, credit, k = 0;
	size_t sent = 0;
	pthread_t th;
	struct pkt p;
	struct gc c;

	assert_non_null(data);
	for (size_t i = 0; i < total; i++)
		data[i] = pat(i);
	srand(7);
	r.fd = t_host_connect(t, &c, 2000, NULL);
	assert_int_equal(c.peer_buf_alloc, VSOCK_BUF_ALLOC);
	assert_int_equal(pthread_create(&th, NULL, h_reader, &r), 0);
	while (sent < total) {
		gc_poll(t, &c, 0);
		credit = gc_credit(&c);
		assert_true(credit <= VSOCK_BUF_ALLOC);
		if (!credit) {
			gc_poll(t, &c, 2000);
			if (!gc_credit(&c))
				gc_send(t, &c, OP_CREDIT_REQUEST, 0, NULL, 0);
			continue;
		}
		want = 1 + (uint32_t)rand() % 32768;
		len = want < credit ? want : credit;
		if (len > total - sent)
			len = (uint32_t)(total - sent);
		gc_queue(t, &c, OP_RW, 0, data + sent, len, k++ % 3 ? 0 : 7, true);
		fake_notify(&t->g, 1);
		sent += len;
	}
	gc_send(t, &c, OP_SHUTDOWN, SHUT_SEND_F, NULL, 0);
	pthread_join(th, NULL);
	assert_int_equal(r.err, 0);
	assert_int_equal(r.done, total);
	/* The host finishes too: both ways over, the guest gets the RST. */
	close(r.fd);
	t_expect(t, &c, OP_SHUTDOWN, &p);
	assert_int_equal(p.h.flags, SHUT_SEND_F);
	t_expect(t, &c, OP_RST, &p);
	free(data);
	t_free(t);
}

static void test_guest_connect(void **state)
{
	struct t *t = t_new(0, false);
	int lfd = t_listen(t, 1024), fd, fd2;
	struct gc c, c2, c3;
	char buf[16];
	struct pkt p;

	fd = t_guest_connect(t, &c, lfd, 5000, 1024);
	gc_send(t, &c, OP_RW, 0, "hello host", 10);
	h_read_exact(fd, buf, 10);
	assert_memory_equal(buf, "hello host", 10);
	h_write(fd, "hi guest", 8);
	t_expect(t, &c, OP_RW, &p);
	assert_memory_equal(p.data, "hi guest", 8);

	/* Nothing listens on 1025. */
	c2 = (struct gc){ .gport = 5001, .hport = 1025, .buf_alloc = G_BUF_ALLOC };
	gc_send(t, &c2, OP_REQUEST, 0, NULL, 0);
	t_expect(t, &c2, OP_RST, &p);

	/* A second stream to the same port keeps its bytes apart. */
	fd2 = t_guest_connect(t, &c3, lfd, 5002, 1024);
	gc_send(t, &c3, OP_RW, 0, "two", 3);
	gc_send(t, &c, OP_RW, 0, "one", 3);
	h_read_exact(fd2, buf, 3);
	assert_memory_equal(buf, "two", 3);
	h_read_exact(fd, buf, 3);
	assert_memory_equal(buf, "one", 3);

	/* A second request for a live connection resets it. */
	gc_send(t, &c, OP_REQUEST, 0, NULL, 0);
	t_expect(t, &c, OP_RST, &p);
	assert_true(h_eof(fd, T_WAIT_MS));
	close(fd);
	/* Host closes the other one: SHUTDOWN, then the guest's RST ends it silently. */
	close(fd2);
	t_expect(t, &c3, OP_SHUTDOWN, &p);
	gc_send(t, &c3, OP_RST, 0, NULL, 0);
	t_no_packet(t, 50);
	t_unlisten(t, lfd, 1024);
	t_free(t);
}

static void test_shutdown_host_eof(void **state)
{
	struct t *t = t_new(0, false);
	char buf[16];
	struct pkt p;
	struct gc c;
	int fd = t_host_connect(t, &c, 60, NULL);

	/* Host half-close: the guest may still send. */
	shutdown(fd, SHUT_WR);
	t_expect(t, &c, OP_SHUTDOWN, &p);
	assert_int_equal(p.h.flags, SHUT_SEND_F);
	gc_send(t, &c, OP_RW, 0, "after", 5);
	h_read_exact(fd, buf, 5);
	assert_memory_equal(buf, "after", 5);
	/* The guest finishes as well: EOF for the host, RST for the guest. */
	gc_send(t, &c, OP_SHUTDOWN, SHUT_SEND_F, NULL, 0);
	assert_int_equal(h_read(fd, buf, sizeof(buf), T_WAIT_MS), 0);
	t_expect(t, &c, OP_RST, &p);
	close(fd);
	t_free(t);
}

static void test_shutdown_guest(void **state)
{
	struct t *t = t_new(0, false);
	uint64_t end;
	char buf[16];
	struct pkt p;
	struct gc c;
	ssize_t n;
	int fd;

	/* Guest half-close (SEND): the host reads the data, then EOF, and may
	 * still write. */
	fd = t_host_connect(t, &c, 61, NULL);
	gc_queue(t, &c, OP_RW, 0, "last words", 10, 0, false);
	gc_queue(t, &c, OP_SHUTDOWN, SHUT_SEND_F, NULL, 0, 0, false);
	t_publish_kick(t);
	h_read_exact(fd, buf, 10);
	assert_memory_equal(buf, "last words", 10);
	assert_int_equal(h_read(fd, buf, sizeof(buf), T_WAIT_MS), 0);
	h_write(fd, "reply", 5);
	t_expect(t, &c, OP_RW, &p);
	assert_memory_equal(p.data, "reply", 5);
	/* Then the guest stops receiving as well: over both ways. */
	gc_send(t, &c, OP_SHUTDOWN, SHUT_RCV_F, NULL, 0);
	t_expect(t, &c, OP_RST, &p);
	close(fd);

	/* SHUTDOWN RCV alone: the host's writes fail, the guest still sends. */
	fd = t_host_connect(t, &c, 62, NULL);
	gc_send(t, &c, OP_SHUTDOWN, SHUT_RCV_F, NULL, 0);
	end = now_ns() + (uint64_t)T_WAIT_MS * 1000000;
	do {
		n = send(fd, "x", 1, MSG_NOSIGNAL);
		assert_true(now_ns() < end);
		if (n > 0)
			usleep(1000);
	} while (n > 0);
	assert_int_equal(errno, EPIPE);
	gc_send(t, &c, OP_RW, 0, "still", 5);
	h_read_exact(fd, buf, 5);
	assert_memory_equal(buf, "still", 5);
	gc_send(t, &c, OP_SHUTDOWN, SHUT_SEND_F, NULL, 0);
	t_expect(t, &c, OP_RST, &p);
	assert_true(h_eof(fd, T_WAIT_MS));
	close(fd);
	t_free(t);
}

/* Send until the device stops giving credit (the host reads nothing). */
static size_t gc_fill(struct t *t, struct gc *c, const uint8_t *data, size_t max)
{
	uint32_t len, credit;
	size_t sent = 0;

	for (;;) {
		gc_poll(t, c, 0);
		if (!gc_credit(c))
			gc_poll(t, c, 300);
		credit = gc_credit(c);
		if (!credit || sent == max)
			break;
		len = credit < 16384 ? credit : 16384;
		if (len > max - sent)
			len = (uint32_t)(max - sent);
		gc_send(t, c, OP_RW, 0, data + sent, len);
		sent += len;
	}
	return sent;
}

/*
 * The guest closes with data still waiting for the host: the host gets all of
 * it and then EOF; a host that never reads is cut off after the timeout.
 */
static void test_guest_close_pending(void **state)
{
	const size_t max = 2u << 20;
	struct t *t = t_new(0, false);
	uint8_t *data = malloc(max);
	struct h_io r = { 0 };
	size_t sent;
	uint64_t start;
	struct pkt p;
	struct gc c;
	int fd;

	assert_non_null(data);
	for (size_t i = 0; i < max; i++)
		data[i] = pat(i);
	r.fd = t_host_connect(t, &c, 70, NULL);
	sent = gc_fill(t, &c, data, max);
	assert_true(sent > VSOCK_BUF_ALLOC && sent < max);
	gc_send(t, &c, OP_SHUTDOWN, SHUT_RCV_F | SHUT_SEND_F, NULL, 0);
	t_no_packet(t, 100);
	h_reader(&r);
	assert_int_equal(r.err, 0);
	assert_int_equal(r.done, sent);
	t_expect(t, &c, OP_RST, &p);
	close(r.fd);

	fd = t_host_connect(t, &c, 71, NULL);
	gc_fill(t, &c, data, max);
	gc_send(t, &c, OP_SHUTDOWN, SHUT_RCV_F | SHUT_SEND_F, NULL, 0);
	start = now_ns();
	t_expect(t, &c, OP_RST, &p);
	assert_true(now_ns() - start > (VSOCK_SHUTDOWN_TIMEOUT_MS - 1000) * 1000000ULL);
	assert_true(h_eof(fd, T_WAIT_MS));
	close(fd);
	free(data);
	t_free(t);
}

/* How a malformed packet is made from a good header. */
enum bad_kind {
	BAD_SRC_CID, BAD_DST_CID, BAD_DST_CID_HIGH, BAD_TYPE, BAD_OP_0, BAD_OP_8, BAD_LEN_CHAIN,
	BAD_LEN_MAX, BAD_CTRL_LEN, BAD_REQUEST_AGAIN, BAD_RESPONSE_AGAIN, BAD_COUNT,
};

static void test_malformed(void **state)
{
	static uint8_t big[VSOCK_MAX_PKT + 1];
	struct t *t = t_new(0, false);
	struct virtio_vsock_hdr h;
	struct gc c, u;
	struct pkt p;
	uint64_t buf;
	uint16_t d;
	int fd;

	for (int k = 0; k < BAD_COUNT; k++) {
		fd = t_host_connect(t, &c, 100 + (uint32_t)k, NULL);
		h = gc_hdr(&c, OP_RW, 0, 4);
		switch (k) {
		case BAD_SRC_CID: h.src_cid = T_CID + 1; break;
		case BAD_DST_CID: h.dst_cid = T_CID; break;
		case BAD_DST_CID_HIGH: h.dst_cid = T_HOST | (1ULL << 32); break;
		case BAD_TYPE: h.type = 2; break;
		case BAD_OP_0: h.op = 0; h.len = 0; break;
		case BAD_OP_8: h.op = 8; h.len = 0; break;
		case BAD_LEN_CHAIN: h.len = 100; break;
		case BAD_LEN_MAX: h.len = VSOCK_MAX_PKT + 1; break;
		case BAD_CTRL_LEN: h.op = OP_CREDIT_UPDATE; break;
		case BAD_REQUEST_AGAIN: h.op = OP_REQUEST; h.len = 0; break;
		case BAD_RESPONSE_AGAIN: h.op = OP_RESPONSE; h.len = 0; break;
		default: break;
		}
		if (k == BAD_LEN_MAX)
			t_queue(t, &h, big, sizeof(big), 0, true);
		else
			t_queue(t, &h, "abcd", h.op == OP_RW || k == BAD_CTRL_LEN ? 4 : 0, 0, true);
		fake_notify(&t->g, 1);
		t_expect(t, &c, OP_RST, &p);
		assert_true(h_eof(fd, T_WAIT_MS));
		close(fd);
	}

	/* No such connection: data gets a reset, a reset gets nothing. */
	u = (struct gc){ .gport = 4000, .hport = 4001 };
	gc_send(t, &u, OP_RW, 0, "zz", 2);
	t_expect(t, &u, OP_RST, &p);
	gc_send(t, &u, OP_CREDIT_UPDATE, 0, NULL, 0);
	t_expect(t, &u, OP_RST, &p);
	gc_send(t, &u, OP_RST, 0, NULL, 0);
	h = gc_hdr(&u, OP_RST, 0, 0);
	h.src_cid = 99;
	t_queue(t, &h, NULL, 0, 0, true);
	fake_notify(&t->g, 1);
	t_no_packet(t, 100);

	/* Chains too short for a header, or with nothing readable: dropped. */
	buf = t_tx_slot(t, &d);
	t_tx_chain(t, d, buf, HDR - 1, 10, true);
	buf = t_tx_slot(t, &d);
	fake_desc(&t->g, t->txq.desc, d, buf, 64, VIRTQ_DESC_F_WRITE, 0);
	t_tx_add(t, d, false);
	t_publish_kick(t);
	t_tx_drain(t);
	t_no_packet(t, 50);
	assert_false(fake_needs_reset(&t->g));

	/* Still working; split headers too. */
	fd = t_host_connect(t, &c, 200, NULL);
	gc_queue(t, &c, OP_RW, 0, "split", 5, 13, true);
	fake_notify(&t->g, 1);
	{
		char b[8];

		h_read_exact(fd, b, 5);
		assert_memory_equal(b, "split", 5);
	}
	close(fd);
	t_expect(t, &c, OP_SHUTDOWN, &p);
	gc_send(t, &c, OP_RST, 0, NULL, 0);
	t_free(t);
}

static void test_credit_violation(void **state)
{
	static uint8_t data[40000];
	struct t *t = t_new(0, false);
	struct pkt p;
	struct gc c;
	int fd = t_host_connect(t, &c, 300, NULL);

	/* Published together, so no credit update can come in between:
	 * 40000 + 30000 bytes against the 64 KiB we advertised. */
	gc_queue(t, &c, OP_RW, 0, data, 40000, 0, false);
	gc_queue(t, &c, OP_RW, 0, data, 30000, 0, false);
	t_publish_kick(t);
	t_expect(t, &c, OP_RST, &p);
	assert_true(h_eof(fd, T_WAIT_MS));
	close(fd);
	t_free(t);
}

static void test_conn_cap(void **state)
{
	struct t *t = t_new(4, false);
	int lfd = t_listen(t, 900), fds[5], fd;
	uint64_t end;
	struct gc c;
	struct pkt p;
	char b;

	for (int i = 0; i < 5; i++)
		fds[i] = h_connect(t->path);
	/* The fifth is refused, the first four stay. */
	assert_true(h_eof(fds[4], T_WAIT_MS));
	assert_int_equal(h_read(fds[0], &b, 1, 100), -ETIMEDOUT);
	/* So is the guest. */
	c = (struct gc){ .gport = 6000, .hport = 900, .buf_alloc = G_BUF_ALLOC };
	gc_send(t, &c, OP_REQUEST, 0, NULL, 0);
	t_expect(t, &c, OP_RST, &p);
	/* One goes away: room again. */
	close(fds[0]);
	end = now_ns() + (uint64_t)T_WAIT_MS * 1000000;
	for (;;) {
		gc_send(t, &c, OP_REQUEST, 0, NULL, 0);
		t_recv(t, &p);
		if (p.h.op == OP_RESPONSE)
			break;
		assert_int_equal(p.h.op, OP_RST);
		assert_true(now_ns() < end);
		usleep(10000);
	}
	fd = h_accept(lfd);
	close(fd);
	for (int i = 1; i < 5; i++)
		close(fds[i]);
	t_unlisten(t, lfd, 900);
	t_free(t);
}

static void test_many_conns(void **state)
{
	enum { N = 24 };
	struct t *t = t_new(0, false);
	struct gc c[N];
	int fd[N];
	char msg[32], buf[32];
	struct pkt p;
	unsigned seen;
	int n, k;

	for (int i = 0; i < N; i++)
		fd[i] = t_host_connect(t, &c[i], 3000 + (uint32_t)i, NULL);
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < N; i++) {
			n = snprintf(msg, sizeof(msg), "c%d r%d", i, round);
			h_write(fd[i], msg, (size_t)n);
		}
		/* Each message arrives on its own connection; echo it back. */
		for (seen = 0; seen < N;) {
			t_recv(t, &p);
			if (p.h.op == OP_CREDIT_UPDATE)
				continue;
			assert_int_equal(p.h.op, OP_RW);
			k = (int)p.h.dst_port - 3000;
			assert_true(k >= 0 && k < N);
			assert_int_equal(p.h.src_port, c[k].hport);
			n = snprintf(msg, sizeof(msg), "c%d r%d", k, round);
			assert_int_equal(p.len, n);
			assert_memory_equal(p.data, msg, (size_t)n);
			gc_send(t, &c[k], OP_RW, 0, p.data, p.len);
			seen++;
		}
		for (int i = 0; i < N; i++) {
			n = snprintf(msg, sizeof(msg), "c%d r%d", i, round);
			h_read_exact(fd[i], buf, (size_t)n);
			assert_memory_equal(buf, msg, (size_t)n);
		}
	}
	for (int i = 0; i < N; i++) {
		gc_send(t, &c[i], OP_RST, 0, NULL, 0);
		assert_true(h_eof(fd[i], T_WAIT_MS));
		close(fd[i]);
	}
	t_free(t);
}

/* No rx buffers: the device waits (without spinning) and loses nothing. */
static void test_rx_starvation(void **state)
{
	const size_t total = 1u << 20;
	struct t *t = t_new(0, false);
	struct h_io w = { .total = total };
	struct rusage ru0, ru1;
	uint32_t got = 0;
	long cpu_us;
	pthread_t th;
	struct pkt p;
	struct gc c;

	w.fd = t_host_connect(t, &c, 800, NULL);
	c.buf_alloc = 4u << 20;
	gc_send(t, &c, OP_CREDIT_UPDATE, 0, NULL, 0);
	t->rx_hold = true;
	assert_int_equal(pthread_create(&th, NULL, h_writer, &w), 0);
	while (t->nheld < RX_BUFS) {
		t_recv(t, &p);
		if (p.h.op != OP_RW)
			continue;
		for (uint32_t i = 0; i < p.len; i++)
			assert_int_equal(p.data[i], pat(got + i));
		got += p.len;
	}
	getrusage(RUSAGE_SELF, &ru0);
	usleep(300000);
	getrusage(RUSAGE_SELF, &ru1);
	cpu_us = (ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) * 1000000L +
		 (ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) +
		 (ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) * 1000000L +
		 (ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec);
	assert_true(cpu_us < 100000);
	assert_int_equal(fake_used_idx(&t->g, &t->rxq), t->rx_seen);
	/* Buffers back: everything arrives. */
	t->rx_hold = false;
	for (unsigned i = 0; i < t->nheld; i++)
		t_rx_post(t, t->held[i]);
	t->nheld = 0;
	fake_notify(&t->g, 0);
	while (got < total) {
		t_recv(t, &p);
		if (p.h.op == OP_SHUTDOWN)
			break;
		assert_int_equal(p.h.op, OP_RW);
		for (uint32_t i = 0; i < p.len; i++)
			assert_int_equal(p.data[i], pat(got + i));
		got += p.len;
		c.fwd_cnt = got;
	}
	pthread_join(th, NULL);
	assert_int_equal(got, total);
	gc_send(t, &c, OP_RST, 0, NULL, 0);
	close(w.fd);
	t_free(t);
}

/* Device reset drops every connection; a broken ring needs a reset too. */
static void test_reset(void **state)
{
	struct t *t = t_new(0, false);
	uint64_t end;
	struct gc c;
	int fd, fd2;

	fd = t_host_connect(t, &c, 400, NULL);
	fd2 = h_connect(t->path);
	fake_wr(&t->g, R_STATUS, 0);
	assert_true(h_eof(fd, T_WAIT_MS));
	assert_true(h_eof(fd2, T_WAIT_MS));
	close(fd);
	close(fd2);
	t_bring_up(t);
	fd = t_host_connect(t, &c, 401, NULL);

	/* An avail index a whole ring ahead breaks the tx queue. */
	fake_avail_set_idx(&t->g, &t->txq, (uint16_t)(t->tx_queued + TXQ_SIZE + 1));
	fake_notify(&t->g, 1);
	end = now_ns() + (uint64_t)T_WAIT_MS * 1000000;
	while (!fake_needs_reset(&t->g)) {
		assert_true(now_ns() < end);
		usleep(1000);
	}
	t_bring_up(t);
	assert_true(h_eof(fd, T_WAIT_MS));
	close(fd);
	fd = t_host_connect(t, &c, 402, NULL);
	close(fd);
	t_free(t);
}

/*
 * The transport reset (a restored VM's connections were another VMM's): the
 * host's ends close at once, no per-connection reset goes to the guest, and
 * the guest's first event buffer big enough gets the event id; a smaller one
 * comes back unused. Connections work again afterwards.
 */
static void test_transport_reset(void **state)
{
	const uint64_t ev = 0x38000;
	struct t *t = t_new(0, false);
	struct virtq_used_elem u;
	struct pkt p;
	struct gc c;
	uint64_t end;
	uint32_t id;
	int fd;

	fd = t_host_connect(t, &c, 500, NULL);
	vsock_transport_reset(t->v);
	assert_true(h_eof(fd, T_WAIT_MS));
	close(fd);
	t_no_packet(t, 200);
	assert_int_equal(fake_used_idx(&t->g, &t->evq), 0); /* no buffer yet: owed */

	memset(fake_ptr(&t->g, ev, 64), 0xee, 64);
	fake_desc(&t->g, t->evq.desc, 0, ev, 2, VIRTQ_DESC_F_WRITE, 0);
	fake_avail_add(&t->g, &t->evq, 0);
	fake_desc(&t->g, t->evq.desc, 1, ev + 16, 8, VIRTQ_DESC_F_WRITE, 0);
	fake_avail_add(&t->g, &t->evq, 1);
	fake_desc(&t->g, t->evq.desc, 2, ev + 32, 8, VIRTQ_DESC_F_WRITE, 0);
	fake_avail_add(&t->g, &t->evq, 2);
	fake_notify(&t->g, 2);
	end = now_ns() + (uint64_t)T_WAIT_MS * 1000000;
	while (fake_used_idx(&t->g, &t->evq) < 2) {
		assert_true(now_ns() < end);
		usleep(1000);
	}
	usleep(200 * 1000);
	assert_int_equal(fake_used_idx(&t->g, &t->evq), 2); /* one event, not two */
	u = fake_used_elem(&t->g, &t->evq, 0);
	assert_int_equal(u.id, 0);
	assert_int_equal(u.len, 0);
	u = fake_used_elem(&t->g, &t->evq, 1);
	assert_int_equal(u.id, 1);
	assert_int_equal(u.len, 4);
	memcpy(&id, fake_ptr(&t->g, ev + 16, 4), 4);
	assert_int_equal(le32toh(id), 0); /* VIRTIO_VSOCK_EVENT_TRANSPORT_RESET */
	assert_int_equal(*(uint8_t *)fake_ptr(&t->g, ev + 20, 1), 0xee); /* nothing past it */
	assert_int_equal(*(uint8_t *)fake_ptr(&t->g, ev + 32, 1), 0xee); /* the spare one untouched */

	/* Until the guest reads its CID again (its driver's first step on the
	 * event, before it resets its sockets), a new connection's request
	 * waits: that reset must not catch it. Then it goes out. */
	fd = h_connect(t->path);
	h_write(fd, "CONNECT 501\n", 12);
	t_no_packet(t, 200);
	(void)fake_rd(&t->g, 0x100); /* virtio-mmio config space: the CID */
	t_recv(t, &p);
	assert_int_equal(p.h.op, OP_REQUEST);
	assert_int_equal(p.h.dst_port, 501);
	close(fd);
	/* The device goes on: a new connection works. */
	fd = t_host_connect(t, &c, 502, NULL);
	close(fd);
	t_free(t);
}

/* A second vsock device (the restoring VMM's) over the same guest RAM, at
 * the same MMIO address on a bus of its own; its thread is not started. */
struct t2 {
	struct fake_guest g;
	struct vsock *v;
	char path[112];
	unsigned irqs;
};

static void t2_irq(void *ctx)
{
	__atomic_add_fetch(&((struct t2 *)ctx)->irqs, 1, __ATOMIC_RELAXED);
}

static struct t2 *t2_new(struct t *t, uint64_t cid, const char *name)
{
	struct t2 *n = calloc(1, sizeof(*n));

	assert_non_null(n);
	snprintf(n->path, sizeof(n->path), "%s/%s", t->dir, name);
	assert_int_equal(vsock_create(&n->v, &(struct vsock_params){ .guest_cid = cid,
								   .uds_path = n->path }), 0);
	n->g.mem = t->g.mem;
	assert_int_equal(virtio_mmio_create(&n->g.dev, &vsock_ops, n->v, t->g.mem, t2_irq, n), 0);
	assert_int_equal(virtio_mmio_register(n->g.dev, &n->g.bus, FAKE_MMIO_BASE), 0);
	return n;
}

static void t2_free(struct t2 *n)
{
	vsock_stop(n->v);
	virtio_mmio_free(n->g.dev);
	vsock_free(n->v);
	free(n);
}

struct vsock_state {
	uint64_t guest_cid;
	uint32_t rx_held;
	uint32_t next_port;
};

/* A restore that must fail with want in why; the transport is left reset. */
static void t2_refused(struct t2 *n, const struct snap_virtio *v, const void *dev,
		       const char *want)
{
	struct snap_virtio after;
	uint8_t none[64];
	char why[256] = "";

	assert_int_equal(virtio_mmio_restore(n->g.dev, v, dev, why, sizeof(why)), -EINVAL);
	if (!strstr(why, want))
		fail_msg("wanted '%s' in '%s'", want, why);
	assert_null(strchr(why, '\n'));
	assert_int_equal(virtio_mmio_save(n->g.dev, &after, none, sizeof(none)), 0);
	assert_int_equal(after.status, 0);
	assert_int_equal(after.queues[0].ready, 0);
}

/*
 * Snapshot and restore: the device's state is its guest CID and whether it
 * held a popped rx chain. Restored into a new device over the same RAM: a
 * CID or a length that differs is refused; a held chain is given back to
 * the rx queue (the next packet lands in it, nothing is lost); the guest
 * gets the transport reset event; the new device serves a host CONNECT on
 * its own socket.
 */
static void test_snapshot_restore(void **state)
{
	const uint64_t ev = 0x38000;
	struct t *t = t_new(0, false);
	struct snap_virtio v, bad, back;
	struct vsock_state ds, dbad;
	uint8_t dev[SNAP_MAX_DEV_STATE];
	struct fake_guest orig;
	struct t2 *n, *other;
	struct pkt p;
	struct gc c;
	char why[256] = "";
	uint16_t held_slot, rx_used;
	int fd;

	(void)state;
	fd = t_host_connect(t, &c, 600, NULL);
	/* The guest is paused: nothing moves while the device is saved. */
	vsock_stop(t->v);
	assert_int_equal(virtio_mmio_save(t->g.dev, &v, dev, sizeof(dev)), 0);
	assert_int_equal(v.device_id, VIRTIO_ID_VSOCK);
	assert_int_equal(v.dev_len, sizeof(ds));
	memcpy(&ds, dev, sizeof(ds));
	assert_int_equal(ds.guest_cid, T_CID);
	assert_int_equal(ds.rx_held, 0);
	rx_used = v.queues[0].next_used;
	assert_int_equal(v.queues[0].last_avail, rx_used);
	assert_int_equal(rx_used, t->rx_seen);

	other = t2_new(t, T_CID + 1, "w.sock");
	t2_refused(other, &v, dev, "virtio-vsock: the snapshot's guest CID is 3, the new "
		   "device's 4");
	t2_free(other);
	n = t2_new(t, T_CID, "n.sock");
	bad = v;
	bad.dev_len = 8;
	t2_refused(n, &bad, dev, "virtio-vsock: its saved state is 8 bytes, not 16");
	bad.dev_len = 0;
	t2_refused(n, &bad, dev, "virtio-vsock: its saved state is 0 bytes, not 16");
	dbad = ds;
	dbad.rx_held = 1;	/* held, but the queue has nothing outstanding */
	t2_refused(n, &v, &dbad, "a held rx buffer is not outstanding");
	dbad.rx_held = 2;
	t2_refused(n, &v, &dbad, "unknown bits");
	dbad.rx_held = 0;
	dbad.next_port = 5;
	t2_refused(n, &v, &dbad, "next host port 5 is outside");
	/* The template's connection took the first port; the clone goes on after it. */
	assert_int_equal(ds.next_port, c.hport + 1);

	/* As if the device had popped the next rx chain and held it. */
	held_slot = v.queues[0].last_avail;
	v.queues[0].last_avail++;
	ds.rx_held = 1;
	assert_int_equal(virtio_mmio_restore(n->g.dev, &v, &ds, why, sizeof(why)), 0);
	assert_int_equal(virtio_mmio_save(n->g.dev, &back, dev, sizeof(dev)), 0);
	assert_int_equal(back.queues[0].last_avail, held_slot);
	assert_int_equal(back.queues[0].next_used, rx_used);
	memcpy(&ds, dev, sizeof(ds));
	assert_int_equal(ds.rx_held, 0);

	/* The guest now talks to the new device. */
	orig = t->g;
	t->g = n->g;
	assert_int_equal(vsock_start(n->v, n->g.dev, false), 0);
	fake_desc(&t->g, t->evq.desc, 0, ev, 8, VIRTQ_DESC_F_WRITE, 0);
	fake_avail_add(&t->g, &t->evq, 0);
	fake_notify(&t->g, 2);
	assert_true(t_wait_used(t, &t->evq, 0, T_WAIT_MS));
	assert_int_equal(fake_used_elem(&t->g, &t->evq, 0).len, 4);
	(void)fake_rd(&t->g, 0x100); /* the guest's driver reads its CID again */
	{
		/* The held chain is the one the next packet lands in. */
		struct virtq_avail *a = fake_ptr(&t->g, t->rxq.avail, 4 + 2ULL * RXQ_SIZE);
		uint16_t head = a->ring[held_slot & (RXQ_SIZE - 1)];
		int fd2 = h_connect(n->path);

		h_write(fd2, "CONNECT 601\n", 12);
		assert_true(t_wait_used(t, &t->rxq, t->rx_seen, T_WAIT_MS));
		assert_int_equal(fake_used_elem(&t->g, &t->rxq, t->rx_seen).id, head);
		t_recv(t, &p);
		assert_int_equal(p.h.op, OP_REQUEST);
		assert_int_equal(p.h.dst_port, 601);
		/* Never a port of a connection the guest may still hold from the template. */
		assert_int_equal(p.h.src_port, c.hport + 1);
		/* Nothing listens on 601 in this guest: it resets, the host end closes. */
		c = (struct gc){ .gport = 601, .hport = p.h.src_port, .buf_alloc = G_BUF_ALLOC };
		gc_send(t, &c, OP_RST, 0, NULL, 0);
		assert_true(h_eof(fd2, T_WAIT_MS));
		close(fd2);
	}
	t->g = orig;
	t2_free(n);
	close(fd);
	t_free(t);
}

/* Random headers by the thousand: nothing breaks, the device stays usable. */
static void test_fuzz(void **state)
{
	static const uint64_t cids[] = { T_CID, T_CID, T_CID, T_HOST, 4, 1ULL << 32 | T_CID };
	struct t *t = t_new(0, false);
	int lfd = t_listen(t, 7000), fd, afd;
	struct virtio_vsock_hdr h;
	uint8_t payload[200];
	uint32_t hports[3], dlen;
	struct gc c;
	struct pkt p;

	fd = t_host_connect(t, &c, 11, NULL);
	hports[0] = c.hport;
	hports[1] = 7000;
	hports[2] = 7001;
	srand(1234);
	for (int i = 0; i < 4000; i++) {
		h = (struct virtio_vsock_hdr){
			.src_cid = cids[(unsigned)rand() % ARRAY_SIZE(cids)],
			.dst_cid = cids[(unsigned)rand() % ARRAY_SIZE(cids)],
			.src_port = (unsigned)rand() % 3 ? 11 : 5000 + (uint32_t)rand() % 4,
			.dst_port = hports[(unsigned)rand() % 3],
			.type = (unsigned)rand() % 8 ? VIRTIO_VSOCK_TYPE_STREAM : 2,
			.op = (uint16_t)((unsigned)rand() % 9),
			.flags = (uint32_t)rand() % 4,
			.buf_alloc = (unsigned)rand() % 2 ? G_BUF_ALLOC : (uint32_t)rand(),
			.fwd_cnt = (unsigned)rand() % 2 ? 0 : (uint32_t)rand(),
		};
		if (rand() % 4)
			h.dst_cid = T_HOST;
		/* Mostly the length a well-behaved driver would use, sometimes not;
		 * the chain mostly holds it, sometimes more or less. */
		h.len = h.op == OP_RW || rand() % 8 == 0 ? (uint32_t)rand() % 150 : 0;
		dlen = h.len + (rand() % 4 ? 0 : (uint32_t)rand() % 50);
		if (rand() % 8 == 0)
			dlen = (uint32_t)rand() % (h.len + 1);
		for (unsigned j = 0; j < sizeof(payload); j++)
			payload[j] = (uint8_t)rand();
		t_queue(t, &h, payload, dlen, (uint32_t)rand() % 60, i % 8 == 7);
		if (i % 8 == 7)
			fake_notify(&t->g, 1);
		while (t_recv_ms(t, &p, 0))
			;
		/* Take (and drop) what the device connected to port 7000. */
		while (poll(&(struct pollfd){ .fd = lfd, .events = POLLIN }, 1, 0) == 1) {
			afd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
			assert_true(afd >= 0);
			close(afd);
		}
		/* The connection may be gone by now; the write may fail. */
		if (i % 500 == 0 && send(fd, "noise", 5, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
			assert_true(errno == EPIPE || errno == ECONNRESET || errno == EAGAIN);
	}
	t_publish_kick(t);
	t_tx_drain(t);
	while (t_recv_ms(t, &p, 100))
		;
	assert_false(fake_needs_reset(&t->g));
	close(fd);
	while (t_recv_ms(t, &p, 200))
		;
	fd = t_host_connect(t, &c, 12, NULL);
	gc_send(t, &c, OP_RW, 0, "ok", 2);
	{
		char b[2];

		h_read_exact(fd, b, 2);
		assert_memory_equal(b, "ok", 2);
	}
	close(fd);
	t_unlisten(t, lfd, 7000);
	t_free(t);
}

/* After free: no fd, no thread, no socket file left behind. */
static void test_teardown(void **state)
{
	unsigned fds = count_dir("/proc/self/fd"), tasks = count_dir("/proc/self/task");
	struct t *t = t_new(0, false);
	struct gc c1, c2;
	int lfd, fd1, fd2, fd3;

	assert_int_equal(count_dir("/proc/self/task"), tasks + 1);
	fd1 = t_host_connect(t, &c1, 600, NULL);
	lfd = t_listen(t, 6000);
	fd2 = t_guest_connect(t, &c2, lfd, 6001, 6000);
	fd3 = h_connect(t->path);
	h_write(fd1, "pending", 7);
	gc_send(t, &c2, OP_RW, 0, "unread", 6);
	t_unlisten(t, lfd, 6000);
	t_free(t);
	assert_true(h_eof(fd1, T_WAIT_MS));
	assert_true(h_eof(fd2, T_WAIT_MS));
	assert_true(h_eof(fd3, T_WAIT_MS));
	close(fd1);
	close(fd2);
	close(fd3);
	assert_int_equal(count_dir("/proc/self/fd"), fds);
	assert_int_equal(count_dir("/proc/self/task"), tasks);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create_params),
		cmocka_unit_test(test_transport_reset),
		cmocka_unit_test(test_snapshot_restore),
		cmocka_unit_test(test_identity),
		cmocka_unit_test(test_host_connect),
		cmocka_unit_test(test_host_connect_refused),
		cmocka_unit_test(test_connect_line_bad),
		cmocka_unit_test(test_timeouts),
		cmocka_unit_test(test_bulk_h2g),
		cmocka_unit_test(test_bulk_g2h),
		cmocka_unit_test(test_guest_connect),
		cmocka_unit_test(test_shutdown_host_eof),
		cmocka_unit_test(test_shutdown_guest),
		cmocka_unit_test(test_guest_close_pending),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_credit_violation),
		cmocka_unit_test(test_conn_cap),
		cmocka_unit_test(test_many_conns),
		cmocka_unit_test(test_rx_starvation),
		cmocka_unit_test(test_reset),
		cmocka_unit_test(test_fuzz),
		cmocka_unit_test(test_teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
