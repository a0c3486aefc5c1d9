/*
 * The pure parts of libkiln's cgroup module: limits computed from a VM's
 * size, the cpu.max text, run-* name parsing for the sweep, and flat-keyed
 * file parsing. Nothing here touches a cgroup (see
 * tests/integration/cgroup_limits.c for that).
 */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include <cmocka.h>

#include "lib/cgroup.h"

#define MiB (1024ULL * 1024ULL)

static void test_compute_defaults(void **state)
{
	struct kiln_cgroup_limits l = {.vcpus = 2, .mem_mib = 256};
	struct kiln_cgroup_values v;

	assert_int_equal(kiln_cgroup_compute(&l, &v), 0);
	assert_int_equal(v.cpu_quota_us, 200000);
	assert_int_equal(v.cpu_period_us, 100000);
	/* 256 MiB + 64 MiB + 2% of 256 MiB, rounded up to a page. */
	assert_int_equal(v.mem_max, 340914176ULL);
	assert_int_equal(v.mem_max % 4096, 0);
	assert_int_equal(v.pids_max, 34);

	l.vcpus = 1;
	l.mem_mib = 1;
	assert_int_equal(kiln_cgroup_compute(&l, &v), 0);
	assert_int_equal(v.cpu_quota_us, 100000);
	assert_true(v.mem_max >= 65 * MiB && v.mem_max < 66 * MiB);
	assert_int_equal(v.pids_max, 33);
}

static void test_compute_overrides(void **state)
{
	struct kiln_cgroup_limits l = {.vcpus = 4, .mem_mib = 1024, .cpu_pct = 150, .pids_max = 100};
	struct kiln_cgroup_values v;

	assert_int_equal(kiln_cgroup_compute(&l, &v), 0);
	assert_int_equal(v.cpu_quota_us, 150000);
	assert_int_equal(v.pids_max, 100);
	l.cpu_pct = 1; /* 1 ms per 100 ms: the kernel's smallest quota */
	assert_int_equal(kiln_cgroup_compute(&l, &v), 0);
	assert_int_equal(v.cpu_quota_us, 1000);
	/* Overhead stays bounded: 64 MiB + 2%. */
	l.mem_mib = 64 * 1024;
	assert_int_equal(kiln_cgroup_compute(&l, &v), 0);
	assert_true(v.mem_max > 64 * 1024 * MiB);
	assert_true(v.mem_max - 64 * 1024 * MiB <= 64 * MiB + 64 * 1024 * MiB / 50 + 4096);
}

static void test_compute_bounds(void **state)
{
	struct kiln_cgroup_limits l = {.vcpus = 2, .mem_mib = 256};
	struct kiln_cgroup_values v;

	l.vcpus = 0;
	assert_int_equal(kiln_cgroup_compute(&l, &v), -EINVAL);
	l.vcpus = KILN_CGROUP_MAX_VCPUS + 1;
	assert_int_equal(kiln_cgroup_compute(&l, &v), -EINVAL);
	l.vcpus = KILN_CGROUP_MAX_VCPUS;
	assert_int_equal(kiln_cgroup_compute(&l, &v), 0);
	assert_int_equal(v.cpu_quota_us, KILN_CGROUP_MAX_VCPUS * 100000ULL);

	l.vcpus = 2;
	l.mem_mib = 0;
	assert_int_equal(kiln_cgroup_compute(&l, &v), -EINVAL);
	l.mem_mib = KILN_CGROUP_MAX_MEM_MIB + 1;
	assert_int_equal(kiln_cgroup_compute(&l, &v), -EINVAL);
	l.mem_mib = UINT64_MAX; /* would overflow in bytes */
	assert_int_equal(kiln_cgroup_compute(&l, &v), -EINVAL);
	l.mem_mib = KILN_CGROUP_MAX_MEM_MIB;
	assert_int_equal(kiln_cgroup_compute(&l, &v), 0);
	assert_true(v.mem_max > KILN_CGROUP_MAX_MEM_MIB * MiB);

	l.mem_mib = 256;
	l.cpu_pct = KILN_CGROUP_MAX_VCPUS * 100 + 1;
	assert_int_equal(kiln_cgroup_compute(&l, &v), -EINVAL);
	l.cpu_pct = 0;
	l.pids_max = 4194305;
	assert_int_equal(kiln_cgroup_compute(&l, &v), -EINVAL);
	assert_int_equal(kiln_cgroup_compute(NULL, &v), -EINVAL);
}

static void test_fmt_cpu_max(void **state)
{
	char buf[32];

	assert_int_equal(kiln_cgroup_fmt_cpu_max(buf, sizeof(buf), 200000, 100000), 0);
	assert_string_equal(buf, "200000 100000");
	assert_int_equal(kiln_cgroup_fmt_cpu_max(buf, sizeof(buf), 0, 100000), 0);
	assert_string_equal(buf, "max 100000");
	assert_int_equal(kiln_cgroup_fmt_cpu_max(buf, sizeof(buf), 1000, 0), -EINVAL);
	/* Truncation is an error, never a shorter number. */
	assert_int_equal(kiln_cgroup_fmt_cpu_max(buf, 13, 200000, 100000), -ENOSPC);
	assert_int_equal(kiln_cgroup_fmt_cpu_max(buf, 14, 200000, 100000), 0);
}

static void test_parse_name(void **state)
{
	static const char *const bad[] = {
		"",
		"run-",
		"run-123",
		"run-123-",
		"run-123-abcdef0",     /* 7 hex digits */
		"run-123-abcdef012",   /* 9 */
		"run-123-ABCDEF01",    /* upper case: not ours */
		"run-0-abcdef01",      /* pid 0 */
		"run-2147483648-abcdef01",
		"run-99999999999-abcdef01",
		"run--1-abcdef01",
		"run-12a-abcdef01",
		"xrun-123-abcdef01",
		"run-123-abcdef01x",
		"run-123-abcdef01/..",
		"kiln",
		".",
		"..",
	};
	pid_t pid = 0;

	assert_int_equal(kiln_cgroup_parse_name("run-123-abcdef01", &pid), 0);
	assert_int_equal(pid, 123);
	assert_int_equal(kiln_cgroup_parse_name("run-2147483647-00000000", &pid), 0);
	assert_int_equal(pid, INT_MAX);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		pid = 7;
		if (kiln_cgroup_parse_name(bad[i], &pid) != -EINVAL)
			fail_msg("accepted '%s'", bad[i]);
		assert_int_equal(pid, 7);
	}
}

static void test_parse_keyed(void **state)
{
	const char *cpu_stat = "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\n"
			       "nr_periods 10\nnr_throttled 2\nthrottled_usec 5000\n";
	const char *events = "low 0\nhigh 0\nmax 17\noom 3\noom_kill 2\noom_group_kill 1\n";
	uint64_t v = 0;

	assert_int_equal(kiln_cgroup_parse_keyed(cpu_stat, "usage_usec", &v), 0);
	assert_int_equal(v, 123456);
	assert_int_equal(kiln_cgroup_parse_keyed(cpu_stat, "throttled_usec", &v), 0);
	assert_int_equal(v, 5000);
	/* Whole keys only: "oom" is not "oom_kill", "oom_kill" is not "oom_group_kill". */
	assert_int_equal(kiln_cgroup_parse_keyed(events, "oom", &v), 0);
	assert_int_equal(v, 3);
	assert_int_equal(kiln_cgroup_parse_keyed(events, "oom_kill", &v), 0);
	assert_int_equal(v, 2);
	assert_int_equal(kiln_cgroup_parse_keyed("populated 0", "populated", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(kiln_cgroup_parse_keyed(events, "usage", &v), -ENOENT);
	assert_int_equal(kiln_cgroup_parse_keyed("", "oom", &v), -ENOENT);
	assert_int_equal(kiln_cgroup_parse_keyed("oom \n", "oom", &v), -EINVAL);
	assert_int_equal(kiln_cgroup_parse_keyed("oom x1\n", "oom", &v), -EINVAL);
	assert_int_equal(kiln_cgroup_parse_keyed("oom 123456789012345678901234567890123\n", "oom", &v),
			 -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_compute_defaults),
		cmocka_unit_test(test_compute_overrides),
		cmocka_unit_test(test_compute_bounds),
		cmocka_unit_test(test_fmt_cpu_max),
		cmocka_unit_test(test_parse_name),
		cmocka_unit_test(test_parse_keyed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
