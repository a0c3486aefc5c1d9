/*
 * Host ids and sandbox ids (src/common/fleetid.c): what kilnd makes, what
 * kiln-router reads the host from, and hostile ids (too long, wrong case,
 * no hex tail, a host id that breaks the rules, NUL-free garbage, the older
 * sb-<32 hex> form without a host), plus capacity reports (fleet_cap_parse).
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

#include "fleetid.h"
#include "router/fleet.h"

#define HEX32 "0123456789abcdef0123456789abcdef"

static void test_host_ids(void **state)
{
	char forty[41], fortyone[42];

	(void)state;
	memset(forty, 'a', 40);
	forty[40] = 0;
	memset(fortyone, 'a', 41);
	fortyone[41] = 0;
	assert_true(fleet_host_id_ok("h1"));
	assert_true(fleet_host_id_ok("0"));
	assert_true(fleet_host_id_ok("node-7-b"));
	assert_true(fleet_host_id_ok(forty));
	assert_false(fleet_host_id_ok(fortyone));
	assert_false(fleet_host_id_ok(""));
	assert_false(fleet_host_id_ok(NULL));
	assert_false(fleet_host_id_ok("-h"));
	assert_false(fleet_host_id_ok("H1"));
	assert_false(fleet_host_id_ok("h_1"));
	assert_false(fleet_host_id_ok("h.1"));
	assert_false(fleet_host_id_ok("h 1"));
	assert_false(fleet_host_id_ok("h\n"));
	assert_false(fleet_host_id_ok("h\xc3\xa9"));
}

static void test_default_host_id(void **state)
{
	char id[FLEET_HOST_MAX + 1];

	(void)state;
	fleet_host_id_default(id, sizeof(id));
	assert_true(fleet_host_id_ok(id));
}

static void test_sandbox_ids(void **state)
{
	char host[FLEET_HOST_MAX + 1], id[FLEET_ID_MAX + 1], big[256];

	(void)state;
	assert_int_equal(fleet_sandbox_host("sb-h1-" HEX32, host, sizeof(host)), 0);
	assert_string_equal(host, "h1");
	/* The host is everything between "sb-" and the last '-'. */
	assert_int_equal(fleet_sandbox_host("sb-node-7-b-" HEX32, host, sizeof(host)), 0);
	assert_string_equal(host, "node-7-b");
	assert_int_equal(fleet_sandbox_host("sb-a--" HEX32, host, sizeof(host)), 0);
	assert_string_equal(host, "a-");
	/* The older form: valid, without a host. */
	assert_int_equal(fleet_sandbox_host("sb-" HEX32, host, sizeof(host)), -ENOENT);
	assert_true(fleet_sandbox_id_ok("sb-" HEX32));
	assert_true(fleet_sandbox_id_ok("sb-h1-" HEX32));
	/* Hostile ones. */
	static const char *const bad[] = {
		"", "sb-", "sb-h1", "sb-h1-", "sb-h1-" HEX32 "0", "sb-h1-0123", "sb--" HEX32,
		"sb-H1-" HEX32, "sb-h_1-" HEX32, "sb-h1-0123456789ABCDEF0123456789abcdef",
		"sb-h1-0123456789abcdef0123456789abcdeg", "xb-h1-" HEX32, "SB-h1-" HEX32,
		"sb-h1/" HEX32, "sb-../x-" HEX32, "sb-h1_" HEX32, "sb-" HEX32 "-",
		"sb--h1-" HEX32, "sb-h1-" HEX32 "\n", "sb-h 1-" HEX32,
		"sb-0123456789abcdef0123456789abcde",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(fleet_sandbox_host(bad[i], host, sizeof(host)), -EINVAL);
		assert_false(fleet_sandbox_id_ok(bad[i]));
	}
	assert_int_equal(fleet_sandbox_host(NULL, host, sizeof(host)), -EINVAL);
	/* A 40-character host is the longest. */
	snprintf(big, sizeof(big), "sb-%.40s-%s", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", HEX32);
	assert_int_equal(strlen(big), FLEET_ID_MAX);
	assert_int_equal(fleet_sandbox_host(big, host, sizeof(host)), 0);
	snprintf(big, sizeof(big), "sb-%.41s-%s", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", HEX32);
	assert_int_equal(fleet_sandbox_host(big, host, sizeof(host)), -EINVAL);
	/* Too small a buffer for the host is not an overflow. */
	assert_int_equal(fleet_sandbox_host("sb-hostname-" HEX32, host, 4), -ENAMETOOLONG);
	/* New ids parse back to their host. */
	for (int i = 0; i < 50; i++) {
		assert_int_equal(fleet_sandbox_id_new("node-3", id, sizeof(id)), 0);
		assert_int_equal(strlen(id), strlen("sb-node-3-") + 32);
		assert_int_equal(fleet_sandbox_host(id, host, sizeof(host)), 0);
		assert_string_equal(host, "node-3");
	}
	assert_int_equal(fleet_sandbox_id_new("Bad", id, sizeof(id)), -EINVAL);
	assert_int_equal(fleet_sandbox_id_new("ok", id, 10), -EINVAL);
}

static void test_capacity_reports(void **state)
{
	struct fleet_cap c;
	const char *good = "{\"host_id\":\"h1\",\"slots\":2,\"used\":1,\"starting\":0,"
			   "\"free_cpus\":7,\"free_memory_mib\":3000,\"draining\":false}";
	static const char *const bad[] = {
		"", "{", "[]", "null",
		"{\"host_id\":\"H1\",\"slots\":2,\"used\":1,\"starting\":0,\"free_cpus\":7,"
		"\"free_memory_mib\":3000,\"draining\":false}",
		"{\"host_id\":\"h1\",\"slots\":-2,\"used\":1,\"starting\":0,\"free_cpus\":7,"
		"\"free_memory_mib\":3000,\"draining\":false}",
		"{\"host_id\":\"h1\",\"slots\":99999999999,\"used\":1,\"starting\":0,\"free_cpus\":7,"
		"\"free_memory_mib\":3000,\"draining\":false}",
		"{\"host_id\":\"h1\",\"slots\":2,\"used\":1,\"starting\":0,\"free_cpus\":7,"
		"\"free_memory_mib\":3000,\"draining\":0}",
		"{\"host_id\":\"h1\",\"slots\":\"2\",\"used\":1,\"starting\":0,\"free_cpus\":7,"
		"\"free_memory_mib\":3000,\"draining\":false}",
		"{\"host_id\":\"h1\",\"host_id\":\"h2\",\"slots\":2,\"used\":1,\"starting\":0,"
		"\"free_cpus\":7,\"free_memory_mib\":3000,\"draining\":false}",
	};

	(void)state;
	assert_int_equal(fleet_cap_parse(good, strlen(good), &c), 0);
	assert_string_equal(c.host_id, "h1");
	assert_int_equal(c.slots, 2);
	assert_int_equal(c.used, 1);
	assert_int_equal(c.free_cpus, 7);
	assert_int_equal(c.free_memory_mib, 3000);
	assert_false(c.draining);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(fleet_cap_parse(bad[i], strlen(bad[i]), &c), -EINVAL);
	/* Truncations of a good report never parse. */
	for (size_t n = 0; n < strlen(good); n++)
		assert_int_equal(fleet_cap_parse(good, n, &c), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_host_ids),
		cmocka_unit_test(test_default_host_id),
		cmocka_unit_test(test_sandbox_ids),
		cmocka_unit_test(test_capacity_reports),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
