/*
 * kiln-router's hosts file and host URLs (src/router/hosts.c): the good
 * forms, and hostile files (bad ids and URLs, duplicates, NUL bytes, long
 * lines, too many hosts, over the size cap, extra fields).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "router/hosts.h"

static int parse(const char *text, struct hosts_entry **e, size_t *n, char *err, size_t errlen)
{
	return hosts_parse(text, strlen(text), e, n, err, errlen);
}

static void test_urls(void **state)
{
	struct up_addr a;

	(void)state;
	assert_int_equal(hosts_url_parse("http://10.0.0.1:8470", &a), 0);
	assert_false(a.is_unix);
	assert_string_equal(a.host, "10.0.0.1");
	assert_string_equal(a.port, "8470");
	assert_int_equal(hosts_url_parse("http://node-1.kiln.svc:80/", &a), 0);
	assert_string_equal(a.host, "node-1.kiln.svc");
	assert_int_equal(hosts_url_parse("http://[::1]:8470", &a), 0);
	assert_string_equal(a.host, "::1");
	/* Ports are decimal, leading zeros or not (getaddrinfo reads them so). */
	assert_int_equal(hosts_url_parse("http://h:099", &a), 0);
	assert_string_equal(a.port, "099");
	assert_int_equal(hosts_url_parse("http://h:00000", &a), -EINVAL);
	assert_int_equal(hosts_url_parse("http://h:65536", &a), -EINVAL);
	assert_int_equal(hosts_url_parse("unix:/run/kiln/kilnd.sock", &a), 0);
	assert_true(a.is_unix);
	assert_string_equal(a.path, "/run/kiln/kilnd.sock");
	static const char *const bad[] = {
		"", "http://", "http://h", "http://h:", "http://h:0", "http://h:65536",
		"http://h:99999", "http://h:80x", "http://h:-1", "https://h:443", "ftp://h:21",
		"http://h h:80", "http://h/x:80", "http://h:80/x", "http://[::1:80", "http://[zz]:80",
		"http://[::1]80", "unix:", "unix:relative", "unix:/a b", "unix:/a\nb",
		"http://user@h:80", "http://h:80\r", "h:80",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(hosts_url_parse(bad[i], &a), -EINVAL);
		assert_string_equal(a.url, "");
	}
	{
		char longpath[300] = "unix:/";

		memset(longpath + 6, 'a', 200);
		longpath[206] = 0;
		assert_int_equal(hosts_url_parse(longpath, &a), -EINVAL);
	}
	assert_int_equal(hosts_url_parse(NULL, &a), -EINVAL);
}

static void test_good_file(void **state)
{
	struct hosts_entry *e;
	size_t n;
	char err[256];

	(void)state;
	assert_int_equal(parse("# the fleet\n"
			       "h1 http://10.0.0.1:8470\n"
			       "\n"
			       "   h2\thttp://10.0.0.2:8470   # comment\r\n"
			       "h3 unix:/tmp/k3.sock",
			       &e, &n, err, sizeof(err)),
			 0);
	assert_int_equal(n, 3);
	assert_string_equal(e[0].id, "h1");
	assert_string_equal(e[1].id, "h2");
	assert_string_equal(e[1].addr.host, "10.0.0.2");
	assert_string_equal(e[2].id, "h3");
	assert_true(e[2].addr.is_unix);
	free(e);
	assert_int_equal(parse("", &e, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 0);
	free(e);
	assert_int_equal(parse("# nothing\n\n  \n", &e, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 0);
	free(e);
}

static void test_hostile_files(void **state)
{
	static const struct {
		const char *text, *why;
	} bad[] = {
		{ "h1\n", "line 1: want HOSTID URL" },
		{ "h1 http://a:1\nh1 http://b:2\n", "line 2: host h1 is listed twice" },
		{ "H1 http://a:1\n", "line 1: the host id" },
		{ "-h http://a:1\n", "line 1: the host id" },
		{ "h1 http://a:1 extra\n", "line 1: more than HOSTID URL" },
		{ "ok http://a:1\nh2 http://a:0\n", "line 2: the URL" },
		{ "h1 unix:rel\n", "line 1: the URL" },
		{ "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa http://a:1\n", "line 1: the host id" },
	};
	struct hosts_entry *e;
	size_t n;
	char err[256];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		e = (void *)1;
		assert_int_equal(parse(bad[i].text, &e, &n, err, sizeof(err)), -EINVAL);
		assert_null(e);
		assert_int_equal(n, 0);
		if (strncmp(err, bad[i].why, strlen(bad[i].why))) {
			fprintf(stderr, "case %zu: %s\n", i, err);
			fail();
		}
	}
	/* A NUL byte inside. */
	assert_int_equal(hosts_parse("h1 http://a:1\0x\n", 16, &e, &n, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "a NUL byte in the file");
	/* A line longer than the line cap. */
	{
		char *t = malloc(4096);

		memset(t, 'a', 4095);
		t[4095] = 0;
		assert_int_equal(parse(t, &e, &n, err, sizeof(err)), -EINVAL);
		assert_non_null(strstr(err, "longer than"));
		free(t);
	}
	/* Over the file cap (not read at all). */
	assert_int_equal(hosts_parse("", HOSTS_FILE_MAX + 1, &e, &n, err, sizeof(err)), -EINVAL);
	/* HOSTS_MAX hosts are fine; one more is refused; comments after it are fine. */
	{
		size_t cap = (HOSTS_MAX + 2) * 40, off = 0;
		char *t = malloc(cap);

		for (int i = 0; i < HOSTS_MAX; i++)
			off += (size_t)snprintf(t + off, cap - off, "h%d http://10.0.%d.%d:1\n", i,
						i / 250, i % 250);
		off += (size_t)snprintf(t + off, cap - off, "# end\n");
		assert_int_equal(hosts_parse(t, off, &e, &n, err, sizeof(err)), 0);
		assert_int_equal(n, HOSTS_MAX);
		free(e);
		off += (size_t)snprintf(t + off, cap - off, "extra http://10.9.9.9:1\n");
		assert_int_equal(hosts_parse(t, off, &e, &n, err, sizeof(err)), -EINVAL);
		assert_non_null(strstr(err, "more than"));
		free(t);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_urls),
		cmocka_unit_test(test_good_file),
		cmocka_unit_test(test_hostile_files),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
