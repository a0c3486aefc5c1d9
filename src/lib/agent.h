/*
 * libkiln: client of the kiln guest agent (docs/protocol.md).
 *
 * One struct kiln_agent per connection, single-threaded, no internal
 * threads. Request/reply calls (hello, stat, put, ...) block until their
 * answer; while they wait, frames of running processes are dispatched to
 * their callbacks. Nothing is buffered without bound: process output goes
 * straight from the receive buffer (one frame, at most 1 MiB) to the output
 * callback, which may block; that stops reading the connection, and the
 * agent in turn stops reading the process's pipes.
 *
 * Callbacks must not call functions that send (they return -EDEADLK).
 *
 * A `kiln run`-style loop:
 *
 *	kiln_agent_exec(a, &spec, &ops, ctx, &id);          // spec.stdin = true
 *	while (!ctx->exited) {
 *		struct pollfd p[2] = { { kiln_agent_fd(a), POLLIN },
 *				       { 0, kiln_agent_stdin_room(a, id) ? POLLIN : 0 } };
 *		poll(p, 2, -1);
 *		if (p[0].revents) kiln_agent_poll(a, 0);      // calls ops.output / ops.exit
 *		if (p[1].revents) { n = read(0, buf, min(sizeof(buf), room));
 *				    n > 0 ? kiln_agent_stdin_write(a, id, buf, n)
 *					  : kiln_agent_stdin_close(a, id); }
 *	}
 *
 * All functions return 0 (or a count) or a negative errno. Errors the agent
 * reports come back as their errno (-ENOENT, ...) with its message in
 * kiln_agent_error(); a broken connection (-EPROTO, -ECONNRESET, -ETIMEDOUT,
 * -ECANCELED, -EFBIG) is sticky.
 *
 * Bounds (the agent is untrusted): an absolute deadline and a cancel fd, both
 * data the caller sets, bound every call, including one whose peer always
 * has one more byte ready or trickles one a second; the no-progress timeout
 * is only an extra. Nothing read from the agent grows without a cap: one
 * frame at a time, FILE_GET at most `max` bytes, error text as below.
 */
#ifndef KILN_LIB_AGENT_H
#define KILN_LIB_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct kiln_agent;

#define KILN_ID_KEEP 0xffffffffu /* uid/gid: leave as the agent's (root in the VM) */

struct kiln_exec_spec {
	const char *const *argv; /* NULL-terminated; argv[0] without '/' is looked up in PATH */
	const char *const *envp; /* NULL-terminated; NULL: PATH and HOME only */
	const char *cwd;	 /* absolute; NULL: "/" */
	uint32_t uid, gid;
	const char *user; /* USER[:GROUP] looked up in the guest's /etc/passwd and /etc/group
			   * (names or numbers; uid and gid are then ignored); NULL: uid:gid.
			   * An unknown one fails with -ESRCH, a malformed one with -EINVAL */
	bool stdin; /* false: the process reads /dev/null (or, with pty, gets no input) */
	bool pty;   /* on a new guest terminal of rows x cols (1..4096): stdin, stdout and
		     * stderr are its slave; output comes as stream 1, echo included */
	unsigned rows, cols;
};

struct kiln_exit {
	/* code 0..255 and signal 0, or code -1 and the signal that killed it (a
	 * shell would report 128 + signal) */
	int code, signal;
	/* The guest kernel's OOM kills while it ran; -1: the agent does not say
	 * (no PROTO_CAP_OOM). */
	long long oom_kills;
};

struct kiln_exec_ops {
	/* stream 1: stdout, 2: stderr. May block. A negative return is returned by
	 * the call that dispatched it (kiln_agent_poll / kiln_agent_wait). */
	int (*output)(void *ctx, uint32_t exec_id, int stream, const void *buf, size_t len);
	/* The last event of a process. */
	void (*exit)(void *ctx, uint32_t exec_id, const struct kiln_exit *e);
};

struct kiln_stat {
	uint32_t mode; /* with the file type bits */
	uint32_t uid, gid, nlink;
	uint64_t size;
	int64_t mtime_sec;
	uint32_t mtime_nsec;
};

struct kiln_dirent {
	const char *name; /* one path component, never "." or ".." */
	uint32_t mode;
	uint64_t size;
	int64_t mtime_sec;
};

struct kiln_put_opts {
	uint32_t mode; /* permission bits */
	uint32_t uid, gid;
	bool parents; /* create missing parent directories */
};

/* Takes ownership of fd (a connected stream socket; made non-blocking). */
int kiln_agent_create(int fd, struct kiln_agent **out);
void kiln_agent_free(struct kiln_agent *a);
int kiln_agent_fd(const struct kiln_agent *a);
/* Longest wait without progress in a request; -1 (default): no limit. */
void kiln_agent_set_timeout(struct kiln_agent *a, int timeout_ms);
/* Every call gives up at this absolute CLOCK_MONOTONIC time (now_ns()) with
 * -ETIMEDOUT, sticky; 0 (default): none. May be moved at any time. */
void kiln_agent_set_deadline(struct kiln_agent *a, uint64_t deadline_ns);
/* Every call gives up with -ECANCELED (sticky) once fd is readable (a signal
 * handler's self-pipe, an eventfd): polled together with the connection,
 * never read. -1 (default): none. */
void kiln_agent_set_cancel_fd(struct kiln_agent *a, int fd);
/* HELLO_OK's PROTO_CAP_* bits (0 before it). */
uint32_t kiln_agent_caps(const struct kiln_agent *a);
/* 0 while the connection is usable, else its sticky error. */
int kiln_agent_status(const struct kiln_agent *a);
/* The agent's message for the last error it reported, or "": guest text made
 * safe for a terminal (text_sanitize: control bytes escaped, bounded). */
const char *kiln_agent_error(const struct kiln_agent *a);

/* First call on a connection. caps: PROTO_CAP_* bits (may be NULL). */
int kiln_agent_hello(struct kiln_agent *a, uint32_t *caps);
/*
 * The same in no extra round trip: kiln_agent_greeting() encodes HELLO and,
 * with a hostname, IDENTITY (see kiln_agent_identity) into buf (at least
 * KILN_AGENT_GREETING_MAX bytes) for the caller to send ahead, with the
 * vsock CONNECT line (lib/vsock_uds.h); the length, or -EINVAL for a bad
 * hostname or id. On the new connection kiln_agent_greeted() then takes
 * both answers (identity: IDENTITY was sent). An agent without
 * PROTO_CAP_IDENTITY refusing it is no error.
 */
#define KILN_AGENT_GREETING_MAX 640
int kiln_agent_greeting(void *buf, size_t cap, const char *hostname, const char *sandbox_id);
int kiln_agent_greeted(struct kiln_agent *a, bool identity, uint32_t *caps);
int kiln_agent_ping(struct kiln_agent *a);

/* ops may be NULL (output discarded). The exec id names the process from here on. */
int kiln_agent_exec(struct kiln_agent *a, const struct kiln_exec_spec *spec,
		    const struct kiln_exec_ops *ops, void *ctx, uint32_t *exec_id);
/* Bytes the agent accepts now (its credit), 0 when stdin is closed. */
size_t kiln_agent_stdin_room(const struct kiln_agent *a, uint32_t exec_id);
/* Sends up to the room; -EAGAIN with no room, -EPIPE once the process closed it. */
ssize_t kiln_agent_stdin_write(struct kiln_agent *a, uint32_t exec_id, const void *buf,
			       size_t len);
int kiln_agent_stdin_close(struct kiln_agent *a, uint32_t exec_id);
/* A pty process's terminal size (1..4096 each); no answer. -ENOTTY: no pty. */
int kiln_agent_resize(struct kiln_agent *a, uint32_t exec_id, unsigned rows, unsigned cols);
/* To the process, or to its whole process group. */
int kiln_agent_signal(struct kiln_agent *a, uint32_t exec_id, int signo, bool group);
/* Waits up to timeout_ms (-1: forever) for frames and dispatches them. */
int kiln_agent_poll(struct kiln_agent *a, int timeout_ms);
/* Dispatches until that process's exit callback has run (0 if it already has). */
int kiln_agent_wait(struct kiln_agent *a, uint32_t exec_id);

/* Upload everything readable from fd to path (created or truncated). opts NULL: 0644. */
int kiln_agent_put(struct kiln_agent *a, int fd, const char *path,
		   const struct kiln_put_opts *opts, uint64_t *bytes);
/* Download a regular file into fd; more than max bytes is -EFBIG (sticky:
 * the rest of the stream is not read; the caller removes what it wrote). */
int kiln_agent_get(struct kiln_agent *a, const char *path, int fd, uint64_t max, uint64_t *bytes);
/* The same into buf, at most cap bytes (-EFBIG beyond); *len what came. */
int kiln_agent_get_buf(struct kiln_agent *a, const char *path, void *buf, size_t cap,
		       size_t *len);
int kiln_agent_stat(struct kiln_agent *a, const char *path, bool nofollow, struct kiln_stat *st);
/* cb returning non-zero stops calling it; that value is returned once the listing ends. */
int kiln_agent_list(struct kiln_agent *a, const char *path,
		    int (*cb)(void *ctx, const struct kiln_dirent *e), void *ctx);
int kiln_agent_mkdir(struct kiln_agent *a, const char *path, uint32_t mode, bool parents);
int kiln_agent_remove(struct kiln_agent *a, const char *path, bool recursive);
/* The sandbox's identity, for an agent with PROTO_CAP_IDENTITY (PID 1):
 * fresh bytes from this host's getrandom() for the guest's entropy pool, this
 * host's CLOCK_REALTIME read just before sending, the hostname (one RFC 1123
 * label, common/hostname.h) and the sandbox id (common/fleetid.h). -EINVAL
 * for a bad hostname or id; the agent's refusal as its errno and message. */
int kiln_agent_identity(struct kiln_agent *a, const char *hostname, const char *sandbox_id);
/* The agent kills everything and powers the VM off; its going away counts as success. */
int kiln_agent_shutdown(struct kiln_agent *a);

#endif
