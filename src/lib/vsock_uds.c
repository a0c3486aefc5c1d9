/*
 * Host side of the VMM's vsock-over-Unix-socket multiplexer (see
 * vsock_uds.h). The reply is peeked at and only its line taken, so that
 * nothing of the guest's stream that follows it (the answer to early bytes
 * may be right behind it) is consumed here; it is at most REPLY_MAX bytes.
 */
#include "lib/vsock_uds.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define REPLY_MAX  32 /* "OK 4294967295\n" is 14 */
#define BACKOFF_MS 100

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int left_ms(long long deadline)
{
	long long left = deadline - now_ms();

	return left > 0 ? (int)(left > 1000000 ? 1000000 : left) : 0;
}

/* "OK <digits>\n", nothing else. */
static bool reply_ok(const char *s, size_t n)
{
	size_t i;

	if (n < 5 || memcmp(s, "OK ", 3) || s[n - 1] != '\n')
		return false;
	for (i = 3; i < n - 1; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return true;
}

/* Takes what the socket has of the reply line, never a byte past its '\n'.
 * 1: the line is complete; 0: more to come; -EAGAIN: closed. */
static int take_line(int fd, char *line, size_t *n)
{
	char peek[REPLY_MAX];
	size_t want = REPLY_MAX - *n;
	ssize_t r = recv(fd, peek, want, MSG_PEEK | MSG_DONTWAIT);
	char *nl;

	if (r < 0)
		return errno == EINTR || errno == EAGAIN ? 0 : -errno;
	if (r == 0)
		return -EAGAIN;
	nl = memchr(peek, '\n', (size_t)r);
	if (nl)
		r = nl - peek + 1;
	/* Everything before a '\n' belongs to the line. */
	r = recv(fd, line + *n, (size_t)r, MSG_DONTWAIT);
	if (r < 0)
		return errno == EINTR || errno == EAGAIN ? 0 : -errno;
	if (r == 0)
		return -EAGAIN;
	*n += (size_t)r;
	return line[*n - 1] == '\n';
}

/* One attempt: 0, -EAGAIN (worth retrying, reason in *why) or another error. */
static int attempt(const char *path, uint32_t port, const void *early, size_t early_len,
		   long long deadline, int *out, int *why)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char line[REPLY_MAX];
	struct iovec iov[2] = { { line, 0 }, { (void *)early, early_len } };
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = early_len ? 2 : 1 };
	size_t n = 0;
	ssize_t sent;
	int fd, ret;

	*out = -1;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		/* The VMM is not up yet (or is going away). */
		*why = -errno;
		ret = (errno == ENOENT || errno == ECONNREFUSED || errno == EAGAIN) ? -EAGAIN
										      : -errno;
		goto out;
	}
	iov[0].iov_len = (size_t)snprintf(line, sizeof(line), "CONNECT %u\n", port);
	/* A fresh stream socket takes a greeting's few hundred bytes whole. */
	sent = sendmsg(fd, &msg, MSG_NOSIGNAL);
	if (sent != (ssize_t)(iov[0].iov_len + early_len)) {
		*why = -ECONNREFUSED;
		ret = -EAGAIN;
		goto out;
	}
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int p = poll(&pfd, 1, left_ms(deadline));

		if (p < 0 && errno == EINTR)
			continue;
		if (p < 0) {
			ret = -errno;
			goto out;
		}
		if (p == 0) {
			ret = -ETIMEDOUT;
			goto out;
		}
		ret = take_line(fd, line, &n);
		if (ret == -EAGAIN || ret == -ECONNRESET || ret == -EPIPE) {
			/* Closed before answering: nothing listens on the port (yet). */
			*why = -ECONNREFUSED;
			ret = -EAGAIN;
			goto out;
		}
		if (ret < 0)
			goto out;
		if (ret == 1)
			break;
		if (n == sizeof(line)) {
			ret = -EPROTO;
			goto out;
		}
	}
	if (!reply_ok(line, n)) {
		ret = -EPROTO;
		goto out;
	}
	*out = fd;
	fd = -1;
	ret = 0;
out:
	if (fd >= 0)
		close(fd);
	return ret;
}

int vsock_uds_connect(const char *path, uint32_t port, const void *early, size_t early_len,
		      int timeout_ms, int *fd)
{
	long long deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
	int why = -ETIMEDOUT, ret, backoff = 5;

	*fd = -1;
	if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
		return -ENAMETOOLONG;
	for (;;) {
		ret = attempt(path, port, early, early_len, deadline, fd, &why);
		if (ret == -ETIMEDOUT && why != -ETIMEDOUT)
			ret = why; /* refused before, then out of time: say why */
		if (ret != -EAGAIN)
			break;
		ret = why;
		if (!left_ms(deadline))
			break;
		{
			int ms = backoff < left_ms(deadline) ? backoff : left_ms(deadline);
			struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

			nanosleep(&ts, NULL);
		}
		backoff = backoff * 2 < BACKOFF_MS ? backoff * 2 : BACKOFF_MS;
	}
	return ret;
}
