/*
 * virtio-net device with a SOCK_SEQPACKET backend (see net.h).
 *
 * Threads. As in vsock.c, the vCPU thread that writes QueueNotify, and the
 * activate and reset ops, only bump an eventfd (reset also bumps reset_gen).
 * The event thread does all the work inside virtio_mmio_run(), so the
 * transport's lock covers the device's state and the rings together.
 *
 * Flow control, both ways without a buffer of our own:
 *   tx: a chain is sent straight from guest memory. When the socket is full
 *       (EAGAIN) the chain stays popped (tx_held), we wait for EPOLLOUT and
 *       pop nothing more, so the guest's tx ring fills and its qdisc stops.
 *   rx: a message is received straight into a popped rx chain. With no
 *       chain to receive into we stop polling the socket for EPOLLIN until
 *       the guest posts buffers (its notify wakes us); the messages wait in
 *       the socket and kiln-net's sends block or fail with EAGAIN.
 *
 * epoll is level-triggered, so the backend is registered for exactly what we
 * would act on, and deregistered when that is nothing: a hung-up socket
 * reports EPOLLHUP whatever the mask, and a report we ignore is a busy loop.
 */
#include "vmm/virtio/net.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "vmm/seccomp.h"
#include "vmm/virtio/devthread.h"
#include "vmm/virtio/mmio.h"
#include "vmm/virtio/queue.h"

#define VNET_RXQ 0
#define VNET_TXQ 1

#define VNET_EVENTS 4
#define VNET_BATCH 256			/* chains per queue per locked section */
#define VNET_RETRY_MS 100		/* after epoll_ctl() failed: try again this late */

#define VNET_TOKEN_KICK 0
#define VNET_TOKEN_BACKEND 1

/* What one receive did to the chain it was given. */
enum vnet_rx_result {
	VNET_RX_EMPTY,		/* nothing to read now; the chain is untouched for the guest */
	VNET_RX_DONE,		/* a frame is in the chain: push it */
	VNET_RX_DROPPED,	/* a message was consumed and dropped; the chain is still free */
	VNET_RX_DOWN,		/* the backend is gone */
};

struct vnet {
	int fd;				/* the backend; the caller's */
	uint8_t mac[6];
	uint16_t mtu;
	uint32_t max_frame;		/* Ethernet header + mtu */
	int epfd, kickfd;
	struct virtio_mmio_dev *mmio;
	struct devthread th;		/* the event thread */

	/* Under the transport's lock: bumped by reset() in a vCPU thread. */
	unsigned reset_gen;
	/* Written by the event thread, read from anywhere: atomic. */
	int link_up;
	struct vnet_stats stats;

	/* Event thread only (inside virtio_mmio_run() or between its calls). */
	unsigned seen_gen;
	uint32_t armed;			/* events the backend is registered for; 0: none */
	bool readable;			/* the backend may hold a message: receive until EAGAIN */
	bool peer_hup;			/* epoll saw the peer hang up: a 0 read is the end */
	bool busy;			/* a batch was cut short: poll again without sleeping */
	bool arm_failed;		/* epoll_ctl() failed: poll again after VNET_RETRY_MS */
	bool tx_held, rx_held;		/* the chain below was popped and not yet used */
	struct virtq_chain tx_chain, rx_chain;
	struct iovec iov[VIRTQ_MAX_SIZE];
	int nevs;
	struct epoll_event evs[VNET_EVENTS];
};

static void vnet_count(uint64_t *ctr, uint64_t n)
{
	__atomic_fetch_add(ctr, n, __ATOMIC_RELAXED);
}

static bool vnet_is_up(const struct vnet *v)
{
	return __atomic_load_n(&v->link_up, __ATOMIC_ACQUIRE);
}

/* The backend hung up or failed: for good, since it cannot reconnect. */
static void vnet_link_down(struct vnet *v)
{
	__atomic_store_n(&v->link_up, 0, __ATOMIC_RELEASE);
}

/* The vCPU side: wake the event thread. */
static void vnet_kick(struct vnet *v)
{
	uint64_t one = 1;
	/* EAGAIN means the counter is already non-zero: the thread will wake. */
	ssize_t r = write(v->kickfd, &one, sizeof(one));

	(void)r;
}

/* Bytes [off, off + len) of segments iov[0 .. n) as iovecs in out; their count. */
static unsigned vnet_iov_slice(const struct iovec *iov, unsigned n, size_t off, size_t len,
			       struct iovec *out)
{
	unsigned k = 0;
	size_t seg;

	for (unsigned i = 0; i < n && len; i++) {
		if (off >= iov[i].iov_len) {
			off -= iov[i].iov_len;
			continue;
		}
		seg = iov[i].iov_len - off;
		if (seg > len)
			seg = len;
		out[k++] = (struct iovec){ (char *)iov[i].iov_base + off, seg };
		len -= seg;
		off = 0;
	}
	return k;
}

/* ---- guest to backend ---- */

static ssize_t vnet_send(int fd, struct iovec *iov, unsigned n)
{
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = n };
	ssize_t r;

	do
		r = sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
	while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : r;
}

/*
 * One tx chain: 1 when it is done with (sent or dropped and counted), 0 when
 * the backend is full (keep the chain, wait for EPOLLOUT), -EINVAL when it
 * holds device-writable buffers, which a transmit queue never should.
 */
static int vnet_tx_frame(struct vnet *v, const struct virtq_chain *c)
{
	uint32_t len;
	unsigned k;
	ssize_t n;

	if (c->nin)
		return -EINVAL;
	/* The header goes nowhere: nothing was negotiated that it could ask for. */
	if (c->out_bytes < VNET_HDR_LEN + VNET_ETH_HLEN ||
	    c->out_bytes - VNET_HDR_LEN > v->max_frame) {
		vnet_count(&v->stats.tx_drop_size, 1);
		return 1;
	}
	if (!vnet_is_up(v)) {
		vnet_count(&v->stats.tx_drop_link, 1);
		return 1;
	}
	len = c->out_bytes - VNET_HDR_LEN;
	k = vnet_iov_slice(c->iov, c->nout, VNET_HDR_LEN, len, v->iov);
	n = vnet_send(v->fd, v->iov, k);
	if (n == -EAGAIN)
		return 0;
	if (n == (ssize_t)len) {
		vnet_count(&v->stats.tx_frames, 1);
		vnet_count(&v->stats.tx_bytes, len);
	} else if (n == -EPIPE || n == -ECONNRESET || n == -ENOTCONN) {
		vnet_link_down(v);
		vnet_count(&v->stats.tx_drop_link, 1);
	} else {
		/* EMSGSIZE, ENOBUFS, or a short count a seqpacket socket never gives. */
		vnet_count(&v->stats.tx_drop_error, 1);
	}
	return 1;
}

/* The held chain's ring is gone (reset): its frame will never be sent. */
static void vnet_tx_forget(struct vnet *v)
{
	if (v->tx_held)
		vnet_count(&v->stats.tx_drop_reset, 1);
	v->tx_held = false;
}

static int vnet_tx(struct vnet *v, struct virtq *q)
{
	unsigned n;
	int ret = 0;

	if (!virtq_is_ready(q)) {
		/* The driver took the queue away: a held chain went with it. */
		vnet_tx_forget(v);
		goto out;
	}
	for (n = 0; n < VNET_BATCH; n++) {
		if (!v->tx_held) {
			ret = virtq_pop(q, &v->tx_chain);
			if (ret <= 0)
				break;
		}
		ret = vnet_tx_frame(v, &v->tx_chain);
		if (ret < 0)
			break;
		if (ret == 0) {
			if (!v->tx_held)
				vnet_count(&v->stats.tx_stalls, 1);
			v->tx_held = true;
			break;
		}
		v->tx_held = false;
		/* Sent or dropped, the buffer is the guest's again; nothing was written. */
		ret = virtq_push(q, v->tx_chain.head, 0);
		if (ret < 0)
			break;
	}
	if (n == VNET_BATCH)
		v->busy = true;
out:
	return ret < 0 ? ret : 0;
}

/* ---- backend to guest ---- */

/*
 * Receive one message into c after the header's room, which the caller
 * checked is there along with room for an Ethernet header. Never more than
 * the chain or max_frame: a longer message is cut by the kernel (MSG_TRUNC)
 * and dropped, and the chain stays ours for the next one.
 */
static enum vnet_rx_result vnet_rx_frame(struct vnet *v, const struct virtq_chain *c,
					 uint32_t *used)
{
	struct virtio_net_hdr hdr = { .gso_type = VIRTIO_NET_HDR_GSO_NONE, .num_buffers = 1 };
	uint32_t room = c->in_bytes - VNET_HDR_LEN;
	uint32_t lim = room < v->max_frame ? room : v->max_frame;
	struct msghdr m = { .msg_iov = v->iov };
	ssize_t n;

	m.msg_iovlen = vnet_iov_slice(c->iov + c->nout, c->nin, VNET_HDR_LEN, lim, v->iov);
	/* MSG_TRUNC: the return value is the message's real length. */
	do
		n = recvmsg(v->fd, &m, MSG_DONTWAIT | MSG_TRUNC);
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		return VNET_RX_EMPTY;
	if (n < 0) {
		/* ECONNRESET and the like: nothing else can come from this socket. */
		vnet_count(&v->stats.rx_errors, 1);
		vnet_link_down(v);
		return VNET_RX_DOWN;
	}
	if (n == 0 && v->peer_hup) {
		vnet_link_down(v);
		return VNET_RX_DOWN;
	}
	if (n == 0) {
		/* A zero-length message, or the end before epoll told us: it is
		 * no frame either way, and epoll tells which (it reports the hang-up). */
		return VNET_RX_EMPTY;
	}
	if ((size_t)n > lim || (m.msg_flags & MSG_TRUNC)) {
		if ((size_t)n > v->max_frame || lim == v->max_frame)
			vnet_count(&v->stats.rx_drop_size, 1);
		else
			vnet_count(&v->stats.rx_drop_buffer, 1);
		return VNET_RX_DROPPED;
	}
	if ((size_t)n < VNET_ETH_HLEN) {
		vnet_count(&v->stats.rx_drop_size, 1);
		return VNET_RX_DROPPED;
	}
	virtq_chain_wrote(c, v->iov, (unsigned)m.msg_iovlen, (size_t)n);
	virtq_chain_write(c, 0, &hdr, sizeof(hdr));
	*used = VNET_HDR_LEN + (uint32_t)n;
	vnet_count(&v->stats.rx_frames, 1);
	vnet_count(&v->stats.rx_bytes, (uint64_t)n);
	return VNET_RX_DONE;
}

/*
 * A chain to receive into: 1 (rx_chain, held), 0 (none posted, or a batch of
 * useless ones returned: busy is set) or -errno.
 */
static int vnet_rx_chain(struct vnet *v, struct virtq *q)
{
	unsigned n = 0;
	int ret = 1;

	while (!v->rx_held) {
		/* A guest refilling tiny buffers from another vCPU cannot keep us here. */
		if (n++ == VNET_BATCH) {
			v->busy = true;
			ret = 0;
			break;
		}
		ret = virtq_pop(q, &v->rx_chain);
		if (ret <= 0)
			break;
		/* A receive queue holds device-writable buffers only (§5.1.6.3). */
		ret = -EINVAL;
		if (v->rx_chain.nout)
			break;
		if (v->rx_chain.in_bytes >= VNET_HDR_LEN + VNET_ETH_HLEN) {
			v->rx_held = true;
			ret = 1;
			break;
		}
		/* No frame fits: hand it back unused rather than keep it forever. */
		vnet_count(&v->stats.rx_short_bufs, 1);
		ret = virtq_push(q, v->rx_chain.head, 0);
		if (ret < 0)
			break;
	}
	return ret;
}

static int vnet_rx(struct vnet *v, struct virtq *q)
{
	enum vnet_rx_result r;
	uint32_t len = 0;
	unsigned n;
	int ret = 0;

	if (!virtq_is_ready(q)) {
		v->rx_held = false;
		goto out;
	}
	for (n = 0; n < VNET_BATCH && v->readable && vnet_is_up(v); n++) {
		/* Without a buffer, readable stays set and EPOLLIN off until a notify. */
		ret = vnet_rx_chain(v, q);
		if (ret <= 0)
			break;
		r = vnet_rx_frame(v, &v->rx_chain, &len);
		if (r == VNET_RX_EMPTY)
			v->readable = false;
		if (r != VNET_RX_DONE && r != VNET_RX_DROPPED)
			break;
		if (r == VNET_RX_DONE) {
			v->rx_held = false;
			ret = virtq_push(q, v->rx_chain.head, len);
			if (ret < 0)
				break;
		}
	}
	if (n == VNET_BATCH)
		v->busy = true;
out:
	return ret < 0 ? ret : 0;
}

/* ---- the event thread ---- */

/* Register the backend for exactly what the next round would act on. */
static void vnet_arm(struct vnet *v, bool live)
{
	struct epoll_event ev = { .data.u64 = VNET_TOKEN_BACKEND };
	uint32_t want = 0;
	int op;

	if (live && vnet_is_up(v)) {
		if (!v->readable)
			want |= EPOLLIN | EPOLLRDHUP;
		if (v->tx_held)
			want |= EPOLLOUT;
	}
	v->arm_failed = false;
	if (want == v->armed)
		return;
	op = !v->armed ? EPOLL_CTL_ADD : want ? EPOLL_CTL_MOD : EPOLL_CTL_DEL;
	ev.events = want;
	if (epoll_ctl(v->epfd, op, v->fd, &ev) == 0)
		v->armed = want;
	else
		v->arm_failed = true;
}

/* One locked section: queues is NULL while the driver is not running the device. */
static int vnet_work(void *arg, struct virtq *queues)
{
	struct vnet *v = arg;
	int ret = 0;

	/* The guest reset the device since we last looked: chains popped
	 * before belong to rings that no longer exist. */
	if (v->seen_gen != v->reset_gen) {
		vnet_tx_forget(v);
		v->rx_held = false;
		v->seen_gen = v->reset_gen;
	}
	v->busy = false;
	if (queues) {
		ret = vnet_tx(v, &queues[VNET_TXQ]);
		if (!ret)
			ret = vnet_rx(v, &queues[VNET_RXQ]);
	}
	/* A broken queue makes the device need a reset: stop polling for it. */
	vnet_arm(v, queues && !ret);
	return ret;
}

static void vnet_event(struct vnet *v, const struct epoll_event *e)
{
	uint64_t count;
	ssize_t r;

	if (e->data.u64 == VNET_TOKEN_KICK) {
		r = read(v->kickfd, &count, sizeof(count));
		(void)r;
		return;
	}
	/* A hang-up or an error reads as readable: recvmsg() then tells. */
	if (e->events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		v->readable = true;
	if (e->events & (EPOLLRDHUP | EPOLLHUP))
		v->peer_hup = true;
	/* EPOLLOUT needs nothing: every round retries a held tx chain. */
}

static int vnet_timeout(const struct vnet *v)
{
	return v->busy ? 0 : v->arm_failed ? VNET_RETRY_MS : -1;
}

static void vnet_loop(void *arg)
{
	struct vnet *v = arg;
	int n;

	while (!devthread_stopping(&v->th)) {
		n = epoll_wait(v->epfd, v->evs, VNET_EVENTS, vnet_timeout(v));
		v->nevs = n > 0 ? n : 0;
		for (int i = 0; i < v->nevs; i++)
			vnet_event(v, &v->evs[i]);
		virtio_mmio_run(v->mmio, vnet_work, v);
	}
}

/* ---- device ops (vCPU threads, under the transport's lock) ---- */

static uint64_t vnet_features(void *dev)
{
	return VIRTIO_BIT(VIRTIO_NET_F_MAC) | VIRTIO_BIT(VIRTIO_NET_F_STATUS) |
	       VIRTIO_BIT(VIRTIO_NET_F_MTU);
}

static void vnet_config_read(void *dev, uint32_t off, void *data, uint32_t len)
{
	const struct vnet *v = dev;
	struct virtio_net_config cfg = {
		.status = vnet_is_up(v) ? VIRTIO_NET_S_LINK_UP : 0,
		.max_virtqueue_pairs = 1,
		.mtu = v->mtu,
	};

	memcpy(cfg.mac, v->mac, sizeof(cfg.mac));
	/* The transport checked off + len <= config_size. */
	memcpy(data, (const char *)&cfg + off, len);
}

static int vnet_activate(void *dev, uint64_t features)
{
	/* Frames waiting in the backend can go in once buffers are posted. */
	vnet_kick(dev);
	return 0;
}

static int vnet_notify(void *dev, struct virtq *q, unsigned qidx)
{
	/* Tx frames or fresh rx buffers: the event thread takes it from here. */
	vnet_kick(dev);
	return 0;
}

static void vnet_reset(void *dev)
{
	struct vnet *v = dev;

	v->reset_gen++;
	vnet_kick(v);
}

const struct virtio_dev_ops vnet_ops = {
	.name = "net",
	.device_id = VIRTIO_ID_NET,
	.num_queues = 2,
	.queue_max = VNET_QUEUE_SIZE,
	.config_size = sizeof(struct virtio_net_config),
	.features = vnet_features,
	.config_read = vnet_config_read,
	.activate = vnet_activate,
	.notify = vnet_notify,
	.reset = vnet_reset,
};

/* ---- create, start, stop, free ---- */

/* A unicast address that is not all zeroes, as Linux's is_valid_ether_addr(). */
static bool vnet_mac_ok(const uint8_t mac[6])
{
	static const uint8_t zero[6];

	return !(mac[0] & 1) && memcmp(mac, zero, sizeof(zero)) != 0;
}

static int vnet_check_params(const struct vnet_params *p, unsigned mtu)
{
	socklen_t len = sizeof(int);
	int type = 0, ret = -EINVAL;

	if (p->fd < 0 || mtu < VNET_MIN_MTU || mtu > VNET_MAX_MTU || !vnet_mac_ok(p->mac))
		goto out;
	if (getsockopt(p->fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) {
		ret = -errno;
		goto out;
	}
	/* One frame per message depends on it. */
	if (type == SOCK_SEQPACKET)
		ret = 0;
out:
	return ret;
}

int vnet_create(struct vnet **out, const struct vnet_params *p)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = VNET_TOKEN_KICK };
	unsigned mtu = p->mtu ? p->mtu : VNET_DEFAULT_MTU;
	struct vnet *v = NULL;
	int ret;

	*out = NULL;
	ret = vnet_check_params(p, mtu);
	if (ret)
		goto out;
	ret = -ENOMEM;
	v = calloc(1, sizeof(*v));
	if (!v)
		goto out;
	v->epfd = v->kickfd = -1;
	devthread_init(&v->th);
	v->fd = p->fd;
	memcpy(v->mac, p->mac, sizeof(v->mac));
	v->mtu = (uint16_t)mtu;
	v->max_frame = VNET_ETH_HLEN + mtu;
	v->link_up = 1;
	v->epfd = epoll_create1(EPOLL_CLOEXEC);
	v->kickfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (v->epfd < 0 || v->kickfd < 0) {
		ret = -errno;
		goto out;
	}
	if (epoll_ctl(v->epfd, EPOLL_CTL_ADD, v->kickfd, &ev) < 0) {
		ret = -errno;
		goto out;
	}
	*out = v;
	v = NULL;
	ret = 0;
out:
	vnet_free(v);
	return ret;
}

int vnet_start(struct vnet *v, struct virtio_mmio_dev *dev, bool filter)
{
	v->mmio = dev;
	return devthread_start(&v->th, vnet_loop, v, filter, SECCOMP_ROLE_NET);
}

static void vnet_wake(void *arg)
{
	vnet_kick(arg);
}

void vnet_stop(struct vnet *v)
{
	if (v)
		devthread_stop(&v->th, vnet_wake, v);
}

void vnet_free(struct vnet *v)
{
	if (!v)
		return;
	vnet_stop(v);
	/* Closing the epoll fd also forgets the backend's registration. */
	if (v->kickfd >= 0)
		close(v->kickfd);
	if (v->epfd >= 0)
		close(v->epfd);
	devthread_destroy(&v->th);
	free(v);
}

void vnet_get_stats(const struct vnet *v, struct vnet_stats *out)
{
	const struct vnet_stats *s = &v->stats;

	out->tx_frames = __atomic_load_n(&s->tx_frames, __ATOMIC_RELAXED);
	out->tx_bytes = __atomic_load_n(&s->tx_bytes, __ATOMIC_RELAXED);
	out->rx_frames = __atomic_load_n(&s->rx_frames, __ATOMIC_RELAXED);
	out->rx_bytes = __atomic_load_n(&s->rx_bytes, __ATOMIC_RELAXED);
	out->tx_drop_size = __atomic_load_n(&s->tx_drop_size, __ATOMIC_RELAXED);
	out->tx_drop_link = __atomic_load_n(&s->tx_drop_link, __ATOMIC_RELAXED);
	out->tx_drop_error = __atomic_load_n(&s->tx_drop_error, __ATOMIC_RELAXED);
	out->tx_drop_reset = __atomic_load_n(&s->tx_drop_reset, __ATOMIC_RELAXED);
	out->tx_stalls = __atomic_load_n(&s->tx_stalls, __ATOMIC_RELAXED);
	out->rx_drop_size = __atomic_load_n(&s->rx_drop_size, __ATOMIC_RELAXED);
	out->rx_drop_buffer = __atomic_load_n(&s->rx_drop_buffer, __ATOMIC_RELAXED);
	out->rx_short_bufs = __atomic_load_n(&s->rx_short_bufs, __ATOMIC_RELAXED);
	out->rx_errors = __atomic_load_n(&s->rx_errors, __ATOMIC_RELAXED);
}

bool vnet_link_up(const struct vnet *v)
{
	return vnet_is_up(v);
}
