/*
 * kiln.ip / kiln.ip6 on the guest kernel command line (src/guest/bootargs.c):
 * good values land in struct bootargs, bad ones fail the whole command line
 * with -EINVAL and a one-line message. The other kiln.* parameters are
 * covered in test_agent.c.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "guest/bootargs.h"
#include "guestnet.h"

static char err[256];

static int parse(const char *cl, struct bootargs *ba)
{
	bootargs_defaults(ba);
	err[0] = 0;
	return bootargs_parse(cl, strlen(cl), ba, err, sizeof(err), NULL, 0);
}

static void assert_ip4(struct in_addr a, const char *want)
{
	char buf[INET_ADDRSTRLEN];

	assert_non_null(inet_ntop(AF_INET, &a, buf, sizeof(buf)));
	assert_string_equal(buf, want);
}

static void assert_ip6(const struct in6_addr *a, const char *want)
{
	char buf[INET6_ADDRSTRLEN];

	assert_non_null(inet_ntop(AF_INET6, a, buf, sizeof(buf)));
	assert_string_equal(buf, want);
}

static void test_defaults_no_network(void **state)
{
	struct bootargs ba;

	assert_int_equal(parse("console=ttyS0 kiln.port=52", &ba), 0);
	assert_false(ba.ip.set);
	assert_false(ba.ip6.set);
}

static void test_guestnet_bootargs(void **state)
{
	struct bootargs ba;

	/* What libkiln passes (src/common/guestnet.h). */
	assert_int_equal(parse("console=ttyS0 " GUESTNET_BOOTARGS " kiln.port=52", &ba), 0);
	assert_true(ba.ip.set);
	assert_ip4(ba.ip.addr, GUESTNET_IP4);
	assert_int_equal(ba.ip.prefix, GUESTNET_PREFIX4);
	assert_ip4(ba.ip.gw, GUESTNET_GW4);
	assert_true(ba.ip.has_dns);
	assert_ip4(ba.ip.dns, GUESTNET_DNS4);
	assert_true(ba.ip6.set);
	assert_ip6(&ba.ip6.addr, GUESTNET_IP6);
	assert_int_equal(ba.ip6.prefix, GUESTNET_PREFIX6);
	assert_ip6(&ba.ip6.gw, GUESTNET_GW6);
}

static void test_good(void **state)
{
	struct bootargs ba;

	assert_int_equal(parse("kiln.ip=192.168.7.9/30,192.168.7.10", &ba), 0);
	assert_true(ba.ip.set);
	assert_false(ba.ip.has_dns);
	assert_false(ba.ip6.set);
	assert_int_equal(ba.ip.prefix, 30);
	/* /31: two hosts, no network or broadcast address (RFC 3021). */
	assert_int_equal(parse("kiln.ip=10.1.1.0/31,10.1.1.1,8.8.8.8", &ba), 0);
	assert_ip4(ba.ip.dns, "8.8.8.8");
	assert_int_equal(parse("kiln.ip=10.0.0.5/1,10.0.0.1", &ba), 0);
	/* Quoted, like any parameter; the last one wins. */
	assert_int_equal(parse("\"kiln.ip=10.0.2.15/24,10.0.2.2\" kiln.ip=10.9.0.2/16,10.9.0.1", &ba), 0);
	assert_ip4(ba.ip.addr, "10.9.0.2");
	/* IPv6 only; a link-local gateway is always on link. */
	assert_int_equal(parse("kiln.ip6=2001:db8::5/64,fe80::1", &ba), 0);
	assert_false(ba.ip.set);
	assert_true(ba.ip6.set);
	assert_ip6(&ba.ip6.gw, "fe80::1");
	assert_int_equal(parse("kiln.ip6=2001:db8::5/128,fe80::1", &ba), 0);
	assert_int_equal(parse("kiln.ip6=2001:db8:0:ff00::1/57,2001:db8:0:ff7f::1", &ba), 0);
	assert_int_equal(ba.ip6.prefix, 57);
}

static void test_bad(void **state)
{
	static const char *const bad[] = {
		/* shape */
		"kiln.ip", "kiln.ip=", "kiln.ip=10.0.2.15", "kiln.ip=10.0.2.15/24",
		"kiln.ip=10.0.2.15,10.0.2.2", "kiln.ip=10.0.2.15/24,", "kiln.ip=10.0.2.15/24,,10.0.2.3",
		"kiln.ip=10.0.2.15/24,10.0.2.2,10.0.2.3,", "kiln.ip=10.0.2.15/24,10.0.2.2,10.0.2.3,1.1.1.1",
		"kiln.ip=10.0.2.15/24/8,10.0.2.2", "kiln.ip=/24,10.0.2.2", "kiln.ip=10.0.2.15/,10.0.2.2",
		/* addresses inet_pton refuses */
		"kiln.ip=10.0.2/24,10.0.2.2", "kiln.ip=10.0.2.256/24,10.0.2.2",
		"kiln.ip=010.0.2.15/24,10.0.2.2", "kiln.ip=10.0.2.15 /24,10.0.2.2",
		"kiln.ip=0x0a.0.2.15/24,10.0.2.2", "kiln.ip=10.0.2.15/24,10.0.2.2,dns.example",
		"kiln.ip=fd00::15/24,10.0.2.2", "kiln.ip=10.0.2.15/24,10.0.2.2,fd00::3",
		/* prefixes */
		"kiln.ip=10.0.2.15/0,10.0.2.2", "kiln.ip=10.0.2.15/32,10.0.2.2",
		"kiln.ip=10.0.2.15/33,10.0.2.2", "kiln.ip=10.0.2.15/024,10.0.2.2",
		"kiln.ip=10.0.2.15/+24,10.0.2.2", "kiln.ip=10.0.2.15/0x18,10.0.2.2",
		"kiln.ip=10.0.2.15/-1,10.0.2.2", "kiln.ip=10.0.2.15/2400,10.0.2.2",
		/* not hosts of one subnet */
		"kiln.ip=10.0.2.15/24,10.0.3.2", "kiln.ip=10.0.2.15/24,10.0.2.15",
		"kiln.ip=10.0.2.0/24,10.0.2.2", "kiln.ip=10.0.2.255/24,10.0.2.2",
		"kiln.ip=10.0.2.15/24,10.0.2.255", "kiln.ip=0.0.0.1/24,0.0.0.2",
		"kiln.ip=127.0.0.2/8,127.0.0.1", "kiln.ip=224.0.0.5/24,224.0.0.1",
		"kiln.ip=10.0.2.15/24,10.0.2.2,255.255.255.255", "kiln.ip=10.0.2.15/24,10.0.2.2,0.0.0.0",
		/* IPv6 */
		"kiln.ip6", "kiln.ip6=fd00::15/64", "kiln.ip6=fd00::15,fd00::2",
		"kiln.ip6=fd00::15/64,fd00::2,fd00::3", "kiln.ip6=fd00::15/0,fd00::2",
		"kiln.ip6=fd00::15/129,fd00::2", "kiln.ip6=fd00::15/064,fd00::2",
		"kiln.ip6=fd00::15/64,fd01::2", "kiln.ip6=fd00::15/64,fd00::15",
		"kiln.ip6=10.0.2.15/24,10.0.2.2", "kiln.ip6=fd00:::15/64,fd00::2",
		"kiln.ip6=[fd00::15]/64,fd00::2", "kiln.ip6=fd00::15%eth0/64,fd00::2",
		"kiln.ip6=::/64,::1", "kiln.ip6=::1/128,fe80::1", "kiln.ip6=ff02::1/64,ff02::2",
		"kiln.ip6=fe80::5/64,fe80::1", "kiln.ip6=::ffff:10.0.2.15/120,::ffff:10.0.2.2",
		"kiln.ip6=fd00::15/64,ff02::2", "kiln.ip6=2001:db8:0:ff00::1/57,2001:db8:0:ff80::1",
	};
	struct bootargs ba;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse(bad[i], &ba) != -EINVAL)
			fail_msg("accepted: %s", bad[i]);
		assert_non_null(strstr(err, "bad value for kiln.ip"));
		assert_null(strchr(err, '\n'));
	}
	/* The message says what is wrong. */
	parse("kiln.ip=10.0.2.15/24,10.0.3.2", &ba);
	assert_string_equal(err, "bad value for kiln.ip (the gateway is outside the subnet)");
	parse("kiln.ip6=fd00::15/200,fd00::2", &ba);
	assert_string_equal(err, "bad value for kiln.ip6 (the prefix must be from 1 to 128)");
}

static void test_bounded(void **state)
{
	char huge[600];
	struct bootargs ba;

	/* A value longer than the field cap, then a whole overlong token. */
	memset(huge, '1', sizeof(huge));
	memcpy(huge, "kiln.ip=", 8);
	huge[200] = 0;
	assert_int_equal(parse(huge, &ba), -EINVAL);
	assert_false(ba.ip.set);
	huge[200] = '1';
	assert_int_equal(bootargs_parse(huge, sizeof(huge), &ba, err, sizeof(err), NULL, 0), -EINVAL);
	/* A failed kiln.ip leaves nothing half-set. */
	assert_int_equal(parse("kiln.ip=10.0.2.15/24,10.0.2.2 kiln.ip=10.0.2.16/24,10.0.3.1", &ba),
			 -EINVAL);
	assert_ip4(ba.ip.addr, "10.0.2.15");
	assert_ip4(ba.ip.gw, "10.0.2.2");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults_no_network),
		cmocka_unit_test(test_guestnet_bootargs),
		cmocka_unit_test(test_good),
		cmocka_unit_test(test_bad),
		cmocka_unit_test(test_bounded),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
