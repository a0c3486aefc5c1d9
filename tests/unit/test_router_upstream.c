/*
 * kiln-router's upstream HTTP client (src/router/upstream.c) against
 * hostile answers over a socketpair: framing it must refuse (duplicate or
 * non-decimal Content-Length, both framings, interim statuses, control
 * bytes, too many headers, chunk sizes past 15 hex digits, a chunk without
 * its CRLF, endless trailers), a slow drip that must end at the deadline,
 * and waits that end when the client hangs up or the router stops. Plus the
 * proxy's error answer for a path with non-UTF-8 bytes.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "router/proxy.h"
#include "router/upstream.h"

/* A connection whose upstream has sent text (and closed, if closed). */
static struct up_conn *answer(const char *text, size_t len, bool closed, int timeout_ms,
			      int *peer)
{
	struct up_conn *c = NULL;
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(write(sv[1], text, len), (ssize_t)len);
	if (closed)
		shutdown(sv[1], SHUT_WR);
	assert_int_equal(up_attach(sv[0], timeout_ms, &c), 0);
	*peer = sv[1];
	return c;
}

/* up_read_head's result on a whole (closed) answer. */
static int head_of(const char *text)
{
	unsigned status = 0;
	int peer, r;
	struct up_conn *c = answer(text, strlen(text), true, 5000, &peer);

	r = up_read_head(c, &status);
	if (r)
		assert_int_equal(status, 0);
	up_close(c);
	close(peer);
	return r;
}

/* The whole decoded body, or -errno. */
static int body_of(const char *text, char *out, size_t len)
{
	unsigned status;
	size_t off = 0;
	ssize_t n;
	int peer;
	struct up_conn *c = answer(text, strlen(text), true, 5000, &peer);
	int r = up_read_head(c, &status);

	while (!r && (n = up_read_body(c, out + off, len - 1 - off)) != 0) {
		if (n < 0)
			r = (int)n;
		else
			off += (size_t)n;
	}
	out[off] = 0;
	up_close(c);
	close(peer);
	return r;
}

static void test_heads(void **state)
{
	char many[8192];
	size_t off;

	(void)state;
	assert_int_equal(head_of("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), 0);
	assert_int_equal(head_of("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n"), 0);
	assert_int_equal(head_of("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n"
				 "abc"), 0);
	/* Framing two ways at once, or unreadable. */
	assert_int_equal(head_of("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"
				 "abcd"), -EPROTO);
	assert_int_equal(head_of("HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n"), -EPROTO);
	assert_int_equal(head_of("HTTP/1.1 200 OK\r\nContent-Length: 010\r\n\r\n"), 0);
	assert_int_equal(head_of("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"), -EPROTO);
	assert_int_equal(head_of("HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n"),
			 -EPROTO);
	assert_int_equal(head_of("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n"),
			 -EPROTO);
	assert_int_equal(head_of("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
				 "Transfer-Encoding: chunked\r\n\r\n"), -EPROTO);
	assert_int_equal(head_of("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
				 "Transfer-Encoding: chunked\r\n\r\n"), -EPROTO);
	assert_int_equal(head_of("HTTP/1.1 200 OK\r\nContent-Length : 3\r\n\r\nabc"), -EPROTO);
	/* Statuses: never an interim one, always three digits. */
	assert_int_equal(head_of("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"), -EPROTO);
	assert_int_equal(head_of("HTTP/1.1 101 Switching\r\nUpgrade: x\r\n\r\n"), -EPROTO);
	assert_int_equal(head_of("HTTP/1.1 +20 OK\r\n\r\n"), -EPROTO);
	assert_int_equal(head_of("HTTP/1.1 2000 OK\r\n\r\n"), -EPROTO);
	assert_int_equal(head_of("HTTP/1.x 200 OK\r\n\r\n"), -EPROTO);
	assert_int_equal(head_of("HTTP/1.1 20"), -ECONNRESET);
	/* Control bytes: a bare LF or CR in a value, a NUL. */
	assert_int_equal(head_of("HTTP/1.1 200 OK\r\nX-Kiln-Host: a\nSet-Cookie: b\r\n\r\n"),
			 -EPROTO);
	assert_int_equal(head_of("HTTP/1.1 200 OK\r\nX-Kiln-Host: a\rb\r\n\r\n"), -EPROTO);
	assert_int_equal(head_of("HTTP/1.1 200 OK\r\nX-Kiln-Host: a\x01\r\n\r\n"), -EPROTO);
	/* 64 headers, then the framing one: refused, not dropped. */
	off = (size_t)snprintf(many, sizeof(many), "HTTP/1.1 200 OK\r\n");
	for (int i = 0; i < 64; i++)
		off += (size_t)snprintf(many + off, sizeof(many) - off, "X-%d: y\r\n", i);
	snprintf(many + off, sizeof(many) - off, "Content-Length: 2\r\n\r\nab");
	assert_int_equal(head_of(many), -EPROTO);
}

static void test_chunks(void **state)
{
	char body[256], trailers[4096];
	size_t off;

	(void)state;
	assert_int_equal(body_of("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
				 "5;a=b\r\nhello\r\n1\r\n!\r\n0\r\nX: y\r\n\r\n", body, sizeof(body)),
			 0);
	assert_string_equal(body, "hello!");
	assert_int_equal(body_of("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef", body,
				 sizeof(body)), 0);
	assert_string_equal(body, "abc");
	assert_int_equal(body_of("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc", body,
				 sizeof(body)), -ECONNRESET);
	assert_int_equal(body_of("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
				 "1000000000000000\r\nab", body, sizeof(body)), -EPROTO);
	assert_int_equal(body_of("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
				 "2\r\nabX\r\n0\r\n\r\n", body, sizeof(body)), -EPROTO);
	assert_int_equal(body_of("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
				 "-2\r\nab\r\n0\r\n\r\n", body, sizeof(body)), -EPROTO);
	assert_int_equal(body_of("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
				 "2\r\nab\r\n", body, sizeof(body)), -ECONNRESET);
	off = (size_t)snprintf(trailers, sizeof(trailers),
			       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n");
	for (int i = 0; i < 100; i++)
		off += (size_t)snprintf(trailers + off, sizeof(trailers) - off, "T: %d\r\n", i);
	snprintf(trailers + off, sizeof(trailers) - off, "\r\n");
	assert_int_equal(body_of(trailers, body, sizeof(body)), -EPROTO);
}

/* An upstream that sends one byte of a head that never ends every 20 ms
 * for at most 30 s, then closes. */
static void *drip(void *arg)
{
	int fd = *(int *)arg;

	for (int i = 0; i < 1500; i++) {
		if (send(fd, i ? "x" : "HTTP/1.1 200 OK\r\nX: ", i ? 1 : 20, MSG_NOSIGNAL) < 0)
			break;
		usleep(20000);
	}
	shutdown(fd, SHUT_WR);
	return NULL;
}

static void test_drip(void **state)
{
	struct up_conn *c;
	pthread_t t;
	unsigned status;
	char *resp = NULL;
	size_t len = 0;
	int peer;

	(void)state;
	/* The head: one deadline in all, however often a byte comes. */
	c = answer("", 0, false, 500, &peer);
	assert_int_equal(pthread_create(&t, NULL, drip, &peer), 0);
	assert_int_equal(up_read_head(c, &status), -ETIMEDOUT);
	up_close(c);	/* the dripper's writes fail from here */
	pthread_join(t, NULL);
	close(peer);
	/* A whole exchange likewise. */
	c = answer("", 0, false, 500, &peer);
	assert_int_equal(pthread_create(&t, NULL, drip, &peer), 0);
	assert_int_equal(up_exchange_on(c, "GET", "/v1/capacity", NULL, NULL, 0, &status, &resp,
					&len, 1 << 20, NULL, 0), -ETIMEDOUT);
	assert_null(resp);
	up_close(c);
	pthread_join(t, NULL);
	close(peer);
}

/* A stream (no timeout) stuck in a chunk-size line: the router's stop and
 * the client's hang-up end the wait. */
static void test_abort(void **state)
{
	static const char head[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5";
	struct up_conn *c;
	unsigned status;
	char buf[16];
	int peer, stop[2], client[2];

	(void)state;
	assert_int_equal(pipe(stop), 0);
	c = answer(head, sizeof(head) - 1, false, 0, &peer);
	up_set_abort(c, -1, stop[0]);
	assert_int_equal(up_read_head(c, &status), 0);
	assert_int_equal(write(stop[1], "x", 1), 1);
	assert_int_equal(up_read_body(c, buf, sizeof(buf)), -ECONNABORTED);
	up_close(c);
	close(peer);

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, client), 0);
	c = answer(head, sizeof(head) - 1, false, 0, &peer);
	up_set_abort(c, client[0], -1);
	assert_int_equal(up_read_head(c, &status), 0);
	close(client[1]);
	assert_int_equal(up_read_body(c, buf, sizeof(buf)), -ECONNABORTED);
	up_close(c);
	close(peer);
	close(client[0]);
	close(stop[0]);
	close(stop[1]);
}

/* A unix socket whose backlog is full: EAGAIN, not a socket that looks
 * connected and fails later (a create then tries the next host). */
static void test_full_backlog(void **state)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char dir[] = "/tmp/kiln-test-up.XXXXXX", url[128];
	struct up_conn *c = NULL;
	struct up_addr a;
	int lfd, fds[16], nf;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/s", dir);
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lfd, 0), 0);
	for (nf = 0; nf < 16; nf++) {
		fds[nf] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (connect(fds[nf], (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			assert_int_equal(errno, EAGAIN);
			close(fds[nf]);
			break;
		}
	}
	assert_true(nf < 16);
	snprintf(url, sizeof(url), "unix:%s", sa.sun_path);
	assert_int_equal(hosts_url_parse(url, &a), 0);
	assert_int_equal(up_open(&a, 1000, &c), -EAGAIN);
	assert_null(c);
	for (int i = 0; i < nf; i++)
		close(fds[i]);
	close(lfd);
	unlink(sa.sun_path);
	rmdir(dir);
}

/* The proxy's 404 for a path whose decoded bytes are not UTF-8: an answer,
 * not a dropped connection (no fleet is needed to refuse it). */
static void test_proxy_error_bytes(void **state)
{
	static const char *const paths[] = { "/v1/nope%ff", "/v1/sandboxes/%c3%28" };
	struct proxy_config pc = { .max_connections = 4, .max_upload = 1024, .stop_fd = -1 };
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	struct proxy *p = NULL;
	char err[128];
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	(void)state;
	assert_true(lfd >= 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lfd, 4), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &sl), 0);
	assert_int_equal(proxy_start(&pc, lfd, &p, err, sizeof(err)), 0);
	for (size_t i = 0; i < 2; i++) {
		char req[256], resp[2048];
		size_t off = 0;
		ssize_t n;
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

		assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
		n = snprintf(req, sizeof(req),
			     "GET %s HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n", paths[i]);
		assert_int_equal(write(fd, req, (size_t)n), n);
		while (off < sizeof(resp) - 1 && (n = read(fd, resp + off, sizeof(resp) - 1 - off)) > 0)
			off += (size_t)n;
		resp[off] = 0;
		close(fd);
		assert_true(!strncmp(resp, "HTTP/1.1 404", 12));
		assert_non_null(strstr(resp, "\"not_found\""));
	}
	proxy_stop(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_heads),
		cmocka_unit_test(test_chunks),
		cmocka_unit_test(test_drip),
		cmocka_unit_test(test_abort),
		cmocka_unit_test(test_full_backlog),
		cmocka_unit_test(test_proxy_error_bytes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
