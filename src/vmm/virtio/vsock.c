/*
 * virtio-vsock device and its host-side multiplexer (see vsock.h).
 *
 * Threads. The vCPU thread that writes QueueNotify only bumps an eventfd.
 * Everything else happens in the event thread, inside virtio_mmio_run(), so
 * the transport's lock covers all device state and the rings together and
 * the device needs no lock of its own: accepting host connections, reading
 * CONNECT lines, guest tx packets, filling guest rx buffers, timeouts. The
 * only state the vCPU side touches is reset_gen (under that same lock).
 *
 * Directions. "g2h" is guest to host (the tx queue, into the Unix socket),
 * "h2g" host to guest (the Unix socket, into rx buffers).
 *
 * Bounds. h2g data is read from the Unix socket straight into a guest rx
 * buffer, and only while the guest has credit and buffers; otherwise we stop
 * polling the socket and the kernel's socket buffer holds the rest. g2h data
 * the host has no room for waits in a per-connection ring of VSOCK_BUF_ALLOC
 * bytes, which is the buf_alloc we advertise: a guest sending beyond the
 * credit it was given is reset. Connections are capped; resets owed to the
 * guest wait in a fixed ring; each locked section handles a bounded batch.
 */
#include "vmm/virtio/vsock.h"

#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "util.h"
#include "vmm/virtio/mmio.h"
#include "vmm/seccomp.h"
#include "vmm/virtio/devthread.h"
#include "vmm/virtio/queue.h"

#define VSOCK_RXQ 0
#define VSOCK_TXQ 1
#define VSOCK_EVQ 2
#define VSOCK_EVENT_TRANSPORT_RESET 0	/* virtio spec: struct virtio_vsock_event's id */
#define VSOCK_HDR ((uint32_t)sizeof(struct virtio_vsock_hdr))

/* Host ports for host-initiated connections. */
#define VSOCK_EPHEMERAL_MIN 0x40000000u
#define VSOCK_EPHEMERAL_MAX 0x7fffffffu

#define VSOCK_BACKLOG 64
#define VSOCK_HASH_SIZE 256		/* (host port, guest port) buckets */
#define VSOCK_RST_QUEUE 64		/* resets owed to the guest; more are dropped */
#define VSOCK_EVENTS 64			/* epoll events per wake-up */
#define VSOCK_BATCH 256			/* chains per queue per locked section */
#define VSOCK_ACCEPT_BATCH 16
#define VSOCK_TICK_MS 100		/* timeout granularity */
#define VSOCK_ACCEPT_PAUSE_MS 100	/* after accept() ran out of fds */
#define VSOCK_RESET_ACK_MS 1000		/* longest rx hold after a transport reset */
/* Tell the guest about freed buffer space once this much is freed, or once
 * the space it knows about falls below it. */
#define VSOCK_CREDIT_STEP (VSOCK_BUF_ALLOC / 4)

/* epoll tokens: the low half is 0, 1 or a connection's slot + 2, the high
 * half the connection's sequence number, so a stale event finds no match. */
#define VSOCK_TOKEN_LISTEN 0
#define VSOCK_TOKEN_KICK 1
#define VSOCK_TOKEN_CONN 2

enum vsock_state {
	VSOCK_LINE,		/* host connected; reading its CONNECT line */
	VSOCK_CONNECTING,	/* host-initiated; OP_REQUEST due or sent, awaiting OP_RESPONSE */
	VSOCK_ESTABLISHED,
};

struct vsock_conn {
	int fd;
	unsigned slot;
	uint32_t seq;
	enum vsock_state state;
	uint32_t host_port;
	uint32_t guest_port;
	uint32_t events;		/* registered with epoll; 0: not registered */
	uint64_t deadline;		/* ms on the monotonic clock; 0: none */
	struct vsock_conn *hnext;	/* hash chain */
	struct vsock_conn *rxnext;	/* list of connections with packets for the guest */
	struct vsock_conn *deadnext;	/* killed, freed at the end of the locked section */
	bool hashed, in_rxq, dead;
	bool guest_knows;		/* the guest has heard of it: a kill owes it an RST */
	/* Packets owed to the guest. */
	bool need_request, need_response, need_credit_update, need_credit_request;
	bool want_rw;			/* the socket is readable (data or EOF) */
	bool credit_requested;		/* CREDIT_REQUEST sent, no new credit since */
	/* Shutdown: the guest's sticky flags and what we did to the socket. */
	bool guest_no_rcv, guest_no_send;
	bool unix_eof;			/* read() returned 0, the guest was told */
	bool unix_shut_rd, unix_shut_wr;
	/* The CONNECT line coming in, the "OK <port>" reply going out. */
	uint8_t line_len, reply_len, reply_off;
	char line[VSOCK_LINE_MAX];
	char reply[VSOCK_LINE_MAX];
	/* g2h: bytes received, bytes written to the socket (fwd_cnt), and the
	 * fwd_cnt the guest was last told. The difference of the first and the
	 * last is what the guest may think it has in flight; it never exceeds
	 * VSOCK_BUF_ALLOC, so neither can the ring. */
	uint32_t g2h_cnt, fwd_cnt, fwd_sent;
	char *ring;			/* VSOCK_BUF_ALLOC bytes while holding data */
	uint32_t ring_head, ring_len;
	/* h2g: bytes sent, and the guest's last word on its buffer. */
	uint32_t h2g_cnt, peer_buf_alloc, peer_fwd_cnt;
};

struct vsock_rst {
	uint32_t host_port;
	uint32_t guest_port;
};

struct vsock {
	uint64_t guest_cid;
	uint64_t nfailed;		/* connections ended for a fault (vsock_conn_fail()) */
	unsigned max_conns;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	bool bound;			/* path is our socket file (dev, ino) */
	dev_t sock_dev;
	ino_t sock_ino;
	int listen_fd, epfd, kickfd;
	struct virtio_mmio_dev *mmio;
	struct devthread th;		/* the event thread */

	/* Under the transport's lock: bumped by reset() in a vCPU thread. */
	unsigned reset_gen;
	/* Set by vsock_transport_reset() from any thread, taken by the event thread. */
	bool transport_reset;

	/* Event thread only (inside virtio_mmio_run()), or while it is stopped. */
	unsigned seen_gen;
	struct vsock_conn **slots;	/* max_conns entries */
	unsigned nconns;
	uint32_t next_seq;
	uint32_t next_port;
	struct vsock_conn *hash[VSOCK_HASH_SIZE];
	struct vsock_conn *rxq_head, *rxq_tail;
	struct vsock_conn *dead;
	struct vsock_rst rst[VSOCK_RST_QUEUE];
	unsigned rst_head, rst_len;
	unsigned ndeadlines;
	uint64_t now, next_tick;	/* ms */
	uint64_t listen_resume;		/* accept() paused until then; 0: running */
	bool busy;			/* work left over: poll again without sleeping */
	bool rx_held;			/* rx_chain was popped and not yet used */
	bool reset_event_owed;		/* the guest is to be told: transport reset */
	/* The reset event was delivered and the guest has not yet read its
	 * CID again (its driver does that first, then resets its connected
	 * sockets): nothing goes to the guest's rx queue until it has, so a
	 * new connection's request is never caught by that reset. */
	bool reset_unacked;
	uint64_t reset_ack_by;		/* the hold ends then, read or not (a driver that never does) */
	int nevs;
	struct epoll_event evs[VSOCK_EVENTS];
	struct virtq_chain rx_chain, tx_chain;
	struct iovec iov[VIRTQ_MAX_SIZE];
};

static void vsock_conn_kill(struct vsock *v, struct vsock_conn *c, bool rst);
static void vsock_conn_fail(struct vsock *v, struct vsock_conn *c, bool rst, const char *why);
static void vsock_flush(struct vsock *v, struct vsock_conn *c);

static uint64_t vsock_now_ms(void)
{
	return now_ns() / 1000000;
}

/* The vCPU side: wake the event thread. */
static void vsock_kick(struct vsock *v)
{
	uint64_t one = 1;
	/* EAGAIN means the counter is already non-zero: the thread will wake. */
	ssize_t r = write(v->kickfd, &one, sizeof(one));

	(void)r;
}

/* ---- connection table ---- */

static unsigned vsock_hash(uint32_t host_port, uint32_t guest_port)
{
	uint32_t h = (host_port * 0x9e3779b1u) ^ guest_port;

	return (h * 0x85ebca6bu) >> 24;
}

_Static_assert(VSOCK_HASH_SIZE == 256, "vsock_hash() yields 8 bits");

static struct vsock_conn *vsock_lookup(const struct vsock *v, uint32_t host_port,
				       uint32_t guest_port)
{
	struct vsock_conn *c = v->hash[vsock_hash(host_port, guest_port)];

	while (c && (c->host_port != host_port || c->guest_port != guest_port))
		c = c->hnext;
	return c;
}

static bool vsock_host_port_used(const struct vsock *v, uint32_t port)
{
	for (unsigned i = 0; i < v->max_conns; i++)
		if (v->slots[i] && v->slots[i]->hashed && v->slots[i]->host_port == port)
			return true;
	return false;
}

/* A free host port for a host-initiated connection. At most max_conns are
 * taken out of 2^30, so this ends. */
static uint32_t vsock_alloc_port(struct vsock *v)
{
	uint32_t port;

	do {
		port = v->next_port;
		v->next_port = port == VSOCK_EPHEMERAL_MAX ? VSOCK_EPHEMERAL_MIN : port + 1;
	} while (vsock_host_port_used(v, port));
	return port;
}

/* Resets queued for an earlier connection with these ports must not hit this one. */
static void vsock_rst_forget(struct vsock *v, uint32_t host_port, uint32_t guest_port)
{
	unsigned n = v->rst_len, kept = 0;
	struct vsock_rst r;

	for (unsigned i = 0; i < n; i++) {
		r = v->rst[(v->rst_head + i) % VSOCK_RST_QUEUE];
		if (r.host_port != host_port || r.guest_port != guest_port)
			v->rst[(v->rst_head + kept++) % VSOCK_RST_QUEUE] = r;
	}
	v->rst_len = kept;
}

static void vsock_hash_add(struct vsock *v, struct vsock_conn *c)
{
	unsigned b = vsock_hash(c->host_port, c->guest_port);

	vsock_rst_forget(v, c->host_port, c->guest_port);
	c->hnext = v->hash[b];
	v->hash[b] = c;
	c->hashed = true;
}

static void vsock_hash_del(struct vsock *v, struct vsock_conn *c)
{
	struct vsock_conn **p = &v->hash[vsock_hash(c->host_port, c->guest_port)];

	while (*p && *p != c)
		p = &(*p)->hnext;
	if (*p)
		*p = c->hnext;
	c->hashed = false;
}

/* A connection for fd in a free slot, or NULL (the caller keeps fd). */
static struct vsock_conn *vsock_conn_new(struct vsock *v, int fd, enum vsock_state state)
{
	struct vsock_conn *c = NULL;
	unsigned slot;

	if (v->nconns >= v->max_conns)
		goto out;
	for (slot = 0; slot < v->max_conns && v->slots[slot]; slot++)
		;
	c = calloc(1, sizeof(*c));
	if (!c)
		goto out;
	c->fd = fd;
	c->slot = slot;
	c->seq = v->next_seq++;
	c->state = state;
	v->slots[slot] = c;
	v->nconns++;
out:
	return c;
}

static void vsock_set_deadline(struct vsock *v, struct vsock_conn *c, uint64_t ms)
{
	if (!c->deadline && ms)
		v->ndeadlines++;
	else if (c->deadline && !ms)
		v->ndeadlines--;
	c->deadline = ms ? v->now + ms : 0;
}

/* ---- the list of connections with packets for the guest ---- */

static void vsock_rxq_add(struct vsock *v, struct vsock_conn *c)
{
	if (!c->in_rxq && !c->dead) {
		c->in_rxq = true;
		c->rxnext = NULL;
		if (v->rxq_tail)
			v->rxq_tail->rxnext = c;
		else
			v->rxq_head = c;
		v->rxq_tail = c;
	}
}

static struct vsock_conn *vsock_rxq_pop(struct vsock *v)
{
	struct vsock_conn *c = v->rxq_head;

	if (c) {
		v->rxq_head = c->rxnext;
		if (!v->rxq_head)
			v->rxq_tail = NULL;
		c->in_rxq = false;
	}
	return c;
}

static void vsock_rxq_del(struct vsock *v, struct vsock_conn *c)
{
	struct vsock_conn **p = &v->rxq_head, *prev = NULL;

	while (*p && *p != c) {
		prev = *p;
		p = &(*p)->rxnext;
	}
	if (*p) {
		*p = c->rxnext;
		if (v->rxq_tail == c)
			v->rxq_tail = prev;
	}
	c->in_rxq = false;
}

static bool vsock_conn_pending(const struct vsock_conn *c)
{
	return c->need_request || c->need_response || c->want_rw || c->need_credit_update ||
	       c->need_credit_request;
}

/* A reset for a connection the guest knows but we no longer track. When the
 * ring is full the guest is not reading its rx queue; it misses this one. */
static void vsock_rst_queue(struct vsock *v, uint32_t host_port, uint32_t guest_port)
{
	if (v->rst_len < VSOCK_RST_QUEUE)
		v->rst[(v->rst_head + v->rst_len++) % VSOCK_RST_QUEUE] =
			(struct vsock_rst){ .host_port = host_port, .guest_port = guest_port };
}

/* ---- credit ---- */

/* Bytes the guest can take now. A guest claiming to have consumed more than
 * we sent, or a smaller buffer than it holds, gets nothing. */
static uint32_t vsock_peer_credit(const struct vsock_conn *c)
{
	uint32_t in_flight = c->h2g_cnt - c->peer_fwd_cnt;

	return in_flight < c->peer_buf_alloc ? c->peer_buf_alloc - in_flight : 0;
}

/* May the socket be read for the guest now? */
static bool vsock_can_read(const struct vsock_conn *c)
{
	return c->state == VSOCK_ESTABLISHED && !c->unix_eof && !c->guest_no_rcv &&
	       vsock_peer_credit(c) > 0;
}

/* Owe the guest a CREDIT_UPDATE when it would otherwise stall or fall far behind. */
static void vsock_credit_check(struct vsock *v, struct vsock_conn *c)
{
	uint32_t freed = c->fwd_cnt - c->fwd_sent;
	uint32_t seen_free = VSOCK_BUF_ALLOC - (c->g2h_cnt - c->fwd_sent);

	if (c->state == VSOCK_ESTABLISHED && !c->guest_no_send && freed &&
	    (freed >= VSOCK_CREDIT_STEP || seen_free < VSOCK_CREDIT_STEP)) {
		c->need_credit_update = true;
		vsock_rxq_add(v, c);
	}
}

/* ---- epoll ---- */

static uint32_t vsock_conn_wanted(const struct vsock_conn *c)
{
	uint32_t ev = 0;

	if (c->state == VSOCK_LINE) {
		ev = EPOLLIN;
	} else if (c->state == VSOCK_ESTABLISHED) {
		/* Once want_rw is set we know it is readable: no need to hear again. */
		if (vsock_can_read(c) && !c->want_rw)
			ev |= EPOLLIN;
		if (c->reply_off < c->reply_len || c->ring_len)
			ev |= EPOLLOUT;
	}
	return ev;
}

/*
 * Register exactly what the connection waits for. Nothing at all means
 * deregistering: a hung-up socket reports EPOLLHUP whatever the mask, and a
 * level-triggered report we would not act on is a busy loop.
 */
static void vsock_conn_arm(struct vsock *v, struct vsock_conn *c)
{
	uint32_t want = vsock_conn_wanted(c);
	struct epoll_event ev = {
		.events = want,
		.data.u64 = ((uint64_t)c->seq << 32) | (c->slot + VSOCK_TOKEN_CONN),
	};
	int op = !c->events ? EPOLL_CTL_ADD : want ? EPOLL_CTL_MOD : EPOLL_CTL_DEL;

	if (c->dead || want == c->events)
		;
	else if (epoll_ctl(v->epfd, op, c->fd, &ev) == 0)
		c->events = want;
	else
		vsock_conn_fail(v, c, c->guest_knows, "epoll_ctl failed");
}

/* ---- connection life ---- */

/*
 * Forget the connection now (no more lookups, events or rx turns) and free it
 * at the end of the locked section, so callers may still look at c->dead.
 * rst: tell the guest.
 */
static void vsock_conn_kill(struct vsock *v, struct vsock_conn *c, bool rst)
{
	if (c->dead)
		return;
	c->dead = true;
	if (c->hashed)
		vsock_hash_del(v, c);
	if (c->in_rxq)
		vsock_rxq_del(v, c);
	vsock_set_deadline(v, c, 0);
	/* Closing also takes it out of the epoll set. */
	close(c->fd);
	c->fd = -1;
	c->events = 0;
	v->slots[c->slot] = NULL;
	v->nconns--;
	if (rst)
		vsock_rst_queue(v, c->host_port, c->guest_port);
	c->deadnext = v->dead;
	v->dead = c;
}

/* A connection ended for a fault, not a close: said on stderr (the first 16,
 * then one in 1024: the guest can cause these), then killed. */
static void vsock_conn_fail(struct vsock *v, struct vsock_conn *c, bool rst, const char *why)
{
	char line[200];
	int n;

	if (c->dead)
		return;
	if (v->nfailed < 16 || v->nfailed % 1024 == 0) {
		n = snprintf(line, sizeof(line),
			     "kiln-vmm: vsock: connection host port %u, guest port %u ended: %s%s\n",
			     c->host_port, c->guest_port, why, rst ? " (reset sent to the guest)" : "");
		if (n > 0 && write(STDERR_FILENO, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1) < 0) {
			/* nowhere to say it */
		}
	}
	v->nfailed++;
	vsock_conn_kill(v, c, rst);
}

static void vsock_reap(struct vsock *v)
{
	struct vsock_conn *c;

	while ((c = v->dead)) {
		v->dead = c->deadnext;
		free(c->ring);
		free(c);
	}
}

/* Device reset, or teardown: every connection goes, silently. */
static void vsock_drop_all(struct vsock *v)
{
	for (unsigned i = 0; i < v->max_conns; i++)
		if (v->slots[i])
			vsock_conn_kill(v, v->slots[i], false);
	v->rst_len = 0;
	v->rx_held = false;
	v->reset_unacked = false;
}

/*
 * Done with the stream? The guest's data has drained into the socket: a
 * guest that will send no more gets the socket's write side shut; a stream
 * over both ways (the guest closed, or each side finished sending) ends with
 * a reset, which is how the peer that shut down last learns it is over.
 */
static void vsock_conn_settle(struct vsock *v, struct vsock_conn *c)
{
	bool drained = !c->ring_len && c->reply_off == c->reply_len;

	if (c->dead || c->state != VSOCK_ESTABLISHED || !c->guest_no_send) {
		/* Nothing to settle: the guest still sends. */
	} else if (!drained) {
		/* The guest closed; the host gets a while to take the rest. */
		if (c->guest_no_rcv && !c->deadline)
			vsock_set_deadline(v, c, VSOCK_SHUTDOWN_TIMEOUT_MS);
	} else {
		if (!c->unix_shut_wr) {
			shutdown(c->fd, SHUT_WR);
			c->unix_shut_wr = true;
		}
		if (c->guest_no_rcv || c->unix_eof)
			vsock_conn_kill(v, c, true);
	}
}

static ssize_t vsock_sendv(int fd, struct iovec *iov, unsigned n)
{
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = n };
	ssize_t r;

	do
		r = sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
	while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : r;
}

/* Bytes [off, off + len) of segments iov[0 .. n) as iovecs in out; their count. */
static unsigned vsock_iov_slice(const struct iovec *iov, unsigned n, size_t off, size_t len,
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

/* Write out what waits for the host: the "OK" reply, then guest data in order. */
static void vsock_flush(struct vsock *v, struct vsock_conn *c)
{
	struct iovec iov[2];
	uint32_t first;
	ssize_t n = 0;

	while (c->reply_off < c->reply_len) {
		iov[0] = (struct iovec){ c->reply + c->reply_off,
					 (size_t)(c->reply_len - c->reply_off) };
		n = vsock_sendv(c->fd, iov, 1);
		if (n < 0)
			goto out;
		c->reply_off += (uint8_t)n;
	}
	while (c->ring_len) {
		first = VSOCK_BUF_ALLOC - c->ring_head;
		if (first > c->ring_len)
			first = c->ring_len;
		iov[0] = (struct iovec){ c->ring + c->ring_head, first };
		iov[1] = (struct iovec){ c->ring, c->ring_len - first };
		n = vsock_sendv(c->fd, iov, iov[1].iov_len ? 2 : 1);
		if (n < 0)
			goto out;
		c->ring_head = (uint32_t)((c->ring_head + (size_t)n) % VSOCK_BUF_ALLOC);
		c->ring_len -= (uint32_t)n;
		c->fwd_cnt += (uint32_t)n;
	}
	/* Idle connections hold no buffer. */
	free(c->ring);
	c->ring = NULL;
	c->ring_head = 0;
	n = 0;
out:
	if (n < 0 && n != -EAGAIN) {
		/* EPIPE and friends: the host is gone or will read no more. */
		vsock_conn_kill(v, c, true);
	} else {
		vsock_credit_check(v, c);
		vsock_conn_settle(v, c);
	}
}

/* ---- host side: accepting, the CONNECT line, connecting ---- */

static void vsock_listen_pause(struct vsock *v, bool pause)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = VSOCK_TOKEN_LISTEN };

	if (pause && epoll_ctl(v->epfd, EPOLL_CTL_DEL, v->listen_fd, NULL) == 0)
		v->listen_resume = v->now + VSOCK_ACCEPT_PAUSE_MS;
	else if (!pause && epoll_ctl(v->epfd, EPOLL_CTL_ADD, v->listen_fd, &ev) == 0)
		v->listen_resume = 0;
	else if (!pause)
		v->listen_resume = v->now + VSOCK_ACCEPT_PAUSE_MS;
}

static void vsock_accept(struct vsock *v)
{
	struct vsock_conn *c;
	int fd;

	for (unsigned i = 0; i < VSOCK_ACCEPT_BATCH; i++) {
		fd = accept4(v->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0 && (errno == EINTR || errno == ECONNABORTED))
			continue;
		if (fd < 0) {
			/* Out of fds or memory: the listener would stay readable
			 * and spin us, so stop listening for a moment. */
			if (errno != EAGAIN)
				vsock_listen_pause(v, true);
			break;
		}
		/* Over the cap (or out of memory): refused, the host sees EOF. */
		c = vsock_conn_new(v, fd, VSOCK_LINE);
		if (!c) {
			close(fd);
			continue;
		}
		vsock_set_deadline(v, c, VSOCK_LINE_TIMEOUT_MS);
		vsock_conn_arm(v, c);
	}
}

/* "CONNECT <1 to 10 digits>\n" exactly, the port at most 2^32 - 1. */
static int vsock_parse_connect(const char *s, size_t n, uint32_t *port)
{
	static const char prefix[] = "CONNECT ";
	const size_t plen = sizeof(prefix) - 1;
	uint64_t val = 0;
	size_t i;
	int ret = -EINVAL;

	if (n < plen + 2 || n > plen + 11 || memcmp(s, prefix, plen) || s[n - 1] != '\n')
		goto out;
	for (i = plen; i < n - 1; i++) {
		if (s[i] < '0' || s[i] > '9')
			goto out;
		val = val * 10 + (uint64_t)(s[i] - '0');
	}
	if (val > UINT32_MAX)
		goto out;
	*port = (uint32_t)val;
	ret = 0;
out:
	return ret;
}

/*
 * Read the CONNECT line, and not one byte past it: whatever follows belongs to
 * the stream and stays in the socket until the guest accepts. Peek for the
 * newline, then consume exactly up to it; a partial line is consumed into
 * c->line so a level-triggered poll does not keep reporting it.
 */
static void vsock_line_read(struct vsock *v, struct vsock_conn *c)
{
	char buf[VSOCK_LINE_MAX];
	const char *nl;
	uint32_t port;
	ssize_t n, take;
	bool ok = false;

	n = recv(c->fd, buf, sizeof(buf) - c->line_len, MSG_PEEK);
	if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
		ok = true;
		goto out;
	}
	if (n <= 0)
		goto out;	/* EOF or an error before a whole line */
	nl = memchr(buf, '\n', (size_t)n);
	take = nl ? nl - buf + 1 : n;
	if (recv(c->fd, c->line + c->line_len, (size_t)take, 0) != take)
		goto out;
	c->line_len += (uint8_t)take;
	if (!nl) {
		ok = c->line_len < sizeof(c->line);	/* else too long */
		goto out;
	}
	if (vsock_parse_connect(c->line, c->line_len, &port) < 0)
		goto out;
	c->state = VSOCK_CONNECTING;
	c->guest_port = port;
	c->host_port = vsock_alloc_port(v);
	vsock_hash_add(v, c);
	c->need_request = true;
	vsock_rxq_add(v, c);
	/* One deadline from here to the guest's answer, rx buffers or not. */
	vsock_set_deadline(v, c, 0);
	vsock_set_deadline(v, c, VSOCK_REQUEST_TIMEOUT_MS);
	ok = true;
out:
	if (!ok)
		vsock_conn_kill(v, c, false);
}

/* The guest asked to connect to host port h->dst_port: "<path>_<port>". */
static void vsock_guest_connect(struct vsock *v, const struct virtio_vsock_hdr *h)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct vsock_conn *c = NULL;
	int fd = -1, n;

	if (v->nconns >= v->max_conns)
		goto out;
	n = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s_%" PRIu32, v->path, h->dst_port);
	if (n < 0 || (size_t)n >= sizeof(sa.sun_path))
		goto out;
	/* Non-blocking: a full backlog is EAGAIN, a refusal like any other. */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (const struct sockaddr *)&sa, sizeof(sa)) < 0)
		goto out;
	c = vsock_conn_new(v, fd, VSOCK_ESTABLISHED);
	if (!c)
		goto out;
	fd = -1;
	c->host_port = h->dst_port;
	c->guest_port = h->src_port;
	c->guest_knows = true;
	c->peer_buf_alloc = h->buf_alloc;
	c->peer_fwd_cnt = h->fwd_cnt;
	vsock_hash_add(v, c);
	c->need_response = true;
	vsock_rxq_add(v, c);
	vsock_conn_arm(v, c);
out:
	if (fd >= 0)
		close(fd);
	if (!c)
		vsock_rst_queue(v, h->dst_port, h->src_port);
}

/* ---- guest to host ---- */

static int vsock_ring_put(struct vsock_conn *c, const struct virtq_chain *ch, size_t off,
			  uint32_t len)
{
	uint32_t tail, first;
	int ret = -ENOBUFS;

	/* Cannot happen while the credit check holds; never overrun regardless. */
	if (len > VSOCK_BUF_ALLOC - c->ring_len)
		goto out;
	ret = -ENOMEM;
	if (!c->ring)
		c->ring = malloc(VSOCK_BUF_ALLOC);
	if (!c->ring)
		goto out;
	tail = (c->ring_head + c->ring_len) % VSOCK_BUF_ALLOC;
	first = VSOCK_BUF_ALLOC - tail;
	if (first > len)
		first = len;
	virtq_chain_read(ch, off, c->ring + tail, first);
	virtq_chain_read(ch, off + first, c->ring, len - first);
	c->ring_len += len;
	ret = 0;
out:
	return ret;
}

/* OP_RW: len payload bytes after the header, len already checked against the chain. */
static void vsock_guest_data(struct vsock *v, struct vsock_conn *c, const struct virtq_chain *ch,
			     uint32_t len)
{
	const char *why = NULL;
	ssize_t n = 0;
	bool ok = false;
	unsigned k;

	/* The credit we last advertised is all the guest may use (§5.10.6.3).
	 * g2h_cnt - fwd_sent <= VSOCK_BUF_ALLOC, so this cannot wrap. */
	if (c->g2h_cnt - c->fwd_sent + len > VSOCK_BUF_ALLOC) {
		why = "the guest sent beyond the credit it was given";
		goto out;
	}
	c->g2h_cnt += len;
	if (!c->ring_len && c->reply_off == c->reply_len && len) {
		k = vsock_iov_slice(ch->iov, ch->nout, VSOCK_HDR, len, v->iov);
		n = vsock_sendv(c->fd, v->iov, k);
		if (n < 0 && n != -EAGAIN) {
			why = NULL; /* the host end closed: not a fault */
			goto out;
		}
		if (n < 0)
			n = 0;
		c->fwd_cnt += (uint32_t)n;
	}
	if ((uint32_t)n < len &&
	    vsock_ring_put(c, ch, VSOCK_HDR + (size_t)n, len - (uint32_t)n) < 0) {
		why = "no room for the guest's data";
		goto out;
	}
	vsock_credit_check(v, c);
	ok = true;
out:
	if (!ok && why)
		vsock_conn_fail(v, c, true, why);
	else if (!ok)
		vsock_conn_kill(v, c, true);
}

static void vsock_guest_shutdown(struct vsock *v, struct vsock_conn *c, uint32_t flags)
{
	if ((flags & VIRTIO_VSOCK_SHUTDOWN_RCV) && !c->unix_shut_rd) {
		/* On a Unix stream this also makes the host's writes fail (EPIPE)
		 * rather than pile up in a buffer nobody reads. */
		shutdown(c->fd, SHUT_RD);
		c->unix_shut_rd = true;
		c->guest_no_rcv = true;
	}
	if (flags & VIRTIO_VSOCK_SHUTDOWN_SEND)
		c->guest_no_send = true;
	vsock_flush(v, c);
}

/* A valid packet from the guest for connection c, anything but OP_RST. */
static void vsock_conn_packet(struct vsock *v, struct vsock_conn *c,
			      const struct virtio_vsock_hdr *h, const struct virtq_chain *ch)
{
	bool ok = c->state == VSOCK_ESTABLISHED;

	/* Every packet carries the guest's credit. */
	if (h->buf_alloc != c->peer_buf_alloc || h->fwd_cnt != c->peer_fwd_cnt)
		c->credit_requested = false;
	c->peer_buf_alloc = h->buf_alloc;
	c->peer_fwd_cnt = h->fwd_cnt;
	switch (h->op) {
	case VIRTIO_VSOCK_OP_RESPONSE:
		/* Only to our request, once it went out. */
		ok = c->state == VSOCK_CONNECTING && !c->need_request;
		if (!ok)
			break;
		c->state = VSOCK_ESTABLISHED;
		vsock_set_deadline(v, c, 0);
		c->reply_len = (uint8_t)snprintf(c->reply, sizeof(c->reply), "OK %" PRIu32 "\n",
						 c->host_port);
		vsock_flush(v, c);
		break;
	case VIRTIO_VSOCK_OP_SHUTDOWN:
		if (ok)
			vsock_guest_shutdown(v, c, h->flags);
		break;
	case VIRTIO_VSOCK_OP_RW:
		ok = ok && !c->guest_no_send;
		if (ok)
			vsock_guest_data(v, c, ch, h->len);
		break;
	case VIRTIO_VSOCK_OP_CREDIT_REQUEST:
		if (ok) {
			c->need_credit_update = true;
			vsock_rxq_add(v, c);
		}
		break;
	case VIRTIO_VSOCK_OP_CREDIT_UPDATE:
		/* Taken above; EPOLLIN comes back with the credit. */
		break;
	default:
		/* OP_REQUEST for a connection that exists. */
		ok = false;
		break;
	}
	/* The guest sent it, so it knows the connection: it gets the reset. */
	if (!ok)
		vsock_conn_fail(v, c, true, "the guest sent a request for a connection it has");
}

static bool vsock_hdr_ok(const struct vsock *v, const struct virtio_vsock_hdr *h,
			 uint32_t payload)
{
	return h->src_cid == v->guest_cid && h->dst_cid == VIRTIO_VSOCK_HOST_CID &&
	       h->type == VIRTIO_VSOCK_TYPE_STREAM && h->op >= VIRTIO_VSOCK_OP_REQUEST &&
	       h->op <= VIRTIO_VSOCK_OP_CREDIT_REQUEST && h->len <= VSOCK_MAX_PKT &&
	       h->len <= payload && (h->op == VIRTIO_VSOCK_OP_RW || h->len == 0);
}

/*
 * One tx chain. Never fails the queue: a chain too short for a header is
 * dropped (there is nobody to answer), anything else malformed resets the
 * connection it names, and a reset is never answered with one.
 */
static void vsock_tx_packet(struct vsock *v, const struct virtq_chain *ch)
{
	struct virtio_vsock_hdr h;
	struct vsock_conn *c;

	if (ch->out_bytes < VSOCK_HDR)
		return;
	virtq_chain_read(ch, 0, &h, sizeof(h));
	c = vsock_lookup(v, h.dst_port, h.src_port);
	if (!vsock_hdr_ok(v, &h, ch->out_bytes - VSOCK_HDR)) {
		if (c)
			vsock_conn_fail(v, c, h.op != VIRTIO_VSOCK_OP_RST, "a malformed packet from the guest");
		else if (h.op != VIRTIO_VSOCK_OP_RST)
			vsock_rst_queue(v, h.dst_port, h.src_port);
	} else if (c && h.op == VIRTIO_VSOCK_OP_RST) {
		vsock_conn_kill(v, c, false);
	} else if (c) {
		vsock_conn_packet(v, c, &h, ch);
		vsock_conn_arm(v, c);
	} else if (h.op == VIRTIO_VSOCK_OP_REQUEST) {
		vsock_guest_connect(v, &h);
	} else if (h.op != VIRTIO_VSOCK_OP_RST) {
		vsock_rst_queue(v, h.dst_port, h.src_port);
	}
}

static int vsock_tx(struct vsock *v, struct virtq *q)
{
	unsigned n;
	int ret = 0;

	for (n = 0; n < VSOCK_BATCH; n++) {
		ret = virtq_pop(q, &v->tx_chain);
		if (ret <= 0)
			break;
		vsock_tx_packet(v, &v->tx_chain);
		/* The data was written or copied: the buffer is the guest's again. */
		ret = virtq_push(q, v->tx_chain.head, 0);
		if (ret < 0)
			break;
	}
	if (n == VSOCK_BATCH)
		v->busy = true;
	return ret < 0 ? ret : 0;
}

/* ---- host to guest ---- */

static struct virtio_vsock_hdr vsock_hdr(const struct vsock *v, uint32_t host_port,
					 uint32_t guest_port, uint16_t op)
{
	return (struct virtio_vsock_hdr){
		.src_cid = VIRTIO_VSOCK_HOST_CID,
		.dst_cid = v->guest_cid,
		.src_port = host_port,
		.dst_port = guest_port,
		.type = VIRTIO_VSOCK_TYPE_STREAM,
		.op = op,
		.buf_alloc = VSOCK_BUF_ALLOC,
	};
}

/*
 * Read from the socket straight into the rx buffer after the header. Returns
 * the op to send (RW with *len, or SHUTDOWN SEND at EOF), or 0 for nothing.
 */
static uint16_t vsock_conn_read(struct vsock *v, struct vsock_conn *c,
				const struct virtq_chain *ch, uint32_t *len, uint32_t *flags)
{
	uint32_t max = ch->in_bytes - VSOCK_HDR, credit = vsock_peer_credit(c);
	uint16_t op = 0;
	unsigned k;
	ssize_t n;

	if (max > VSOCK_MAX_PKT)
		max = VSOCK_MAX_PKT;
	if (max > credit)
		max = credit;
	/* Rx chains hold more than a header (vsock_rx()), so max is 0 only
	 * without credit, and vsock_can_read() said there was some. */
	k = vsock_iov_slice(ch->iov + ch->nout, ch->nin, VSOCK_HDR, max, v->iov);
	do
		n = readv(c->fd, v->iov, (int)k);
	while (n < 0 && errno == EINTR);
	if (n > 0) {
		virtq_chain_wrote(ch, v->iov, k, (size_t)n);
		op = VIRTIO_VSOCK_OP_RW;
		*len = (uint32_t)n;
		c->h2g_cnt += (uint32_t)n;
		/* A short read drained the socket; epoll tells us about more. */
		if ((uint32_t)n < max)
			c->want_rw = false;
		if ((uint32_t)n == credit && !c->credit_requested)
			c->need_credit_request = true;
	} else if (n == 0) {
		op = VIRTIO_VSOCK_OP_SHUTDOWN;
		*flags = VIRTIO_VSOCK_SHUTDOWN_SEND;
		c->unix_eof = true;
		c->want_rw = false;
	} else if (errno == EAGAIN) {
		c->want_rw = false;
	} else {
		/* The host end's doing (a reset when it closed unread), not a fault. */
		vsock_conn_kill(v, c, true);
	}
	return op;
}

/* The next packet c owes the guest, written into ch: its length, or 0 for none
 * (and then c owes nothing more). */
static uint32_t vsock_conn_fill(struct vsock *v, struct vsock_conn *c,
				const struct virtq_chain *ch)
{
	struct virtio_vsock_hdr h = vsock_hdr(v, c->host_port, c->guest_port, 0);
	uint32_t len = 0, flags = 0, ret = 0;

	if (c->need_request) {
		c->need_request = false;
		c->guest_knows = true;
		h.op = VIRTIO_VSOCK_OP_REQUEST;
	} else if (c->need_response) {
		c->need_response = false;
		h.op = VIRTIO_VSOCK_OP_RESPONSE;
	} else if (c->want_rw) {
		if (vsock_can_read(c)) {
			h.op = vsock_conn_read(v, c, ch, &len, &flags);
		} else {
			/* Readable, but the guest has no room: ask it once. */
			c->want_rw = false;
			if (c->state == VSOCK_ESTABLISHED && !c->unix_eof && !c->guest_no_rcv &&
			    !vsock_peer_credit(c) && !c->credit_requested)
				c->need_credit_request = true;
		}
		if (c->dead)
			goto out;
	}
	if (!h.op && c->need_credit_update) {
		h.op = VIRTIO_VSOCK_OP_CREDIT_UPDATE;
	} else if (!h.op && c->need_credit_request) {
		c->need_credit_request = false;
		c->credit_requested = true;
		h.op = VIRTIO_VSOCK_OP_CREDIT_REQUEST;
	}
	if (!h.op)
		goto out;
	/* Every packet tells the guest our credit. */
	h.len = len;
	h.flags = flags;
	h.fwd_cnt = c->fwd_cnt;
	c->fwd_sent = c->fwd_cnt;
	c->need_credit_update = false;
	virtq_chain_write(ch, 0, &h, sizeof(h));
	/* After EOF the stream may be over; its RST follows this packet. */
	vsock_conn_settle(v, c);
	ret = VSOCK_HDR + len;
out:
	return ret;
}

static uint32_t vsock_rst_fill(struct vsock *v, const struct virtq_chain *ch)
{
	struct vsock_rst r = v->rst[v->rst_head];
	struct virtio_vsock_hdr h = vsock_hdr(v, r.host_port, r.guest_port, VIRTIO_VSOCK_OP_RST);

	v->rst_head = (v->rst_head + 1) % VSOCK_RST_QUEUE;
	v->rst_len--;
	virtq_chain_write(ch, 0, &h, sizeof(h));
	return VSOCK_HDR;
}

/*
 * Hand the guest what is owed, one packet per rx chain: resets first, then
 * connections round-robin. A chain that turns out not to be needed is kept
 * (rx_held) for the next packet, since a popped chain cannot be given back.
 */
static int vsock_rx(struct vsock *v, struct virtq *q)
{
	struct vsock_conn *c;
	uint32_t len;
	unsigned n;
	int ret = 0;

	for (n = 0; n < VSOCK_BATCH && (v->rst_len || v->rxq_head); n++) {
		if (!v->rx_held) {
			ret = virtq_pop(q, &v->rx_chain);
			if (ret <= 0)
				break;
			/* Too small for a header and data: returned unused. */
			if (v->rx_chain.in_bytes <= VSOCK_HDR) {
				ret = virtq_push(q, v->rx_chain.head, 0);
				if (ret < 0)
					break;
				continue;
			}
			v->rx_held = true;
		}
		if (v->rst_len) {
			len = vsock_rst_fill(v, &v->rx_chain);
		} else {
			c = vsock_rxq_pop(v);
			len = vsock_conn_fill(v, c, &v->rx_chain);
			if (!c->dead && vsock_conn_pending(c))
				vsock_rxq_add(v, c);
			vsock_conn_arm(v, c);
		}
		if (len) {
			v->rx_held = false;
			ret = virtq_push(q, v->rx_chain.head, len);
			if (ret < 0)
				break;
		}
	}
	if (n == VSOCK_BATCH)
		v->busy = true;
	return ret < 0 ? ret : 0;
}

/* ---- the event thread ---- */

static void vsock_conn_event(struct vsock *v, struct vsock_conn *c, uint32_t events)
{
	/* A hang-up or error reads as both readable and writable: the read or
	 * write then tells what happened. */
	bool err = events & (EPOLLHUP | EPOLLERR);

	if (c->state == VSOCK_LINE) {
		vsock_line_read(v, c);
	} else if (c->state == VSOCK_ESTABLISHED) {
		if ((events & EPOLLOUT) || err)
			vsock_flush(v, c);
		if (!c->dead && ((events & EPOLLIN) || err) && vsock_can_read(c)) {
			c->want_rw = true;
			vsock_rxq_add(v, c);
		}
	}
	vsock_conn_arm(v, c);
}

static void vsock_event(struct vsock *v, const struct epoll_event *e)
{
	uint32_t low = (uint32_t)e->data.u64, seq = (uint32_t)(e->data.u64 >> 32);
	struct vsock_conn *c;
	uint64_t count;
	ssize_t r;

	if (low == VSOCK_TOKEN_LISTEN) {
		vsock_accept(v);
	} else if (low == VSOCK_TOKEN_KICK) {
		r = read(v->kickfd, &count, sizeof(count));
		(void)r;
	} else if (low - VSOCK_TOKEN_CONN < v->max_conns) {
		c = v->slots[low - VSOCK_TOKEN_CONN];
		if (c && c->seq == seq)
			vsock_conn_event(v, c, e->events);
	}
}

static void vsock_tick(struct vsock *v)
{
	struct vsock_conn *c;

	v->next_tick = v->now + VSOCK_TICK_MS;
	if (v->listen_resume && v->now >= v->listen_resume)
		vsock_listen_pause(v, false);
	for (unsigned i = 0; i < v->max_conns && v->ndeadlines; i++) {
		c = v->slots[i];
		if (c && c->deadline && v->now >= c->deadline)
			vsock_conn_fail(v, c, c->guest_knows,
					c->state == VSOCK_LINE ? "no CONNECT line in time"
					: c->state == VSOCK_CONNECTING ? "the guest did not answer the connection in time"
					: "the shutdown did not complete in time");
	}
}

/*
 * The transport reset event (virtio 1.2, 5.10.6.6): one buffer of the event
 * queue gets the event id. The guest then resets every connected socket and
 * reads its CID again; its listeners stay. With no buffer yet it stays owed.
 */
static int vsock_evq(struct vsock *v, struct virtq *q)
{
	struct virtq_chain ch;
	uint32_t id = htole32(VSOCK_EVENT_TRANSPORT_RESET);
	int ret;

	for (unsigned n = 0; n < VSOCK_BATCH && v->reset_event_owed; n++) {
		ret = virtq_pop(q, &ch);
		if (ret <= 0)
			return ret;
		/* Too small for the event: returned unused. */
		if (ch.in_bytes < sizeof(id)) {
			ret = virtq_push(q, ch.head, 0);
		} else {
			virtq_chain_write(&ch, 0, &id, sizeof(id));
			v->reset_event_owed = false;
			__atomic_store_n(&v->reset_unacked, true, __ATOMIC_RELAXED);
			v->reset_ack_by = v->now + VSOCK_RESET_ACK_MS;
			ret = virtq_push(q, ch.head, sizeof(id));
		}
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* One locked section: queues is NULL while the driver is not running. */
static int vsock_work(void *arg, struct virtq *queues)
{
	struct vsock *v = arg;
	int ret = 0;

	/* The guest reset the device since we last looked: start over. */
	if (v->seen_gen != v->reset_gen) {
		vsock_drop_all(v);
		v->seen_gen = v->reset_gen;
	}
	/* A transport reset: the host's ends go now, silently (the guest is
	 * told once, by the event, not per connection); a held rx chain is
	 * kept for the next packet. */
	if (__atomic_exchange_n(&v->transport_reset, false, __ATOMIC_ACQ_REL)) {
		for (unsigned i = 0; i < v->max_conns; i++)
			if (v->slots[i])
				vsock_conn_kill(v, v->slots[i], false);
		v->rst_len = 0;
		v->reset_event_owed = true;
	}
	v->now = vsock_now_ms();
	v->busy = false;
	for (int i = 0; i < v->nevs; i++)
		vsock_event(v, &v->evs[i]);
	v->nevs = 0;
	if (v->now >= v->next_tick)
		vsock_tick(v);
	if (queues) {
		ret = vsock_evq(v, &queues[VSOCK_EVQ]);
		if (!ret)
			ret = vsock_tx(v, &queues[VSOCK_TXQ]);
		if (v->reset_unacked && v->now >= v->reset_ack_by)
			__atomic_store_n(&v->reset_unacked, false, __ATOMIC_RELAXED);
		if (!ret && !v->reset_unacked)
			ret = vsock_rx(v, &queues[VSOCK_RXQ]);
	}
	vsock_reap(v);
	return ret;
}

static void vsock_loop(void *arg)
{
	struct vsock *v = arg;
	int n, timeout;

	while (!devthread_stopping(&v->th)) {
		timeout = v->busy ? 0
			  : (v->ndeadlines || v->listen_resume ||
			     __atomic_load_n(&v->reset_unacked, __ATOMIC_RELAXED)) ? VSOCK_TICK_MS
										 : -1;
		n = epoll_wait(v->epfd, v->evs, VSOCK_EVENTS, timeout);
		v->nevs = n > 0 ? n : 0;
		virtio_mmio_run(v->mmio, vsock_work, v);
	}
}

/* ---- device ops (vCPU threads, under the transport's lock) ---- */

static void vsock_config_read(void *dev, uint32_t off, void *data, uint32_t len)
{
	struct vsock *v = dev;
	uint64_t cid = v->guest_cid;

	/* After a transport reset: the guest's driver is handling the event. */
	if (v->reset_unacked) {
		__atomic_store_n(&v->reset_unacked, false, __ATOMIC_RELAXED);
		vsock_kick(v);
	}

	/* The transport checked off + len <= 8. */
	memcpy(data, (const char *)&cid + off, len);
}

static int vsock_activate(void *dev, uint64_t features)
{
	/* Requests queued before the driver came up can go out now. */
	vsock_kick(dev);
	return 0;
}

static int vsock_notify(void *dev, struct virtq *q, unsigned qidx)
{
	/* Tx packets or fresh rx buffers: the event thread takes it from here. */
	vsock_kick(dev);
	return 0;
}

static void vsock_reset(void *dev)
{
	struct vsock *v = dev;

	v->reset_gen++;
	vsock_kick(v);
}

/*
 * Snapshots. Connections are not saved: their host ends are this VMM's fds.
 * What is saved is the guest's CID, and whether the event thread held a
 * popped rx chain: the rx queue's indexes say it was taken, so a restore
 * must give it back or the guest's buffer is lost for good.
 */
struct vsock_saved {
	uint64_t guest_cid;
	uint32_t rx_held;
	/* The next host port; 0 in a file from before it was saved. A clone
	 * goes on from there: the guest may still hold sockets of the
	 * template's connections (reset, not yet closed by their owner), and a
	 * new connection on one of their ports would be taken for theirs. */
	uint32_t next_port;
};

_Static_assert(sizeof(struct vsock_saved) == 16, "vsock_saved layout");

static int vsock_save(void *dev, void *buf, size_t cap)
{
	const struct vsock *v = dev;
	struct vsock_saved s;

	if (cap < sizeof(s))
		return -ENOSPC;
	memset(&s, 0, sizeof(s));
	s.guest_cid = v->guest_cid;
	/* A reset since the event thread last ran (seen_gen behind) made the
	 * held chain stale: the queues it came from are gone. */
	s.rx_held = v->rx_held && v->seen_gen == v->reset_gen;
	s.next_port = v->next_port;
	memcpy(buf, &s, sizeof(s));
	return (int)sizeof(s);
}

/*
 * The same CID (the guest's sockets are bound to it), the held rx chain
 * given back to the restored rx queue, and a transport reset: every
 * connection the guest had belonged to the other VMM's host side.
 */
static int vsock_restore(void *dev, struct virtq *queues, const void *buf, size_t len,
			 char *why, size_t whylen)
{
	struct vsock *v = dev;
	struct vsock_saved s;
	int ret = -EINVAL;

	if (len != sizeof(s)) {
		snprintf(why, whylen, "virtio-vsock: its saved state is %zu bytes, not %zu", len,
			 sizeof(s));
		goto out;
	}
	memcpy(&s, buf, sizeof(s));
	if (s.rx_held > 1) {
		snprintf(why, whylen, "virtio-vsock: its saved state has unknown bits");
		goto out;
	}
	if (s.next_port && (s.next_port < VSOCK_EPHEMERAL_MIN || s.next_port > VSOCK_EPHEMERAL_MAX)) {
		snprintf(why, whylen, "virtio-vsock: its saved next host port %" PRIu32
			 " is outside %#x-%#x", s.next_port, VSOCK_EPHEMERAL_MIN, VSOCK_EPHEMERAL_MAX);
		goto out;
	}
	if (s.guest_cid != v->guest_cid) {
		snprintf(why, whylen, "virtio-vsock: the snapshot's guest CID is %llu, the new "
			 "device's %llu", (unsigned long long)s.guest_cid,
			 (unsigned long long)v->guest_cid);
		goto out;
	}
	/* A queue reset or not running since: nothing is held any more. */
	if (s.rx_held && virtq_is_ready(&queues[VSOCK_RXQ]) &&
	    virtq_unpop(&queues[VSOCK_RXQ])) {
		snprintf(why, whylen, "virtio-vsock: a held rx buffer is not outstanding in its "
			 "queue");
		goto out;
	}
	v->rx_held = false;
	if (s.next_port) {
		v->next_port = s.next_port;
	} else {
		/* An older file: somewhere the template's few ports are unlikely to be. */
		uint32_t r = 0;

		if (getrandom(&r, sizeof(r), 0) == (ssize_t)sizeof(r))
			v->next_port = VSOCK_EPHEMERAL_MIN + r % (VSOCK_EPHEMERAL_MAX - VSOCK_EPHEMERAL_MIN);
	}
	vsock_transport_reset(v);
	ret = 0;
out:
	return ret;
}

const struct virtio_dev_ops vsock_ops = {
	.name = "vsock",
	.device_id = VIRTIO_ID_VSOCK,
	.num_queues = 3,
	.queue_max = VSOCK_QUEUE_SIZE,
	.config_size = sizeof(uint64_t),
	.config_read = vsock_config_read,
	.activate = vsock_activate,
	.notify = vsock_notify,
	.reset = vsock_reset,
	.save = vsock_save,
	.restore = vsock_restore,
};

/* ---- create, start, stop, free ---- */

int vsock_create(struct vsock **out, const struct vsock_params *p)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct epoll_event ev = { .events = EPOLLIN };
	uint64_t cid = p->guest_cid ? p->guest_cid : VSOCK_DEFAULT_GUEST_CID;
	unsigned max = p->max_conns ? p->max_conns : VSOCK_MAX_CONNS;
	struct vsock *v = NULL;
	struct stat st;
	size_t plen;
	int ret = -EINVAL;

	*out = NULL;
	/* 0-2 are reserved and -1 is VMADDR_CID_ANY; the upper half is reserved. */
	if (!p->uds_path || !p->uds_path[0] || cid < 3 || cid >= UINT32_MAX ||
	    max > VSOCK_MAX_CONNS)
		goto out;
	plen = strlen(p->uds_path);
	ret = -ENAMETOOLONG;
	/* Room for "_4294967295" and the NUL: the guest's connections need it. */
	if (plen + 12 > sizeof(sa.sun_path))
		goto out;
	ret = -ENOMEM;
	v = calloc(1, sizeof(*v));
	if (!v)
		goto out;
	v->listen_fd = v->epfd = v->kickfd = -1;
	devthread_init(&v->th);
	v->slots = calloc(max, sizeof(*v->slots));
	if (!v->slots)
		goto out;
	v->guest_cid = cid;
	v->max_conns = max;
	v->next_port = VSOCK_EPHEMERAL_MIN;
	memcpy(v->path, p->uds_path, plen + 1);
	memcpy(sa.sun_path, p->uds_path, plen + 1);

	v->epfd = epoll_create1(EPOLL_CLOEXEC);
	v->kickfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	v->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (v->epfd < 0 || v->kickfd < 0 || v->listen_fd < 0) {
		ret = -errno;
		goto out;
	}
	if (bind(v->listen_fd, (const struct sockaddr *)&sa, sizeof(sa)) < 0) {
		ret = -errno;
		goto out;
	}
	/* Remember which file is ours, so that free never unlinks a successor's. */
	if (stat(v->path, &st) < 0) {
		ret = -errno;
		unlink(v->path);
		goto out;
	}
	v->bound = true;
	v->sock_dev = st.st_dev;
	v->sock_ino = st.st_ino;
	ev.data.u64 = VSOCK_TOKEN_LISTEN;
	if (listen(v->listen_fd, VSOCK_BACKLOG) < 0 ||
	    epoll_ctl(v->epfd, EPOLL_CTL_ADD, v->listen_fd, &ev) < 0) {
		ret = -errno;
		goto out;
	}
	ev.data.u64 = VSOCK_TOKEN_KICK;
	if (epoll_ctl(v->epfd, EPOLL_CTL_ADD, v->kickfd, &ev) < 0) {
		ret = -errno;
		goto out;
	}
	*out = v;
	v = NULL;
	ret = 0;
out:
	vsock_free(v);
	return ret;
}

int vsock_start(struct vsock *v, struct virtio_mmio_dev *dev, bool filter)
{
	v->mmio = dev;
	return devthread_start(&v->th, vsock_loop, v, filter, SECCOMP_ROLE_VSOCK);
}

void vsock_transport_reset(struct vsock *v)
{
	__atomic_store_n(&v->transport_reset, true, __ATOMIC_RELEASE);
	vsock_kick(v);
}

static void vsock_wake(void *arg)
{
	vsock_kick(arg);
}

void vsock_stop(struct vsock *v)
{
	if (v)
		devthread_stop(&v->th, vsock_wake, v);
}

void vsock_free(struct vsock *v)
{
	struct stat st;

	if (!v)
		return;
	vsock_stop(v);
	if (v->slots) {
		vsock_drop_all(v);
		vsock_reap(v);
	}
	if (v->bound && lstat(v->path, &st) == 0 && S_ISSOCK(st.st_mode) &&
	    st.st_dev == v->sock_dev && st.st_ino == v->sock_ino)
		unlink(v->path);
	if (v->listen_fd >= 0)
		close(v->listen_fd);
	if (v->kickfd >= 0)
		close(v->kickfd);
	if (v->epfd >= 0)
		close(v->epfd);
	free(v->slots);
	devthread_destroy(&v->th);
	free(v);
}
