/*
 * kilnd's processes (see procs.h).
 *
 * Locks: ps->mu (the table, every reference count) before p->mu (a process's
 * events, stdin queue, signals, followers). Only the pump thread touches the
 * agent connection once the process runs; request threads queue stdin and
 * signals under p->mu and wake it through p->wake.
 */
#include "daemon/procs.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "daemon/records.h"
#include "lib/agent.h"
#include "util.h"

#define STDIN_CHUNK (64 * 1024)
#define MAX_SIGNALS 16 /* queued and not yet sent */
#define PUMP_STACK (256 * 1024)

struct event {
	struct event *next;
	uint64_t seq;
	size_t len;  /* of line, '\n' included */
	size_t data; /* output bytes it carries */
	char line[];
};

struct proc {
	struct procs *ps;
	struct proc *next; /* in the table */
	unsigned refs;	   /* under ps->mu */
	char tenant[64], sandbox[64], *tag, *cmd_json;
	uint32_t pid, exec_id;
	int64_t started_ms, ended_ms;
	uint64_t timeout_s, deadline_ns;
	struct kiln_agent *a; /* the pump thread's */
	int wake;	      /* eventfd: stdin or a signal queued */
	int64_t row;

	pthread_mutex_t mu;
	struct event *head, *tail;
	size_t ring;	       /* bytes of lines held */
	uint64_t next_seq;     /* the next event's */
	uint64_t lost_events, lost_bytes;
	uint64_t bytes_out;
	bool exited, ended;    /* exit seen; no more events */
	int code, sig;
	char *stdin_buf;
	size_t stdin_len;
	bool stdin_open, stdin_eof, stdin_closed;
	struct { int signo; bool group; } sigq[MAX_SIGNALS];
	unsigned nsig;
	bool pty, resize;      /* on a terminal; a new size waits to be sent */
	unsigned rows, cols;
	int followers[PROC_FOLLOWERS_MAX]; /* their eventfds, -1: free */
};

struct proc_follower {
	struct proc *p;
	int efd, slot;
	uint64_t next; /* the next seq to deliver */
	char *pend;    /* a line that did not fit the caller's buffer */
	size_t plen, poff;
};

struct procs {
	struct records *rec;
	int stop_fd;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	struct proc *list;
	uint32_t next_pid;
	unsigned pumps; /* running pump threads */
};

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void proc_destroy(struct proc *p)
{
	struct event *e = p->head, *n;

	for (; e; e = n) {
		n = e->next;
		free(e);
	}
	if (p->a)
		kiln_agent_free(p->a);
	if (p->wake >= 0)
		close(p->wake);
	pthread_mutex_destroy(&p->mu);
	free(p->stdin_buf);
	free(p->tag);
	free(p->cmd_json);
	free(p);
}

/* Under ps->mu. */
static void put_locked(struct proc *p)
{
	if (--p->refs == 0)
		proc_destroy(p);
}

void proc_put(struct proc *p)
{
	struct procs *ps;

	if (!p)
		return;
	ps = p->ps;
	pthread_mutex_lock(&ps->mu);
	put_locked(p);
	pthread_mutex_unlock(&ps->mu);
}

uint32_t proc_pid(const struct proc *p)
{
	return p->pid;
}

/* Under p->mu: number, encode and keep one event (taken), evicting the oldest
 * past PROC_RING_MAX, and wake the followers. */
static void append_locked(struct proc *p, json_t *ev, size_t data)
{
	struct event *e;
	char *text;
	size_t n;

	if (!ev)
		return;
	json_object_set_new(ev, "seq", json_integer((json_int_t)p->next_seq));
	text = json_dumps(ev, JSON_COMPACT);
	json_decref(ev);
	if (!text)
		return;
	n = strlen(text);
	e = malloc(sizeof(*e) + n + 1);
	if (!e) {
		free(text);
		return;
	}
	memcpy(e->line, text, n);
	e->line[n] = '\n';
	free(text);
	e->len = n + 1;
	e->data = data;
	e->seq = p->next_seq++;
	e->next = NULL;
	while (p->head && p->ring + e->len > PROC_RING_MAX) {
		struct event *old = p->head;

		p->head = old->next;
		if (!p->head)
			p->tail = NULL;
		p->ring -= old->len;
		p->lost_events++;
		p->lost_bytes += old->data;
		free(old);
	}
	if (p->tail)
		p->tail->next = e;
	else
		p->head = e;
	p->tail = e;
	p->ring += e->len;
	for (unsigned i = 0; i < PROC_FOLLOWERS_MAX; i++) {
		uint64_t one = 1;

		if (p->followers[i] >= 0 && write(p->followers[i], &one, sizeof(one)) < 0) {
			/* an eventfd at its maximum is awake anyway */
		}
	}
}

/* Agent callbacks: in the pump thread, from kiln_agent_poll. */
static int on_output(void *ctx, uint32_t exec_id, int stream, const void *buf, size_t len)
{
	struct proc *p = ctx;
	char *b = base64_encode(buf, len);

	(void)exec_id;
	if (!b)
		return -ENOMEM;
	pthread_mutex_lock(&p->mu);
	p->bytes_out += len;
	append_locked(p, json_pack("{s:s,s:s}", "type", stream == 2 ? "stderr" : "stdout", "data", b),
		      len);
	pthread_mutex_unlock(&p->mu);
	free(b);
	return 0;
}

static void on_exit_ev(void *ctx, uint32_t exec_id, const struct kiln_exit *e)
{
	struct proc *p = ctx;

	(void)exec_id;
	pthread_mutex_lock(&p->mu);
	p->exited = true;
	p->code = e->code;
	p->sig = e->signal;
	pthread_mutex_unlock(&p->mu);
}

static const struct kiln_exec_ops proc_ops = { .output = on_output, .exit = on_exit_ev };

/* Pump thread: the queued signals and stdin to the agent. */
static void feed(struct proc *p)
{
	struct { int signo; bool group; } sigs[MAX_SIGNALS];
	char chunk[STDIN_CHUNK];
	size_t n = 0, room;
	unsigned nsig, rows = 0, cols = 0;
	bool close_it = false;

	pthread_mutex_lock(&p->mu);
	if (p->resize) {
		rows = p->rows;
		cols = p->cols;
		p->resize = false;
	}
	nsig = p->nsig;
	memcpy(sigs, p->sigq, nsig * sizeof(sigs[0]));
	p->nsig = 0;
	if (!p->stdin_closed) {
		room = kiln_agent_stdin_room(p->a, p->exec_id);
		n = p->stdin_len < room ? p->stdin_len : room;
		if (n > sizeof(chunk))
			n = sizeof(chunk);
		memcpy(chunk, p->stdin_buf, n);
		close_it = p->stdin_eof && p->stdin_len == n;
	}
	pthread_mutex_unlock(&p->mu);

	if (rows)
		kiln_agent_resize(p->a, p->exec_id, rows, cols);
	for (unsigned i = 0; i < nsig; i++)
		kiln_agent_signal(p->a, p->exec_id, sigs[i].signo, sigs[i].group);
	if (n) {
		ssize_t w = kiln_agent_stdin_write(p->a, p->exec_id, chunk, n);

		pthread_mutex_lock(&p->mu);
		if (w > 0) {
			memmove(p->stdin_buf, p->stdin_buf + w, p->stdin_len - (size_t)w);
			p->stdin_len -= (size_t)w;
			close_it = close_it && (size_t)w == n;
		} else if (w == -EPIPE) {
			p->stdin_closed = true; /* the process closed it: drop the rest */
			p->stdin_len = 0;
			close_it = false;
		} else {
			close_it = false;
		}
		pthread_mutex_unlock(&p->mu);
	}
	if (close_it) {
		kiln_agent_stdin_close(p->a, p->exec_id);
		pthread_mutex_lock(&p->mu);
		p->stdin_closed = true;
		p->stdin_len = 0;
		pthread_mutex_unlock(&p->mu);
	}
}

static void *pump(void *arg)
{
	struct proc *p = arg;
	struct procs *ps = p->ps;
	char msg[384] = "";
	int r = 0;

	for (;;) {
		struct pollfd f[3] = { { .fd = kiln_agent_fd(p->a), .events = POLLIN },
				       { .fd = p->wake, .events = POLLIN },
				       { .fd = ps->stop_fd, .events = POLLIN } };
		int timeout = -1;
		bool exited;

		feed(p);
		/* A signal's (or stdin's) request reads the agent until its answer:
		 * the exit may have come with it, and then nothing more will. */
		pthread_mutex_lock(&p->mu);
		exited = p->exited;
		pthread_mutex_unlock(&p->mu);
		if (exited)
			break;
		if (p->deadline_ns) {
			uint64_t now = now_ns();

			timeout = now >= p->deadline_ns ? 0
							: (int)((p->deadline_ns - now) / 1000000 + 1);
		}
		if (poll(f, 3, timeout) < 0 && errno != EINTR) {
			r = -errno;
			break;
		}
		if (f[1].revents & POLLIN) {
			uint64_t v;

			if (read(p->wake, &v, sizeof(v)) < 0) {
				/* nothing queued after all */
			}
		}
		r = kiln_agent_poll(p->a, 0);
		pthread_mutex_lock(&p->mu);
		exited = p->exited;
		pthread_mutex_unlock(&p->mu);
		if (exited)
			break;
		if (r < 0 && kiln_agent_status(p->a))
			break;
		if (f[2].revents) {
			r = -ECANCELED;
			break;
		}
	}

	pthread_mutex_lock(&p->mu);
	if (p->exited) {
		append_locked(p, json_pack("{s:s,s:i,s:i}", "type", "exit", "exit_code",
					   p->sig ? -1 : p->code, "signal", p->sig),
			      0);
	} else {
		if (r == -ETIMEDOUT && p->timeout_s)
			snprintf(msg, sizeof(msg), "the process timed out after %" PRIu64 " s and was killed",
				 p->timeout_s);
		else if (r == -ECANCELED)
			snprintf(msg, sizeof(msg), "kilnd is stopping");
		else
			snprintf(msg, sizeof(msg), "the sandbox stopped answering: %s",
				 kiln_agent_error(p->a)[0] ? kiln_agent_error(p->a)
							   : strerror(r < 0 ? -r : EIO));
		append_locked(p, json_pack("{s:s,s:s}", "type", "error", "message", msg), 0);
	}
	p->ended = true;
	p->ended_ms = wall_ms();
	pthread_mutex_unlock(&p->mu);
	if (p->row)
		records_process_end(ps->rec, p->row, p->exited ? (p->sig ? -1 : p->code) : -1,
				    p->exited ? p->sig : 0, p->bytes_out, p->ended_ms);
	/* Closing the connection kills what still runs (a timeout, a stop). */
	kiln_agent_free(p->a);
	p->a = NULL;

	pthread_mutex_lock(&ps->mu);
	put_locked(p);
	ps->pumps--;
	pthread_cond_broadcast(&ps->cond);
	pthread_mutex_unlock(&ps->mu);
	return NULL;
}

int procs_create(struct records *rec, int stop_fd, struct procs **out)
{
	struct procs *ps = calloc(1, sizeof(*ps));

	*out = NULL;
	if (!ps)
		return -ENOMEM;
	ps->rec = rec;
	ps->stop_fd = stop_fd;
	ps->next_pid = 1;
	pthread_mutex_init(&ps->mu, NULL);
	pthread_cond_init(&ps->cond, NULL);
	*out = ps;
	return 0;
}

void procs_free(struct procs *ps)
{
	struct proc *p, *n;

	if (!ps)
		return;
	pthread_mutex_lock(&ps->mu);
	while (ps->pumps)
		pthread_cond_wait(&ps->cond, &ps->mu);
	for (p = ps->list; p; p = n) {
		n = p->next;
		put_locked(p);
	}
	ps->list = NULL;
	pthread_mutex_unlock(&ps->mu);
	pthread_mutex_destroy(&ps->mu);
	pthread_cond_destroy(&ps->cond);
	free(ps);
}

static bool same_sandbox(const struct proc *p, const char *tenant, const char *sandbox)
{
	return !strcmp(p->tenant, tenant) && !strcmp(p->sandbox, sandbox);
}

/* Under ps->mu: unlink p from the table. */
static void unlink_locked(struct procs *ps, struct proc *p)
{
	for (struct proc **pp = &ps->list; *pp; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			p->next = NULL;
			return;
		}
}

/* Under ps->mu: room for one more process of that sandbox, forgetting its
 * oldest finished one if need be. */
static bool make_room_locked(struct procs *ps, const char *tenant, const char *sandbox)
{
	struct proc *oldest_done = NULL;
	unsigned n = 0;

	for (struct proc *p = ps->list; p; p = p->next) {
		bool ended;

		if (!same_sandbox(p, tenant, sandbox))
			continue;
		n++;
		pthread_mutex_lock(&p->mu);
		ended = p->ended;
		pthread_mutex_unlock(&p->mu);
		if (ended && (!oldest_done || p->pid < oldest_done->pid))
			oldest_done = p;
	}
	if (n < PROCS_PER_SANDBOX)
		return true;
	if (!oldest_done)
		return false;
	unlink_locked(ps, oldest_done);
	put_locked(oldest_done);
	return true;
}

int procs_start(struct procs *ps, struct kiln_agent *a, const struct proc_start *st,
		struct proc **out, char *err, size_t errlen)
{
	struct proc *p = calloc(1, sizeof(*p));
	pthread_attr_t attr;
	pthread_t t;
	int r;

	*out = NULL;
	if (!p) {
		kiln_agent_free(a);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	p->ps = ps;
	p->a = a;
	p->refs = 1; /* the table's */
	p->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	pthread_mutex_init(&p->mu, NULL);
	for (unsigned i = 0; i < PROC_FOLLOWERS_MAX; i++)
		p->followers[i] = -1;
	snprintf(p->tenant, sizeof(p->tenant), "%s", st->tenant);
	snprintf(p->sandbox, sizeof(p->sandbox), "%s", st->sandbox);
	p->tag = st->tag ? strdup(st->tag) : NULL;
	p->cmd_json = strdup(st->cmd_json ? st->cmd_json : "[]");
	p->timeout_s = st->timeout_s;
	p->stdin_open = st->spec->stdin;
	p->stdin_closed = !st->spec->stdin;
	p->pty = st->spec->pty;
	p->rows = st->spec->rows;
	p->cols = st->spec->cols;
	p->next_seq = 1;
	if (p->wake < 0 || !p->cmd_json || (st->tag && !p->tag) ||
	    (p->stdin_open && !(p->stdin_buf = malloc(PROC_STDIN_MAX)))) {
		snprintf(err, errlen, "out of memory");
		proc_destroy(p);
		return -ENOMEM;
	}
	if (st->timeout_s) {
		p->deadline_ns = now_ns() + st->timeout_s * 1000000000ULL;
		kiln_agent_set_deadline(a, p->deadline_ns);
	}

	pthread_mutex_lock(&ps->mu);
	if (!make_room_locked(ps, st->tenant, st->sandbox)) {
		pthread_mutex_unlock(&ps->mu);
		snprintf(err, errlen, "the sandbox has %d processes running, the most it may",
			 PROCS_PER_SANDBOX);
		proc_destroy(p);
		return -EAGAIN;
	}
	p->pid = ps->next_pid++;
	p->next = ps->list;
	ps->list = p;
	p->refs++; /* the caller's, while we start it */
	pthread_mutex_unlock(&ps->mu);

	r = kiln_agent_exec(a, st->spec, &proc_ops, p, &p->exec_id);
	if (r) {
		snprintf(err, errlen, "cannot run %s: %s", st->spec->argv[0],
			 kiln_agent_error(a)[0] ? kiln_agent_error(a) : strerror(-r));
		goto fail;
	}
	p->started_ms = wall_ms();
	records_process_start(ps->rec, p->sandbox, p->cmd_json, p->started_ms, &p->row);
	pthread_mutex_lock(&p->mu);
	append_locked(p, json_pack("{s:s,s:i}", "type", "start", "pid", (json_int_t)p->pid), 0);
	pthread_mutex_unlock(&p->mu);

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, PUMP_STACK);
	pthread_mutex_lock(&ps->mu);
	p->refs++; /* the pump's */
	ps->pumps++;
	r = -pthread_create(&t, &attr, pump, p);
	if (r) {
		p->refs--;
		ps->pumps--;
	}
	pthread_mutex_unlock(&ps->mu);
	pthread_attr_destroy(&attr);
	if (r) {
		snprintf(err, errlen, "cannot start a thread: %s", strerror(-r));
		if (p->row)
			records_process_end(ps->rec, p->row, -1, 0, 0, wall_ms());
		goto fail;
	}
	*out = p;
	return 0;
fail:
	pthread_mutex_lock(&ps->mu);
	unlink_locked(ps, p);
	put_locked(p); /* the table's */
	put_locked(p); /* the caller's: frees it and closes the connection */
	pthread_mutex_unlock(&ps->mu);
	return r;
}

struct proc *procs_get(struct procs *ps, const char *tenant, const char *sandbox, uint32_t pid)
{
	struct proc *p;

	pthread_mutex_lock(&ps->mu);
	for (p = ps->list; p; p = p->next)
		if (p->pid == pid && same_sandbox(p, tenant, sandbox)) {
			p->refs++;
			break;
		}
	pthread_mutex_unlock(&ps->mu);
	return p;
}

static const char *rfc3339(int64_t ms, char *buf, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (!ms || !gmtime_r(&t, &tm) || !strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm))
		return NULL;
	return buf;
}

json_t *proc_json(struct proc *p)
{
	char t1[32], t2[32];
	json_t *j, *cmd;

	pthread_mutex_lock(&p->mu);
	cmd = json_loads(p->cmd_json, 0, NULL);
	j = json_pack("{s:i,s:o,s:s?,s:s,s:s?,s:s?,s:i,s:b}", "pid", (json_int_t)p->pid, "cmd",
		      cmd ? cmd : json_array(), "tag", p->tag,
		      "state", !p->ended ? "running" : p->exited ? "exited" : "failed", "started_at",
		      rfc3339(p->started_ms, t1, sizeof(t1)), "ended_at",
		      rfc3339(p->ended_ms, t2, sizeof(t2)), "next_seq", (json_int_t)p->next_seq,
		      "stdin", p->stdin_open && !p->stdin_closed && !p->stdin_eof);
	if (j && p->pty)
		json_object_set_new(j, "pty", json_pack("{s:i,s:i}", "rows", (json_int_t)p->rows,
							 "cols", (json_int_t)p->cols));
	if (j && p->exited) {
		json_object_set_new(j, "exit_code", json_integer(p->sig ? -1 : p->code));
		json_object_set_new(j, "signal", json_integer(p->sig));
	}
	pthread_mutex_unlock(&p->mu);
	return j;
}

json_t *procs_list_json(struct procs *ps, const char *tenant, const char *sandbox)
{
	json_t *arr = json_array();

	pthread_mutex_lock(&ps->mu);
	for (struct proc *p = ps->list; p && arr; p = p->next)
		if (same_sandbox(p, tenant, sandbox))
			json_array_insert_new(arr, 0, proc_json(p)); /* oldest first */
	pthread_mutex_unlock(&ps->mu);
	return arr ? json_pack("{s:o}", "processes", arr) : NULL;
}

void procs_drop_sandbox(struct procs *ps, const char *tenant, const char *sandbox)
{
	pthread_mutex_lock(&ps->mu);
	for (struct proc **pp = &ps->list; *pp;) {
		struct proc *p = *pp;

		if (same_sandbox(p, tenant, sandbox)) {
			*pp = p->next;
			p->next = NULL;
			put_locked(p);
		} else {
			pp = &p->next;
		}
	}
	pthread_mutex_unlock(&ps->mu);
}

static void wake_pump(struct proc *p)
{
	uint64_t one = 1;

	if (write(p->wake, &one, sizeof(one)) < 0) {
		/* at its maximum: awake anyway */
	}
}

int proc_stdin(struct proc *p, const void *buf, size_t len, bool eof)
{
	int r = 0;

	pthread_mutex_lock(&p->mu);
	if (p->ended)
		r = -ESRCH;
	else if (!p->stdin_open || p->stdin_closed || p->stdin_eof)
		r = -EPIPE;
	else if (len > PROC_STDIN_MAX - p->stdin_len)
		r = -EAGAIN;
	if (!r) {
		memcpy(p->stdin_buf + p->stdin_len, buf, len);
		p->stdin_len += len;
		p->stdin_eof = eof;
	}
	pthread_mutex_unlock(&p->mu);
	if (!r)
		wake_pump(p);
	return r;
}

int proc_resize(struct proc *p, unsigned rows, unsigned cols)
{
	int r = 0;

	pthread_mutex_lock(&p->mu);
	if (!p->pty)
		r = -ENOTTY;
	else if (p->ended)
		r = -ESRCH;
	else
		p->rows = rows, p->cols = cols, p->resize = true;
	pthread_mutex_unlock(&p->mu);
	if (!r)
		wake_pump(p);
	return r;
}

int proc_signal(struct proc *p, int signo, bool group)
{
	int r = 0;

	pthread_mutex_lock(&p->mu);
	if (p->ended)
		r = -ESRCH;
	else if (p->nsig == MAX_SIGNALS)
		r = -EAGAIN;
	else
		p->sigq[p->nsig].signo = signo, p->sigq[p->nsig++].group = group;
	pthread_mutex_unlock(&p->mu);
	if (!r)
		wake_pump(p);
	return r;
}

int proc_follow(struct proc *p, uint64_t after_seq, struct proc_follower **out)
{
	struct proc_follower *f = calloc(1, sizeof(*f));
	int r = -EBUSY;

	*out = NULL;
	if (!f)
		return -ENOMEM;
	f->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (f->efd < 0) {
		free(f);
		return -errno;
	}
	f->next = after_seq + 1;
	pthread_mutex_lock(&p->mu);
	for (int i = 0; i < PROC_FOLLOWERS_MAX; i++)
		if (p->followers[i] < 0) {
			p->followers[i] = f->efd;
			f->slot = i;
			r = 0;
			break;
		}
	pthread_mutex_unlock(&p->mu);
	if (r) {
		close(f->efd);
		free(f);
		return r;
	}
	pthread_mutex_lock(&p->ps->mu);
	p->refs++;
	pthread_mutex_unlock(&p->ps->mu);
	f->p = p;
	*out = f;
	return 0;
}

void proc_follower_free(struct proc_follower *f)
{
	if (!f)
		return;
	pthread_mutex_lock(&f->p->mu);
	f->p->followers[f->slot] = -1;
	pthread_mutex_unlock(&f->p->mu);
	close(f->efd);
	proc_put(f->p);
	free(f->pend);
	free(f);
}

/* The caller's line, kept in f->pend (taken). */
static void pend(struct proc_follower *f, json_t *ev)
{
	char *text = ev ? json_dumps(ev, JSON_COMPACT) : NULL;
	size_t n = text ? strlen(text) : 0;

	json_decref(ev);
	free(f->pend);
	f->pend = NULL;
	f->plen = f->poff = 0;
	if (!text)
		return;
	f->pend = realloc(text, n + 1);
	if (!f->pend) {
		free(text);
		return;
	}
	f->pend[n] = '\n';
	f->plen = n + 1;
}

ssize_t proc_follower_read(struct proc_follower *f, char *out, size_t max, int client_fd)
{
	struct proc *p = f->p;

	if (!max)
		return -1;
	for (;;) {
		struct pollfd w[3] = { { .fd = f->efd, .events = POLLIN },
				       { .fd = client_fd, .events = POLLRDHUP }, /* < 0: ignored */
				       { .fd = p->ps->stop_fd, .events = POLLIN } };
		size_t n = 0;
		uint64_t v;
		int r;

		if (f->poff < f->plen) {
			n = f->plen - f->poff < max ? f->plen - f->poff : max;
			memcpy(out, f->pend + f->poff, n);
			f->poff += n;
			return (ssize_t)n;
		}
		/* Drain the wake-up first: an event after the look below wakes the poll. */
		if (read(f->efd, &v, sizeof(v)) < 0) {
			/* none pending */
		}
		pthread_mutex_lock(&p->mu);
		if (f->next < (p->head ? p->head->seq : p->next_seq)) {
			uint64_t first = p->head ? p->head->seq : p->next_seq;

			pend(f, json_pack("{s:s,s:i,s:i}", "type", "lost", "events",
					  (json_int_t)(first - f->next), "bytes",
					  (json_int_t)p->lost_bytes));
			f->next = first;
			pthread_mutex_unlock(&p->mu);
			continue;
		}
		for (struct event *e = p->head; e; e = e->next) {
			if (e->seq < f->next)
				continue;
			if (n + e->len > max) {
				if (!n) { /* bigger than the whole buffer: in pieces */
					free(f->pend);
					f->pend = malloc(e->len);
					if (f->pend) {
						memcpy(f->pend, e->line, e->len);
						f->plen = e->len;
						f->poff = 0;
						f->next = e->seq + 1;
					}
				}
				break;
			}
			memcpy(out + n, e->line, e->len);
			n += e->len;
			f->next = e->seq + 1;
		}
		if (n) {
			pthread_mutex_unlock(&p->mu);
			return (ssize_t)n;
		}
		if (f->poff < f->plen) {
			pthread_mutex_unlock(&p->mu);
			continue;
		}
		if (p->ended && f->next >= p->next_seq) {
			pthread_mutex_unlock(&p->mu);
			return 0;
		}
		pthread_mutex_unlock(&p->mu);
		r = poll(w, 3, PROC_KEEPALIVE_MS);
		if (r < 0 && errno != EINTR)
			return -1;
		if (w[1].revents & (POLLRDHUP | POLLHUP | POLLERR) || w[2].revents)
			return -1;
		if (r == 0)
			pend(f, json_pack("{s:s,s:i}", "type", "keepalive", "seq",
					  (json_int_t)(f->next - 1)));
	}
}
