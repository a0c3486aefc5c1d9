/*
 * libkiln's agent client (src/lib/agent.c) against a hostile agent: the
 * fuzzer writes the agent's side of the connection (every frame, whatever
 * it claims) and a short script of client calls runs against it.
 *
 * Input: byte 0 = script length L, then L script bytes (calls and their
 * arguments), then the agent's byte stream, written to the peer socket before
 * the calls; the stream then ends (EOF), so no call can wait for ever.
 *
 * Properties: every call returns 0, a count or a negative errno; callbacks
 * only ever see ids the client handed out, output chunks of 1..1 MiB
 * adding up to no more than the stream, exit codes the protocol allows, at
 * most one exit per process, directory names that are single components;
 * a download writes exactly the bytes it reports; the stdin room never
 * exceeds the largest window; the agent's error text stays within its cap.
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz.h"
#include "lib/agent.h"
#include "proto.h"

#define MAX_IDS 64

struct state {
	size_t stream_len;
	uint64_t out_bytes;
	uint32_t ids[MAX_IDS];
	bool exited[MAX_IDS];
	unsigned nids;
	bool in_exec;		/* inside kiln_agent_exec: its process may speak already */
	bool new_seen;
	uint32_t new_id;
};

/* The id's index; during an exec call one new id (that exec's) is learnt. */
static int known(struct state *s, uint32_t id)
{
	for (unsigned i = 0; i < s->nids; i++)
		if (s->ids[i] == id)
			return (int)i;
	if (!s->in_exec || s->nids == MAX_IDS)
		return -1;
	FZ_CHECK(!s->new_seen || s->new_id == id, "two new exec ids %u, %u in one exec call",
		 s->new_id, id);
	s->new_seen = true;
	s->new_id = id;
	s->ids[s->nids] = id;
	return (int)s->nids++;
}

static int on_output(void *ctx, uint32_t id, int stream, const void *buf, size_t len)
{
	struct state *s = ctx;
	int i = known(s, id);

	FZ_CHECK(i >= 0, "output for unknown exec id %u", id);
	FZ_CHECK(!s->exited[i], "output for exec %u after its exit", id);
	FZ_CHECK(stream == 1 || stream == 2, "output stream %d", stream);
	FZ_CHECK(len >= 1 && len <= PROTO_MAX_PAYLOAD, "output chunk of %zu", len);
	s->out_bytes += len;
	FZ_CHECK(s->out_bytes <= s->stream_len, "%llu output bytes from a %zu-byte stream",
		 (unsigned long long)s->out_bytes, s->stream_len);
	(void)((const volatile uint8_t *)buf)[len - 1];
	return 0;
}

static void on_exit_cb(void *ctx, uint32_t id, const struct kiln_exit *e)
{
	struct state *s = ctx;
	int i = known(s, id);

	FZ_CHECK(i >= 0, "exit for unknown exec id %u", id);
	FZ_CHECK(!s->exited[i], "second exit for exec %u", id);
	s->exited[i] = true;
	FZ_CHECK((e->signal == 0 && e->code >= 0 && e->code <= 255) ||
			 (e->code == -1 && e->signal >= 1 && e->signal <= PROTO_SIGNO_MAX),
		 "exit code %d signal %d", e->code, e->signal);
	FZ_CHECK(e->oom_kills >= -1, "oom kills %lld", e->oom_kills);
}

static int on_dirent(void *ctx, const struct kiln_dirent *e)
{
	size_t n = strlen(e->name);

	FZ_CHECK(n >= 1 && n <= PROTO_NAME_MAX && !strchr(e->name, '/') &&
			 strcmp(e->name, ".") && strcmp(e->name, ".."),
		 "dirent '%s'", e->name);
	return *(const int *)ctx;
}

static void check_ret(long r, const char *call)
{
	FZ_CHECK(r <= 0 && r > -4096, "%s returned %ld", call, r);
}

static int memfd_with(size_t n)
{
	static const uint8_t chunk[4096];
	int fd = memfd_create("fuzz", MFD_CLOEXEC);

	FZ_CHECK(fd >= 0, "memfd_create");
	for (size_t left = n; left;) {
		size_t k = left < sizeof(chunk) ? left : sizeof(chunk);

		FZ_CHECK(write(fd, chunk, k) == (ssize_t)k, "memfd write");
		left -= k;
	}
	lseek(fd, 0, SEEK_SET);
	return fd;
}

static void run_script(struct kiln_agent *a, struct state *s, struct fz *script)
{
	static const char *const argv[] = { "sh", "-c", "true", NULL };
	static const struct kiln_exec_ops ops = { .output = on_output, .exit = on_exit_cb };
	static const uint8_t data[8192];
	uint32_t last = 0, caps;
	struct kiln_stat st;
	uint64_t bytes;
	long r;
	int fd, stop;

	while (script->n) {
		uint8_t op = fz_u8(script), arg = fz_u8(script);

		switch (op % 16) {
		case 0:
			/* HELLO alone, or a greeting's: IDENTITY's answer behind it. */
			if (arg & 1)
				check_ret(kiln_agent_greeted(a, arg & 2, &caps), "greeted");
			else
				check_ret(kiln_agent_hello(a, &caps), "hello");
			break;
		case 1:
			check_ret(kiln_agent_ping(a), "ping");
			break;
		case 2: {
			struct kiln_exec_spec spec = { .argv = argv, .cwd = arg & 2 ? "/tmp" : NULL,
						       .uid = KILN_ID_KEEP, .gid = KILN_ID_KEEP,
						       .stdin = arg & 1 };

			s->in_exec = true;
			s->new_seen = false;
			r = kiln_agent_exec(a, &spec, &ops, s, &last);
			s->in_exec = false;
			check_ret(r, "exec");
			FZ_CHECK(r || !s->new_seen || s->new_id == last,
				 "exec %u returned, callbacks came for %u", last, s->new_id);
			if (!r && known(s, last) < 0 && s->nids < MAX_IDS)
				s->ids[s->nids++] = last;
			break;
		}
		case 3:
			r = kiln_agent_stdin_write(a, last, data, (size_t)arg * 32);
			FZ_CHECK(r <= (long)arg * 32 && r > -4096, "stdin_write returned %ld", r);
			break;
		case 4:
			check_ret(kiln_agent_stdin_close(a, last), "stdin_close");
			break;
		case 5:
			check_ret(kiln_agent_signal(a, last, 1 + arg % PROTO_SIGNO_MAX, arg & 0x80),
				  "signal");
			break;
		case 6:
			check_ret(kiln_agent_poll(a, 0), "poll");
			break;
		case 7:
			check_ret(kiln_agent_wait(a, last), "wait");
			break;
		case 8:
			fd = memfd_with((size_t)arg * 97);
			r = kiln_agent_put(a, fd, "/tmp/f", NULL, &bytes);
			check_ret(r, "put");
			close(fd);
			break;
		case 9: {
			/* A cap from the input: the client must never write past it. */
			uint64_t max = (uint64_t)arg * 61;

			fd = memfd_with(0);
			bytes = 0;
			r = kiln_agent_get(a, "/tmp/f", fd, max, &bytes);
			check_ret(r, "get");
			FZ_CHECK(bytes <= s->stream_len, "get: %llu bytes from a %zu-byte stream",
				 (unsigned long long)bytes, s->stream_len);
			FZ_CHECK(bytes <= max && lseek(fd, 0, SEEK_END) <= (off_t)max,
				 "get: %llu bytes past the %llu cap", (unsigned long long)bytes,
				 (unsigned long long)max);
			FZ_CHECK(lseek(fd, 0, SEEK_END) == (off_t)bytes || r,
				 "get wrote %lld bytes, reported %llu",
				 (long long)lseek(fd, 0, SEEK_END), (unsigned long long)bytes);
			close(fd);
			break;
		}
		case 10:
			check_ret(kiln_agent_stat(a, "/", arg & 1, &st), "stat");
			break;
		case 11:
			stop = arg & 1 ? -EINTR : 0;
			check_ret(kiln_agent_list(a, "/", on_dirent, &stop), "list");
			break;
		case 12:
			check_ret(kiln_agent_mkdir(a, "/tmp/d", 0755, arg & 1), "mkdir");
			break;
		case 13:
			check_ret(kiln_agent_remove(a, "/tmp/d", arg & 1), "remove");
			break;
		case 14:
			check_ret(kiln_agent_shutdown(a), "shutdown");
			break;
		default:
			FZ_CHECK(kiln_agent_stdin_room(a, last) <= PROTO_MAX_PAYLOAD, "stdin room");
			break;
		}
		FZ_CHECK(strnlen(kiln_agent_error(a), PROTO_MSG_MAX + 1) <= PROTO_MSG_MAX,
			 "error text over its cap");
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz in = { data, size }, script;
	struct state s = { 0 };
	struct kiln_agent *a = NULL;
	const uint8_t *stream;
	int sv[2], buf = 1 << 20;

	script.n = fz_take(&in, fz_u8(&in), &script.p);
	s.stream_len = fz_take(&in, in.n, &stream);
	FZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
	setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
	setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
	FZ_CHECK(write(sv[1], stream, s.stream_len) == (ssize_t)s.stream_len || !s.stream_len,
		 "stream write");
	shutdown(sv[1], SHUT_WR);
	FZ_CHECK(kiln_agent_create(sv[0], &a) == 0, "kiln_agent_create");
	kiln_agent_set_timeout(a, 1000);
	run_script(a, &s, &script);
	kiln_agent_free(a);
	close(sv[1]);
	return 0;
}
