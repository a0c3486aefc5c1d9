/*
 * The guest agent's server (src/guest/agentd.c) against a hostile client:
 * the fuzzer's bytes are the host's side of one connection (every request,
 * whatever it claims). The real agentd runs its epoll loop on a thread; a
 * fresh one per input (a SHUTDOWN request ends it, as it would end the VM).
 *
 * Process start and file access are fakes linked instead of gexec.c and
 * gfs.c, so nothing the fuzzer asks runs or touches the machine: a spawned
 * "process" is a forked child that only plays one of a few scripts on its
 * pipes (echo, cat, exit, die by a signal, wait to be killed); files are a
 * memfd (get), /dev/null (put) and a scratch directory named "d" (list).
 *
 * Properties: every whole frame the agent sends decodes with the client's
 * decoders (header, direction, flags, caps, payload); every reply answers
 * an id the client used (or is the connection's final ERROR, id 0); a PONG
 * echoes its PING; the agent always closes a connection whose peer has
 * hung up (no hang), and kills and reaps what the connection started.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "fuzz.h"
#include "guest/agentd.h"
#include "guest/gexec.h"
#include "guest/gfs.h"
#include "proto.h"

static char dir[64];
static char sock[128];

/* ------------------------------------------------------ fake processes */

static void child_write(int fd, const char *s)
{
	size_t n = strlen(s);

	while (n) {
		ssize_t w = write(fd, s, n);

		if (w <= 0)
			_exit(3);
		s += w;
		n -= (size_t)w;
	}
}

/* The child: async-signal-safe calls only (the agent is a thread here). */
static void child_run(const struct proto_exec *req, int in, int out, int err)
{
	const char *what = req->argv[0];
	char buf[4096];
	ssize_t n;

	setsid();
	if (!strcmp(what, "echo")) {
		for (uint32_t i = 1; i < req->argc; i++)
			child_write(i & 1 ? out : err, req->argv[i]);
		_exit(0);
	}
	if (!strcmp(what, "cat")) {
		while (in >= 0 && (n = read(in, buf, sizeof(buf))) > 0)
			if (write(out, buf, (size_t)n) != n)
				_exit(1);
		_exit(0);
	}
	if (!strcmp(what, "exit"))
		_exit(req->argc > 1 ? (uint8_t)req->argv[1][0] : 0);
	if (!strcmp(what, "kill"))
		raise(SIGKILL);
	for (;;)
		pause(); /* "sleep": until the agent kills it */
}

int gexec_spawn(const struct proto_exec *req, const struct gexec_opts *opts,
		struct gexec_child *out, char *err, size_t errlen)
{
	static const char *const known[] = { "echo", "cat", "exit", "kill", "sleep" };
	int pin[2] = { -1, -1 }, pout[2], perr[2], ret = -ENOENT;
	bool found = false;
	pid_t pid;

	(void)opts;
	if (errlen)
		err[0] = 0;
	for (unsigned i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		found |= !strcmp(req->argv[0], known[i]);
	if (!found)
		return ret;
	FZ_CHECK(pipe2(pout, O_CLOEXEC) == 0 && pipe2(perr, O_CLOEXEC) == 0, "pipe2");
	if (req->flags & PROTO_EXEC_STDIN)
		FZ_CHECK(pipe2(pin, O_CLOEXEC) == 0, "pipe2");
	pid = fork();
	FZ_CHECK(pid >= 0, "fork");
	if (pid == 0)
		child_run(req, pin[0], pout[1], perr[1]);
	close(pout[1]);
	close(perr[1]);
	if (pin[0] >= 0)
		close(pin[0]);
	out->pid = pid;
	out->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	FZ_CHECK(out->pidfd >= 0, "pidfd_open");
	out->out = pout[0];
	out->err = perr[0];
	out->in = pin[1];
	/* A terminal's master for RESIZE: any fd will do (TIOCSWINSZ fails on it). */
	out->pty = req->flags & PROTO_EXEC_PTY ? open("/dev/null", O_RDONLY | O_CLOEXEC) : -1;
	fcntl(out->pidfd, F_SETFL, O_NONBLOCK);
	fcntl(out->out, F_SETFL, O_NONBLOCK);
	fcntl(out->err, F_SETFL, O_NONBLOCK);
	if (out->in >= 0)
		fcntl(out->in, F_SETFL, O_NONBLOCK);
	return 0;
}

/* ----------------------------------------------------------- fake files */

/* Only the scratch directory "d" (relative: the harness runs inside dir). */
int gfs_check_path(const char *path)
{
	return strcmp(path, "d") ? -ENOENT : 0;
}

int gfs_mkdir(const char *path, mode_t mode, bool parents)
{
	return path[0] == '/' ? 0 : -EEXIST;
}

int gfs_remove(const char *path, bool recursive)
{
	return path[0] == '/' ? 0 : -ENOTEMPTY;
}

int gfs_stat(const char *path, bool nofollow, struct proto_stat *st)
{
	if (path[0] != '/')
		return -ENOENT;
	memset(st, 0, sizeof(*st));
	st->mode = 0100644;
	st->nlink = 1;
	st->size = strlen(path);
	st->mtime_nsec = 999999999;
	return 0;
}

int gfs_open_put(const char *path, mode_t mode, uint32_t uid, uint32_t gid, bool parents,
		 int *fd)
{
	*fd = -1;
	if (path[0] != '/')
		return -EACCES;
	*fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
	return *fd < 0 ? -errno : 0;
}

/* A file of 1000 bytes per character of the path. */
int gfs_open_get(const char *path, int *fd)
{
	static const char chunk[1000];
	size_t n = strlen(path);

	*fd = -1;
	if (path[0] != '/')
		return -ENOENT;
	*fd = memfd_create("get", MFD_CLOEXEC);
	FZ_CHECK(*fd >= 0, "memfd_create");
	for (size_t i = 0; i < n; i++)
		FZ_CHECK(write(*fd, chunk, sizeof(chunk)) == sizeof(chunk), "memfd write");
	lseek(*fd, 0, SEEK_SET);
	return 0;
}

int gfs_write_all(int fd, const void *buf, size_t n)
{
	return n > 60000 ? -ENOSPC : (write(fd, buf, n) == (ssize_t)n ? 0 : -EIO);
}

/* ------------------------------------------------------------- harness */

static void cleanup(void)
{
	unlink("d/a");
	unlink("d/b");
	rmdir("d");
	unlink(sock);
	if (chdir("/") == 0)
		rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	int fd;

	fz_scratch_dir("agentd", dir, sizeof(dir));
	FZ_CHECK(chdir(dir) == 0 && mkdir("d", 0755) == 0, "scratch directory");
	fd = open("d/a", O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
	close(fd);
	FZ_CHECK(symlink("a", "d/b") == 0, "symlink");
	snprintf(sock, sizeof(sock), "%s/agent.sock", dir);
	atexit(cleanup);
	return 0;
}

static int agent_done; /* atomic: agentd_run returned (SHUTDOWN) */

static void *agent_thread(void *arg)
{
	agentd_run(arg);
	__atomic_store_n(&agent_done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* Request ids seen in the input (as agentd parses it: up to the first bad header). */
struct reqs {
	uint32_t ids[1024];
	unsigned n;
};

static void scan_requests(const uint8_t *p, size_t n, struct reqs *r)
{
	size_t off = 0;
	struct proto_hdr h;

	r->n = 0;
	while (n - off >= PROTO_HDR_SIZE && r->n < 1024 &&
	       proto_hdr_decode(p + off, PROTO_FROM_CLIENT, &h) == 0) {
		r->ids[r->n++] = h.id;
		if (n - off - PROTO_HDR_SIZE < h.len)
			break;
		off += PROTO_HDR_SIZE + h.len;
	}
}

static bool asked(const struct reqs *r, uint32_t id)
{
	for (unsigned i = 0; i < r->n; i++)
		if (r->ids[i] == id)
			return true;
	return r->n == 1024; /* not all scanned: cannot tell */
}

/* Was there a PING with this id and exactly this payload? */
static bool pinged(const uint8_t *p, size_t n, uint32_t id, const uint8_t *pl, size_t len)
{
	size_t off = 0;
	struct proto_hdr h;

	while (n - off >= PROTO_HDR_SIZE && proto_hdr_decode(p + off, PROTO_FROM_CLIENT, &h) == 0 &&
	       n - off - PROTO_HDR_SIZE >= h.len) {
		if (h.type == PROTO_PING && h.id == id && h.len == len &&
		    !memcmp(p + off + PROTO_HDR_SIZE, pl, len))
			return true;
		off += PROTO_HDR_SIZE + h.len;
	}
	return false;
}

static void check_frame(const struct proto_hdr *h, const uint8_t *pl, const struct reqs *r,
			const uint8_t *in, size_t in_len)
{
	struct proto_hello_ok hok;
	struct proto_error err;
	struct proto_exec_ok eok;
	struct proto_exit ex;
	struct proto_stat st;
	struct proto_dirent de;
	struct proto_rd rd;
	uint64_t v;
	uint32_t c;
	int ret = 0, k;

	FZ_CHECK(asked(r, h->id) || (h->id == 0 && h->type == PROTO_ERROR),
		 "%s for id %u, which the client never used", proto_type_name(h->type), h->id);
	switch (h->type) {
	case PROTO_HELLO_OK: ret = proto_dec_hello_ok(pl, h->len, &hok); break;
	case PROTO_OK: ret = proto_dec_ok(pl, h->len, &v); break;
	case PROTO_ERROR: ret = proto_dec_error(pl, h->len, &err); break;
	case PROTO_EXEC_OK: ret = proto_dec_exec_ok(pl, h->len, &eok); break;
	case PROTO_STDIN_CREDIT: ret = proto_dec_credit(pl, h->len, &c); break;
	case PROTO_EXIT: ret = proto_dec_exit(pl, h->len, &ex); break;
	case PROTO_STAT_OK: ret = proto_dec_stat(pl, h->len, &st); break;
	case PROTO_DIR_ENTRIES:
		proto_rd_init(&rd, pl, h->len);
		while ((k = proto_rd_dirent(&rd, &de)) == 1)
			;
		ret = k;
		break;
	case PROTO_PONG:
		FZ_CHECK(pinged(in, in_len, h->id, pl, h->len), "PONG %u echoes no PING", h->id);
		break;
	default:
		break; /* STDOUT, STDERR, FILE_DATA: raw bytes */
	}
	FZ_CHECK(ret == 0, "the agent sent a %s its client cannot decode (%d)",
		 proto_type_name(h->type), ret);
}

static void check_output(const uint8_t *out, size_t n, const uint8_t *in, size_t in_len)
{
	struct reqs *r = calloc(1, sizeof(*r));
	struct proto_hdr h;
	size_t off = 0;

	FZ_CHECK(r, "calloc");
	scan_requests(in, in_len, r);
	while (n - off >= PROTO_HDR_SIZE) {
		FZ_CHECK(proto_hdr_decode(out + off, PROTO_FROM_AGENT, &h) == 0,
			 "the agent sent a bad frame header at %zu", off);
		if (n - off - PROTO_HDR_SIZE < h.len)
			break; /* cut by the close: allowed for the last frame */
		check_frame(&h, out + off + PROTO_HDR_SIZE, r, in, in_len);
		off += PROTO_HDR_SIZE + h.len;
	}
	free(r);
}

/* Write the input, read until the agent closes; its output in *out. */
static size_t converse(const uint8_t *in, size_t n, uint8_t **out)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t off = 0, len = 0, cap = 1 << 16;
	uint8_t *buf = malloc(cap);
	int fd, idle = 0;

	FZ_CHECK(buf, "malloc");
	memcpy(sa.sun_path, sock, strlen(sock) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	FZ_CHECK(fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect");
	if (!n)
		shutdown(fd, SHUT_WR);
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN | (off < n ? POLLOUT : 0) };
		ssize_t k;

		if (poll(&p, 1, 100) == 0) {
			/* A SHUTDOWN ended the agent's loop: the connection stays. */
			if (__atomic_load_n(&agent_done, __ATOMIC_ACQUIRE))
				break;
			/* 30 s without a byte either way: the agent hangs. */
			FZ_CHECK(++idle < 300, "the agent neither reads nor closes");
			continue;
		}
		idle = 0;
		if (off < n && (p.revents & POLLOUT)) {
			k = send(fd, in + off, n - off, MSG_NOSIGNAL);
			if (k > 0 && (off += (size_t)k) == n)
				shutdown(fd, SHUT_WR);
			if (k < 0 && errno != EAGAIN) {
				off = n; /* the agent closed early */
				shutdown(fd, SHUT_WR);
			}
		}
		if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
			if (len == cap) {
				cap *= 2;
				buf = realloc(buf, cap);
				FZ_CHECK(buf, "realloc");
			}
			k = recv(fd, buf + len, cap - len, 0);
			if (k == 0 || (k < 0 && errno != EAGAIN))
				break;
			if (k > 0)
				len += (size_t)k;
		}
	}
	close(fd);
	*out = buf;
	return len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct agentd_config cfg = { .tx_cap = 16384 };
	struct agentd *d;
	pthread_t th;
	uint8_t *out;
	size_t n;

	FZ_CHECK(agentd_create(&cfg, &d) == 0 && agentd_listen_unix(d, sock) == 0, "agentd");
	agent_done = 0;
	FZ_CHECK(pthread_create(&th, NULL, agent_thread, d) == 0, "pthread_create");
	n = converse(data, size, &out);
	agentd_stop(d);
	pthread_join(th, NULL);
	agentd_free(d);
	check_output(out, n, data, size);
	free(out);
	return 0;
}
