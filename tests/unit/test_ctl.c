/*
 * ctl_check (src/common/ctl.h): the VMM's control messages. Exactly one
 * well-formed 160-byte message passes; every other size, a wrong magic, a
 * non-zero reserved field, an unknown type or an unterminated text is
 * -EBADMSG with a reason, and nothing is copied out. ctl_recv / ctl_send_fds
 * over a real SOCK_SEQPACKET pair: fds arrive with their message, at most
 * two; a bad message or too many fds close every fd that came with it.
 */
#include <errno.h>
#include <stdbool.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "ctl.h"

static void test_good(void **state)
{
	static const enum ctl_type types[] = { CTL_PAUSE, CTL_RESUME, CTL_STATUS, CTL_SNAPSHOT,
					       CTL_REPLY, CTL_EV_BOOTED, CTL_EV_EXIT };
	struct ctl_msg m, out;
	const char *why = "x";

	(void)state;
	for (unsigned i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		ctl_init(&m, types[i], 42, -5, "why");
		m.a = 7;
		memset(&out, 0xaa, sizeof(out));
		assert_int_equal(ctl_check(&m, sizeof(m), &out, &why), 0);
		assert_null(why);
		assert_int_equal(out.type, types[i]);
		assert_int_equal(out.id, 42);
		assert_int_equal(out.result, -5);
		assert_int_equal(out.a, 7);
		assert_string_equal(out.text, "why");
	}
	/* A text as long as it may be is cut, and still terminated. */
	char long_text[300];

	memset(long_text, 'z', sizeof(long_text) - 1);
	long_text[sizeof(long_text) - 1] = 0;
	ctl_init(&m, CTL_EV_EXIT, 0, 0, long_text);
	assert_int_equal(strlen(m.text), CTL_TEXT_MAX - 1);
	assert_int_equal(ctl_check(&m, sizeof(m), &out, &why), 0);
}

static void bad(const void *buf, size_t len)
{
	struct ctl_msg out;
	const char *why = NULL;

	memset(&out, 0x55, sizeof(out));
	assert_int_equal(ctl_check(buf, len, &out, &why), -EBADMSG);
	assert_non_null(why);
	assert_int_equal(out.magic, 0x55555555u); /* untouched */
}

static void test_bad(void **state)
{
	uint8_t buf[2 * sizeof(struct ctl_msg)];
	struct ctl_msg m;

	(void)state;
	ctl_init(&m, CTL_STATUS, 1, 0, NULL);
	memcpy(buf, &m, sizeof(m));
	memset(buf + sizeof(m), 0, sizeof(m));
	for (size_t len = 0; len < sizeof(buf); len++)
		if (len != sizeof(m))
			bad(buf, len);
	m.magic ^= 1;
	bad(&m, sizeof(m));
	ctl_init(&m, CTL_STATUS, 1, 0, NULL);
	m.reserved = 1;
	bad(&m, sizeof(m));
	for (unsigned t = 0; t < 0x10000; t++) {
		if (t == CTL_PAUSE || t == CTL_RESUME || t == CTL_STATUS || t == CTL_SNAPSHOT ||
		    t == CTL_REPLY ||
		    t == CTL_EV_BOOTED || t == CTL_EV_EXIT)
			continue;
		ctl_init(&m, CTL_STATUS, 1, 0, NULL);
		m.type = (uint16_t)t;
		bad(&m, sizeof(m));
	}
	ctl_init(&m, CTL_REPLY, 1, 0, NULL);
	memset(m.text, 'a', sizeof(m.text));
	bad(&m, sizeof(m));
}

static void pair(int sv[2])
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
}

/* An fd's identity, to see the same file arrive. */
static ino_t ino(int fd)
{
	struct stat st;

	assert_int_equal(fstat(fd, &st), 0);
	return st.st_ino;
}

static bool is_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

static void test_recv_fds(void **state)
{
	int sv[2], p[2], fds[CTL_MAX_FDS] = { -1, -1 };
	struct ctl_msg m, out;
	const char *why = NULL;
	unsigned n = 9;

	(void)state;
	pair(sv);
	assert_int_equal(pipe(p), 0);
	ctl_init(&m, CTL_SNAPSHOT, 5, 0, NULL);
	assert_int_equal(ctl_send_fds(sv[0], &m, p, 2), 0);
	assert_int_equal(ctl_recv(sv[1], &out, fds, &n, &why), 0);
	assert_int_equal(n, 2);
	assert_int_equal(out.type, CTL_SNAPSHOT);
	assert_int_equal(out.id, 5);
	assert_int_equal(ino(fds[0]), ino(p[0]));
	assert_int_equal(ino(fds[1]), ino(p[1]));
	assert_true(fcntl(fds[0], F_GETFD) & FD_CLOEXEC);
	close(fds[0]);
	close(fds[1]);
	/* No fds. */
	ctl_init(&m, CTL_STATUS, 6, 0, NULL);
	assert_int_equal(ctl_send_fds(sv[0], &m, NULL, 0), 0);
	assert_int_equal(ctl_recv(sv[1], &out, fds, &n, &why), 0);
	assert_int_equal(n, 0);
	assert_int_equal(ctl_send_fds(sv[0], &m, p, 3), -EINVAL);
	/* Nothing to read; then the end of the channel. */
	assert_int_equal(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
	assert_int_equal(ctl_recv(sv[1], &out, fds, &n, &why), -EAGAIN);
	close(sv[0]);
	assert_int_equal(ctl_recv(sv[1], &out, fds, &n, &why), -EPIPE);
	close(sv[1]);
	close(p[0]);
	close(p[1]);
}

/* Raw sendmsg: a message of len bytes with nfds copies of fd. */
static void send_raw(int s, const void *buf, size_t len, int fd, unsigned nfds)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(4 * sizeof(int))];
	} c;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr h = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = c.buf,
			    .msg_controllen = CMSG_SPACE(nfds * sizeof(int)) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&h);

	memset(&c, 0, sizeof(c));
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
	for (unsigned i = 0; i < nfds; i++)
		memcpy(CMSG_DATA(cm) + i * sizeof(int), &fd, sizeof(int));
	assert_int_equal(sendmsg(s, &h, 0), (ssize_t)len);
}

/* Bad messages and too many fds: refused, and no fd is left open. */
static void test_recv_refused(void **state)
{
	int sv[2], p[2], fds[CTL_MAX_FDS];
	struct ctl_msg m, out;
	uint8_t big[sizeof(m) + 8];
	const char *why;
	unsigned n;
	int probe;

	(void)state;
	pair(sv);
	assert_int_equal(pipe(p), 0);
	ctl_init(&m, CTL_SNAPSHOT, 1, 0, NULL);
	/* The lowest free fd now: a leaked fd would take it. */
	probe = dup(p[0]);
	close(probe);
	send_raw(sv[0], &m, sizeof(m), p[0], 3);
	assert_int_equal(ctl_recv(sv[1], &out, fds, &n, &why), -EBADMSG);
	assert_string_equal(why, "too many fds with a control message (at most 2)");
	assert_int_equal(n, 0);
	assert_false(is_open(probe));
	m.magic ^= 1;
	send_raw(sv[0], &m, sizeof(m), p[0], 2);
	assert_int_equal(ctl_recv(sv[1], &out, fds, &n, &why), -EBADMSG);
	assert_string_equal(why, "bad magic");
	assert_false(is_open(probe));
	memset(big, 0, sizeof(big));
	send_raw(sv[0], big, sizeof(big), p[0], 1);
	assert_int_equal(ctl_recv(sv[1], &out, fds, &n, &why), -EBADMSG);
	assert_non_null(why);
	assert_false(is_open(probe));
	send_raw(sv[0], big, 10, p[0], 2);
	assert_int_equal(ctl_recv(sv[1], &out, fds, &n, &why), -EBADMSG);
	assert_false(is_open(probe));
	close(sv[0]);
	close(sv[1]);
	close(p[0]);
	close(p[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good),
		cmocka_unit_test(test_bad),
		cmocka_unit_test(test_recv_fds),
		cmocka_unit_test(test_recv_refused),
	};

	return cmocka_run_group_tests_name("ctl", tests, NULL, NULL);
}
