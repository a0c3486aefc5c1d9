/*
 * kiln-router's placement retries (src/router/proxy.c h_create) against two
 * fake kilnds on unix sockets: a host that cannot be reached is skipped for
 * the next one; a host that took the create and then says nothing (past
 * the create's timeout) or hangs up is a 502, and the create is never sent
 * to a second host (it may be under way on the first).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "router/fleet.h"
#include "router/proxy.h"

enum mode { M_CREATE, M_SILENT, M_HANGUP, M_NO_TEMPLATE };

struct fake {
	const char *id;
	unsigned slots;
	enum mode mode;
	char path[108];
	int lfd, stop[2];
	int held[8];		/* M_SILENT: connections kept open, unanswered */
	unsigned nheld;
	atomic_uint posts, deletes;
	pthread_t t;
};

static void answer(int fd, const char *status, const char *host, const char *body)
{
	char buf[1024];
	int n = snprintf(buf, sizeof(buf),
			 "HTTP/1.1 %s\r\nContent-Type: application/json\r\nX-Kiln-Host: %s\r\n"
			 "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
			 status, host, strlen(body), body);

	if (write(fd, buf, (size_t)n) != n)
		fprintf(stderr, "fake kilnd: short write\n");
}

/* One request: its head and its Content-Length body. */
static void serve(struct fake *f, int fd)
{
	char req[8192], body[512], *end, *cl;
	size_t len = 0, want = 0;
	ssize_t n;

	while (len < sizeof(req) - 1 && (n = read(fd, req + len, sizeof(req) - 1 - len)) > 0) {
		len += (size_t)n;
		req[len] = 0;
		end = strstr(req, "\r\n\r\n");
		if (!end)
			continue;
		cl = strcasestr(req, "Content-Length: ");
		want = (size_t)(end + 4 - req) + (cl ? strtoul(cl + 16, NULL, 10) : 0);
		if (len >= want)
			break;
	}
	if (!strncmp(req, "GET /v1/capacity ", 17)) {
		snprintf(body, sizeof(body),
			 "{\"host_id\":\"%s\",\"slots\":%u,\"used\":0,\"starting\":0,"
			 "\"free_cpus\":8,\"free_memory_mib\":8192,\"draining\":false}",
			 f->id, f->slots);
		answer(fd, "200 OK", f->id, body);
	} else if (!strncmp(req, "POST /v1/sandboxes ", 19)) {
		atomic_fetch_add(&f->posts, 1);
		if (f->mode == M_SILENT && f->nheld < 8) {
			f->held[f->nheld++] = fd;
			return;
		}
		if (f->mode == M_NO_TEMPLATE)
			answer(fd, "404 Not Found", f->id,
			       "{\"error\":{\"code\":\"template_not_found\",\"message\":\"no\"}}");
		if (f->mode == M_CREATE) {
			snprintf(body, sizeof(body), "{\"id\":\"sb-%s-0123456789abcdef0123456789abcdef\"}",
				 f->id);
			answer(fd, "201 Created", f->id, body);
		}
	} else if (!strncmp(req, "DELETE /v1/sandboxes/sb-", 24)) {
		atomic_fetch_add(&f->deletes, 1);
		answer(fd, "200 OK", f->id, "{}");
		/* The sandbox it held is gone: a template create is answered next. */
		f->mode = M_NO_TEMPLATE;
	} else {
		answer(fd, "404 Not Found", f->id, "{}");
	}
	close(fd);
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;

	for (;;) {
		struct pollfd p[2] = { { .fd = f->lfd, .events = POLLIN },
				       { .fd = f->stop[0], .events = POLLIN } };
		int fd;

		if (poll(p, 2, -1) < 0 || p[1].revents)
			break;
		fd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0)
			serve(f, fd);
	}
	return NULL;
}

static void fake_start(struct fake *f, const char *dir)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	snprintf(f->path, sizeof(f->path), "%s/%s.sock", dir, f->id);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", f->path);
	f->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(f->lfd >= 0);
	assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(f->lfd, 8), 0);
	assert_int_equal(pipe(f->stop), 0);
	assert_int_equal(pthread_create(&f->t, NULL, fake_main, f), 0);
}

/* Stops the thread, closes its socket (connects fail from here). */
static void fake_stop(struct fake *f)
{
	if (f->lfd < 0)
		return;
	assert_int_equal(write(f->stop[1], "x", 1), 1);
	pthread_join(f->t, NULL);
	for (unsigned i = 0; i < f->nheld; i++)
		close(f->held[i]);
	close(f->lfd);
	close(f->stop[0]);
	close(f->stop[1]);
	unlink(f->path);
	f->lfd = -1;
}

static const char create_req[] = "POST /v1/sandboxes HTTP/1.1\r\nHost: r\r\nContent-Type: "
				 "application/json\r\nContent-Length: 2\r\nConnection: close\r\n"
				 "\r\n{}";

/* One request through the router listening on sa; its answer in resp. */
static void ask(const struct sockaddr_in *sa, const char *req, char *resp, size_t len)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	size_t off = 0;
	ssize_t n;

	assert_int_equal(connect(fd, (const struct sockaddr *)sa, sizeof(*sa)), 0);
	assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
	while (off < len - 1 && (n = read(fd, resp + off, len - 1 - off)) > 0)
		off += (size_t)n;
	resp[off] = 0;
	close(fd);
}

/* Requests (NULL-terminated) through a router in front of a (slots 9) and b
 * (b_slots): the last answer's head and body in resp. */
static void create_seq(enum mode a_mode, bool a_gone, enum mode b_mode, unsigned b_slots,
		       const char *const *reqs, char *resp, size_t len, unsigned *a_posts,
		       unsigned *b_posts)
{
	struct fake a = { .id = "hosta", .slots = 9, .mode = a_mode, .lfd = -1 };
	struct fake b = { .id = "hostb", .slots = b_slots, .mode = b_mode, .lfd = -1 };
	char dir[] = "/tmp/kiln-test-create.XXXXXX", hosts[160], err[256];
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	struct fleet *fl = NULL;
	struct proxy *p = NULL;
	int stop[2], lfd;
	FILE *hf;

	assert_non_null(mkdtemp(dir));
	fake_start(&a, dir);
	fake_start(&b, dir);
	snprintf(hosts, sizeof(hosts), "%s/hosts", dir);
	hf = fopen(hosts, "w");
	assert_non_null(hf);
	fprintf(hf, "hosta unix:%s\nhostb unix:%s\n", a.path, b.path);
	fclose(hf);
	assert_int_equal(pipe(stop), 0);
	{
		struct fleet_config fc = { .hosts_file = hosts, .refresh_s = 3600, .sample = 2,
					   .stop_fd = stop[0] };

		assert_int_equal(fleet_start(&fc, &fl, err, sizeof(err)), 0);
	}
	/* Both reports are in (fresh for an hour): a goes first, having more room. */
	if (a_gone)
		fake_stop(&a);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lfd, 4), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &sl), 0);
	{
		struct proxy_config pc = { .fleet = fl, .max_connections = 4, .max_upload = 1024,
					   .stop_fd = stop[0], .create_timeout_ms = 500 };

		assert_int_equal(proxy_start(&pc, lfd, &p, err, sizeof(err)), 0);
	}
	for (const char *const *r = reqs; *r; r++)
		ask(&sa, *r, resp, len);
	assert_int_equal(write(stop[1], "x", 1), 1);
	proxy_stop(p);
	fleet_stop(fl);
	*a_posts = atomic_load(&a.posts);
	*b_posts = atomic_load(&b.posts);
	fake_stop(&a);
	fake_stop(&b);
	close(stop[0]);
	close(stop[1]);
	unlink(hosts);
	rmdir(dir);
}

/* One create through that router. */
static void create(enum mode a_mode, bool a_gone, enum mode b_mode, unsigned b_slots, char *resp,
		   size_t len, unsigned *a_posts, unsigned *b_posts)
{
	const char *const reqs[] = { create_req, NULL };

	create_seq(a_mode, a_gone, b_mode, b_slots, reqs, resp, len, a_posts, b_posts);
}

static void test_unreachable_is_skipped(void **state)
{
	char resp[4096];
	unsigned pa, pb;

	(void)state;
	create(M_CREATE, true, M_CREATE, 3, resp, sizeof(resp), &pa, &pb);
	assert_true(!strncmp(resp, "HTTP/1.1 201", 12));
	assert_non_null(strstr(resp, "sb-hostb-"));
	assert_int_equal(pa, 0);
	assert_int_equal(pb, 1);
}

static void test_taken_create_never_sent_twice(void **state)
{
	char resp[4096];
	unsigned pa, pb;

	(void)state;
	/* Silent past the create's timeout: before, retried on b (two sandboxes). */
	create(M_SILENT, false, M_CREATE, 3, resp, sizeof(resp), &pa, &pb);
	assert_true(!strncmp(resp, "HTTP/1.1 502", 12));
	assert_non_null(strstr(resp, "upstream_error"));
	assert_int_equal(pa, 1);
	assert_int_equal(pb, 0);
	/* Hung up without an answer. */
	create(M_HANGUP, false, M_CREATE, 3, resp, sizeof(resp), &pa, &pb);
	assert_true(!strncmp(resp, "HTTP/1.1 502", 12));
	assert_int_equal(pa, 1);
	assert_int_equal(pb, 0);
	/* The good path, for contrast. */
	create(M_CREATE, false, M_CREATE, 3, resp, sizeof(resp), &pa, &pb);
	assert_true(!strncmp(resp, "HTTP/1.1 201", 12));
	assert_non_null(strstr(resp, "sb-hosta-"));
	assert_int_equal(pa, 1);
	assert_int_equal(pb, 0);
}

/* A create from a template: a host without it passes it on; the answer is
 * 404 only when every host was asked. */
static void test_template_not_found(void **state)
{
	char resp[4096];
	unsigned pa, pb;

	(void)state;
	/* b holds it: a's 404 sends the create on to b. */
	create(M_NO_TEMPLATE, false, M_CREATE, 3, resp, sizeof(resp), &pa, &pb);
	assert_true(!strncmp(resp, "HTTP/1.1 201", 12));
	assert_int_equal(pa, 1);
	assert_int_equal(pb, 1);
	/* Neither holds it, both asked: 404. */
	create(M_NO_TEMPLATE, false, M_NO_TEMPLATE, 3, resp, sizeof(resp), &pa, &pb);
	assert_true(!strncmp(resp, "HTTP/1.1 404", 12));
	assert_non_null(strstr(resp, "template_not_found"));
	/* b is full, so never asked, and may hold it: 503, not 404. */
	create(M_NO_TEMPLATE, false, M_CREATE, 0, resp, sizeof(resp), &pa, &pb);
	assert_true(!strncmp(resp, "HTTP/1.1 503", 12));
	assert_non_null(strstr(resp, "no_capacity"));
	assert_int_equal(pa, 1);
	assert_int_equal(pb, 0);
}

/* b's only slot taken through the router, then freed through it: the next
 * template create asks b at once, without waiting for b's next report. */
static void test_delete_frees_the_slot(void **state)
{
	static const char del[] = "DELETE /v1/sandboxes/sb-hostb-0123456789abcdef0123456789abcdef "
				  "HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n";
	const char *const reqs[] = { create_req, del, create_req, NULL };
	char resp[4096];
	unsigned pa, pb;

	(void)state;
	/* a holds no template; b creates, then (after the delete) holds none either. */
	create_seq(M_NO_TEMPLATE, false, M_CREATE, 1, reqs, resp, sizeof(resp), &pa, &pb);
	/* Both asked: 404, not the 503 of a host passed over as full. */
	assert_true(!strncmp(resp, "HTTP/1.1 404", 12));
	assert_non_null(strstr(resp, "template_not_found"));
	assert_int_equal(pb, 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unreachable_is_skipped),
		cmocka_unit_test(test_taken_create_never_sent_twice),
		cmocka_unit_test(test_template_not_found),
		cmocka_unit_test(test_delete_frees_the_slot),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
