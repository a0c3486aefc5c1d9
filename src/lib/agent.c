/*
 * libkiln's agent client (see agent.h and docs/protocol.md).
 *
 * At most one request/reply call is in flight (req); processes are tracked
 * in a fixed table (execs). Every frame from the agent is untrusted: its
 * header is checked by proto_hdr_decode (type, direction, flags, per-type
 * size cap), its payload by the proto_dec_* decoder, and its id must name
 * the request in flight or a running process; anything else breaks the
 * connection (-EPROTO, sticky). Received frames are dispatched straight
 * from the receive buffer, which holds at most one frame beyond what was
 * read ahead (PROTO_MAX_FRAME).
 *
 * While a send would block, the client keeps reading and dispatching: the
 * agent stops reading its socket when its own transmit buffer is full, so a
 * client that only wrote would deadlock against it.
 *
 * Every wait goes through ka_wait: one poll on the fd waited for and the
 * caller's cancel fd, bounded by the absolute deadline (and the optional
 * no-progress timeout). The deadline and the cancel fd are also checked
 * after every poll that found work, so a peer that always has one more byte
 * ready (or trickles one a second) cannot keep a call alive past them. Both
 * are sticky: a request cut short leaves the stream mid-frame.
 */
#include "lib/agent.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "proto.h"
#include "sanitize.h"
#include "util.h"

#define KA_MAX_EXECS  64
#define KA_RX_INIT    (64u * 1024)
#define KA_PUT_CHUNK  (128u * 1024)
#define KA_PATH_FRAME (PROTO_HDR_SIZE + 20 + PROTO_PATH_MAX)
#define KA_ENTROPY    64u /* IDENTITY's random bytes */
#define KA_IDENTITY_FRAME (PROTO_HDR_SIZE + 512)
/* A greeting's frames take the first ids of a connection. */
#define KA_GREET_HELLO	  1u
#define KA_GREET_IDENTITY 2u

struct kexec {
	bool used;
	bool stdin_open;
	bool pty;
	uint32_t id;
	uint32_t credit;
	uint32_t window;
	struct kiln_exec_ops ops;
	void *ctx;
};

struct kreq {
	bool active;
	bool done;
	uint16_t type;
	uint32_t id;
	int result;
	int cb_ret; /* first failure of a list callback or a local write */
	uint64_t value;
	uint64_t bytes;
	int out_fd;	  /* FILE_GET into a file, or */
	uint8_t *out_buf; /* into memory (out_cap bytes) */
	size_t out_cap;
	uint64_t max;	  /* FILE_GET: more than this many bytes is -EFBIG */
	struct kiln_stat *st;
	int (*list_cb)(void *ctx, const struct kiln_dirent *e);
	void *list_ctx;
	const struct kiln_exec_ops *ops;
	void *ctx;
	bool want_stdin;
	bool want_pty;
	uint32_t chain; /* HELLO of a greeting: the IDENTITY sent right behind it */
};

struct kiln_agent {
	int fd;
	int err;	/* sticky: the connection is unusable */
	int cb_err;	/* first failure of an output callback, for poll/wait */
	int timeout_ms; /* longest wait without progress, -1: none */
	uint64_t deadline_ns; /* absolute (CLOCK_MONOTONIC), 0: none */
	int cancel_fd;	/* readable: give up (-ECANCELED), -1: none */
	int depth;	/* > 0 while dispatching to callbacks */
	bool hello;
	uint32_t caps; /* HELLO_OK's PROTO_CAP_* */
	uint32_t next_id;
	uint32_t max_payload;
	uint8_t *rx;
	size_t rx_off, rx_len, rx_cap;
	struct kreq req;
	struct kexec execs[KA_MAX_EXECS];
	char errmsg[PROTO_MSG_MAX + 1];
};

static int ka_fail(struct kiln_agent *a, int err)
{
	if (!a->err)
		a->err = err;
	return a->err;
}

static uint32_t ka_id(struct kiln_agent *a)
{
	if (++a->next_id == 0)
		a->next_id = 1;
	return a->next_id;
}

static struct kexec *exec_find(struct kiln_agent *a, uint32_t id)
{
	for (unsigned i = 0; i < KA_MAX_EXECS; i++)
		if (a->execs[i].used && a->execs[i].id == id)
			return &a->execs[i];
	return NULL;
}

static const struct kexec *exec_find_c(const struct kiln_agent *a, uint32_t id)
{
	for (unsigned i = 0; i < KA_MAX_EXECS; i++)
		if (a->execs[i].used && a->execs[i].id == id)
			return &a->execs[i];
	return NULL;
}

/* Entry check of every call that sends. */
static int ka_ready(struct kiln_agent *a)
{
	if (a->depth)
		return -EDEADLK;
	return a->err;
}

/* Has the deadline passed or the cancel fd fired? 0, or the sticky error. */
static int ka_check(struct kiln_agent *a)
{
	if (a->err)
		return a->err;
	if (a->cancel_fd >= 0) {
		struct pollfd c = { .fd = a->cancel_fd, .events = POLLIN };

		if (poll(&c, 1, 0) > 0)
			return ka_fail(a, -ECANCELED);
	}
	if (a->deadline_ns && now_ns() >= a->deadline_ns)
		return ka_fail(a, -ETIMEDOUT);
	return 0;
}

/*
 * The one place that blocks: until fd has one of events, the deadline
 * passes, the cancel fd turns readable, or timeout_ms (-1: none) passed.
 * Returns fd's revents (> 0), 0 (timeout_ms passed, or a signal: the caller
 * looks again) or a sticky error. With progress, timeout_ms passing is the
 * sticky -ETIMEDOUT of kiln_agent_set_timeout.
 */
static int ka_wait(struct kiln_agent *a, int fd, short events, int timeout_ms, bool progress)
{
	struct pollfd p[2] = { { .fd = fd, .events = events },
			       { .fd = a->cancel_fd, .events = POLLIN } };
	int n, r, ms = timeout_ms;
	bool capped;

	if (a->deadline_ns) {
		uint64_t now = now_ns(), left;

		if (now >= a->deadline_ns)
			return ka_fail(a, -ETIMEDOUT);
		left = (a->deadline_ns - now + 999999) / 1000000;
		if (ms < 0 || left < (uint64_t)ms)
			ms = left > INT32_MAX ? INT32_MAX : (int)left;
	}
	capped = ms != timeout_ms;
	n = poll(p, 2, ms);
	if (n < 0 && errno != EINTR)
		return ka_fail(a, -errno);
	r = ka_check(a);
	if (r)
		return r;
	if (n > 0 && p[0].revents)
		return p[0].revents;
	if (n == 0 && !capped && timeout_ms >= 0 && progress)
		return ka_fail(a, -ETIMEDOUT); /* no progress for timeout_ms */
	return 0; /* interrupted: the caller looks again */
}

/* Everything to a local fd (a FILE_GET sink), waiting if it is non-blocking. */
static int write_fd_full(struct kiln_agent *a, int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		int r;

		if (w < 0) {
			if (errno != EINTR && errno != EAGAIN)
				return -errno;
			r = errno == EAGAIN ? ka_wait(a, fd, POLLOUT, a->timeout_ms, true) : ka_check(a);
			if (r < 0)
				return r;
			continue;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* ------------------------------------------------------------ receiving */

static int reply_frame(struct kiln_agent *a, const struct proto_hdr *h, const uint8_t *p)
{
	struct kreq *r = &a->req;
	struct proto_hello_ok hello;
	struct proto_exec_ok eok;
	struct proto_error err;
	struct proto_stat st;
	struct proto_rd rd;
	struct kexec *x;
	int ret = -EPROTO;

	switch (h->type) {
	case PROTO_ERROR:
		if (proto_dec_error(p, h->len, &err))
			goto out;
		text_sanitize_str(a->errmsg, sizeof(a->errmsg), err.msg);
		r->result = -err.err;
		break;
	case PROTO_OK:
		if (r->type != PROTO_SHUTDOWN && r->type != PROTO_SIGNAL && r->type != PROTO_MKDIR &&
		    r->type != PROTO_REMOVE && r->type != PROTO_FILE_PUT &&
		    r->type != PROTO_IDENTITY)
			goto out;
		if (proto_dec_ok(p, h->len, &r->value))
			goto out;
		break;
	case PROTO_HELLO_OK:
		if (r->type != PROTO_HELLO || proto_dec_hello_ok(p, h->len, &hello))
			goto out;
		a->max_payload = hello.max_payload;
		r->value = a->caps = hello.caps;
		a->hello = true;
		if (r->chain) {
			/* A greeting: the request goes on as the IDENTITY behind it. */
			r->type = PROTO_IDENTITY;
			r->id = r->chain;
			r->chain = 0;
			return 0;
		}
		break;
	case PROTO_PONG:
		if (r->type != PROTO_PING)
			goto out;
		break;
	case PROTO_STAT_OK:
		if (r->type != PROTO_STAT || proto_dec_stat(p, h->len, &st))
			goto out;
		r->st->mode = st.mode;
		r->st->uid = st.uid;
		r->st->gid = st.gid;
		r->st->nlink = st.nlink;
		r->st->size = st.size;
		r->st->mtime_sec = st.mtime_sec;
		r->st->mtime_nsec = st.mtime_nsec;
		break;
	case PROTO_EXEC_OK:
		if (r->type != PROTO_EXEC || proto_dec_exec_ok(p, h->len, &eok))
			goto out;
		x = NULL;
		for (unsigned i = 0; i < KA_MAX_EXECS && !x; i++)
			if (!a->execs[i].used)
				x = &a->execs[i];
		if (!x)
			goto out; /* checked before sending: cannot happen */
		memset(x, 0, sizeof(*x));
		x->used = true;
		x->id = h->id;
		if (r->ops)
			x->ops = *r->ops;
		x->ctx = r->ctx;
		x->stdin_open = r->want_stdin && eok.stdin_window > 0;
		x->pty = r->want_pty;
		x->window = eok.stdin_window;
		x->credit = x->stdin_open ? eok.stdin_window : 0;
		r->value = eok.pid;
		break;
	case PROTO_FILE_DATA:
		if (r->type != PROTO_FILE_GET || (h->flags & PROTO_F_ABORT))
			goto out;
		/* The cap before a byte goes anywhere; beyond it the stream is cut. */
		if (h->len > r->max - r->bytes) {
			ret = -EFBIG;
			goto out;
		}
		if (!r->cb_ret && h->len && r->out_buf)
			memcpy(r->out_buf + r->bytes, p, h->len);
		else if (!r->cb_ret && h->len)
			r->cb_ret = write_fd_full(a, r->out_fd, p, h->len);
		r->bytes += h->len;
		if (!(h->flags & PROTO_F_EOF))
			return 0;
		break;
	case PROTO_DIR_ENTRIES:
		if (r->type != PROTO_LIST)
			goto out;
		proto_rd_init(&rd, p, h->len);
		for (;;) {
			struct proto_dirent e;
			struct kiln_dirent ke;
			int n = proto_rd_dirent(&rd, &e);

			if (n < 0)
				goto out;
			if (n == 0)
				break;
			if (r->cb_ret)
				continue;
			ke.name = e.name;
			ke.mode = e.mode;
			ke.size = e.size;
			ke.mtime_sec = e.mtime_sec;
			r->cb_ret = r->list_cb(r->list_ctx, &ke);
		}
		if (!(h->flags & PROTO_F_EOF))
			return 0;
		break;
	default:
		goto out;
	}
	r->done = true;
	ret = 0;
out:
	return ret ? ka_fail(a, ret) : 0;
}

static int exec_frame(struct kiln_agent *a, struct kexec *x, const struct proto_hdr *h,
		      const uint8_t *p)
{
	struct proto_exit ex;
	struct kiln_exec_ops ops;
	uint32_t credit;
	void *ctx;
	int r;

	switch (h->type) {
	case PROTO_STDOUT:
	case PROTO_STDERR:
		if (x->ops.output && h->len) {
			r = x->ops.output(x->ctx, x->id, h->type == PROTO_STDOUT ? 1 : 2, p, h->len);
			if (r < 0 && !a->cb_err)
				a->cb_err = r;
		}
		return 0;
	case PROTO_STDIN_CREDIT:
		if (proto_dec_credit(p, h->len, &credit) ||
		    (uint64_t)x->credit + credit > x->window)
			return ka_fail(a, -EPROTO);
		x->credit += credit;
		if (h->flags & PROTO_F_EOF) {
			x->stdin_open = false;
			x->credit = 0;
		}
		return 0;
	case PROTO_EXIT:
		if (proto_dec_exit(p, h->len, &ex))
			return ka_fail(a, -EPROTO);
		/* Free the slot first: the callback may start another process... later. */
		ops = x->ops;
		ctx = x->ctx;
		x->used = false;
		if (ops.exit) {
			struct kiln_exit e = { ex.code, ex.signal, ex.oom_kills };

			ops.exit(ctx, h->id, &e);
		}
		return 0;
	default:
		return ka_fail(a, -EPROTO);
	}
}

static int dispatch_frame(struct kiln_agent *a, const struct proto_hdr *h, const uint8_t *p)
{
	struct proto_error err;
	struct kexec *x;

	if (h->id == 0 && h->type == PROTO_ERROR) {
		/* The agent gave up on this connection. */
		if (!proto_dec_error(p, h->len, &err))
			text_sanitize_str(a->errmsg, sizeof(a->errmsg), err.msg);
		return ka_fail(a, -EPROTO);
	}
	if (a->req.active && !a->req.done && h->id == a->req.id)
		return reply_frame(a, h, p);
	x = exec_find(a, h->id);
	if (x)
		return exec_frame(a, x, h, p);
	return ka_fail(a, -EPROTO);
}

/* Every complete frame in the receive buffer. */
static int dispatch(struct kiln_agent *a)
{
	while (!a->err && a->rx_len >= PROTO_HDR_SIZE) {
		struct proto_hdr h;
		size_t need;

		if (proto_hdr_decode(a->rx + a->rx_off, PROTO_FROM_AGENT, &h))
			return ka_fail(a, -EPROTO);
		need = PROTO_HDR_SIZE + (size_t)h.len;
		if (a->rx_len < need) {
			if (need > a->rx_cap) {
				uint8_t *n = malloc(need);

				if (!n)
					return ka_fail(a, -ENOMEM);
				memcpy(n, a->rx + a->rx_off, a->rx_len);
				free(a->rx);
				a->rx = n;
				a->rx_cap = need;
				a->rx_off = 0;
			} else if (a->rx_off + need > a->rx_cap) {
				memmove(a->rx, a->rx + a->rx_off, a->rx_len);
				a->rx_off = 0;
			}
			break;
		}
		a->depth++;
		dispatch_frame(a, &h, a->rx + a->rx_off + PROTO_HDR_SIZE);
		a->depth--;
		a->rx_off += need;
		a->rx_len -= need;
	}
	if (!a->rx_len)
		a->rx_off = 0;
	return a->err;
}

/* What the socket has now, then dispatch. */
static int read_some(struct kiln_agent *a)
{
	ssize_t n;

	if (a->rx_off + a->rx_len == a->rx_cap && a->rx_off) {
		memmove(a->rx, a->rx + a->rx_off, a->rx_len);
		a->rx_off = 0;
	}
	do
		n = read(a->fd, a->rx + a->rx_off + a->rx_len, a->rx_cap - a->rx_off - a->rx_len);
	while (n < 0 && errno == EINTR);
	if (n == 0)
		return ka_fail(a, -ECONNRESET);
	if (n < 0)
		return errno == EAGAIN ? 0 : ka_fail(a, -errno);
	a->rx_len += (size_t)n;
	return dispatch(a);
}

/* Wait up to timeout_ms (-1: only the deadline bounds it) for input and
 * dispatch it; 1 when timeout_ms passed, or with progress the sticky
 * -ETIMEDOUT of kiln_agent_set_timeout. */
static int pump(struct kiln_agent *a, int timeout_ms, bool progress)
{
	uint64_t until = timeout_ms >= 0 ? now_ns() + (uint64_t)timeout_ms * 1000000ULL : 0;

	for (;;) {
		int r, ms = -1;

		if (a->err)
			return a->err;
		if (timeout_ms >= 0) {
			uint64_t now = now_ns();

			ms = now >= until ? 0 : (int)((until - now + 999999) / 1000000);
		}
		r = ka_wait(a, a->fd, POLLIN, ms, progress);
		if (r > 0)
			return read_some(a);
		if (r < 0)
			return r;
		if (timeout_ms >= 0 && now_ns() >= until)
			return 1;
	}
}

/* ------------------------------------------------------------- sending */

/* A whole frame (header part and data part), reading while the agent does not. */
static int send_frame(struct kiln_agent *a, const void *p1, size_t n1, const void *p2, size_t n2)
{
	struct iovec iov[2] = { { (void *)p1, n1 }, { (void *)p2, n2 } };
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = n2 ? 2 : 1 };
	int r = ka_check(a);

	while (!r && (iov[0].iov_len || iov[1].iov_len)) {
		ssize_t n = sendmsg(a->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n >= 0) {
			size_t k = (size_t)n, take = k < iov[0].iov_len ? k : iov[0].iov_len;

			iov[0].iov_base = (uint8_t *)iov[0].iov_base + take;
			iov[0].iov_len -= take;
			k -= take;
			if (k) { /* never offset a NULL data part (a frame without one) */
				iov[1].iov_base = (uint8_t *)iov[1].iov_base + k;
				iov[1].iov_len -= k;
			}
			if (!iov[0].iov_len) {
				msg.msg_iov = &iov[1];
				msg.msg_iovlen = 1;
			}
			continue;
		}
		if (errno == EINTR) {
			r = ka_check(a);
			continue;
		}
		if (errno != EAGAIN)
			return ka_fail(a, errno == EPIPE ? -ECONNRESET : -errno);
		r = ka_wait(a, a->fd, POLLIN | POLLOUT, a->timeout_ms, true);
		if (r > 0)
			r = (r & POLLIN) ? read_some(a) : a->err;
	}
	return r ? r : a->err;
}

static int req_begin(struct kiln_agent *a, uint16_t type, uint32_t *id)
{
	int ret = ka_ready(a);

	if (ret)
		return ret;
	if (a->req.active)
		return -EBUSY;
	if (!a->hello && type != PROTO_HELLO)
		return -ENOTCONN;
	memset(&a->req, 0, sizeof(a->req));
	a->req.active = true;
	a->req.type = type;
	a->req.id = *id = ka_id(a);
	a->req.out_fd = -1;
	a->errmsg[0] = 0;
	return 0;
}

/* Until the reply (or the end of the stream) came. */
static int req_wait(struct kiln_agent *a)
{
	int ret = 0;

	while (!a->req.done && !ret)
		ret = pump(a, a->timeout_ms, true);
	a->req.active = false;
	if (ret)
		return ret;
	if (a->req.result)
		return a->req.result;
	return a->req.cb_ret;
}

static int req_run(struct kiln_agent *a, const void *frame, int len)
{
	int ret;

	if (len < 0) {
		a->req.active = false;
		return len;
	}
	ret = send_frame(a, frame, (size_t)len, NULL, 0);
	if (ret) {
		a->req.active = false;
		return ret;
	}
	return req_wait(a);
}

static int path_req(struct kiln_agent *a, uint16_t type, const char *path, uint32_t flags,
		    uint32_t mode, uint64_t *value)
{
	struct proto_path m = { .flags = flags, .mode = mode, .uid = PROTO_ID_KEEP,
				.gid = PROTO_ID_KEEP };
	uint8_t buf[KA_PATH_FRAME];
	uint32_t id;
	int ret;

	if (strlen(path) > PROTO_PATH_MAX)
		return -ENAMETOOLONG;
	ret = req_begin(a, type, &id);
	if (ret)
		return ret;
	memcpy(m.path, path, strlen(path) + 1);
	ret = req_run(a, buf, proto_enc_path(buf, sizeof(buf), type, id, &m));
	if (value)
		*value = a->req.value;
	return ret;
}

/* ------------------------------------------------------------------ API */

int kiln_agent_create(int fd, struct kiln_agent **out)
{
	struct kiln_agent *a;
	int fl;

	*out = NULL;
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK))
		return -errno;
	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->rx = malloc(KA_RX_INIT);
	if (!a->rx) {
		free(a);
		return -ENOMEM;
	}
	a->rx_cap = KA_RX_INIT;
	a->fd = fd;
	a->timeout_ms = -1;
	a->cancel_fd = -1;
	a->max_payload = 4096;
	*out = a;
	return 0;
}

void kiln_agent_free(struct kiln_agent *a)
{
	if (!a)
		return;
	close(a->fd);
	free(a->rx);
	free(a);
}

int kiln_agent_fd(const struct kiln_agent *a)
{
	return a->fd;
}

void kiln_agent_set_timeout(struct kiln_agent *a, int timeout_ms)
{
	a->timeout_ms = timeout_ms < 0 ? -1 : timeout_ms;
}

void kiln_agent_set_deadline(struct kiln_agent *a, uint64_t deadline_ns)
{
	a->deadline_ns = deadline_ns;
}

void kiln_agent_set_cancel_fd(struct kiln_agent *a, int fd)
{
	a->cancel_fd = fd;
}

uint32_t kiln_agent_caps(const struct kiln_agent *a)
{
	return a->caps;
}

int kiln_agent_status(const struct kiln_agent *a)
{
	return a->err;
}

const char *kiln_agent_error(const struct kiln_agent *a)
{
	return a->errmsg;
}

int kiln_agent_hello(struct kiln_agent *a, uint32_t *caps)
{
	struct proto_hello m = { .version = PROTO_VERSION, .flags = 0 };
	uint8_t buf[64];
	uint32_t id;
	int ret;

	if (a->hello)
		return -EISCONN;
	ret = req_begin(a, PROTO_HELLO, &id);
	if (ret)
		return ret;
	ret = req_run(a, buf, proto_enc_hello(buf, sizeof(buf), id, &m));
	if (!ret && caps)
		*caps = (uint32_t)a->req.value;
	if (ret == -EPROTONOSUPPORT)
		ka_fail(a, ret); /* the agent closes the connection */
	return ret;
}

int kiln_agent_ping(struct kiln_agent *a)
{
	uint8_t buf[PROTO_HDR_SIZE + 8];
	uint32_t id;
	int ret = req_begin(a, PROTO_PING, &id);

	if (ret)
		return ret;
	return req_run(a, buf, proto_enc_data(buf, sizeof(buf), PROTO_PING, 0, id, "kiln", 4));
}

int kiln_agent_exec(struct kiln_agent *a, const struct kiln_exec_spec *spec,
		    const struct kiln_exec_ops *ops, void *ctx, uint32_t *exec_id)
{
	static const char *const noenv[] = { NULL };
	struct proto_exec m;
	size_t size = PROTO_HDR_SIZE + 24 + 8;
	uint8_t *buf = NULL;
	uint32_t id;
	bool room = false;
	int ret;

	*exec_id = 0;
	m.argc = m.envc = 0;
	while (spec->argv[m.argc] && m.argc <= PROTO_ARGC_MAX)
		size += 4 + strnlen(spec->argv[m.argc++], PROTO_ARG_MAX + 1);
	while (spec->envp && spec->envp[m.envc] && m.envc <= PROTO_ENVC_MAX)
		size += 4 + strnlen(spec->envp[m.envc++], PROTO_ARG_MAX + 1);
	if (spec->cwd)
		size += strnlen(spec->cwd, PROTO_PATH_MAX + 1);
	if (spec->user)
		size += 4 + strnlen(spec->user, PROTO_USER_MAX + 1);
	if (m.argc < 1)
		return -EINVAL;
	if (spec->pty && (spec->rows < 1 || spec->rows > PROTO_PTY_DIM_MAX || spec->cols < 1 ||
			  spec->cols > PROTO_PTY_DIM_MAX))
		return -EINVAL;
	if (m.argc > PROTO_ARGC_MAX || m.envc > PROTO_ENVC_MAX)
		return -E2BIG;
	if (size > PROTO_MAX_FRAME)
		return -E2BIG;
	for (unsigned i = 0; i < KA_MAX_EXECS; i++)
		room |= !a->execs[i].used;
	if (!room)
		return -EAGAIN;
	ret = req_begin(a, PROTO_EXEC, &id);
	if (ret)
		return ret;
	buf = malloc(size);
	if (!buf) {
		a->req.active = false;
		return -ENOMEM;
	}
	m.flags = (spec->stdin ? PROTO_EXEC_STDIN : 0) | (spec->pty ? PROTO_EXEC_PTY : 0) |
		  (spec->user ? PROTO_EXEC_USER : 0);
	m.user = spec->user;
	m.rows = spec->pty ? spec->rows : 0;
	m.cols = spec->pty ? spec->cols : 0;
	m.uid = spec->uid;
	m.gid = spec->gid;
	m.cwd = spec->cwd;
	m.argv = spec->argv;
	m.envp = spec->envp ? spec->envp : noenv;
	a->req.ops = ops;
	a->req.ctx = ctx;
	a->req.want_stdin = spec->stdin;
	a->req.want_pty = spec->pty;
	ret = req_run(a, buf, proto_enc_exec(buf, size, id, &m));
	free(buf);
	if (!ret)
		*exec_id = id;
	return ret;
}

size_t kiln_agent_stdin_room(const struct kiln_agent *a, uint32_t exec_id)
{
	const struct kexec *x = exec_find_c(a, exec_id);

	if (!x || !x->stdin_open || a->err)
		return 0;
	return x->credit;
}

ssize_t kiln_agent_stdin_write(struct kiln_agent *a, uint32_t exec_id, const void *buf,
			       size_t len)
{
	struct proto_hdr h = { .type = PROTO_STDIN, .flags = 0, .id = exec_id };
	uint8_t hdr[PROTO_HDR_SIZE];
	struct kexec *x;
	int ret = ka_ready(a);

	if (ret)
		return ret;
	x = exec_find(a, exec_id);
	if (!x)
		return -ESRCH;
	if (!x->stdin_open)
		return -EPIPE;
	if (!x->credit)
		return -EAGAIN;
	if (len > x->credit)
		len = x->credit;
	if (len > a->max_payload)
		len = a->max_payload;
	if (!len)
		return 0;
	h.len = (uint32_t)len;
	proto_hdr_encode(hdr, &h);
	x->credit -= (uint32_t)len;
	ret = send_frame(a, hdr, sizeof(hdr), buf, len);
	return ret ? ret : (ssize_t)len;
}

int kiln_agent_stdin_close(struct kiln_agent *a, uint32_t exec_id)
{
	struct proto_hdr h = { .len = 0, .type = PROTO_STDIN, .flags = PROTO_F_EOF, .id = exec_id };
	uint8_t hdr[PROTO_HDR_SIZE];
	struct kexec *x;
	int ret = ka_ready(a);

	if (ret)
		return ret;
	x = exec_find(a, exec_id);
	if (!x)
		return -ESRCH;
	if (!x->stdin_open)
		return 0;
	x->stdin_open = false;
	x->credit = 0;
	proto_hdr_encode(hdr, &h);
	return send_frame(a, hdr, sizeof(hdr), NULL, 0);
}

int kiln_agent_signal(struct kiln_agent *a, uint32_t exec_id, int signo, bool group)
{
	struct proto_signal m = { .exec_id = exec_id, .signo = signo,
				  .flags = group ? PROTO_SIG_GROUP : 0 };
	uint8_t buf[PROTO_HDR_SIZE + 16];
	uint32_t id;
	int ret;

	if (signo < 1 || signo > PROTO_SIGNO_MAX)
		return -EINVAL;
	ret = req_begin(a, PROTO_SIGNAL, &id);
	if (ret)
		return ret;
	return req_run(a, buf, proto_enc_signal(buf, sizeof(buf), id, &m));
}

int kiln_agent_resize(struct kiln_agent *a, uint32_t exec_id, unsigned rows, unsigned cols)
{
	struct proto_winsize m = { .rows = rows, .cols = cols };
	uint8_t buf[PROTO_HDR_SIZE + 8];
	struct kexec *x;
	int len, ret = ka_ready(a);

	if (ret)
		return ret;
	x = exec_find(a, exec_id);
	if (!x)
		return -ESRCH;
	if (!x->pty)
		return -ENOTTY;
	len = proto_enc_resize(buf, sizeof(buf), exec_id, &m);
	if (len < 0)
		return len;
	return send_frame(a, buf, (size_t)len, NULL, 0);
}

int kiln_agent_poll(struct kiln_agent *a, int timeout_ms)
{
	int ret = ka_ready(a);

	if (!ret) {
		ret = dispatch(a);
		if (!ret) {
			ret = pump(a, timeout_ms, false);
			if (ret == 1)
				ret = 0;
		}
	}
	if (!ret && a->cb_err) {
		ret = a->cb_err;
		a->cb_err = 0;
	}
	return ret;
}

int kiln_agent_wait(struct kiln_agent *a, uint32_t exec_id)
{
	int ret = 0;

	while (!ret && exec_find(a, exec_id))
		ret = kiln_agent_poll(a, -1);
	return ret;
}

int kiln_agent_put(struct kiln_agent *a, int fd, const char *path,
		   const struct kiln_put_opts *opts, uint64_t *bytes)
{
	struct proto_path m = { .mode = 0644, .uid = PROTO_ID_KEEP, .gid = PROTO_ID_KEEP };
	struct proto_hdr h = { .type = PROTO_FILE_DATA };
	uint8_t *buf = NULL, hdr[PROTO_HDR_SIZE];
	size_t chunk;
	uint32_t id;
	int ret, local = 0;

	if (bytes)
		*bytes = 0;
	if (strlen(path) > PROTO_PATH_MAX)
		return -ENAMETOOLONG;
	if (opts) {
		m.mode = opts->mode;
		m.uid = opts->uid;
		m.gid = opts->gid;
		m.flags = opts->parents ? PROTO_PATH_PARENTS : 0;
	}
	memcpy(m.path, path, strlen(path) + 1);
	ret = req_begin(a, PROTO_FILE_PUT, &id);
	if (ret)
		return ret;
	chunk = a->max_payload < KA_PUT_CHUNK ? a->max_payload : KA_PUT_CHUNK;
	buf = malloc(chunk > KA_PATH_FRAME ? chunk : KA_PATH_FRAME);
	if (!buf) {
		a->req.active = false;
		return -ENOMEM;
	}
	ret = proto_enc_path(buf, KA_PATH_FRAME, PROTO_FILE_PUT, id, &m);
	ret = ret < 0 ? ret : send_frame(a, buf, (size_t)ret, NULL, 0);
	/* No reply comes before the last FILE_DATA: stream without waiting. */
	h.id = id;
	while (!ret) {
		ssize_t n = read(fd, buf, chunk);

		if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
			int r = errno == EAGAIN ? ka_wait(a, fd, POLLIN, -1, false) : ka_check(a);

			if (r < 0)
				ret = r;
			continue;
		}
		if (n < 0) {
			local = -errno;
			h.len = 0;
			h.flags = PROTO_F_ABORT;
		} else {
			h.len = (uint32_t)n;
			h.flags = n ? 0 : PROTO_F_EOF;
		}
		proto_hdr_encode(hdr, &h);
		ret = send_frame(a, hdr, sizeof(hdr), buf, h.len);
		if (h.flags)
			break;
	}
	free(buf);
	if (ret) {
		a->req.active = false;
		return ret;
	}
	ret = req_wait(a);
	if (bytes)
		*bytes = a->req.value;
	return local ? local : ret;
}

/* FILE_GET into the sink set up by the caller in a->req after req_begin. */
static int get_into(struct kiln_agent *a, const char *path, int fd, uint8_t *mem, size_t cap,
		    uint64_t max, uint64_t *bytes)
{
	struct proto_path m = { .uid = PROTO_ID_KEEP, .gid = PROTO_ID_KEEP };
	uint8_t buf[KA_PATH_FRAME];
	uint32_t id;
	int ret;

	*bytes = 0;
	if (strlen(path) > PROTO_PATH_MAX)
		return -ENAMETOOLONG;
	memcpy(m.path, path, strlen(path) + 1);
	ret = req_begin(a, PROTO_FILE_GET, &id);
	if (ret)
		return ret;
	a->req.out_fd = fd;
	a->req.out_buf = mem;
	a->req.out_cap = cap;
	a->req.max = mem && cap < max ? cap : max;
	ret = req_run(a, buf, proto_enc_path(buf, sizeof(buf), PROTO_FILE_GET, id, &m));
	*bytes = a->req.bytes;
	return ret;
}

int kiln_agent_get(struct kiln_agent *a, const char *path, int fd, uint64_t max, uint64_t *bytes)
{
	uint64_t n;
	int ret = get_into(a, path, fd, NULL, 0, max, &n);

	if (bytes)
		*bytes = n;
	return ret;
}

int kiln_agent_get_buf(struct kiln_agent *a, const char *path, void *buf, size_t cap,
		       size_t *len)
{
	uint64_t n;
	int ret = get_into(a, path, -1, buf, cap, cap, &n);

	*len = (size_t)n;
	return ret;
}

int kiln_agent_stat(struct kiln_agent *a, const char *path, bool nofollow, struct kiln_stat *st)
{
	struct proto_path m = { .flags = nofollow ? PROTO_PATH_NOFOLLOW : 0,
				.uid = PROTO_ID_KEEP, .gid = PROTO_ID_KEEP };
	uint8_t buf[KA_PATH_FRAME];
	uint32_t id;
	int ret;

	if (strlen(path) > PROTO_PATH_MAX)
		return -ENAMETOOLONG;
	memcpy(m.path, path, strlen(path) + 1);
	ret = req_begin(a, PROTO_STAT, &id);
	if (ret)
		return ret;
	a->req.st = st;
	return req_run(a, buf, proto_enc_path(buf, sizeof(buf), PROTO_STAT, id, &m));
}

int kiln_agent_list(struct kiln_agent *a, const char *path,
		    int (*cb)(void *ctx, const struct kiln_dirent *e), void *ctx)
{
	struct proto_path m = { .uid = PROTO_ID_KEEP, .gid = PROTO_ID_KEEP };
	uint8_t buf[KA_PATH_FRAME];
	uint32_t id;
	int ret;

	if (strlen(path) > PROTO_PATH_MAX)
		return -ENAMETOOLONG;
	memcpy(m.path, path, strlen(path) + 1);
	ret = req_begin(a, PROTO_LIST, &id);
	if (ret)
		return ret;
	a->req.list_cb = cb;
	a->req.list_ctx = ctx;
	return req_run(a, buf, proto_enc_path(buf, sizeof(buf), PROTO_LIST, id, &m));
}

int kiln_agent_mkdir(struct kiln_agent *a, const char *path, uint32_t mode, bool parents)
{
	return path_req(a, PROTO_MKDIR, path, parents ? PROTO_PATH_PARENTS : 0, mode & 07777,
			NULL);
}

int kiln_agent_remove(struct kiln_agent *a, const char *path, bool recursive)
{
	return path_req(a, PROTO_REMOVE, path, recursive ? PROTO_PATH_RECURSIVE : 0, 0, NULL);
}

/* IDENTITY with fresh entropy, the clock read last; the frame's length or -errno. */
static int identity_encode(uint8_t *buf, size_t cap, uint32_t id, const char *hostname,
			   const char *sandbox_id)
{
	struct proto_identity m;
	struct timespec now;
	int ret = -EINVAL;

	memset(&m, 0, sizeof(m));
	if (!hostname || !sandbox_id || strlen(hostname) > PROTO_HOSTNAME_MAX ||
	    strlen(sandbox_id) > PROTO_SANDBOX_ID_MAX)
		goto out;
	memcpy(m.hostname, hostname, strlen(hostname) + 1);
	memcpy(m.sandbox_id, sandbox_id, strlen(sandbox_id) + 1);
	m.entropy_len = KA_ENTROPY;
	if (getrandom(m.entropy, KA_ENTROPY, 0) != (ssize_t)KA_ENTROPY) {
		ret = -EIO;
		goto out;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	m.sec = (int64_t)now.tv_sec;
	m.nsec = (uint32_t)now.tv_nsec;
	ret = proto_enc_identity(buf, cap, id, &m);
out:
	explicit_bzero(&m, sizeof(m));
	return ret;
}

int kiln_agent_identity(struct kiln_agent *a, const char *hostname, const char *sandbox_id)
{
	uint8_t buf[KA_IDENTITY_FRAME];
	uint32_t id;
	int ret, len;

	if (!hostname || !sandbox_id)
		return -EINVAL;
	ret = req_begin(a, PROTO_IDENTITY, &id);
	if (ret)
		return ret;
	/* Encoded last: the clock goes out with no wait in between. */
	len = identity_encode(buf, sizeof(buf), id, hostname, sandbox_id);
	ret = req_run(a, buf, len);
	explicit_bzero(buf, sizeof(buf));
	return ret;
}

_Static_assert(64 + KA_IDENTITY_FRAME <= KILN_AGENT_GREETING_MAX, "greeting buffer");

int kiln_agent_greeting(void *buf, size_t cap, const char *hostname, const char *sandbox_id)
{
	struct proto_hello m = { .version = PROTO_VERSION, .flags = 0 };
	int n, k;

	n = proto_enc_hello(buf, cap < 64 ? cap : 64, KA_GREET_HELLO, &m);
	if (n < 0 || !hostname)
		return n;
	k = identity_encode((uint8_t *)buf + n, cap - (size_t)n, KA_GREET_IDENTITY, hostname,
			    sandbox_id);
	return k < 0 ? k : n + k;
}

int kiln_agent_greeted(struct kiln_agent *a, bool identity, uint32_t *caps)
{
	uint32_t id;
	int ret;

	if (a->hello || a->next_id)
		return -EISCONN;
	ret = req_begin(a, PROTO_HELLO, &id);
	if (ret)
		return ret;
	if (identity) {
		a->req.chain = KA_GREET_IDENTITY;
		a->next_id = KA_GREET_IDENTITY;
	}
	ret = req_wait(a);
	if (!a->hello) {
		/* No HELLO_OK: whatever follows it is moot. */
		return ka_fail(a, ret ? ret : -EPROTO);
	}
	if (caps)
		*caps = a->caps;
	/* An agent outside PID-1 mode refuses an identity it never offered to take. */
	if (ret && identity && !a->err && !(a->caps & PROTO_CAP_IDENTITY))
		ret = 0;
	return ret;
}

int kiln_agent_shutdown(struct kiln_agent *a)
{
	uint8_t buf[PROTO_HDR_SIZE];
	uint32_t id;
	int ret = req_begin(a, PROTO_SHUTDOWN, &id);

	if (ret)
		return ret;
	ret = req_run(a, buf, proto_enc_data(buf, sizeof(buf), PROTO_SHUTDOWN, 0, id, NULL, 0));
	/* The VM may reset before the reply leaves it. */
	if (ret == -ECONNRESET || ret == -EPIPE)
		ret = 0;
	return ret;
}
