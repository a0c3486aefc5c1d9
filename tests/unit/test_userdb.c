/*
 * userdb: USER[:GROUP] against /etc/passwd and /etc/group contents, each
 * form of spec, and hostile files (long lines, NULs, missing fields, ids
 * out of range, huge member lists, too many lines, duplicates, no newline
 * at the end). Meant to run under ASan/UBSan too.
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

#include "userdb.h"

static const char PASSWD[] =
	"root:x:0:0:root:/root:/bin/bash\n"
	"daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
	"# a comment line is just malformed\n"
	"broken:x:12\n"
	"toobig:x:4294967295:0::/:/bin/sh\n"
	"neg:x:-1:0::/:/bin/sh\n"
	"agent:x:1000:1000:Agent,,,:/home/agent:/bin/sh\n"
	"agent:x:2000:2000:a duplicate: the first wins:/nope:/bin/sh\n"
	"relhome:x:1001:1001::home/rel:/bin/sh\n"
	"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin"; /* no newline */

static const char GROUP[] =
	"root:x:0:\n"
	"daemon:x:1:\n"
	"agent:x:1000:\n"
	"docker:x:999:bob,agent,carol\n"
	"notagent:x:998:agentx,xagent, agent\n"
	"audio:x:29:agent\n"
	"audio2:x:29:agent\n" /* the same gid again: once */
	"badgid:x:abc:agent\n"
	"short:x:5\n"
	"staff:x:50:\n"
	"nogroup:x:65534:";

struct res {
	int ret;
	struct userdb_ids ids;
	char why[256];
};

static struct res *resolve(const char *spec, const char *pw, const char *gr)
{
	static struct res r;

	memset(&r, 0x5a, sizeof(r));
	r.ret = userdb_resolve(spec, pw, pw ? strlen(pw) : 0, gr, gr ? strlen(gr) : 0, &r.ids,
			       r.why, sizeof(r.why));
	return &r;
}

static void assert_groups(const struct userdb_ids *ids, unsigned n, const uint32_t *want)
{
	assert_int_equal(ids->ngroups, n);
	for (unsigned i = 0; i < n; i++)
		assert_int_equal(ids->groups[i], want[i]);
}

static void test_name(void **state)
{
	struct res *r = resolve("agent", PASSWD, GROUP);

	(void)state;
	assert_int_equal(r->ret, 0);
	assert_int_equal(r->ids.uid, 1000);
	assert_int_equal(r->ids.gid, 1000);
	assert_string_equal(r->ids.home, "/home/agent");
	/* initgroups: the primary, then docker and audio (29 once); not notagent. */
	assert_groups(&r->ids, 3, (const uint32_t[]){ 1000, 999, 29 });

	r = resolve("root", PASSWD, GROUP);
	assert_int_equal(r->ret, 0);
	assert_int_equal(r->ids.uid, 0);
	assert_string_equal(r->ids.home, "/root");
	assert_groups(&r->ids, 1, (const uint32_t[]){ 0 });

	r = resolve("nobody", PASSWD, GROUP); /* the last line has no newline */
	assert_int_equal(r->ret, 0);
	assert_int_equal(r->ids.uid, 65534);
	assert_string_equal(r->ids.home, "/nonexistent");

	r = resolve("relhome", PASSWD, GROUP); /* a relative home is not used */
	assert_int_equal(r->ret, 0);
	assert_string_equal(r->ids.home, "/");
}

static void test_numeric(void **state)
{
	/* A uid in passwd takes its gid, home and groups. */
	struct res *r = resolve("1000", PASSWD, GROUP);

	(void)state;
	assert_int_equal(r->ret, 0);
	assert_int_equal(r->ids.gid, 1000);
	assert_string_equal(r->ids.home, "/home/agent");
	assert_int_equal(r->ids.ngroups, 3);

	/* One that is not: gid = uid, home /, no other groups. */
	r = resolve("4242", PASSWD, GROUP);
	assert_int_equal(r->ret, 0);
	assert_int_equal(r->ids.uid, 4242);
	assert_int_equal(r->ids.gid, 4242);
	assert_string_equal(r->ids.home, "/");
	assert_groups(&r->ids, 1, (const uint32_t[]){ 4242 });

	r = resolve("4294967294", NULL, NULL);
	assert_int_equal(r->ret, 0);
	assert_int_equal(r->ids.uid, 4294967294u);

	r = resolve("0", NULL, NULL);
	assert_int_equal(r->ret, 0);
	assert_string_equal(r->ids.home, "/root");

	/* 2^32 - 1 and beyond are not ids: then they are names, and unknown. */
	assert_int_equal(resolve("4294967295", PASSWD, GROUP)->ret, -ESRCH);
	assert_int_equal(resolve("99999999999", PASSWD, GROUP)->ret, -ESRCH);
}

static void test_groups(void **state)
{
	struct res *r = resolve("agent:staff", PASSWD, GROUP);

	(void)state;
	assert_int_equal(r->ret, 0);
	assert_int_equal(r->ids.uid, 1000);
	assert_int_equal(r->ids.gid, 50);
	/* An explicit group is the only one. */
	assert_groups(&r->ids, 1, (const uint32_t[]){ 50 });
	assert_string_equal(r->ids.home, "/home/agent");

	r = resolve("agent:7", PASSWD, GROUP);
	assert_int_equal(r->ret, 0);
	assert_int_equal(r->ids.gid, 7);

	r = resolve("1000:1000", NULL, NULL);
	assert_int_equal(r->ret, 0);
	assert_int_equal(r->ids.uid, 1000);
	assert_int_equal(r->ids.gid, 1000);

	r = resolve("4242:nogroup", PASSWD, GROUP); /* the last line has no newline */
	assert_int_equal(r->ret, 0);
	assert_int_equal(r->ids.uid, 4242);
	assert_int_equal(r->ids.gid, 65534);

	r = resolve("agent:nope", PASSWD, GROUP);
	assert_int_equal(r->ret, -ESRCH);
	assert_string_equal(r->why, "no group 'nope' in the image's /etc/group");
	r = resolve("agent:badgid", PASSWD, GROUP);
	assert_int_equal(r->ret, -ESRCH);
	r = resolve("agent:short", PASSWD, GROUP);
	assert_int_equal(r->ret, -ESRCH);
	r = resolve("root:staff", PASSWD, NULL);
	assert_int_equal(r->ret, -ESRCH);
	assert_string_equal(r->why, "no group 'staff' in the image's /etc/group (it has none)");
}

static void test_unknown(void **state)
{
	struct res *r = resolve("bob", PASSWD, GROUP);

	(void)state;
	assert_int_equal(r->ret, -ESRCH);
	assert_string_equal(r->why, "no user 'bob' in the image's /etc/passwd");
	assert_int_equal(r->ids.uid, 0);
	assert_int_equal(r->ids.ngroups, 0);

	r = resolve("bob", NULL, NULL);
	assert_int_equal(r->ret, -ESRCH);
	assert_string_equal(r->why, "no user 'bob' in the image's /etc/passwd (it has none)");
	/* Malformed lines never match. */
	assert_int_equal(resolve("broken", PASSWD, GROUP)->ret, -ESRCH);
	assert_int_equal(resolve("toobig", PASSWD, GROUP)->ret, -ESRCH);
	assert_int_equal(resolve("neg", PASSWD, GROUP)->ret, -ESRCH);
	assert_int_equal(resolve("#", PASSWD, GROUP)->ret, -ESRCH);
	/* root needs no file. */
	r = resolve("root", NULL, NULL);
	assert_int_equal(r->ret, 0);
	assert_int_equal(r->ids.uid, 0);
	assert_string_equal(r->ids.home, "/root");
}

static void test_bad_spec(void **state)
{
	static const char *const bad[] = { "", ":", "agent:", ":agent", "a:b:c", "a b", "a\tb",
					   "a,b", "a\n", "\x7f", "agent:x y", NULL };
	char longname[USERDB_SPEC_MAX + 2];

	(void)state;
	for (unsigned i = 0; bad[i]; i++) {
		struct res *r = resolve(bad[i], PASSWD, GROUP);

		assert_int_equal(r->ret, -EINVAL);
		assert_int_equal(userdb_spec_ok(bad[i]), -EINVAL);
		assert_non_null(strstr(r->why, "bad user"));
	}
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = 0;
	assert_int_equal(userdb_spec_ok(longname), -EINVAL);
	longname[USERDB_SPEC_MAX] = 0;
	assert_int_equal(userdb_spec_ok(longname), 0);
	assert_int_equal(userdb_spec_ok("agent:staff"), 0);
	assert_int_equal(userdb_spec_ok("1000:1000"), 0);
	assert_int_equal(userdb_spec_ok("\xc3\xa9t\xc3\xa9"), 0); /* UTF-8 names are fine */
}

/* A line with a NUL, a line over USERDB_LINE_MAX, CRLF endings: never a match. */
static void test_hostile_lines(void **state)
{
	size_t big = USERDB_LINE_MAX + 100, n;
	char *pw = malloc(big + 256), *p;
	struct userdb_ids ids;
	char why[256];

	(void)state;
	assert_non_null(pw);
	/* "nul" hides behind a NUL; "long" is one huge line; "crlf" has \r in its shell only. */
	p = pw;
	memcpy(p, "nul:x:5:5::/:/bin/sh\0more\n", 27);
	p += 27;
	n = (size_t)snprintf(p, 64, "long:x:6:6::/");
	p += n;
	memset(p, 'h', big);
	p += big;
	memcpy(p, ":/bin/sh\ncrlf:x:7:7::/crlf:/bin/sh\r\n", 36);
	p += 36;
	assert_int_equal(userdb_resolve("nul", pw, (size_t)(p - pw), NULL, 0, &ids, why, sizeof(why)),
			 -ESRCH);
	assert_int_equal(userdb_resolve("long", pw, (size_t)(p - pw), NULL, 0, &ids, why, sizeof(why)),
			 -ESRCH);
	assert_int_equal(userdb_resolve("crlf", pw, (size_t)(p - pw), NULL, 0, &ids, why, sizeof(why)),
			 0);
	assert_int_equal(ids.uid, 7);
	/* Lines after the huge one still count. */
	free(pw);
}

static void test_caps(void **state)
{
	size_t n = (USERDB_LINES_MAX + 1) * 2, len;
	char *many = malloc(n + 64), *gr;
	struct userdb_ids ids;
	char why[256];
	int ret;

	(void)state;
	assert_non_null(many);
	/* Too many lines (empty ones count): refused, not scanned forever. */
	memset(many, '\n', n);
	memcpy(many + n, "late:x:9:9::/:/bin/sh\n", 22);
	len = n + 22;
	ret = userdb_resolve("late", many, len, NULL, 0, &ids, why, sizeof(why));
	assert_int_equal(ret, -E2BIG);
	assert_non_null(strstr(why, "too large"));
	/* Within the cap the same line is found. */
	ret = userdb_resolve("late", many + n - 1000, 1022, NULL, 0, &ids, why, sizeof(why));
	assert_int_equal(ret, 0);
	/* Over the byte cap: refused before any scan. */
	ret = userdb_resolve("root", many, USERDB_FILE_MAX + 1, NULL, 0, &ids, why, sizeof(why));
	assert_int_equal(ret, -E2BIG);
	free(many);

	/* A user in more groups than the cap: refused (fail closed), and exactly the cap is fine. */
	gr = malloc((USERDB_GROUPS_MAX + 1) * 32);
	assert_non_null(gr);
	len = 0;
	for (unsigned i = 0; i < USERDB_GROUPS_MAX; i++)
		len += (size_t)snprintf(gr + len, 32, "g%u:x:%u:agent\n", i, 5000 + i);
	ret = userdb_resolve("agent", PASSWD, strlen(PASSWD), gr, len, &ids, why, sizeof(why));
	assert_int_equal(ret, -E2BIG);
	assert_non_null(strstr(why, "more than 256 groups"));
	len = 0;
	for (unsigned i = 0; i < USERDB_GROUPS_MAX - 1; i++)
		len += (size_t)snprintf(gr + len, 32, "g%u:x:%u:agent\n", i, 5000 + i);
	ret = userdb_resolve("agent", PASSWD, strlen(PASSWD), gr, len, &ids, why, sizeof(why));
	assert_int_equal(ret, 0);
	assert_int_equal(ids.ngroups, USERDB_GROUPS_MAX);
	free(gr);
}

/* Random bytes as both files never crash or read out of bounds (ASan). */
static void test_random(void **state)
{
	char buf[512];
	struct userdb_ids ids;
	char why[128];
	unsigned seed = 1;
	static const char *const specs[] = { "root", "a", "1", "a:b", "1:2", "a:1", "1:a" };

	(void)state;
	for (int round = 0; round < 20000; round++) {
		size_t n = (size_t)(rand_r(&seed) % sizeof(buf));

		for (size_t i = 0; i < n; i++) {
			unsigned v = (unsigned)rand_r(&seed) % 8;

			buf[i] = "a1:\n,:x\0"[v];
		}
		(void)userdb_resolve(specs[round % 7], buf, n, buf, n, &ids, why, sizeof(why));
		assert_true(ids.ngroups <= USERDB_GROUPS_MAX);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_name),	 cmocka_unit_test(test_numeric),
		cmocka_unit_test(test_groups),	 cmocka_unit_test(test_unknown),
		cmocka_unit_test(test_bad_spec), cmocka_unit_test(test_hostile_lines),
		cmocka_unit_test(test_caps),	 cmocka_unit_test(test_random),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
