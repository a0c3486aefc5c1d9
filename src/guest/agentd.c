/*
 * The agent server (see agentd.h and docs/protocol.md).
 *
 * One thread, one level-triggered epoll loop. Every connection owns a fixed
 * transmit buffer (tx_cap, 256 KiB by default); everything the agent sends
 * goes through it, and every producer asks for room first:
 *  - a request is parsed only when REPLY_RESERVE bytes are free (each request
 *    queues at most one reply frame of at most that size), else the agent
 *    stops reading the socket until the peer reads;
 *  - a process's stdout/stderr pipe is read only into free room beyond the
 *    reserve, else the pipe leaves the epoll set and the process blocks in
 *    write(): that is the back-pressure;
 *  - file and directory streams produce chunks only into free room.
 * Producers without an fd event of their own (streams, exited processes
 * being drained) keep the socket armed for EPOLLOUT while they have work,
 * so they resume as soon as the buffer drains, in turn with the others.
 * Stdin flows the other way under a credit window per process
 * (STDIN_WINDOW): the client may not send more than the agent granted, so the
 * agent can always read its socket without buffering more than the window.
 *
 * Objects that die while a batch of epoll events is being handled are only
 * marked dead and freed after the batch (sweep), so a later event of the
 * same batch never touches freed memory.
 */
#include "guest/agentd.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "guest/gexec.h"
#include "guest/gfs.h"
#include "guest/identity.h"
#include "proto.h"

#define MAX_CONNS	    16
#define MAX_EXECS	    256 /* all connections together */
#define CONN_EXECS	    64
#define CONN_STREAMS	    8 /* file puts, gets and listings in flight */
#define MAX_LISTENERS	    4
#define TX_CAP		    (256u * 1024) /* default */
#define TX_CAP_MIN	    (16u * 1024)
#define TX_CAP_MAX	    (4u * 1024 * 1024)
#define REPLY_RESERVE	    2048u /* >= the largest single reply (ERROR: 1044) */
#define OUT_CHUNK	    (64u * 1024)
#define OUT_MIN		    4096u
#define STDIN_WINDOW	    (64u * 1024)
#define RX_INIT		    (64u * 1024)
#define SHUTDOWN_FLUSH_MS   1000
#define AGENT_NAME	    "kiln-init 0.1"
#define NOFILE_WANT	    4096 /* > MAX_EXECS * 4 + MAX_CONNS * (1 + CONN_STREAMS) + slack */

enum ev_kind { EV_LISTEN, EV_CONN, EV_OUT, EV_ERR, EV_IN, EV_PIDFD, EV_SIGCHLD, EV_STOP };

/* One registered fd; mask 0 means "not in the epoll set" (HUP would still fire). */
struct ev {
	enum ev_kind kind;
	int fd;
	uint32_t mask;
	void *obj;
};

enum stream_kind { S_FREE, S_PUT, S_GET, S_LIST };

struct stream {
	enum stream_kind kind;
	uint32_t id;
	int fd;
	DIR *dir;
	int err;
	uint64_t bytes;
};

struct conn {
	struct ev ev;
	struct agentd *d;
	bool dead;
	bool hello;
	bool rx_blocked; /* waiting for transmit room before parsing more */
	unsigned nexecs;
	uint8_t *rx;
	size_t rx_off, rx_len, rx_cap;
	uint8_t *tx;
	size_t tx_off, tx_len;
	struct stream streams[CONN_STREAMS];
};

struct exec {
	struct agentd *d;
	struct conn *conn; /* NULL once its connection closed (killed, waiting to reap) */
	uint32_t id;
	pid_t pid;
	bool dead;
	bool reaped;
	int status;
	struct ev pidfd, out, err, in;
	int pty;	/* the terminal's master (PROTO_EXEC_PTY) for RESIZE, or -1 */
	uint8_t *inbuf; /* STDIN_WINDOW bytes when stdin is on */
	size_t in_off, in_len;
	bool in_eof;	  /* the client sent F_EOF */
	bool in_closed;	  /* the pipe is closed (or stdin was off) */
	bool in_notice;	  /* tell the client its stdin is gone */
	uint32_t credit;  /* stdin bytes consumed, not yet granted back */
	int64_t oom_start; /* vmstat oom_kill before the spawn, -1: unreadable */
};

struct agentd {
	struct agentd_config cfg;
	int epfd;
	struct ev stop;
	struct ev sigchld;
	struct ev listeners[MAX_LISTENERS];
	unsigned nlisteners;
	char unix_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct conn *conns[MAX_CONNS];
	struct exec *execs[MAX_EXECS];
	struct gexec_opts spawn;
	size_t tx_cap;
	bool stopping;
	bool shutdown;
	struct conn *shutdown_conn;
	struct timespec shutdown_at;
	struct agentd_stats stats; /* __atomic accesses */
};

static void dlog(struct agentd *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void dlog(struct agentd *d, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	if (!d->cfg.debug)
		return;
	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(buf))
		n = sizeof(buf) - 1;
	if (write(STDERR_FILENO, buf, (size_t)n) < 0) {
		/* nothing to do */
	}
}

static void stat_max(size_t *peak, size_t v)
{
	if (v > __atomic_load_n(peak, __ATOMIC_RELAXED))
		__atomic_store_n(peak, v, __ATOMIC_RELAXED);
}

static void stat_add(uint64_t *c, uint64_t v)
{
	__atomic_fetch_add(c, v, __ATOMIC_RELAXED);
}

static void stat_inc(unsigned *c, int v)
{
	__atomic_fetch_add(c, (unsigned)v, __ATOMIC_RELAXED);
}

/* ---------------------------------------------------------------- epoll */

static int ev_set(struct agentd *d, struct ev *ev, uint32_t mask)
{
	struct epoll_event e = { .events = mask, .data.ptr = ev };
	int op, ret = 0;

	if (ev->fd < 0 || ev->mask == mask)
		goto out;
	if (!mask)
		op = EPOLL_CTL_DEL;
	else if (!ev->mask)
		op = EPOLL_CTL_ADD;
	else
		op = EPOLL_CTL_MOD;
	if (epoll_ctl(d->epfd, op, ev->fd, &e)) {
		ret = -errno;
		goto out;
	}
	ev->mask = mask;
out:
	return ret;
}

static void ev_close(struct agentd *d, struct ev *ev)
{
	if (ev->fd < 0)
		return;
	ev_set(d, ev, 0);
	close(ev->fd);
	ev->fd = -1;
}

static void ev_init(struct ev *ev, enum ev_kind kind, int fd, void *obj)
{
	ev->kind = kind;
	ev->fd = fd;
	ev->mask = 0;
	ev->obj = obj;
}

/* ------------------------------------------------------- transmit buffer */

static size_t tx_room(const struct conn *c)
{
	return c->d->tx_cap - c->tx_len;
}

/* Room beyond the reply reserve, for data producers. */
static size_t tx_data_room(const struct conn *c)
{
	size_t room = tx_room(c);

	return room > REPLY_RESERVE ? room - REPLY_RESERVE : 0;
}

/* n contiguous bytes at the tail, or NULL when fewer than n are free. */
static uint8_t *tx_reserve(struct conn *c, size_t n)
{
	if (n > tx_room(c))
		return NULL;
	if (c->tx_off + c->tx_len + n > c->d->tx_cap) {
		memmove(c->tx, c->tx + c->tx_off, c->tx_len);
		c->tx_off = 0;
	}
	return c->tx + c->tx_off + c->tx_len;
}

static void tx_commit(struct conn *c, size_t n)
{
	c->tx_len += n;
	stat_max(&c->d->stats.tx_peak, c->tx_len);
}

static void conn_close(struct conn *c);

static void conn_flush(struct conn *c)
{
	while (c->tx_len && !c->dead) {
		ssize_t n = send(c->ev.fd, c->tx + c->tx_off, c->tx_len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				conn_close(c);
			break;
		}
		c->tx_off += (size_t)n;
		c->tx_len -= (size_t)n;
	}
	if (!c->tx_len)
		c->tx_off = 0;
}

/*
 * Queue one reply frame. Callers parse requests only with REPLY_RESERVE free,
 * so this fails only on a bug; the connection is then closed.
 */
static void reply_frame(struct conn *c, int len)
{
	if (len < 0) {
		dlog(c->d, "kiln-init: cannot encode a reply (%d)\n", len);
		conn_close(c);
		return;
	}
	tx_commit(c, (size_t)len);
}

static void reply_ok(struct conn *c, uint32_t id, uint64_t v)
{
	uint8_t *p = tx_reserve(c, REPLY_RESERVE);

	reply_frame(c, p ? proto_enc_ok(p, REPLY_RESERVE, id, v) : -ENOSPC);
}

static void reply_err(struct conn *c, uint32_t id, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void reply_err(struct conn *c, uint32_t id, int err, const char *fmt, ...)
{
	char msg[PROTO_MSG_MAX + 1];
	uint8_t *p = tx_reserve(c, REPLY_RESERVE);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	reply_frame(c, p ? proto_enc_error(p, REPLY_RESERVE, id, err, msg) : -ENOSPC);
}

/* A broken peer: one best-effort error frame, then the connection goes. */
static void proto_fail(struct conn *c, const char *what)
{
	uint8_t *p = tx_reserve(c, REPLY_RESERVE);

	stat_add(&c->d->stats.proto_errors, 1);
	dlog(c->d, "kiln-init: protocol error: %s\n", what);
	if (p) {
		int len = proto_enc_error(p, REPLY_RESERVE, 0, EPROTO, what);

		if (len > 0)
			tx_commit(c, (size_t)len);
	}
	conn_flush(c);
	conn_close(c);
}

/* ------------------------------------------------------------ processes */

static struct exec *exec_find(struct conn *c, uint32_t id)
{
	for (unsigned i = 0; i < MAX_EXECS; i++) {
		struct exec *e = c->d->execs[i];

		if (e && !e->dead && e->conn == c && e->id == id)
			return e;
	}
	return NULL;
}

static void exec_kill(struct exec *e)
{
	if (e->reaped)
		return;
	if (kill(-e->pid, SIGKILL) && errno == ESRCH)
		kill(e->pid, SIGKILL);
}

/* Stdin is over: the process closed it, exited, or its connection went away. */
static void exec_stdin_gone(struct exec *e, bool notice)
{
	if (e->in_closed)
		return;
	ev_close(e->d, &e->in);
	e->in_closed = true;
	e->credit += (uint32_t)e->in_len;
	e->in_len = e->in_off = 0;
	if (notice && !e->in_eof)
		e->in_notice = true;
}

static void exec_write_stdin(struct exec *e)
{
	while (e->in_len && !e->in_closed) {
		ssize_t n = write(e->in.fd, e->inbuf + e->in_off, e->in_len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				exec_stdin_gone(e, true);
			break;
		}
		e->in_off += (size_t)n;
		e->in_len -= (size_t)n;
		e->credit += (uint32_t)n;
	}
	if (!e->in_len)
		e->in_off = 0;
	if (!e->in_closed && !e->in_len && e->in_eof)
		exec_stdin_gone(e, false);
	if (!e->in_closed)
		ev_set(e->d, &e->in, e->in_len ? EPOLLOUT : 0);
}

/* Closes its pipes; the process is killed (if alive) and reaped later. */
static void exec_detach(struct exec *e)
{
	exec_kill(e);
	exec_stdin_gone(e, false);
	ev_close(e->d, &e->out);
	ev_close(e->d, &e->err);
	if (e->conn)
		e->conn->nexecs--;
	e->conn = NULL;
	if (e->reaped)
		e->dead = true;
}

static void exec_reaped(struct exec *e, int status)
{
	e->reaped = true;
	e->status = status;
	ev_close(e->d, &e->pidfd);
	exec_stdin_gone(e, true);
	if (!e->conn)
		e->dead = true;
}

static void reap(struct agentd *d)
{
	int status;
	pid_t pid;

	if (d->cfg.pid1) {
		/* PID 1 inherits every orphan: reap all, remember ours. */
		while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
			for (unsigned i = 0; i < MAX_EXECS; i++) {
				struct exec *e = d->execs[i];

				if (e && !e->reaped && e->pid == pid) {
					exec_reaped(e, status);
					break;
				}
			}
		}
		return;
	}
	for (unsigned i = 0; i < MAX_EXECS; i++) {
		struct exec *e = d->execs[i];

		if (e && !e->reaped && waitpid(e->pid, &status, WNOHANG) == e->pid)
			exec_reaped(e, status);
	}
}

/* One read of a process's stdout or stderr into a frame; false when nothing more now. */
static bool exec_read(struct exec *e, struct ev *pipe)
{
	struct conn *c = e->conn;
	size_t room = tx_data_room(c), want;
	uint8_t *p;
	ssize_t n;

	if (pipe->fd < 0 || room < PROTO_HDR_SIZE + OUT_MIN)
		return false;
	want = room - PROTO_HDR_SIZE;
	if (want > OUT_CHUNK)
		want = OUT_CHUNK;
	p = tx_reserve(c, PROTO_HDR_SIZE + want);
	do
		n = read(pipe->fd, p + PROTO_HDR_SIZE, want);
	while (n < 0 && errno == EINTR);
	if (n > 0) {
		struct proto_hdr h = {
			.len = (uint32_t)n,
			.type = pipe->kind == EV_OUT ? PROTO_STDOUT : PROTO_STDERR,
			.flags = 0,
			.id = e->id,
		};

		proto_hdr_encode(p, &h);
		tx_commit(c, PROTO_HDR_SIZE + (size_t)n);
		stat_add(&e->d->stats.pipe_bytes, (uint64_t)n);
		return true;
	}
	/*
	 * EOF, an error, or nothing left after the process exited: whatever a
	 * surviving grandchild writes later is not waited for.
	 */
	if (n == 0 || errno != EAGAIN || e->reaped)
		ev_close(e->d, pipe);
	return false;
}

/* The kernel's count of OOM kills so far (/proc/vmstat oom_kill), or -1. */
static int64_t oom_kills_now(void)
{
	char buf[16384];
	const char *p;
	ssize_t n;
	int64_t v = -1;
	int fd = open("/proc/vmstat", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	p = strstr(buf, "\noom_kill ");
	if (p) {
		char *end;
		long long k = strtoll(p + 10, &end, 10);

		if (end != p + 10 && k >= 0 && (*end == '\n' || !*end))
			v = k;
	}
	return v;
}

static void exec_finish(struct exec *e)
{
	struct conn *c = e->conn;
	struct proto_exit x;
	uint8_t *p = tx_reserve(c, REPLY_RESERVE);

	if (!p)
		return;
	if (WIFSIGNALED(e->status)) {
		x.code = -1;
		x.signal = WTERMSIG(e->status);
	} else {
		x.code = WEXITSTATUS(e->status);
		x.signal = 0;
	}
	x.oom_kills = -1;
	if (e->oom_start >= 0) {
		int64_t now = oom_kills_now();

		if (now >= e->oom_start)
			x.oom_kills = now - e->oom_start;
	}
	reply_frame(c, proto_enc_exit(p, REPLY_RESERVE, e->id, &x));
	c->nexecs--;
	e->conn = NULL;
	e->dead = true;
}

/* Stdin credit worth a frame now, or the "stdin gone" notice. */
static bool exec_credit_due(const struct exec *e)
{
	if (e->in_notice)
		return true;
	if (e->in_closed)
		return false; /* nobody will send more: credit is moot */
	return e->credit && (e->credit >= STDIN_WINDOW / 4 || !e->in_len);
}

static void exec_send_credit(struct exec *e)
{
	struct conn *c = e->conn;
	uint8_t *p;
	int len;

	if (!exec_credit_due(e) || tx_room(c) < REPLY_RESERVE * 2)
		return;
	p = tx_reserve(c, REPLY_RESERVE);
	len = proto_enc_credit(p, REPLY_RESERVE, e->id, e->in_notice ? PROTO_F_EOF : 0, e->credit);
	if (len < 0)
		return;
	tx_commit(c, (size_t)len);
	e->credit = 0;
	e->in_notice = false;
}

static void exec_pump(struct exec *e)
{
	bool room = tx_data_room(e->conn) >= PROTO_HDR_SIZE + OUT_MIN;

	exec_send_credit(e);
	if (e->reaped) {
		/*
		 * Drain what the process left in its pipes, then report its end.
		 * Driven from here only: a pipe left in the epoll set while there
		 * is no room would fire forever.
		 */
		while (exec_read(e, &e->out))
			;
		while (exec_read(e, &e->err))
			;
		ev_set(e->d, &e->out, 0);
		ev_set(e->d, &e->err, 0);
		if (e->out.fd < 0 && e->err.fd < 0)
			exec_finish(e);
		return;
	}
	ev_set(e->d, &e->out, room ? EPOLLIN : 0);
	ev_set(e->d, &e->err, room ? EPOLLIN : 0);
}

static void do_exec(struct conn *c, const struct proto_hdr *h, const uint8_t *payload)
{
	struct agentd *d = c->d;
	struct proto_exec *req = NULL;
	struct exec *e = NULL;
	struct gexec_child ch;
	struct proto_exec_ok ok;
	char why[256];
	unsigned slot = MAX_EXECS;
	uint8_t *p;
	int ret;

	ret = proto_dec_exec(payload, h->len, &req);
	if (ret == -ENOMEM) {
		reply_err(c, h->id, ENOMEM, "out of memory");
		goto out;
	}
	if (ret) {
		proto_fail(c, "malformed EXEC");
		goto out;
	}
	if (exec_find(c, h->id)) {
		reply_err(c, h->id, EEXIST, "exec id %u in use", h->id);
		goto out;
	}
	if (req->cwd[0] && req->cwd[0] != '/') {
		reply_err(c, h->id, EINVAL, "cwd must be absolute");
		goto out;
	}
	for (unsigned i = 0; i < MAX_EXECS && slot == MAX_EXECS; i++)
		if (!d->execs[i])
			slot = i;
	if (slot == MAX_EXECS || c->nexecs >= CONN_EXECS) {
		reply_err(c, h->id, EAGAIN, "too many processes");
		goto out;
	}
	e = calloc(1, sizeof(*e));
	if (e)
		e->pty = -1;
	if (!e || ((req->flags & PROTO_EXEC_STDIN) && !(e->inbuf = malloc(STDIN_WINDOW)))) {
		reply_err(c, h->id, ENOMEM, "out of memory");
		goto out;
	}
	e->oom_start = oom_kills_now();
	ret = gexec_spawn(req, &d->spawn, &ch, why, sizeof(why));
	if (ret) {
		if (why[0])
			reply_err(c, h->id, -ret, "%s", why);
		else
			reply_err(c, h->id, -ret, "%s: %s", req->argv[0], strerror(-ret));
		goto out;
	}
	e->d = d;
	e->conn = c;
	e->id = h->id;
	e->pid = ch.pid;
	ev_init(&e->pidfd, EV_PIDFD, ch.pidfd, e);
	ev_init(&e->out, EV_OUT, ch.out, e);
	ev_init(&e->err, EV_ERR, ch.err, e);
	ev_init(&e->in, EV_IN, ch.in, e);
	e->pty = ch.pty;
	e->in_closed = ch.in < 0;
	d->execs[slot] = e;
	c->nexecs++;
	stat_inc(&d->stats.execs, 1);
	if (ev_set(d, &e->pidfd, EPOLLIN)) {
		/* Without its pidfd we would never notice the end: give up on it. */
		exec_detach(e);
		while (waitpid(e->pid, NULL, 0) < 0 && errno == EINTR)
			;
		e->reaped = e->dead = true;
		reply_err(c, h->id, ENOMEM, "epoll");
		e = NULL;
		goto out;
	}
	ok.pid = (uint32_t)ch.pid;
	ok.stdin_window = e->in_closed ? 0 : STDIN_WINDOW;
	p = tx_reserve(c, REPLY_RESERVE);
	reply_frame(c, p ? proto_enc_exec_ok(p, REPLY_RESERVE, h->id, &ok) : -ENOSPC);
	dlog(d, "kiln-init: exec %u: pid %d %s\n", h->id, (int)ch.pid, req->argv[0]);
	e = NULL;
out:
	if (e) {
		free(e->inbuf);
		free(e);
	}
	free(req);
}

static void do_stdin(struct conn *c, const struct proto_hdr *h, const uint8_t *payload)
{
	struct exec *e = exec_find(c, h->id);

	/* Frames racing with the end of a process are dropped. */
	if (!e || e->in_closed)
		return;
	if (e->in_eof) {
		proto_fail(c, "STDIN after end of stdin");
		return;
	}
	if ((size_t)h->len + e->in_len + e->credit > STDIN_WINDOW) {
		proto_fail(c, "STDIN beyond the granted window");
		return;
	}
	if (e->in_off + e->in_len + h->len > STDIN_WINDOW) {
		memmove(e->inbuf, e->inbuf + e->in_off, e->in_len);
		e->in_off = 0;
	}
	memcpy(e->inbuf + e->in_off + e->in_len, payload, h->len);
	e->in_len += h->len;
	stat_max(&c->d->stats.stdin_peak, e->in_len);
	if (h->flags & PROTO_F_EOF)
		e->in_eof = true;
	exec_write_stdin(e);
}

static void do_signal(struct conn *c, const struct proto_hdr *h, const uint8_t *payload)
{
	struct proto_signal s;
	struct exec *e;

	if (proto_dec_signal(payload, h->len, &s)) {
		proto_fail(c, "malformed SIGNAL");
		return;
	}
	e = exec_find(c, s.exec_id);
	if (!e || e->reaped) {
		reply_err(c, h->id, ESRCH, "no such process");
		return;
	}
	/* Not reaped yet, so neither the pid nor the process group can be reused. */
	if (kill((s.flags & PROTO_SIG_GROUP) ? -e->pid : e->pid, s.signo))
		reply_err(c, h->id, errno, "kill: %s", strerror(errno));
	else
		reply_ok(c, h->id, 0);
}

/* A terminal's new size (the kernel sends SIGWINCH to its foreground group).
 * No reply: a process that ended meanwhile, or has no terminal, ignores it. */
static void do_resize(struct conn *c, const struct proto_hdr *h, const uint8_t *payload)
{
	struct proto_winsize m;
	struct winsize ws = { 0 };
	struct exec *e;

	if (proto_dec_resize(payload, h->len, &m)) {
		proto_fail(c, "malformed RESIZE");
		return;
	}
	e = exec_find(c, h->id);
	if (!e || e->pty < 0)
		return;
	ws.ws_row = (unsigned short)m.rows;
	ws.ws_col = (unsigned short)m.cols;
	if (ioctl(e->pty, TIOCSWINSZ, &ws))
		dlog(c->d, "kiln-init: exec %u: TIOCSWINSZ: %s\n", e->id, strerror(errno));
}

/* ---------------------------------------------------------- file streams */

static struct stream *stream_find(struct conn *c, uint32_t id)
{
	for (unsigned i = 0; i < CONN_STREAMS; i++)
		if (c->streams[i].kind != S_FREE && c->streams[i].id == id)
			return &c->streams[i];
	return NULL;
}

static struct stream *stream_new(struct conn *c, uint32_t id, enum stream_kind kind)
{
	if (stream_find(c, id))
		return NULL;
	for (unsigned i = 0; i < CONN_STREAMS; i++) {
		struct stream *s = &c->streams[i];

		if (s->kind == S_FREE) {
			memset(s, 0, sizeof(*s));
			s->kind = kind;
			s->id = id;
			s->fd = -1;
			return s;
		}
	}
	return NULL;
}

static void stream_end(struct stream *s)
{
	if (s->dir)
		closedir(s->dir);
	else if (s->fd >= 0)
		close(s->fd);
	s->dir = NULL;
	s->fd = -1;
	s->kind = S_FREE;
}

static void do_path(struct conn *c, const struct proto_hdr *h, const uint8_t *payload)
{
	struct proto_path req;
	struct proto_stat st;
	struct stream *s;
	uint8_t *p;
	int ret, fd;

	if (proto_dec_path(payload, h->len, &req)) {
		proto_fail(c, "malformed path request");
		return;
	}
	switch (h->type) {
	case PROTO_STAT:
		ret = gfs_stat(req.path, req.flags & PROTO_PATH_NOFOLLOW, &st);
		if (!ret) {
			p = tx_reserve(c, REPLY_RESERVE);
			reply_frame(c, p ? proto_enc_stat(p, REPLY_RESERVE, h->id, &st) : -ENOSPC);
			return;
		}
		break;
	case PROTO_MKDIR:
		ret = gfs_mkdir(req.path, req.mode, req.flags & PROTO_PATH_PARENTS);
		break;
	case PROTO_REMOVE:
		ret = gfs_remove(req.path, req.flags & PROTO_PATH_RECURSIVE);
		break;
	case PROTO_FILE_PUT:
		/* Its FILE_DATA frames may already be on the way: no reply until F_EOF. */
		s = stream_new(c, h->id, S_PUT);
		if (!s) {
			proto_fail(c, "FILE_PUT: id in use or too many streams");
			return;
		}
		s->err = gfs_open_put(req.path, req.mode, req.uid, req.gid,
				      req.flags & PROTO_PATH_PARENTS, &s->fd);
		return;
	case PROTO_FILE_GET:
	case PROTO_LIST:
		if (stream_find(c, h->id)) {
			reply_err(c, h->id, EEXIST, "id %u in use", h->id);
			return;
		}
		if (h->type == PROTO_FILE_GET) {
			ret = gfs_open_get(req.path, &fd);
		} else {
			ret = gfs_check_path(req.path);
			fd = -1;
			if (!ret) {
				fd = open(req.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
				ret = fd < 0 ? -errno : 0;
			}
		}
		if (ret)
			break;
		s = stream_new(c, h->id, h->type == PROTO_FILE_GET ? S_GET : S_LIST);
		if (!s) {
			close(fd);
			ret = -EAGAIN;
			break;
		}
		s->fd = fd;
		if (h->type == PROTO_LIST) {
			s->dir = fdopendir(fd);
			if (!s->dir) {
				ret = -errno;
				stream_end(s);
				break;
			}
		}
		return;
	default:
		ret = -EINVAL;
		break;
	}
	if (ret)
		reply_err(c, h->id, -ret, "%s: %s", req.path, strerror(-ret));
	else
		reply_ok(c, h->id, 0);
}

static void do_put_data(struct conn *c, const struct proto_hdr *h, const uint8_t *payload)
{
	struct stream *s = stream_find(c, h->id);
	int ret;

	if (!s || s->kind != S_PUT) {
		proto_fail(c, "FILE_DATA for no FILE_PUT");
		return;
	}
	if (h->flags & PROTO_F_ABORT) {
		/* The client could not read its source: what was written stays. */
		reply_err(c, h->id, ECANCELED, "upload abandoned by the client");
		stream_end(s);
		return;
	}
	if (!s->err && h->len) {
		s->err = gfs_write_all(s->fd, payload, h->len);
		s->bytes += h->len;
	}
	if (!(h->flags & PROTO_F_EOF))
		return;
	ret = s->err;
	if (s->fd >= 0 && close(s->fd) && !ret)
		ret = -errno;
	s->fd = -1;
	if (ret)
		reply_err(c, h->id, -ret, "write: %s", strerror(-ret));
	else
		reply_ok(c, h->id, s->bytes);
	stream_end(s);
}

/* FILE_GET: chunks of the file while there is room. */
static void stream_get(struct conn *c, struct stream *s)
{
	while (tx_data_room(c) >= PROTO_HDR_SIZE + OUT_MIN) {
		size_t want = tx_data_room(c) - PROTO_HDR_SIZE;
		struct proto_hdr h;
		uint8_t *p;
		ssize_t n;

		if (want > OUT_CHUNK)
			want = OUT_CHUNK;
		p = tx_reserve(c, PROTO_HDR_SIZE + want);
		do
			n = read(s->fd, p + PROTO_HDR_SIZE, want);
		while (n < 0 && errno == EINTR);
		if (n < 0) {
			reply_err(c, s->id, errno, "read: %s", strerror(errno));
			stream_end(s);
			return;
		}
		/* The bytes are in place after the header; an empty frame ends the file. */
		h.len = (uint32_t)n;
		h.type = PROTO_FILE_DATA;
		h.flags = n ? 0 : PROTO_F_EOF;
		h.id = s->id;
		proto_hdr_encode(p, &h);
		tx_commit(c, PROTO_HDR_SIZE + (size_t)n);
		if (!n) {
			stream_end(s);
			return;
		}
	}
}

/* LIST: frames of entries while there is room. */
static void stream_list(struct conn *c, struct stream *s)
{
	while (tx_data_room(c) >= PROTO_HDR_SIZE + PROTO_DIRENT_MAX_SIZE) {
		size_t cap = tx_data_room(c);
		struct proto_wr w;
		struct proto_hdr h;
		bool eof = false;
		uint8_t *p;
		int len;

		if (cap > PROTO_HDR_SIZE + OUT_CHUNK)
			cap = PROTO_HDR_SIZE + OUT_CHUNK;
		p = tx_reserve(c, cap);
		proto_wr_begin(&w, p, cap, PROTO_DIR_ENTRIES, 0, s->id);
		while (w.cap - w.len >= PROTO_DIRENT_MAX_SIZE) {
			struct proto_dirent ent;
			struct dirent *de;
			struct stat st;

			errno = 0;
			de = readdir(s->dir);
			if (!de) {
				if (errno) {
					reply_err(c, s->id, errno, "readdir: %s", strerror(errno));
					stream_end(s);
					return;
				}
				eof = true;
				break;
			}
			if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
				continue;
			if (fstatat(dirfd(s->dir), de->d_name, &st, AT_SYMLINK_NOFOLLOW))
				continue; /* gone meanwhile */
			ent.mode = st.st_mode;
			ent.size = (uint64_t)st.st_size;
			ent.mtime_sec = st.st_mtim.tv_sec;
			snprintf(ent.name, sizeof(ent.name), "%s", de->d_name);
			proto_wr_dirent(&w, &ent);
		}
		len = proto_wr_end(&w);
		if (len < 0) {
			reply_err(c, s->id, EIO, "listing");
			stream_end(s);
			return;
		}
		h.len = (uint32_t)len - PROTO_HDR_SIZE;
		h.type = PROTO_DIR_ENTRIES;
		h.flags = eof ? PROTO_F_EOF : 0;
		h.id = s->id;
		proto_hdr_encode(p, &h);
		tx_commit(c, (size_t)len);
		if (eof) {
			stream_end(s);
			return;
		}
	}
}

/* -------------------------------------------------------------- requests */

static void do_hello(struct conn *c, const struct proto_hdr *h, const uint8_t *payload)
{
	struct proto_hello req;
	struct proto_hello_ok ok;
	uint8_t *p;
	int ret;

	if (c->hello) {
		proto_fail(c, "second HELLO");
		return;
	}
	ret = proto_dec_hello(payload, h->len, &req);
	if (ret == -EPROTONOSUPPORT) {
		/* A clear answer, then the connection goes: nothing else can be understood. */
		reply_err(c, h->id, EPROTONOSUPPORT, "protocol version %u not supported (agent: %u)",
			  req.version, PROTO_VERSION);
		conn_flush(c);
		conn_close(c);
		return;
	}
	if (ret) {
		proto_fail(c, "malformed HELLO");
		return;
	}
	memset(&ok, 0, sizeof(ok));
	ok.version = PROTO_VERSION;
	ok.caps = PROTO_CAP_EXEC | PROTO_CAP_FILES | PROTO_CAP_PTY | PROTO_CAP_OOM;
	if (c->d->cfg.pid1)
		ok.caps |= PROTO_CAP_REBOOT | PROTO_CAP_IDENTITY;
	ok.max_payload = PROTO_MAX_PAYLOAD;
	ok.stdin_window = STDIN_WINDOW;
	snprintf(ok.agent, sizeof(ok.agent), "%s", AGENT_NAME);
	p = tx_reserve(c, REPLY_RESERVE);
	reply_frame(c, p ? proto_enc_hello_ok(p, REPLY_RESERVE, h->id, &ok) : -ENOSPC);
	c->hello = true;
}

/* The host's entropy, clock, hostname and sandbox id (guest/identity.h):
 * only PID 1 may change the whole VM's. A failure is answered, the agent
 * goes on. */
static void do_identity(struct conn *c, const struct proto_hdr *h, const uint8_t *payload)
{
	struct proto_identity m;
	char err[256];
	int ret;

	if (proto_dec_identity(payload, h->len, &m)) {
		proto_fail(c, "malformed IDENTITY");
		return;
	}
	if (!c->d->cfg.pid1) {
		reply_err(c, h->id, EPERM, "identity: not PID 1");
		goto out;
	}
	ret = identity_apply(&m, IDENTITY_DIR, err, sizeof(err));
	if (ret)
		reply_err(c, h->id, -ret, "%s", err);
	else
		reply_ok(c, h->id, 0);
out:
	explicit_bzero(&m, sizeof(m));
}

static void handle_frame(struct conn *c, const struct proto_hdr *h, const uint8_t *payload)
{
	struct agentd *d = c->d;
	uint8_t *p;

	if (!c->hello && h->type != PROTO_HELLO) {
		proto_fail(c, "HELLO expected first");
		return;
	}
	switch (h->type) {
	case PROTO_HELLO:
		do_hello(c, h, payload);
		break;
	case PROTO_PING:
		p = tx_reserve(c, REPLY_RESERVE);
		reply_frame(c, p ? proto_enc_data(p, REPLY_RESERVE, PROTO_PONG, 0, h->id, payload,
						  h->len)
				 : -ENOSPC);
		break;
	case PROTO_SHUTDOWN:
		reply_ok(c, h->id, 0);
		if (!d->shutdown) {
			d->shutdown = true;
			d->shutdown_conn = c;
			clock_gettime(CLOCK_MONOTONIC, &d->shutdown_at);
		}
		break;
	case PROTO_EXEC:
		do_exec(c, h, payload);
		break;
	case PROTO_STDIN:
		do_stdin(c, h, payload);
		break;
	case PROTO_SIGNAL:
		do_signal(c, h, payload);
		break;
	case PROTO_RESIZE:
		do_resize(c, h, payload);
		break;
	case PROTO_FILE_DATA:
		do_put_data(c, h, payload);
		break;
	case PROTO_IDENTITY:
		do_identity(c, h, payload);
		break;
	case PROTO_FILE_PUT:
	case PROTO_FILE_GET:
	case PROTO_STAT:
	case PROTO_LIST:
	case PROTO_MKDIR:
	case PROTO_REMOVE:
		do_path(c, h, payload);
		break;
	default:
		/* proto_hdr_decode lets only client types through. */
		proto_fail(c, "unexpected frame type");
		break;
	}
}

/* Parse and handle buffered frames while a reply fits. */
static void conn_process(struct conn *c)
{
	c->rx_blocked = false;
	while (!c->dead && c->rx_len >= PROTO_HDR_SIZE) {
		struct proto_hdr h;
		size_t need;

		if (tx_room(c) < REPLY_RESERVE) {
			c->rx_blocked = true;
			break;
		}
		if (proto_hdr_decode(c->rx + c->rx_off, PROTO_FROM_CLIENT, &h)) {
			proto_fail(c, "bad frame header");
			break;
		}
		need = PROTO_HDR_SIZE + (size_t)h.len;
		if (c->rx_len < need) {
			/* Make room for the whole frame: at most PROTO_MAX_FRAME. */
			if (need > c->rx_cap) {
				uint8_t *nrx = malloc(need);

				if (!nrx) {
					proto_fail(c, "out of memory");
					break;
				}
				memcpy(nrx, c->rx + c->rx_off, c->rx_len);
				free(c->rx);
				c->rx = nrx;
				c->rx_cap = need;
				c->rx_off = 0;
			} else if (c->rx_off + need > c->rx_cap) {
				memmove(c->rx, c->rx + c->rx_off, c->rx_len);
				c->rx_off = 0;
			}
			break;
		}
		handle_frame(c, &h, c->rx + c->rx_off + PROTO_HDR_SIZE);
		if (c->dead)
			break;
		c->rx_off += need;
		c->rx_len -= need;
	}
	if (!c->dead && !c->rx_len)
		c->rx_off = 0;
}

static void conn_read(struct conn *c)
{
	/* A few reads per event, so one busy peer does not starve the others. */
	for (int i = 0; i < 4 && !c->dead && !c->rx_blocked; i++) {
		size_t space;
		ssize_t n;

		if (c->rx_off + c->rx_len == c->rx_cap && c->rx_off) {
			memmove(c->rx, c->rx + c->rx_off, c->rx_len);
			c->rx_off = 0;
		}
		space = c->rx_cap - c->rx_off - c->rx_len;
		if (!space)
			break; /* a whole frame is buffered but blocked */
		n = read(c->ev.fd, c->rx + c->rx_off + c->rx_len, space);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				conn_close(c);
			break;
		}
		if (n == 0) {
			dlog(c->d, "kiln-init: connection closed by peer\n");
			conn_close(c);
			break;
		}
		c->rx_len += (size_t)n;
		conn_process(c);
	}
}

/*
 * Work that only conn_pump moves on (no fd event of its own will): file and
 * directory streams, exited processes to drain and report, stdin credit.
 */
static bool conn_pending(struct conn *c)
{
	for (unsigned i = 0; i < CONN_STREAMS; i++)
		if (c->streams[i].kind == S_GET || c->streams[i].kind == S_LIST)
			return true;
	for (unsigned i = 0; i < MAX_EXECS; i++) {
		struct exec *e = c->d->execs[i];

		if (e && !e->dead && e->conn == c && (e->reaped || exec_credit_due(e)))
			return true;
	}
	return false;
}

/*
 * After anything happened on a connection: produce, flush, re-arm. While
 * work is pending the socket stays armed for EPOLLOUT even with nothing
 * queued: once the buffer has drained, the next round comes from the loop,
 * after the other connections had their turn.
 */
static void conn_pump(struct conn *c)
{
	struct agentd *d = c->d;

	for (int round = 0; round < 2 && !c->dead; round++) {
		conn_flush(c);
		for (unsigned i = 0; i < MAX_EXECS && !c->dead; i++) {
			struct exec *e = d->execs[i];

			if (e && !e->dead && e->conn == c)
				exec_pump(e);
		}
		for (unsigned i = 0; i < CONN_STREAMS && !c->dead; i++) {
			struct stream *s = &c->streams[i];

			if (s->kind == S_GET)
				stream_get(c, s);
			else if (s->kind == S_LIST)
				stream_list(c, s);
		}
		if (c->rx_blocked && !c->dead && tx_room(c) >= REPLY_RESERVE)
			conn_process(c);
	}
	if (c->dead)
		return;
	conn_flush(c);
	if (c->dead)
		return;
	if (ev_set(d, &c->ev, (c->rx_blocked ? 0 : EPOLLIN) |
				     (c->tx_len || conn_pending(c) ? EPOLLOUT : 0)))
		conn_close(c);
}

static void conn_close(struct conn *c)
{
	struct agentd *d = c->d;

	if (c->dead)
		return;
	c->dead = true;
	ev_close(d, &c->ev);
	for (unsigned i = 0; i < MAX_EXECS; i++) {
		struct exec *e = d->execs[i];

		if (e && e->conn == c)
			exec_detach(e);
	}
	for (unsigned i = 0; i < CONN_STREAMS; i++)
		if (c->streams[i].kind != S_FREE)
			stream_end(&c->streams[i]);
	free(c->rx);
	free(c->tx);
	c->rx = c->tx = NULL;
	c->rx_len = c->tx_len = 0;
	if (d->shutdown_conn == c)
		d->shutdown_conn = NULL;
	stat_inc(&d->stats.conns, -1);
}

static void do_accept(struct agentd *d, struct ev *lev)
{
	for (;;) {
		struct conn *c = NULL;
		unsigned slot = MAX_CONNS;
		int fd = accept4(lev->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			break;
		}
		for (unsigned i = 0; i < MAX_CONNS && slot == MAX_CONNS; i++)
			if (!d->conns[i])
				slot = i;
		if (slot < MAX_CONNS)
			c = calloc(1, sizeof(*c));
		if (c) {
			c->rx = malloc(RX_INIT);
			c->tx = malloc(d->tx_cap);
		}
		if (!c || !c->rx || !c->tx) {
			dlog(d, "kiln-init: connection refused (%s)\n",
			     slot == MAX_CONNS ? "too many" : "no memory");
			if (c) {
				free(c->rx);
				free(c->tx);
			}
			free(c);
			close(fd);
			continue;
		}
		c->d = d;
		c->rx_cap = RX_INIT;
		ev_init(&c->ev, EV_CONN, fd, c);
		for (unsigned i = 0; i < CONN_STREAMS; i++)
			c->streams[i].fd = -1;
		if (ev_set(d, &c->ev, EPOLLIN)) {
			close(fd);
			free(c->rx);
			free(c->tx);
			free(c);
			continue;
		}
		d->conns[slot] = c;
		stat_inc(&d->stats.conns, 1);
		dlog(d, "kiln-init: new connection\n");
	}
}

/* Free what died during the last batch of events. */
static void sweep(struct agentd *d)
{
	for (unsigned i = 0; i < MAX_EXECS; i++) {
		struct exec *e = d->execs[i];

		if (!e || !e->dead)
			continue;
		ev_close(d, &e->pidfd);
		ev_close(d, &e->out);
		ev_close(d, &e->err);
		ev_close(d, &e->in);
		if (e->pty >= 0)
			close(e->pty);
		free(e->inbuf);
		free(e);
		d->execs[i] = NULL;
		stat_inc(&d->stats.execs, -1);
	}
	for (unsigned i = 0; i < MAX_CONNS; i++) {
		if (d->conns[i] && d->conns[i]->dead) {
			free(d->conns[i]);
			d->conns[i] = NULL;
		}
	}
}

static void handle_event(struct agentd *d, struct ev *ev, uint32_t events)
{
	struct exec *e;
	struct conn *c;
	uint64_t v;

	switch (ev->kind) {
	case EV_LISTEN:
		do_accept(d, ev);
		break;
	case EV_CONN:
		c = ev->obj;
		if (c->dead)
			break;
		if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
			if (c->rx_blocked && (events & (EPOLLHUP | EPOLLERR)))
				conn_close(c); /* gone, and we were not reading anyway */
			else
				conn_read(c);
		}
		if (!c->dead)
			conn_pump(c);
		break;
	case EV_OUT:
	case EV_ERR:
		e = ev->obj;
		if (e->dead || !e->conn)
			break;
		exec_read(e, ev);
		if (!e->conn->dead)
			conn_pump(e->conn);
		break;
	case EV_IN:
		e = ev->obj;
		if (e->dead || !e->conn)
			break;
		exec_write_stdin(e);
		conn_pump(e->conn);
		break;
	case EV_PIDFD:
		e = ev->obj;
		if (e->dead || e->reaped)
			break;
		reap(d);
		if (!e->reaped && waitpid(e->pid, NULL, WNOHANG) < 0 && errno == ECHILD) {
			/*
			 * Someone else in this process reaped it (only possible in
			 * test mode, where the agent is a guest of another
			 * program): its status is lost.
			 */
			dlog(d, "kiln-init: exec %u reaped by someone else\n", e->id);
			exec_reaped(e, 255 << 8);
		}
		if (e->conn && !e->conn->dead)
			conn_pump(e->conn);
		break;
	case EV_SIGCHLD: {
		struct signalfd_siginfo si;

		while (read(ev->fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
			;
		reap(d);
		for (unsigned i = 0; i < MAX_CONNS; i++)
			if (d->conns[i] && !d->conns[i]->dead)
				conn_pump(d->conns[i]);
		break;
	}
	case EV_STOP:
		if (read(ev->fd, &v, sizeof(v)) < 0) {
			/* counter was already drained */
		}
		d->stopping = true;
		break;
	}
}

static long ms_since(const struct timespec *t)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - t->tv_sec) * 1000 + (now.tv_nsec - t->tv_nsec) / 1000000;
}

int agentd_run(struct agentd *d)
{
	struct epoll_event evs[64];
	int ret = AGENTD_STOPPED;

	while (!d->stopping) {
		int timeout = -1, n;

		if (d->shutdown) {
			struct conn *c = d->shutdown_conn;
			long left = SHUTDOWN_FLUSH_MS - ms_since(&d->shutdown_at);

			if (!c || c->dead || !c->tx_len || left <= 0) {
				ret = AGENTD_SHUTDOWN;
				break;
			}
			timeout = (int)left;
		}
		n = epoll_wait(d->epfd, evs, 64, timeout);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			break;
		}
		for (int i = 0; i < n; i++)
			handle_event(d, evs[i].data.ptr, evs[i].events);
		sweep(d);
	}
	return ret;
}

void agentd_stop(struct agentd *d)
{
	uint64_t one = 1;

	if (write(d->stop.fd, &one, sizeof(one)) < 0) {
		/* the counter is already non-zero */
	}
}

void agentd_get_stats(struct agentd *d, struct agentd_stats *st)
{
	st->tx_cap = d->tx_cap;
	st->stdin_window = STDIN_WINDOW;
	st->tx_peak = __atomic_load_n(&d->stats.tx_peak, __ATOMIC_RELAXED);
	st->stdin_peak = __atomic_load_n(&d->stats.stdin_peak, __ATOMIC_RELAXED);
	st->pipe_bytes = __atomic_load_n(&d->stats.pipe_bytes, __ATOMIC_RELAXED);
	st->proto_errors = __atomic_load_n(&d->stats.proto_errors, __ATOMIC_RELAXED);
	st->conns = __atomic_load_n(&d->stats.conns, __ATOMIC_RELAXED);
	st->execs = __atomic_load_n(&d->stats.execs, __ATOMIC_RELAXED);
}

static int add_listener(struct agentd *d, int fd)
{
	struct ev *ev;
	int ret;

	if (d->nlisteners == MAX_LISTENERS) {
		close(fd);
		return -ENOSPC;
	}
	ev = &d->listeners[d->nlisteners];
	ev_init(ev, EV_LISTEN, fd, NULL);
	ret = ev_set(d, ev, EPOLLIN);
	if (ret) {
		close(fd);
		ev->fd = -1;
		return ret;
	}
	d->nlisteners++;
	return 0;
}

int agentd_listen_unix(struct agentd *d, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = -1, ret;

	if (strlen(path) >= sizeof(sa.sun_path) || d->unix_path[0]) {
		ret = -EINVAL;
		goto out;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	unlink(path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 16)) {
		ret = -errno;
		goto out;
	}
	memcpy(d->unix_path, path, strlen(path) + 1);
	ret = add_listener(d, fd);
	fd = -1;
out:
	if (fd >= 0)
		close(fd);
	return ret;
}

int agentd_listen_vsock(struct agentd *d, uint32_t port)
{
	struct sockaddr_vm sa = {
		.svm_family = AF_VSOCK,
		.svm_cid = VMADDR_CID_ANY,
		.svm_port = port,
	};
	int fd, ret;

	fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 16)) {
		ret = -errno;
		close(fd);
		return ret;
	}
	return add_listener(d, fd);
}

int agentd_create(const struct agentd_config *cfg, struct agentd **out)
{
	struct agentd *d;
	struct rlimit rl;
	sigset_t set;
	int ret;

	*out = NULL;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->cfg = *cfg;
	d->tx_cap = cfg->tx_cap ? cfg->tx_cap : TX_CAP;
	if (d->tx_cap < TX_CAP_MIN)
		d->tx_cap = TX_CAP_MIN;
	if (d->tx_cap > TX_CAP_MAX)
		d->tx_cap = TX_CAP_MAX;
	d->epfd = d->stop.fd = d->sigchld.fd = -1;
	signal(SIGPIPE, SIG_IGN);
	/*
	 * Each process holds 4 fds here: make room for all of them, and give
	 * children the limit the agent was started with.
	 */
	d->spawn.reset_oom = cfg->pid1;
	d->spawn.etc_dir = cfg->etc_dir;
	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < NOFILE_WANT) {
		d->spawn.nofile_soft = rl.rlim_cur;
		if (cfg->pid1 && rl.rlim_max < NOFILE_WANT)
			rl.rlim_max = NOFILE_WANT; /* root may raise it */
		rl.rlim_cur = rl.rlim_max < NOFILE_WANT ? rl.rlim_max : NOFILE_WANT;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	d->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (d->epfd < 0) {
		ret = -errno;
		goto fail;
	}
	ev_init(&d->stop, EV_STOP, eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), d);
	if (d->stop.fd < 0) {
		ret = -errno;
		goto fail;
	}
	ret = ev_set(d, &d->stop, EPOLLIN);
	if (ret)
		goto fail;
	if (cfg->pid1) {
		/* Orphans announce themselves only through SIGCHLD. */
		sigemptyset(&set);
		sigaddset(&set, SIGCHLD);
		sigprocmask(SIG_BLOCK, &set, NULL);
		ev_init(&d->sigchld, EV_SIGCHLD, signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC), d);
		if (d->sigchld.fd < 0) {
			ret = -errno;
			goto fail;
		}
		ret = ev_set(d, &d->sigchld, EPOLLIN);
		if (ret)
			goto fail;
	}
	*out = d;
	return 0;
fail:
	agentd_free(d);
	return ret;
}

void agentd_free(struct agentd *d)
{
	if (!d)
		return;
	for (unsigned i = 0; i < MAX_CONNS; i++)
		if (d->conns[i])
			conn_close(d->conns[i]);
	for (unsigned i = 0; i < MAX_EXECS; i++) {
		struct exec *e = d->execs[i];

		if (!e)
			continue;
		exec_detach(e);
		if (!e->reaped)
			while (waitpid(e->pid, NULL, 0) < 0 && errno == EINTR)
				;
		e->reaped = e->dead = true;
	}
	sweep(d);
	for (unsigned i = 0; i < d->nlisteners; i++)
		close(d->listeners[i].fd);
	if (d->unix_path[0])
		unlink(d->unix_path);
	if (d->stop.fd >= 0)
		close(d->stop.fd);
	if (d->sigchld.fd >= 0)
		close(d->sigchld.fd);
	if (d->epfd >= 0)
		close(d->epfd);
	free(d);
}
