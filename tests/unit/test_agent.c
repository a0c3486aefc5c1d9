/*
 * kiln-init's agent served natively (test mode: a thread of this program on
 * an AF_UNIX socket, nothing mounted) and driven through libkiln: exec,
 * streams, exit codes and signals, stdin with credit, 20 MiB byte-exact,
 * concurrency, files, bounded buffering when the client stops reading,
 * malformed frames from raw sockets, the vsock-over-UDS connection layer
 * against an emulated VMM multiplexer, kiln.* command line parsing, and
 * shutdown.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "guest/agentd.h"
#include "guest/bootargs.h"
#include "lib/agent.h"
#include "lib/vsock_uds.h"
#include "proto.h"

#define TIMEOUT_MS 20000
#define CAPTURE_MAX (1u << 20)

static struct {
	char dir[64];
	char sock[100];
	char vmm[100];
	char etc[100]; /* passwd and group for EXEC's user */
	struct agentd *d;
	pthread_t th;
	int run_ret;
	bool running;
} srv;

static void *agent_thread(void *arg)
{
	srv.run_ret = agentd_run(srv.d);
	return NULL;
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
	const uint8_t *b = p;

	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

#define FNV_INIT 0xcbf29ce484222325ull

static int unix_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		close(fd);
		return -errno;
	}
	return fd;
}

static struct kiln_agent *client_at(const char *path)
{
	struct kiln_agent *a;
	uint32_t caps = 0;
	int fd = unix_connect(path);

	assert_true(fd >= 0);
	assert_int_equal(kiln_agent_create(fd, &a), 0);
	kiln_agent_set_timeout(a, TIMEOUT_MS);
	assert_int_equal(kiln_agent_hello(a, &caps), 0);
	assert_true(caps & PROTO_CAP_EXEC);
	assert_true(caps & PROTO_CAP_FILES);
	assert_false(caps & PROTO_CAP_REBOOT); /* test mode never powers off */
	assert_false(caps & PROTO_CAP_IDENTITY); /* nor takes the VM's identity */
	return a;
}

static struct kiln_agent *client(void)
{
	return client_at(srv.sock);
}

/* ------------------------------------------------------------- exec runs */

struct run {
	char *out, *err;
	size_t out_len, err_len;
	uint64_t out_hash, out_total;
	int code, sig;
	long long oom_kills;
	bool exited;
};

static int on_output(void *ctx, uint32_t id, int stream, const void *buf, size_t len)
{
	struct run *r = ctx;
	char **dst = stream == 1 ? &r->out : &r->err;
	size_t *dlen = stream == 1 ? &r->out_len : &r->err_len;

	assert_true(stream == 1 || stream == 2);
	assert_false(r->exited);
	if (stream == 1) {
		r->out_hash = fnv(r->out_hash, buf, len);
		r->out_total += len;
	}
	if (*dlen + len <= CAPTURE_MAX) {
		char *n = realloc(*dst, *dlen + len + 1);

		assert_non_null(n);
		memcpy(n + *dlen, buf, len);
		*dlen += len;
		n[*dlen] = 0;
		*dst = n;
	}
	return 0;
}

static void on_exit_cb(void *ctx, uint32_t id, const struct kiln_exit *e)
{
	struct run *r = ctx;

	assert_false(r->exited);
	r->exited = true;
	r->code = e->code;
	r->sig = e->signal;
	r->oom_kills = e->oom_kills;
}

static const struct kiln_exec_ops run_ops = { .output = on_output, .exit = on_exit_cb };

static void run_init(struct run *r)
{
	memset(r, 0, sizeof(*r));
	r->out_hash = FNV_INIT;
	r->code = r->sig = -100;
}

static void run_free(struct run *r)
{
	free(r->out);
	free(r->err);
}

static struct kiln_exec_spec spec_of(const char *const *argv, bool with_stdin)
{
	struct kiln_exec_spec s = {
		.argv = argv, .envp = NULL, .cwd = NULL,
		.uid = KILN_ID_KEEP, .gid = KILN_ID_KEEP, .stdin = with_stdin,
	};

	return s;
}

static int run_cmd(struct kiln_agent *a, const char *const *argv, struct run *r)
{
	struct kiln_exec_spec s = spec_of(argv, false);
	uint32_t id;
	int ret;

	run_init(r);
	ret = kiln_agent_exec(a, &s, &run_ops, r, &id);
	if (ret)
		return ret;
	assert_true(id != 0);
	assert_int_equal(kiln_agent_wait(a, id), 0);
	assert_true(r->exited);
	return 0;
}

static void test_echo(void **state)
{
	struct kiln_agent *a = client();
	const char *const argv[] = { "echo", "hi", NULL };
	struct run r;

	assert_int_equal(kiln_agent_ping(a), 0);
	assert_int_equal(run_cmd(a, argv, &r), 0);
	assert_int_equal(r.code, 0);
	assert_int_equal(r.sig, 0);
	assert_int_equal(r.out_len, 3);
	assert_memory_equal(r.out, "hi\n", 3);
	assert_int_equal(r.err_len, 0);
	run_free(&r);
	kiln_agent_free(a);
}

static void test_exit_codes(void **state)
{
	struct kiln_agent *a = client();
	const char *const exit7[] = { "sh", "-c", "exit 7", NULL };
	const char *const kill9[] = { "sh", "-c", "kill -9 $$", NULL };
	const char *const both[] = { "sh", "-c", "echo out; echo err >&2; echo out2", NULL };
	const char *const env[] = { "sh", "-c", "echo \"$FOO:$PWD\"", NULL };
	const char *const envp[] = { "FOO=bar baz", "PATH=/usr/bin:/bin", NULL };
	const char *const nope[] = { "/nonexistent/kiln-nope", NULL };
	const char *const nope2[] = { "kiln-no-such-program", NULL };
	struct kiln_exec_spec s;
	struct run r;
	uint32_t id;

	assert_int_equal(run_cmd(a, exit7, &r), 0);
	assert_int_equal(r.code, 7);
	assert_int_equal(r.sig, 0);
	run_free(&r);

	assert_int_equal(run_cmd(a, kill9, &r), 0);
	assert_int_equal(r.code, -1);
	assert_int_equal(r.sig, 9);
	run_free(&r);

	/* stdout and stderr stay apart. */
	assert_int_equal(run_cmd(a, both, &r), 0);
	assert_int_equal(r.code, 0);
	assert_string_equal(r.out, "out\nout2\n");
	assert_string_equal(r.err, "err\n");
	run_free(&r);

	/* env and cwd. */
	s = spec_of(env, false);
	s.envp = envp;
	s.cwd = "/tmp";
	run_init(&r);
	assert_int_equal(kiln_agent_exec(a, &s, &run_ops, &r, &id), 0);
	assert_int_equal(kiln_agent_wait(a, id), 0);
	assert_string_equal(r.out, "bar baz:/tmp\n");
	run_free(&r);

	/* A program that cannot start is an error of the request, not an exit. */
	run_init(&r);
	assert_int_equal(run_cmd(a, nope, &r), -ENOENT);
	assert_true(strlen(kiln_agent_error(a)) > 0);
	assert_false(r.exited);
	assert_int_equal(run_cmd(a, nope2, &r), -ENOENT);
	s = spec_of(exit7, false);
	s.cwd = "relative";
	assert_int_equal(kiln_agent_exec(a, &s, &run_ops, &r, &id), -EINVAL);
	s.cwd = "/nonexistent-dir";
	assert_int_equal(kiln_agent_exec(a, &s, &run_ops, &r, &id), -ENOENT);
	/* uid and gid, with supplementary groups dropped (needs root). */
	if (getuid() == 0) {
		const char *const ids[] = { "sh", "-c", "id -u; id -G", NULL };

		s = spec_of(ids, false);
		s.uid = 65534;
		s.gid = 65534;
		run_init(&r);
		assert_int_equal(kiln_agent_exec(a, &s, &run_ops, &r, &id), 0);
		assert_int_equal(kiln_agent_wait(a, id), 0);
		assert_string_equal(r.out, "65534\n65534\n");
		run_free(&r);
	}
	/* The connection is still fine. */
	assert_int_equal(kiln_agent_ping(a), 0);
	kiln_agent_free(a);
}

/* Feed data through stdin with the credit window, the way `kiln run` would. */
static void test_stdin_cat(void **state)
{
	struct kiln_agent *a = client();
	const char *const argv[] = { "cat", NULL };
	struct kiln_exec_spec s = spec_of(argv, true);
	size_t total = 3u << 20, sent = 0;
	uint8_t *data = malloc(total);
	uint32_t seed = 1, id;
	struct agentd_stats st;
	struct run r;

	assert_non_null(data);
	for (size_t i = 0; i < total; i++) {
		seed = seed * 1103515245u + 12345u;
		data[i] = (uint8_t)(seed >> 16);
	}
	run_init(&r);
	assert_int_equal(kiln_agent_exec(a, &s, &run_ops, &r, &id), 0);
	assert_true(kiln_agent_stdin_room(a, id) > 0);
	while (sent < total) {
		size_t room = kiln_agent_stdin_room(a, id);

		if (room) {
			ssize_t n = kiln_agent_stdin_write(a, id, data + sent, total - sent);

			assert_true(n > 0 && (size_t)n <= room);
			sent += (size_t)n;
		} else {
			/* Sending more now must be refused, not buffered. */
			assert_int_equal(kiln_agent_stdin_write(a, id, data, 1), -EAGAIN);
			assert_int_equal(kiln_agent_poll(a, 1000), 0);
		}
	}
	assert_int_equal(kiln_agent_stdin_close(a, id), 0);
	assert_int_equal(kiln_agent_stdin_room(a, id), 0);
	assert_int_equal(kiln_agent_wait(a, id), 0);
	assert_int_equal(r.code, 0);
	assert_int_equal(r.out_total, total);
	assert_true(r.out_hash == fnv(FNV_INIT, data, total));
	agentd_get_stats(srv.d, &st);
	assert_true(st.stdin_peak <= st.stdin_window);
	run_free(&r);
	free(data);

	/* A process that closes its stdin: the client learns it (-EPIPE). */
	{
		const char *const head[] = { "sh", "-c", "exec 0<&-; sleep 0.3; echo done", NULL };
		uint8_t chunk[4096] = { 0 };
		ssize_t n = 0;

		s = spec_of(head, true);
		run_init(&r);
		assert_int_equal(kiln_agent_exec(a, &s, &run_ops, &r, &id), 0);
		while (!r.exited && n != -EPIPE) {
			if (kiln_agent_stdin_room(a, id))
				n = kiln_agent_stdin_write(a, id, chunk, sizeof(chunk));
			else
				n = kiln_agent_stdin_write(a, id, chunk, 1);
			assert_true(n > 0 || n == -EAGAIN || n == -EPIPE);
			if (n == -EAGAIN)
				assert_int_equal(kiln_agent_poll(a, 1000), 0);
		}
		assert_int_equal(kiln_agent_wait(a, id), 0);
		assert_string_equal(r.out, "done\n");
		run_free(&r);
	}
	kiln_agent_free(a);
}

static void test_large_output(void **state)
{
	struct kiln_agent *a = client();
	const char *const argv[] = { "seq", "1", "2800000", NULL };
	uint64_t h = FNV_INIT, n = 0;
	char line[32];
	struct run r;

	for (int i = 1; i <= 2800000; i++) {
		int len = snprintf(line, sizeof(line), "%d\n", i);

		h = fnv(h, line, (size_t)len);
		n += (uint64_t)len;
	}
	assert_true(n > 20u << 20);
	assert_int_equal(run_cmd(a, argv, &r), 0);
	assert_int_equal(r.code, 0);
	assert_true(r.out_total == n);
	assert_true(r.out_hash == h);
	run_free(&r);
	kiln_agent_free(a);
}

static void test_concurrent(void **state)
{
	struct kiln_agent *a = client(), *b = client();
	const char *const reader[] = { "sh", "-c", "read x; echo got $x", NULL };
	const char *const quick[] = { "echo", "b", NULL };
	const char *const slow[] = { "sh", "-c", "sleep 0.2; echo c", NULL };
	struct kiln_exec_spec s1 = spec_of(reader, true), s2 = spec_of(quick, false),
			      s3 = spec_of(slow, false);
	struct run r1, r2, r3, r4;
	uint32_t id1, id2, id3, id4;

	run_init(&r1);
	run_init(&r2);
	run_init(&r3);
	run_init(&r4);
	/* A waits for stdin while B, C (same connection) and D (another) finish. */
	assert_int_equal(kiln_agent_exec(a, &s1, &run_ops, &r1, &id1), 0);
	assert_int_equal(kiln_agent_exec(a, &s3, &run_ops, &r3, &id3), 0);
	assert_int_equal(kiln_agent_exec(a, &s2, &run_ops, &r2, &id2), 0);
	assert_int_equal(kiln_agent_exec(b, &s2, &run_ops, &r4, &id4), 0);
	assert_true(id1 != id2 && id2 != id3);
	assert_int_equal(kiln_agent_wait(a, id2), 0);
	assert_int_equal(kiln_agent_wait(b, id4), 0);
	assert_int_equal(kiln_agent_wait(a, id3), 0);
	assert_false(r1.exited);
	assert_string_equal(r2.out, "b\n");
	assert_string_equal(r3.out, "c\n");
	assert_string_equal(r4.out, "b\n");
	assert_int_equal(kiln_agent_stdin_write(a, id1, "kiln\n", 5), 5);
	assert_int_equal(kiln_agent_stdin_close(a, id1), 0);
	assert_int_equal(kiln_agent_wait(a, id1), 0);
	assert_string_equal(r1.out, "got kiln\n");
	assert_int_equal(r1.code, 0);

	/* A signal request, to the process group. */
	{
		const char *const sleeper[] = { "sleep", "100", NULL };
		struct kiln_exec_spec s = spec_of(sleeper, false);

		run_free(&r2);
		run_init(&r2);
		assert_int_equal(kiln_agent_exec(b, &s, &run_ops, &r2, &id2), 0);
		assert_int_equal(kiln_agent_signal(b, id2, SIGTERM, true), 0);
		assert_int_equal(kiln_agent_wait(b, id2), 0);
		assert_int_equal(r2.sig, SIGTERM);
		assert_int_equal(kiln_agent_signal(b, id2, SIGTERM, true), -ESRCH);
	}
	run_free(&r1);
	run_free(&r2);
	run_free(&r3);
	run_free(&r4);
	kiln_agent_free(a);
	kiln_agent_free(b);
}

/* ------------------------------------------------------------------ files */

static int tmpfile_fd(void)
{
	char path[128];
	int fd;

	snprintf(path, sizeof(path), "%s/tmp-XXXXXX", srv.dir);
	fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	return fd;
}

struct listing {
	int n;
	bool seen_file, seen_dir;
};

static int on_dirent(void *ctx, const struct kiln_dirent *e)
{
	struct listing *l = ctx;

	l->n++;
	if (!strcmp(e->name, "blob")) {
		l->seen_file = true;
		assert_true(S_ISREG(e->mode));
		assert_true(e->size == 3u << 20);
	}
	if (!strcmp(e->name, "sub"))
		l->seen_dir = S_ISDIR(e->mode);
	return 0;
}

static int count_dirent(void *ctx, const struct kiln_dirent *e)
{
	(*(int *)ctx)++;
	return 0;
}

static void test_files(void **state)
{
	struct kiln_agent *a = client();
	struct kiln_put_opts po = { .mode = 0640, .uid = KILN_ID_KEEP, .gid = KILN_ID_KEEP,
				    .parents = true };
	size_t total = 3u << 20;
	uint8_t *data = malloc(total), *back = malloc(total);
	char base[128], path[256];
	struct listing l = { 0 };
	struct kiln_stat st;
	uint64_t bytes;
	uint32_t seed = 7;
	int in = tmpfile_fd(), out = tmpfile_fd(), n = 0;

	assert_non_null(data);
	assert_non_null(back);
	for (size_t i = 0; i < total; i++) {
		seed = seed * 1103515245u + 12345u;
		data[i] = (uint8_t)(seed >> 16);
	}
	assert_int_equal(write(in, data, total), (ssize_t)total);
	assert_int_equal(lseek(in, 0, SEEK_SET), 0);
	snprintf(base, sizeof(base), "%s/files", srv.dir);

	/* put with parents, byte-exact get back. */
	snprintf(path, sizeof(path), "%s/a/b/blob", base);
	assert_int_equal(kiln_agent_put(a, in, path, &po, &bytes), 0);
	assert_true(bytes == total);
	assert_int_equal(kiln_agent_get(a, path, out, UINT64_MAX, &bytes), 0);
	assert_true(bytes == total);
	assert_int_equal(pread(out, back, total, 0), (ssize_t)total);
	assert_memory_equal(data, back, total);

	assert_int_equal(kiln_agent_stat(a, path, false, &st), 0);
	assert_true(S_ISREG(st.mode));
	assert_int_equal(st.mode & 07777, 0640);
	assert_true(st.size == total);
	assert_int_equal(st.uid, getuid());

	/* mkdir, list, remove. */
	snprintf(path, sizeof(path), "%s/a/b/sub/deeper", base);
	assert_int_equal(kiln_agent_mkdir(a, path, 0700, false), -ENOENT);
	assert_int_equal(kiln_agent_mkdir(a, path, 0700, true), 0);
	assert_int_equal(kiln_agent_mkdir(a, path, 0700, true), 0); /* exists: fine with parents */
	assert_int_equal(kiln_agent_mkdir(a, path, 0700, false), -EEXIST);
	assert_int_equal(kiln_agent_stat(a, path, false, &st), 0);
	assert_true(S_ISDIR(st.mode));
	assert_int_equal(st.mode & 07777, 0700);
	snprintf(path, sizeof(path), "%s/a/b", base);
	assert_int_equal(kiln_agent_list(a, path, on_dirent, &l), 0);
	assert_int_equal(l.n, 2);
	assert_true(l.seen_file);
	assert_true(l.seen_dir);

	/* A large directory spans several DIR_ENTRIES frames. */
	snprintf(path, sizeof(path), "%s/many", base);
	assert_int_equal(kiln_agent_mkdir(a, path, 0755, true), 0);
	for (int i = 0; i < 600; i++) {
		char name[512];
		int fd;

		snprintf(name, sizeof(name), "%s/%0200d", path, i);
		fd = open(name, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
		assert_true(fd >= 0);
		close(fd);
	}
	assert_int_equal(kiln_agent_list(a, path, count_dirent, &n), 0);
	assert_int_equal(n, 600);

	/* Errors. */
	snprintf(path, sizeof(path), "%s/a", base);
	assert_int_equal(kiln_agent_get(a, path, out, UINT64_MAX, NULL), -EISDIR);
	assert_int_equal(kiln_agent_remove(a, path, false), -ENOTEMPTY);
	assert_int_equal(kiln_agent_get(a, "relative/path", out, UINT64_MAX, NULL), -EINVAL);
	assert_int_equal(kiln_agent_stat(a, "/nonexistent/kiln", false, &st), -ENOENT);
	assert_int_equal(kiln_agent_list(a, "/nonexistent/kiln", count_dirent, &n), -ENOENT);
	snprintf(path, sizeof(path), "%s/no/such/dir/file", base);
	assert_int_equal(lseek(in, 0, SEEK_SET), 0);
	assert_int_equal(kiln_agent_put(a, in, path, NULL, NULL), -ENOENT);
	assert_int_equal(kiln_agent_remove(a, "/", true), -EBUSY);

	/* Recursive remove. */
	assert_int_equal(kiln_agent_remove(a, base, true), 0);
	assert_int_equal(kiln_agent_stat(a, base, false, &st), -ENOENT);
	assert_int_equal(kiln_agent_remove(a, base, true), -ENOENT);

	/* The connection survived all of it. */
	assert_int_equal(kiln_agent_ping(a), 0);
	close(in);
	close(out);
	free(data);
	free(back);
	kiln_agent_free(a);
}

/* ------------------------------------------------------- back-pressure */

static long long cpu_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_backpressure(void **state)
{
	long long cpu;
	struct kiln_agent *a = client();
	const char *const argv[] = { "head", "-c", "67108864", "/dev/zero", NULL };
	struct kiln_exec_spec s = spec_of(argv, false);
	struct agentd_stats st0, st1, st2;
	struct run r;
	uint32_t id;

	agentd_get_stats(srv.d, &st0);
	run_init(&r);
	assert_int_equal(kiln_agent_exec(a, &s, &run_ops, &r, &id), 0);
	/* The client reads nothing: the agent must stop reading the pipe. */
	sleep_ms(400);
	agentd_get_stats(srv.d, &st1);
	cpu = cpu_ms();
	sleep_ms(400);
	agentd_get_stats(srv.d, &st2);
	assert_true(cpu_ms() - cpu < 100); /* and wait idle, not spin */
	assert_true(st1.pipe_bytes == st2.pipe_bytes);		 /* stalled */
	assert_true(st2.pipe_bytes - st0.pipe_bytes < (2u << 20)); /* tx + socket buffers */
	assert_true(st2.tx_peak <= st2.tx_cap);
	assert_true(st2.execs >= 1); /* still running, blocked in write() */
	assert_false(r.exited);
	print_message("# stalled after %llu bytes, transmit peak %zu of %zu\n",
		      (unsigned long long)(st2.pipe_bytes - st0.pipe_bytes), st2.tx_peak, st2.tx_cap);
	/* Reading again lets it finish, nothing lost. */
	assert_int_equal(kiln_agent_wait(a, id), 0);
	assert_int_equal(r.code, 0);
	assert_true(r.out_total == 67108864u);
	agentd_get_stats(srv.d, &st2);
	assert_true(st2.tx_peak <= st2.tx_cap);
	run_free(&r);

	/*
	 * The process exits while its output is stuck (a background writer
	 * keeps the pipe full): still no spinning, and the exit comes once the
	 * client reads again.
	 */
	{
		const char *const bg[] = { "sh", "-c", "head -c 4000000 /dev/zero & sleep 0.1; exit 3",
					   NULL };

		s = spec_of(bg, false);
		run_init(&r);
		assert_int_equal(kiln_agent_exec(a, &s, &run_ops, &r, &id), 0);
		sleep_ms(300);
		cpu = cpu_ms();
		sleep_ms(300);
		assert_true(cpu_ms() - cpu < 100);
		assert_int_equal(kiln_agent_wait(a, id), 0);
		assert_int_equal(r.code, 3);
		assert_true(r.out_total <= 4000000);
		run_free(&r);
	}
	kiln_agent_free(a);
}

/*
 * A second agent with the smallest transmit buffer: every flush empties it,
 * so a producer (file download, listing, draining an exited process) must
 * be resumed by the agent itself, not by a socket event that never comes.
 */
static void *small_thread(void *arg)
{
	agentd_run(arg);
	return NULL;
}

static void test_small_txbuf(void **state)
{
	struct agentd_config cfg = { .tx_cap = 1 };
	const char *const seq[] = { "seq", "1", "300000", NULL };
	const char *const bg[] = { "sh", "-c", "seq 1 200000 & exit 4", NULL };
	const char *const bye[] = { "sh", "-c", "seq 1 100000; exit 9", NULL };
	struct agentd_stats st;
	struct agentd *d;
	struct kiln_agent *a;
	struct run r;
	pthread_t th;
	char sock[128], path[128];
	size_t total = 3u << 20;
	uint8_t *data = malloc(total), *back = malloc(total);
	int in = tmpfile_fd(), out = tmpfile_fd(), n = 0;
	uint64_t bytes, h = FNV_INIT;
	char line[16];

	assert_non_null(data);
	assert_non_null(back);
	snprintf(sock, sizeof(sock), "%s/small.sock", srv.dir);
	assert_int_equal(agentd_create(&cfg, &d), 0);
	agentd_get_stats(d, &st);
	assert_int_equal(st.tx_cap, 16384); /* clamped to the minimum */
	assert_int_equal(agentd_listen_unix(d, sock), 0);
	assert_int_equal(pthread_create(&th, NULL, small_thread, d), 0);
	a = client_at(sock);

	for (size_t i = 0; i < total; i++)
		data[i] = (uint8_t)(i * 131 + (i >> 11));
	assert_int_equal(write(in, data, total), (ssize_t)total);
	assert_int_equal(lseek(in, 0, SEEK_SET), 0);
	snprintf(path, sizeof(path), "%s/small-blob", srv.dir);
	assert_int_equal(kiln_agent_put(a, in, path, NULL, &bytes), 0);
	assert_int_equal(kiln_agent_get(a, path, out, UINT64_MAX, &bytes), 0);
	assert_true(bytes == total);
	assert_int_equal(pread(out, back, total, 0), (ssize_t)total);
	assert_memory_equal(data, back, total);
	unlink(path);

	assert_int_equal(kiln_agent_list(a, "/proc/self/fd", count_dirent, &n), 0);
	assert_true(n >= 3);
	n = 0;
	assert_int_equal(kiln_agent_list(a, "/usr/bin", count_dirent, &n), 0);
	assert_true(n > 100);

	assert_int_equal(run_cmd(a, seq, &r), 0);
	for (int i = 1; i <= 300000; i++)
		h = fnv(h, line, (size_t)snprintf(line, sizeof(line), "%d\n", i));
	assert_true(r.out_hash == h);
	run_free(&r);
	assert_int_equal(run_cmd(a, bye, &r), 0);
	assert_int_equal(r.code, 9);
	run_free(&r);
	assert_int_equal(run_cmd(a, bg, &r), 0);
	assert_int_equal(r.code, 4);
	run_free(&r);

	agentd_get_stats(d, &st);
	assert_true(st.tx_peak <= st.tx_cap);
	kiln_agent_free(a);
	agentd_stop(d);
	pthread_join(th, NULL);
	agentd_free(d);
	close(in);
	close(out);
	free(data);
	free(back);
}

/* A client that goes away: its processes are killed. */
static void test_disconnect_kills(void **state)
{
	struct kiln_agent *a = client();
	const char *const argv[] = { "sleep", "1000", NULL };
	struct kiln_exec_spec s = spec_of(argv, false);
	struct agentd_stats st;
	struct run r;
	uint32_t id;
	long long t0;

	agentd_get_stats(srv.d, &st);
	assert_int_equal(st.execs, 0);
	run_init(&r);
	assert_int_equal(kiln_agent_exec(a, &s, &run_ops, &r, &id), 0);
	agentd_get_stats(srv.d, &st);
	assert_int_equal(st.execs, 1);
	kiln_agent_free(a);
	t0 = now_ms();
	do {
		sleep_ms(10);
		agentd_get_stats(srv.d, &st);
	} while (st.execs && now_ms() - t0 < 5000);
	assert_int_equal(st.execs, 0);
}

/* -------------------------------------------------------- malformed input */

static void raw_send(int fd, const void *p, size_t n)
{
	assert_int_equal(send(fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

static int raw_hello(int fd, uint32_t version)
{
	uint8_t b[64];
	struct proto_hello m = { .version = version };
	int len = proto_enc_hello(b, sizeof(b), 1, &m);

	raw_send(fd, b, (size_t)len);
	return len;
}

/*
 * Read what the agent says until it closes: true when an ERROR with this id
 * (and errno, if non-zero) came. Fails on a hang.
 */
static bool raw_expect_error_close(int fd, uint32_t id, int err)
{
	static uint8_t in[1 << 16];
	size_t len = 0;
	bool seen = false, closed = false;
	long long t0 = now_ms();

	while (!closed && now_ms() - t0 < 5000) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, 5000) <= 0)
			break;
		n = read(fd, in + len, sizeof(in) - len);
		if (n <= 0) {
			closed = true;
			break;
		}
		len += (size_t)n;
		for (;;) {
			struct proto_hdr h;
			struct proto_error e;

			if (len < PROTO_HDR_SIZE)
				break;
			assert_int_equal(proto_hdr_decode(in, PROTO_FROM_AGENT, &h), 0);
			if (len < PROTO_HDR_SIZE + h.len)
				break;
			if (h.type == PROTO_ERROR && h.id == id) {
				assert_int_equal(proto_dec_error(in + PROTO_HDR_SIZE, h.len, &e), 0);
				if (!err || e.err == err)
					seen = true;
			}
			memmove(in, in + PROTO_HDR_SIZE + h.len, len - PROTO_HDR_SIZE - h.len);
			len -= PROTO_HDR_SIZE + h.len;
		}
	}
	assert_true(closed);
	return seen;
}

static void still_serving(void)
{
	struct kiln_agent *a = client();

	assert_int_equal(kiln_agent_ping(a), 0);
	kiln_agent_free(a);
}

static void test_malformed(void **state)
{
	struct agentd_stats st0, st1;
	uint8_t b[256];
	struct proto_hdr h;
	int fd, len, hold;

	agentd_get_stats(srv.d, &st0);
	/* A peer holding half a header does not block anyone. */
	hold = unix_connect(srv.sock);
	raw_send(hold, "\x05\0\0", 3);

	/* Garbage header. */
	fd = unix_connect(srv.sock);
	memset(b, 0xff, 12);
	raw_send(fd, b, 12);
	assert_true(raw_expect_error_close(fd, 0, EPROTO));
	close(fd);
	still_serving();

	/* Oversize length (valid type). */
	fd = unix_connect(srv.sock);
	raw_hello(fd, PROTO_VERSION);
	h = (struct proto_hdr){ .len = 0x7fffffff, .type = PROTO_STDIN, .id = 1 };
	proto_hdr_encode(b, &h);
	raw_send(fd, b, 12);
	assert_true(raw_expect_error_close(fd, 0, EPROTO));
	close(fd);

	/* A request before HELLO. */
	fd = unix_connect(srv.sock);
	len = proto_enc_data(b, sizeof(b), PROTO_PING, 0, 5, "x", 1);
	raw_send(fd, b, (size_t)len);
	assert_true(raw_expect_error_close(fd, 0, EPROTO));
	close(fd);

	/* Bad version: a clear answer to the HELLO, then the end. */
	fd = unix_connect(srv.sock);
	raw_hello(fd, 99);
	assert_true(raw_expect_error_close(fd, 1, EPROTONOSUPPORT));
	close(fd);

	/* An agent->client type sent by the client. */
	fd = unix_connect(srv.sock);
	raw_hello(fd, PROTO_VERSION);
	len = proto_enc_ok(b, sizeof(b), 5, 0);
	raw_send(fd, b, (size_t)len);
	assert_true(raw_expect_error_close(fd, 0, EPROTO));
	close(fd);

	/* EXEC whose argc overflows. */
	fd = unix_connect(srv.sock);
	raw_hello(fd, PROTO_VERSION);
	h = (struct proto_hdr){ .len = 28, .type = PROTO_EXEC, .id = 2 };
	proto_hdr_encode(b, &h);
	memset(b + 12, 0, 28);
	memset(b + 12 + 12, 0xff, 4); /* argc */
	raw_send(fd, b, 12 + 28);
	assert_true(raw_expect_error_close(fd, 0, EPROTO));
	close(fd);

	/* A string running past the end of its frame. */
	fd = unix_connect(srv.sock);
	raw_hello(fd, PROTO_VERSION);
	h = (struct proto_hdr){ .len = 24, .type = PROTO_STAT, .id = 2 };
	proto_hdr_encode(b, &h);
	memset(b + 12, 0, 24);
	b[12 + 16] = 200; /* path length 200, 4 bytes present */
	raw_send(fd, b, 12 + 24);
	assert_true(raw_expect_error_close(fd, 0, EPROTO));
	close(fd);

	/* FILE_DATA for no upload. */
	fd = unix_connect(srv.sock);
	raw_hello(fd, PROTO_VERSION);
	len = proto_enc_data(b, sizeof(b), PROTO_FILE_DATA, PROTO_F_EOF, 42, "abc", 3);
	raw_send(fd, b, (size_t)len);
	assert_true(raw_expect_error_close(fd, 0, EPROTO));
	close(fd);

	/* STDIN beyond the granted window. */
	{
		static uint8_t big[PROTO_HDR_SIZE + (1 << 17)], zeros[1 << 17];
		const char *const argv[] = { "sleep", "100", NULL };
		struct proto_exec m = { .flags = PROTO_EXEC_STDIN, .uid = PROTO_ID_KEEP,
					.gid = PROTO_ID_KEEP, .argc = 2, .argv = argv };

		fd = unix_connect(srv.sock);
		raw_hello(fd, PROTO_VERSION);
		len = proto_enc_exec(big, sizeof(big), 3, &m);
		raw_send(fd, big, (size_t)len);
		len = proto_enc_data(big, sizeof(big), PROTO_STDIN, 0, 3, zeros, sizeof(zeros));
		assert_true(len > 0);
		raw_send(fd, big, (size_t)len);
		assert_true(raw_expect_error_close(fd, 0, EPROTO));
		close(fd);
	}

	/* A truncated frame, then the peer goes: no hang, nothing leaks. */
	fd = unix_connect(srv.sock);
	raw_hello(fd, PROTO_VERSION);
	h = (struct proto_hdr){ .len = 100, .type = PROTO_PING, .id = 3 };
	proto_hdr_encode(b, &h);
	raw_send(fd, b, 12 + 10);
	shutdown(fd, SHUT_WR);
	raw_expect_error_close(fd, 0, 0);
	close(fd);

	still_serving();
	close(hold);
	still_serving();
	agentd_get_stats(srv.d, &st1);
	assert_true(st1.proto_errors - st0.proto_errors >= 8);
	{
		long long t0 = now_ms();

		do {
			sleep_ms(10);
			agentd_get_stats(srv.d, &st1);
		} while ((st1.conns || st1.execs) && now_ms() - t0 < 5000);
		assert_int_equal(st1.conns, 0);
		assert_int_equal(st1.execs, 0); /* the sleep of the STDIN case was killed */
	}
}

/* ------------------------------------- vsock over UDS (emulated VMM side) */

static struct {
	int lfd;
	uint32_t port;	    /* the only port with a listener */
	long long up_at;    /* refuse everything before */
	volatile bool stop;
	pthread_t th;
} mux;

/* The VMM's side of one connection: parse CONNECT, then splice to the agent. */
/* Runs argv on a terminal of rows x cols with stdin open; id in *id. */
static void pty_start(struct kiln_agent *a, const char *const *argv, unsigned rows,
		      unsigned cols, struct run *r, uint32_t *id)
{
	struct kiln_exec_spec s = spec_of(argv, true);

	s.pty = true;
	s.rows = rows;
	s.cols = cols;
	run_init(r);
	assert_int_equal(kiln_agent_exec(a, &s, &run_ops, r, id), 0);
}

/* Polls until the process's output holds want (or it exits). */
static void pty_expect(struct kiln_agent *a, struct run *r, const char *want)
{
	while (!r->exited && !(r->out && strstr(r->out, want)))
		assert_int_equal(kiln_agent_poll(a, 5000), 0);
	assert_non_null(r->out);
	assert_non_null(strstr(r->out, want));
}

static void test_pty(void **state)
{
	const char *const info[] = { "sh", "-c", "tty; stty size; echo err >&2; [ -t 0 ] && echo t0",
				     NULL };
	const char *const rd[] = { "sh", "-c", "stty size; read x; stty size; echo \"[$x]\"", NULL };
	const char *const slp[] = { "sleep", "100", NULL };
	const char *const plain[] = { "cat", NULL };
	struct kiln_agent *a = client();
	struct kiln_exec_spec s;
	struct run r;
	uint32_t id;

	/* Its own terminal of that size; stderr comes with stdout. */
	pty_start(a, info, 24, 80, &r, &id);
	assert_int_equal(kiln_agent_wait(a, id), 0);
	assert_int_equal(r.code, 0);
	assert_non_null(strstr(r.out, "/dev/pts/"));
	assert_non_null(strstr(r.out, "24 80\r\n"));
	assert_non_null(strstr(r.out, "err\r\n"));
	assert_non_null(strstr(r.out, "t0\r\n"));
	assert_int_equal(r.err_len, 0);
	run_free(&r);

	/* A resize, then input: the size changed before the line came. */
	pty_start(a, rd, 10, 20, &r, &id);
	pty_expect(a, &r, "10 20\r\n");
	assert_int_equal(kiln_agent_resize(a, id, 33, 101), 0);
	assert_int_equal(kiln_agent_stdin_write(a, id, "hello\n", 6), 6);
	assert_int_equal(kiln_agent_wait(a, id), 0);
	assert_int_equal(r.code, 0);
	assert_non_null(strstr(r.out, "33 101\r\n"));
	assert_non_null(strstr(r.out, "[hello]"));
	run_free(&r);

	/* Ctrl-C is a byte: the terminal turns it into SIGINT. Sizes out of range are refused. */
	pty_start(a, slp, 24, 80, &r, &id);
	assert_int_equal(kiln_agent_resize(a, id, 0, 80), -EINVAL);
	assert_int_equal(kiln_agent_resize(a, id, 24, 4097), -EINVAL);
	assert_int_equal(kiln_agent_stdin_write(a, id, "\x03", 1), 1);
	assert_int_equal(kiln_agent_wait(a, id), 0);
	assert_int_equal(r.code, -1);
	assert_int_equal(r.sig, SIGINT);
	run_free(&r);

	/* No terminal, no resize; a bad size is refused before anything is sent. */
	s = spec_of(plain, true);
	run_init(&r);
	assert_int_equal(kiln_agent_exec(a, &s, &run_ops, &r, &id), 0);
	assert_int_equal(kiln_agent_resize(a, id, 24, 80), -ENOTTY);
	assert_int_equal(kiln_agent_stdin_close(a, id), 0);
	assert_int_equal(kiln_agent_wait(a, id), 0);
	run_free(&r);
	s.pty = true;
	s.rows = 0;
	s.cols = 80;
	assert_int_equal(kiln_agent_exec(a, &s, &run_ops, &r, &id), -EINVAL);
	assert_int_equal(kiln_agent_status(a), 0);
	kiln_agent_free(a);
	still_serving();
}

/* A RESIZE out of bounds, or for a process that is not there, from a raw peer. */
static void test_pty_raw(void **state)
{
	uint8_t b[64];
	struct proto_hdr h = { .len = 8, .type = PROTO_RESIZE, .flags = 0, .id = 42 };
	int fd = unix_connect(srv.sock), len;

	raw_hello(fd, PROTO_VERSION);
	/* For no such process: ignored, the connection goes on. */
	len = proto_enc_resize(b, sizeof(b), 42, &(struct proto_winsize){ .rows = 5, .cols = 5 });
	raw_send(fd, b, (size_t)len);
	len = proto_enc_data(b, sizeof(b), PROTO_PING, 0, 7, "p", 1);
	raw_send(fd, b, (size_t)len);
	{
		uint8_t in[256];
		size_t got = 0;
		bool pong = false;

		while (!pong) {
			struct proto_hdr g;
			ssize_t n = read(fd, in + got, sizeof(in) - got);

			assert_true(n > 0);
			got += (size_t)n;
			while (got >= PROTO_HDR_SIZE) {
				assert_int_equal(proto_hdr_decode(in, PROTO_FROM_AGENT, &g), 0);
				if (got < PROTO_HDR_SIZE + g.len)
					break;
				pong |= g.type == PROTO_PONG && g.id == 7;
				memmove(in, in + PROTO_HDR_SIZE + g.len, got - PROTO_HDR_SIZE - g.len);
				got -= PROTO_HDR_SIZE + g.len;
			}
		}
	}
	/* Zero rows: a protocol error, the connection closes. */
	proto_hdr_encode(b, &h);
	memset(b + PROTO_HDR_SIZE, 0, 8);
	b[PROTO_HDR_SIZE + 4] = 80;
	raw_send(fd, b, PROTO_HDR_SIZE + 8);
	assert_true(raw_expect_error_close(fd, 0, EPROTO));
	close(fd);
	still_serving();
}

static void *mux_conn(void *arg)
{
	int fd = (int)(intptr_t)arg, agent = -1;
	char line[64];
	size_t n = 0;
	unsigned port;

	while (n < sizeof(line) - 1) {
		if (read(fd, line + n, 1) != 1)
			goto out;
		if (line[n++] == '\n')
			break;
	}
	line[n] = 0;
	if (sscanf(line, "CONNECT %u\n", &port) != 1 || port != mux.port || now_ms() < mux.up_at)
		goto out; /* nothing listens: the VMM just closes */
	agent = unix_connect(srv.sock);
	if (agent < 0)
		goto out;
	if (write(fd, "OK 1073741824\n", 14) != 14)
		goto out;
	for (;;) {
		struct pollfd p[2] = { { fd, POLLIN, 0 }, { agent, POLLIN, 0 } };
		char buf[65536];
		ssize_t r;

		if (poll(p, 2, -1) < 0)
			break;
		if (p[0].revents) {
			r = read(fd, buf, sizeof(buf));
			if (r <= 0 || send(agent, buf, (size_t)r, MSG_NOSIGNAL) != r)
				break;
		}
		if (p[1].revents) {
			r = read(agent, buf, sizeof(buf));
			if (r <= 0 || send(fd, buf, (size_t)r, MSG_NOSIGNAL) != r)
				break;
		}
	}
out:
	if (agent >= 0)
		close(agent);
	close(fd);
	return NULL;
}

static void *mux_thread(void *arg)
{
	while (!mux.stop) {
		struct pollfd p = { .fd = mux.lfd, .events = POLLIN };
		pthread_t t;
		int fd;

		if (poll(&p, 1, 50) <= 0)
			continue;
		fd = accept4(mux.lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		if (pthread_create(&t, NULL, mux_conn, (void *)(intptr_t)fd))
			close(fd);
		else
			pthread_detach(t);
	}
	return NULL;
}

static void test_vsock_uds(void **state)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	const char *const argv[] = { "echo", "via vsock", NULL };
	uint8_t greeting[KILN_AGENT_GREETING_MAX];
	struct kiln_agent *a;
	uint32_t caps = 0;
	struct run r;
	long long t0;
	int fd, ret, len;

	/* No VMM socket at all. */
	t0 = now_ms();
	assert_int_equal(vsock_uds_connect(srv.vmm, 52, NULL, 0, 200, &fd), -ENOENT);
	assert_true(now_ms() - t0 >= 150);
	assert_int_equal(fd, -1);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", srv.vmm);
	mux.lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(mux.lfd >= 0);
	assert_int_equal(bind(mux.lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(mux.lfd, 16), 0);
	mux.port = 52;
	mux.up_at = now_ms() + 300; /* the agent "boots" for 300 ms */
	assert_int_equal(pthread_create(&mux.th, NULL, mux_thread, NULL), 0);

	/* Nobody on port 53: refused, after retrying until the deadline. */
	t0 = now_ms();
	assert_int_equal(vsock_uds_connect(srv.vmm, 53, NULL, 0, 200, &fd), -ECONNREFUSED);
	assert_true(now_ms() - t0 >= 150);
	/* Port 52 refuses at first, then answers: the client retries, sending
	 * the greeting (HELLO and IDENTITY) with every CONNECT line. This agent
	 * is not PID 1: it refuses the identity, which it never offered. */
	len = kiln_agent_greeting(greeting, sizeof(greeting), "box",
				  "sb-host1-0123456789abcdef0123456789abcdef");
	assert_true(len > 0);
	ret = vsock_uds_connect(srv.vmm, 52, greeting, (size_t)len, 5000, &fd);
	assert_int_equal(ret, 0);
	assert_true(now_ms() >= mux.up_at);
	assert_int_equal(kiln_agent_create(fd, &a), 0);
	kiln_agent_set_timeout(a, TIMEOUT_MS);
	assert_int_equal(kiln_agent_greeted(a, true, &caps), 0);
	assert_true(caps & PROTO_CAP_EXEC);
	assert_false(caps & PROTO_CAP_IDENTITY);
	assert_int_equal(kiln_agent_greeted(a, true, &caps), -EISCONN);
	assert_int_equal(run_cmd(a, argv, &r), 0);
	assert_string_equal(r.out, "via vsock\n");
	assert_int_equal(r.oom_kills, 0); /* PROTO_CAP_OOM: the exit tells */
	run_free(&r);
	kiln_agent_free(a);

	mux.stop = true;
	pthread_join(mux.th, NULL);
	close(mux.lfd);
	unlink(srv.vmm);
}

/* Bad multiplexer replies are protocol errors, not hangs. */
static void *bad_mux(void *arg)
{
	const char *reply = arg;
	int fd = accept4(mux.lfd, NULL, NULL, SOCK_CLOEXEC);
	char c;

	if (fd < 0)
		return NULL;
	while (read(fd, &c, 1) == 1 && c != '\n')
		;
	if (write(fd, reply, strlen(reply)) < 0) {
		/* the client may be gone */
	}
	sleep_ms(300);
	close(fd);
	return NULL;
}

static void test_vsock_uds_bad(void **state)
{
	static const char *const replies[] = { "NO 1\n", "OK abc\n", "OK 1", "OKAY\n",
		"OK 1234567890123456789012345678901234567890\n" };
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", srv.vmm);
	for (size_t i = 0; i < sizeof(replies) / sizeof(replies[0]); i++) {
		pthread_t t;
		int ret;

		unlink(srv.vmm);
		mux.lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		assert_int_equal(bind(mux.lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
		assert_int_equal(listen(mux.lfd, 1), 0);
		assert_int_equal(pthread_create(&t, NULL, bad_mux, (void *)replies[i]), 0);
		ret = vsock_uds_connect(srv.vmm, 52, NULL, 0, 100, &fd);
		/* "OK 1" without its newline: the deadline. */
		assert_int_equal(ret, i == 2 ? -ETIMEDOUT : -EPROTO);
		assert_int_equal(fd, -1);
		pthread_join(t, NULL);
		close(mux.lfd);
		unlink(srv.vmm);
	}
}

/* The guest's first bytes right behind the reply line, in the same write,
 * stay on the stream for the agent client. */
static void test_vsock_uds_behind(void **state)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char buf[16] = "";
	pthread_t t;
	int fd;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", srv.vmm);
	unlink(srv.vmm);
	mux.lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(bind(mux.lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(mux.lfd, 1), 0);
	assert_int_equal(pthread_create(&t, NULL, bad_mux, (void *)"OK 7\nguest"), 0);
	assert_int_equal(vsock_uds_connect(srv.vmm, 52, "early", 5, 2000, &fd), 0);
	assert_int_equal(read(fd, buf, sizeof(buf) - 1), 5);
	assert_string_equal(buf, "guest");
	close(fd);
	pthread_join(t, NULL);
	close(mux.lfd);
	unlink(srv.vmm);
}

/* ---------------------------------------------------------- command line */

static void test_bootargs(void **state)
{
	struct bootargs ba;
	char err[128], warn[128];
	const char *cl;
	char huge[8192];

	bootargs_defaults(&ba);
	assert_string_equal(ba.hostname, "kiln");
	assert_int_equal(ba.port, 52);
	assert_string_equal(ba.root, "/dev/vda");
	assert_string_equal(ba.scratch, "auto");
	assert_int_equal(ba.bootmark, -1);

	cl = "console=ttyS0 reboot=k panic=-1 kiln.hostname=box-1 kiln.port=1024 "
	     "kiln.rootfstype=erofs kiln.scratch=tmpfs kiln.bootmark=0x440 kiln.debug "
	     "kiln.root=/dev/vdc\n";
	assert_int_equal(bootargs_parse(cl, strlen(cl), &ba, err, sizeof(err), warn, sizeof(warn)), 0);
	assert_string_equal(ba.hostname, "box-1");
	assert_int_equal(ba.port, 1024);
	assert_int_equal(ba.rootfstype, BOOTARGS_FS_EROFS);
	assert_string_equal(ba.scratch, "tmpfs");
	assert_int_equal(ba.bootmark, 0x440);
	assert_true(ba.debug);
	assert_string_equal(ba.root, "/dev/vdc");
	assert_string_equal(warn, "");

	bootargs_defaults(&ba);
	cl = "kiln.bootmark=1088 kiln.unknown=1 \"kiln.hostname=q\" kiln.root=none";
	assert_int_equal(bootargs_parse(cl, strlen(cl), &ba, err, sizeof(err), warn, sizeof(warn)), 0);
	assert_int_equal(ba.bootmark, 1088);
	assert_string_equal(ba.hostname, "q");
	assert_string_equal(ba.root, "none");
	assert_non_null(strstr(warn, "unknown"));

	/* Bad values fail with a message. */
	static const char *const bad[] = {
		"kiln.port=0", "kiln.port=4294967295", "kiln.port=12x", "kiln.port=",
		"kiln.bootmark=0x10000", "kiln.bootmark=-1", "kiln.hostname=-x",
		"kiln.hostname=a_b", "kiln.rootfstype=xfs", "kiln.root=/etc/passwd",
		"kiln.scratch=/dev/../etc", "kiln.debug=2", "kiln.hostname=",
		"kiln.port=99999999999999999999999",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		bootargs_defaults(&ba);
		assert_int_equal(bootargs_parse(bad[i], strlen(bad[i]), &ba, err, sizeof(err), NULL, 0),
				 -EINVAL);
		assert_true(strlen(err) > 0);
	}
	/* Bounded: a huge command line, an overlong token, no NUL terminator. */
	memset(huge, 'a', sizeof(huge));
	memcpy(huge, "kiln.hostname=", 14);
	bootargs_defaults(&ba);
	assert_int_equal(bootargs_parse(huge, sizeof(huge), &ba, err, sizeof(err), NULL, 0), -EINVAL);
	memset(huge, ' ', sizeof(huge));
	memcpy(huge + 4090, "kiln.port=77", 12); /* past the 4096-byte window */
	bootargs_defaults(&ba);
	assert_int_equal(bootargs_parse(huge, sizeof(huge), &ba, err, sizeof(err), NULL, 0), 0);
	assert_int_equal(ba.port, 52);
	/* Not ours: ignored. */
	cl = "root=/dev/vda kilnx.port=1 kiln";
	bootargs_defaults(&ba);
	assert_int_equal(bootargs_parse(cl, strlen(cl), &ba, err, sizeof(err), warn, sizeof(warn)), 0);
	assert_int_equal(ba.port, 52);
}

/* Last: SHUTDOWN ends the loop (test mode: no reboot) after the reply. */
/* ------------------------------- a hostile peer on a socketpair (bounds) */

enum peer_mode {
	PEER_HELLO_HANG,  /* read the HELLO, never answer */
	PEER_SILENT,	  /* greet, then read everything and answer nothing */
	PEER_TRICKLE,	  /* greet, then one byte of valid FILE_DATA frames every 20 ms */
	PEER_FLOOD,	  /* greet, then 64 KiB FILE_DATA frames without end */
	PEER_EMPTY_FLOOD, /* greet, then empty FILE_DATA frames without end */
	PEER_NO_READ,	  /* greet, then never read again */
	PEER_EVIL_ERROR,  /* greet, then answer the next request with an escape-laden ERROR */
};

struct peer {
	int fd;
	enum peer_mode mode;
	pthread_t th;
	uint64_t sent;
};

static int peer_read_frame(int fd, struct proto_hdr *h, uint8_t *buf)
{
	size_t got = 0;

	while (got < PROTO_HDR_SIZE) {
		ssize_t n = read(fd, buf + got, PROTO_HDR_SIZE - got);

		if (n <= 0)
			return -1;
		got += (size_t)n;
	}
	if (proto_hdr_decode(buf, PROTO_FROM_CLIENT, h) || h->len > PROTO_MAX_PAYLOAD)
		return -1;
	got = 0;
	while (got < h->len) {
		ssize_t n = read(fd, buf + PROTO_HDR_SIZE + got, h->len - got);

		if (n <= 0)
			return -1;
		got += (size_t)n;
	}
	return 0;
}

static bool peer_send(struct peer *p, const void *buf, size_t n)
{
	const uint8_t *b = buf;

	while (n) {
		ssize_t w = send(p->fd, b, n, MSG_NOSIGNAL);

		if (w <= 0)
			return false;
		b += w;
		n -= (size_t)w;
		p->sent += (size_t)w;
	}
	return true;
}

static void *peer_thread(void *arg)
{
	static const char evil[] = "\x1b]0;title\x07\x1b[2J\r\nforged\x9b\xc2\x9b\x7f end";
	struct peer *p = arg;
	uint8_t *buf = malloc(PROTO_MAX_FRAME), *data = calloc(1, 65536);
	struct proto_hello_ok ok = { .version = PROTO_VERSION,
				     .caps = PROTO_CAP_EXEC | PROTO_CAP_FILES,
				     .max_payload = PROTO_MAX_PAYLOAD, .stdin_window = 65536 };
	struct proto_hdr h;
	uint8_t out[PROTO_HDR_SIZE + 65536];
	int n;

	if (!buf || !data || peer_read_frame(p->fd, &h, buf) || h.type != PROTO_HELLO)
		goto out;
	if (p->mode == PEER_HELLO_HANG)
		goto drain;
	n = proto_enc_hello_ok(out, sizeof(out), h.id, &ok);
	if (!peer_send(p, out, (size_t)n))
		goto out;
	if (p->mode == PEER_NO_READ) {
		/* Hold the socket unread until the client goes (its end closes). */
		struct pollfd pf = { .fd = p->fd, .events = POLLRDHUP };

		while (poll(&pf, 1, -1) >= 0 && !(pf.revents & (POLLRDHUP | POLLHUP | POLLERR)))
			;
		goto out;
	}
	if (peer_read_frame(p->fd, &h, buf))
		goto out;
	switch (p->mode) {
	case PEER_TRICKLE:
		for (;;) {
			n = proto_enc_data(out, sizeof(out), PROTO_FILE_DATA, 0, h.id, "x", 1);
			for (int i = 0; i < n; i++) {
				if (!peer_send(p, out + i, 1))
					goto out;
				sleep_ms(20);
			}
		}
	case PEER_FLOOD:
	case PEER_EMPTY_FLOOD:
		n = proto_enc_data(out, sizeof(out), PROTO_FILE_DATA, 0, h.id, data,
				   p->mode == PEER_FLOOD ? 65536 : 0);
		while (peer_send(p, out, (size_t)n))
			;
		goto out;
	case PEER_EVIL_ERROR:
		n = proto_enc_error(out, sizeof(out), h.id, EIO, evil);
		peer_send(p, out, (size_t)n);
		goto drain;
	default:
		goto drain;
	}
drain:
	while (read(p->fd, buf, PROTO_MAX_FRAME) > 0)
		;
out:
	free(buf);
	free(data);
	close(p->fd);
	return NULL;
}

/* A client greeted by a hostile peer (not for PEER_HELLO_HANG). */
static struct kiln_agent *peer_client(struct peer *p, enum peer_mode mode)
{
	struct kiln_agent *a;
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	memset(p, 0, sizeof(*p));
	p->fd = sv[1];
	p->mode = mode;
	assert_int_equal(pthread_create(&p->th, NULL, peer_thread, p), 0);
	assert_int_equal(kiln_agent_create(sv[0], &a), 0);
	if (mode != PEER_HELLO_HANG)
		assert_int_equal(kiln_agent_hello(a, NULL), 0);
	return a;
}

static void peer_done(struct peer *p, struct kiln_agent *a)
{
	kiln_agent_free(a); /* the peer sees the end and leaves */
	assert_int_equal(pthread_join(p->th, NULL), 0);
}

static uint64_t ms_from_now(int ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec + (uint64_t)ms * 1000000ULL;
}

/* The absolute deadline bounds every wait, whatever the peer does; the
 * no-progress timeout alone does not (a trickle is progress). Sticky. */
static void test_deadline(void **state)
{
	static const enum peer_mode modes[] = { PEER_HELLO_HANG, PEER_SILENT, PEER_TRICKLE,
						PEER_EMPTY_FLOOD, PEER_NO_READ };
	char buf[4096];
	size_t len;

	for (unsigned i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		struct peer p;
		struct kiln_agent *a = peer_client(&p, modes[i]);
		long long t0 = now_ms();
		int ret;

		/* Only the deadline; where the peer makes "progress" the no-progress
		 * timeout is set too, to show it does not help. */
		kiln_agent_set_timeout(a, modes[i] == PEER_TRICKLE || modes[i] == PEER_EMPTY_FLOOD ? 200
											  : -1);
		kiln_agent_set_deadline(a, ms_from_now(600));
		switch (modes[i]) {
		case PEER_HELLO_HANG:
			ret = kiln_agent_hello(a, NULL);
			break;
		case PEER_NO_READ: {
			/* An upload the peer never reads: the send side blocks. */
			int fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);

			ret = kiln_agent_put(a, fd, "/x", NULL, NULL);
			close(fd);
			break;
		}
		default:
			ret = kiln_agent_get_buf(a, "/proc/vmstat", buf, sizeof(buf), &len);
			break;
		}
		print_message("# mode %u: %d after %lld ms (peer sent %llu bytes)\n", i, ret,
			      now_ms() - t0, (unsigned long long)p.sent);
		assert_int_equal(ret, -ETIMEDOUT);
		assert_true(now_ms() - t0 < 15000); /* a hang detector, not a timing check */
		assert_int_equal(kiln_agent_status(a), -ETIMEDOUT);
		assert_int_equal(kiln_agent_ping(a), -ETIMEDOUT); /* sticky */
		peer_done(&p, a);
	}
}

static void *cancel_later(void *arg)
{
	sleep_ms(300);
	assert_int_equal(write(*(int *)arg, "x", 1), 1);
	return NULL;
}

/* The cancel fd ends a call at once, even while the peer always has more. */
static void test_cancel(void **state)
{
	static const enum peer_mode modes[] = { PEER_SILENT, PEER_FLOOD, PEER_EMPTY_FLOOD,
						PEER_NO_READ };

	for (unsigned i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		struct peer p;
		struct kiln_agent *a = peer_client(&p, modes[i]);
		int pfd[2], out = open("/dev/null", O_WRONLY | O_CLOEXEC), ret;
		pthread_t t;

		assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
		kiln_agent_set_cancel_fd(a, pfd[0]);
		assert_int_equal(pthread_create(&t, NULL, cancel_later, &pfd[1]), 0);
		if (modes[i] == PEER_NO_READ) {
			int z = open("/dev/zero", O_RDONLY | O_CLOEXEC);

			ret = kiln_agent_put(a, z, "/x", NULL, NULL);
			close(z);
		} else {
			ret = kiln_agent_get(a, "/big", out, UINT64_MAX, NULL);
		}
		assert_int_equal(ret, -ECANCELED);
		assert_int_equal(kiln_agent_poll(a, 0), -ECANCELED);
		pthread_join(t, NULL);
		peer_done(&p, a);
		close(out);
		close(pfd[0]);
		close(pfd[1]);
	}
}

/* FILE_GET stops at its cap, into memory and into a file; nothing beyond it
 * is written. */
static void test_get_cap(void **state)
{
	char path[] = "/tmp/kiln-cap-XXXXXX";
	static char mem[100000];
	struct peer p;
	struct kiln_agent *a;
	struct stat st;
	uint64_t bytes = 0;
	size_t len = 0;
	int fd;

	a = peer_client(&p, PEER_FLOOD);
	assert_int_equal(kiln_agent_get_buf(a, "/proc/vmstat", mem, sizeof(mem), &len), -EFBIG);
	assert_true(len <= sizeof(mem));
	assert_int_equal(kiln_agent_status(a), -EFBIG);
	peer_done(&p, a);

	fd = mkstemp(path);
	assert_true(fd >= 0);
	a = peer_client(&p, PEER_FLOOD);
	assert_int_equal(kiln_agent_get(a, "/big", fd, 1000000, &bytes), -EFBIG);
	assert_true(bytes <= 1000000);
	assert_int_equal(fstat(fd, &st), 0);
	assert_true(st.st_size <= 1000000);
	peer_done(&p, a);
	close(fd);
	unlink(path);
}

/* An agent's error text reaches the caller without a control byte. */
static void test_error_text(void **state)
{
	struct peer p;
	struct kiln_agent *a = peer_client(&p, PEER_EVIL_ERROR);
	struct kiln_stat st;
	const char *e;

	kiln_agent_set_deadline(a, ms_from_now(10000));
	assert_int_equal(kiln_agent_stat(a, "/x", false, &st), -EIO);
	e = kiln_agent_error(a);
	for (const unsigned char *c = (const unsigned char *)e; *c; c++)
		assert_true(*c >= 0x20 && *c != 0x7f && *c != 0x9b);
	assert_non_null(strstr(e, "\\x1b]0;title\\x07"));
	assert_non_null(strstr(e, "\\xc2\\x9b"));
	assert_non_null(strstr(e, "end"));
	assert_int_equal(kiln_agent_status(a), 0); /* a request error, not a broken link */
	peer_done(&p, a);
}

/* IDENTITY outside PID-1 mode is refused with a reason, and the connection
 * goes on; a bad hostname or id never leaves the client. */
static void test_identity(void **state)
{
	struct kiln_agent *a = client();
	const char *id = "sb-host1-0123456789abcdef0123456789abcdef";

	assert_int_equal(kiln_agent_identity(a, "box", id), -EPERM);
	assert_string_equal(kiln_agent_error(a), "identity: not PID 1");
	assert_int_equal(kiln_agent_status(a), 0);
	assert_int_equal(kiln_agent_ping(a), 0);
	assert_int_equal(kiln_agent_identity(a, "a.b", id), -EINVAL);
	assert_int_equal(kiln_agent_identity(a, "box", "sb-1"), -EINVAL);
	assert_int_equal(kiln_agent_identity(a, NULL, id), -EINVAL);
	assert_int_equal(kiln_agent_status(a), 0);
	assert_int_equal(kiln_agent_ping(a), 0);
	kiln_agent_free(a);
}

static void test_shutdown(void **state)
{
	struct kiln_agent *a = client();
	const char *const argv[] = { "sleep", "1000", NULL };
	struct kiln_exec_spec s = spec_of(argv, false);
	struct run r;
	uint32_t id;

	run_init(&r);
	assert_int_equal(kiln_agent_exec(a, &s, &run_ops, &r, &id), 0);
	assert_int_equal(kiln_agent_shutdown(a), 0);
	assert_int_equal(pthread_join(srv.th, NULL), 0);
	srv.running = false;
	assert_int_equal(srv.run_ret, AGENTD_SHUTDOWN);
	kiln_agent_free(a);
}

/* EXEC as a user: looked up in the agent's etc dir (a test one here). */
static void write_file(const char *dir, const char *name, const char *text)
{
	char path[160];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
}

static int run_as(struct kiln_agent *a, const char *user, const char *const *envp, struct run *r)
{
	const char *const argv[] = { "sh", "-c",
				     "id -u; id -g; sed -n 's/^Groups:\t*//p' /proc/self/status; "
				     "echo \"$HOME\"",
				     NULL };
	struct kiln_exec_spec s = spec_of(argv, false);
	uint32_t id;
	int ret;

	s.user = user;
	s.envp = envp;
	run_init(r);
	ret = kiln_agent_exec(a, &s, &run_ops, r, &id);
	if (!ret)
		assert_int_equal(kiln_agent_wait(a, id), 0);
	return ret;
}

static void test_user(void **state)
{
	struct kiln_agent *a = client();
	const char *const envp[] = { "PATH=/usr/bin:/bin", NULL };
	const char *const envh[] = { "PATH=/usr/bin:/bin", "HOME=/given", NULL };
	char path[160];
	struct run r;

	if (getuid() != 0) {
		kiln_agent_free(a);
		skip(); /* setuid needs root */
	}
	assert_int_equal(run_as(a, "agent", envp, &r), 0);
	assert_string_equal(r.out, "1000\n1000\n29 999 1000 \n/home/agent\n");
	run_free(&r);
	/* No env at all: the agent's default PATH, HOME from passwd. */
	assert_int_equal(run_as(a, "agent:staff", NULL, &r), 0);
	assert_string_equal(r.out, "1000\n50\n50 \n/home/agent\n");
	run_free(&r);
	/* HOME given wins; a uid not in passwd: gid = uid, home /. */
	assert_int_equal(run_as(a, "agent", envh, &r), 0);
	assert_non_null(strstr(r.out, "/given\n"));
	run_free(&r);
	assert_int_equal(run_as(a, "4242", envp, &r), 0);
	assert_string_equal(r.out, "4242\n4242\n4242 \n/\n");
	run_free(&r);

	/* Unknown user or group: -ESRCH, the agent says which; nothing ran. */
	assert_int_equal(run_as(a, "bob", envp, &r), -ESRCH);
	assert_non_null(strstr(kiln_agent_error(a), "no user 'bob' in the image's /etc/passwd"));
	assert_false(r.exited);
	assert_int_equal(run_as(a, "agent:nope", envp, &r), -ESRCH);
	assert_non_null(strstr(kiln_agent_error(a), "no group 'nope'"));
	assert_int_equal(run_as(a, "a:b:c", envp, &r), -EINVAL);
	assert_non_null(strstr(kiln_agent_error(a), "bad user"));

	/* A FIFO as /etc/group never blocks the agent; a directory is refused too. */
	snprintf(path, sizeof(path), "%s/group", srv.etc);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(mkfifo(path, 0644), 0);
	assert_int_equal(run_as(a, "agent", envp, &r), -ESRCH);
	assert_non_null(strstr(kiln_agent_error(a), "/etc/group is not a regular file"));
	assert_int_equal(unlink(path), 0);
	/* No group file at all: only the primary group. */
	assert_int_equal(run_as(a, "agent", envp, &r), 0);
	assert_string_equal(r.out, "1000\n1000\n1000 \n/home/agent\n");
	run_free(&r);
	assert_int_equal(kiln_agent_ping(a), 0);
	kiln_agent_free(a);
}

static int setup(void **state)
{
	struct agentd_config cfg = { .pid1 = false, .debug = getenv("KILN_DEBUG") != NULL };

	snprintf(srv.dir, sizeof(srv.dir), "/tmp/kiln-agent-XXXXXX");
	if (!mkdtemp(srv.dir))
		return -1;
	snprintf(srv.sock, sizeof(srv.sock), "%s/agent.sock", srv.dir);
	snprintf(srv.vmm, sizeof(srv.vmm), "%s/vmm.sock", srv.dir);
	snprintf(srv.etc, sizeof(srv.etc), "%s/etc", srv.dir);
	if (mkdir(srv.etc, 0755))
		return -1;
	write_file(srv.etc, "passwd",
		   "root:x:0:0:root:/root:/bin/sh\n"
		   "agent:x:1000:1000:Agent:/home/agent:/bin/sh\n");
	write_file(srv.etc, "group",
		   "root:x:0:\nagent:x:1000:\ndocker:x:999:bob,agent\naudio:x:29:agent\nstaff:x:50:\n");
	cfg.etc_dir = srv.etc;
	if (agentd_create(&cfg, &srv.d) || agentd_listen_unix(srv.d, srv.sock))
		return -1;
	if (pthread_create(&srv.th, NULL, agent_thread, NULL))
		return -1;
	srv.running = true;
	return 0;
}

static int teardown(void **state)
{
	char cmd[160];

	if (srv.running) {
		agentd_stop(srv.d);
		pthread_join(srv.th, NULL);
	}
	agentd_free(srv.d); /* kills and reaps what is left */
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", srv.dir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bootargs),
		cmocka_unit_test(test_echo),
		cmocka_unit_test(test_exit_codes),
		cmocka_unit_test(test_user),
		cmocka_unit_test(test_stdin_cat),
		cmocka_unit_test(test_pty),
		cmocka_unit_test(test_pty_raw),
		cmocka_unit_test(test_large_output),
		cmocka_unit_test(test_concurrent),
		cmocka_unit_test(test_files),
		cmocka_unit_test(test_backpressure),
		cmocka_unit_test(test_small_txbuf),
		cmocka_unit_test(test_disconnect_kills),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_vsock_uds),
		cmocka_unit_test(test_vsock_uds_bad),
		cmocka_unit_test(test_vsock_uds_behind),
		cmocka_unit_test(test_deadline),
		cmocka_unit_test(test_cancel),
		cmocka_unit_test(test_get_cap),
		cmocka_unit_test(test_error_text),
		cmocka_unit_test(test_identity),
		cmocka_unit_test(test_shutdown),
	};

	alarm(300); /* a hang is a failure, not a stuck test run */
	return cmocka_run_group_tests_name("agent", tests, setup, teardown);
}
