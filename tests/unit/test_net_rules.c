/*
 * kiln-net's policy core: --allow rule parsing (good and bad rules, one-line
 * messages), DNS verdicts, the pin table (TTL clamping, expiry, eviction),
 * connect verdicts for TCP/UDP/ICMP, the always-denied addresses, DNS
 * rebinding, and the SNI/Host checks. The clock is a number we pass in.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "net/rules.h"

static char err[256];

static struct net_ip ip(const char *s)
{
	struct net_ip a;

	assert_int_equal(net_ip_parse(s, &a), 0);
	return a;
}

static struct net_rule parse_ok(const char *text)
{
	struct net_rule r;

	err[0] = '\0';
	if (net_rule_parse(text, &r, err, sizeof(err)) != 0)
		fail_msg("'%s' rejected: %s", text, err);
	return r;
}

static bool printable(const char *s)
{
	for (; *s; s++)
		if (*s < 0x20 || *s >= 0x7f)
			return false;
	return true;
}

/* Rejected, with a one-line message naming the rule and containing `want`. */
static void parse_bad(const char *text, const char *want)
{
	struct net_rule r;
	char head[128];

	memset(err, 0, sizeof(err));
	if (net_rule_parse(text, &r, err, sizeof(err)) != -EINVAL)
		fail_msg("'%s' accepted", text);
	assert_null(strchr(err, '\n'));
	snprintf(head, sizeof(head), "rule '%.40s", text);
	if (strlen(text) <= 40 && printable(text) && strncmp(err, head, strlen(head)))
		fail_msg("message for '%s' does not name it: %s", text, err);
	if (want && !strstr(err, want))
		fail_msg("message for '%s' lacks '%s': %s", text, want, err);
	/* Nothing half-parsed is left behind. */
	assert_int_equal(r.nports, 0);
	assert_int_equal(r.name[0], 0);
}

/* ---- a fake host check: the host's addresses are a list the test sets ---- */

#define FAKE_HOST_MAX 1024

static struct {
	struct net_ip addr[FAKE_HOST_MAX];
	unsigned n;
	int fail;	 /* nonzero: every check returns this */
	unsigned calls;
	struct net_ip unroutable; /* family 0: none */
} fake;

static bool same_ip(const struct net_ip *a, const struct net_ip *b)
{
	return a->family == b->family && !memcmp(a->b, b->b, a->family == AF_INET ? 4 : 16);
}

static int fake_host_check(void *ctx, const struct net_ip *a)
{
	assert_ptr_equal(ctx, &fake);
	/* The policy asks about normalised addresses only. */
	assert_true(a->family == AF_INET || a->family == AF_INET6);
	if (a->family == AF_INET6)
		assert_false(!memcmp(a->b, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12));
	fake.calls++;
	if (fake.fail)
		return fake.fail;
	if (same_ip(a, &fake.unroutable))
		return -ENETUNREACH;
	for (unsigned i = 0; i < fake.n; i++)
		if (same_ip(a, &fake.addr[i]))
			return 1;
	return 0;
}

static void fake_reset(void)
{
	memset(&fake, 0, sizeof(fake));
}

static void fake_add(const char *s)
{
	assert_true(fake.n < FAKE_HOST_MAX);
	assert_int_equal(net_ip_parse(s, &fake.addr[fake.n]), 0);
	fake.n++;
}

static struct net_policy *policy(const char *const *rules, unsigned n, unsigned pins)
{
	struct net_policy *p = net_policy_new(pins);

	assert_non_null(p);
	fake_reset();
	net_policy_set_host_check(p, fake_host_check, &fake);
	for (unsigned i = 0; i < n; i++)
		if (net_policy_add_rule(p, rules[i], err, sizeof(err)))
			fail_msg("rule '%s': %s", rules[i], err);
	return p;
}

static struct net_decision tcp(const struct net_policy *p, const char *dst, uint16_t port,
			       uint64_t now)
{
	struct net_ip a = ip(dst);

	return net_decide_connect(p, NET_TCP, &a, port, now);
}

static struct net_decision udp(const struct net_policy *p, const char *dst, uint16_t port)
{
	struct net_ip a = ip(dst);

	return net_decide_connect(p, NET_UDP, &a, port, 0);
}

static int pin(struct net_policy *p, const char *name, const char *addr, uint32_t ttl,
	       uint64_t now)
{
	struct net_ip a = ip(addr);

	return net_pin_add(p, name, &a, ttl, now, NULL);
}

/* pin(), and the reason when withheld. */
static const char *pin_why(struct net_policy *p, const char *name, const char *addr)
{
	struct net_ip a = ip(addr);
	enum net_reason why;
	int r = net_pin_add(p, name, &a, 60, 0, &why);

	if (r == 0)
		return "pinned";
	assert_int_equal(r, 1);
	return net_reason_str(why);
}

#define assert_verdict(d, v, r)                                   \
	do {                                                      \
		struct net_decision d_ = (d);                     \
		assert_int_equal(d_.verdict, v);                  \
		assert_string_equal(net_reason_str(d_.reason), r); \
	} while (0)

/* ---- parsing ---- */

static void test_parse_name_defaults(void **state)
{
	struct net_rule r = parse_ok("api.example.com");

	assert_int_equal(r.kind, NET_RULE_NAME);
	assert_int_equal(r.proto, NET_TCP);
	assert_false(r.wildcard);
	assert_string_equal(r.name, "api.example.com");
	assert_int_equal(r.nports, 2);
	assert_int_equal(r.ports[0], 80);
	assert_int_equal(r.ports[1], 443);
}

static void test_parse_name_normalised(void **state)
{
	struct net_rule r = parse_ok("API.Example.COM.");

	assert_string_equal(r.name, "api.example.com");
	r = parse_ok("xn--bcher-kva.example:8443");
	assert_string_equal(r.name, "xn--bcher-kva.example");
	assert_int_equal(r.nports, 1);
	assert_int_equal(r.ports[0], 8443);
	r = parse_ok("localhost");
	assert_string_equal(r.name, "localhost");
	r = parse_ok("3com.com");
	assert_string_equal(r.name, "3com.com");
}

static void test_parse_wildcard(void **state)
{
	struct net_rule r = parse_ok("*.Example.com:443");

	assert_true(r.wildcard);
	assert_string_equal(r.name, "example.com");
	assert_int_equal(r.nports, 1);
	assert_int_equal(r.ports[0], 443);
	parse_bad("*", "'*'");
	parse_bad("*.", "empty name");
	parse_bad("a.*.com", "'*'");
	parse_bad("*example.com", "'*'");
	parse_bad("**.example.com", "'*'");
	parse_bad("*.*.example.com", "'*'");
}

static void test_parse_ports(void **state)
{
	struct net_rule r = parse_ok("example.com:443,80,443,8080");
	char many[256];
	size_t n = 0;

	assert_int_equal(r.nports, 3);
	assert_int_equal(r.ports[0], 80);
	assert_int_equal(r.ports[1], 443);
	assert_int_equal(r.ports[2], 8080);
	r = parse_ok("example.com:1,65535");
	assert_int_equal(r.ports[0], 1);
	assert_int_equal(r.ports[1], 65535);

	n += (size_t)snprintf(many + n, sizeof(many) - n, "example.com:");
	for (int i = 1; i <= 16; i++)
		n += (size_t)snprintf(many + n, sizeof(many) - n, "%s%d", i > 1 ? "," : "", i);
	r = parse_ok(many);
	assert_int_equal(r.nports, 16);
	snprintf(many + n, sizeof(many) - n, ",17");
	parse_bad(many, "more than 16 ports");

	parse_bad("example.com:0", "bad port '0'");
	parse_bad("example.com:65536", "bad port");
	parse_bad("example.com:99999999", "bad port");
	parse_bad("example.com:http", "bad port");
	parse_bad("example.com:", "empty port list");
	parse_bad("example.com:80,", "empty port");
	parse_bad("example.com:,80", "empty port");
	parse_bad("example.com:80,,443", "empty port");
	parse_bad("example.com:+80", "bad port");
	parse_bad("example.com:0x50", "bad port");
	parse_bad("example.com:-1", "bad port");
	parse_bad("example.com:80:443", "too many ':'");
	parse_bad(":443", "no host");
}

static void test_parse_bad_names(void **state)
{
	char label[80], longname[300];

	parse_bad("", "empty rule");
	parse_bad(".", "empty name");
	parse_bad("-a.example.com", "starts with '-'");
	parse_bad("a-.example.com", "ends with '-'");
	parse_bad("example-", "ends with '-'");
	parse_bad("a..example.com", "empty label");
	parse_bad(".example.com", "empty label");
	parse_bad("example.com..", "empty label");
	parse_bad("ex_ample.com", "invalid character");
	parse_bad("ex ample.com", "blank");
	parse_bad("example.com\n", "control");
	parse_bad("b\xc3\xbc" "cher.example", "punycode");
	parse_bad("1.2.3", "not an IPv4");
	parse_bad("example.123", "all digits");
	parse_bad("udp:example.com:53", "not a name");

	memset(label, 'a', 64);
	label[64] = '\0';
	snprintf(longname, sizeof(longname), "%s.com", label);
	parse_bad(longname, "longer than 63");
	label[63] = '\0';
	snprintf(longname, sizeof(longname), "%s.com", label);
	parse_ok(longname);

	/* 253 characters are fine, 254 are not (a trailing dot does not count). */
	snprintf(longname, sizeof(longname), "%s.%s.%s.%.61s", label, label, label, label);
	assert_int_equal(strlen(longname), 253);
	parse_ok(longname);
	longname[253] = '.';
	longname[254] = '\0';
	parse_ok(longname);
	snprintf(longname, sizeof(longname), "%s.%s.%s.%.62s", label, label, label, label);
	parse_bad(longname, "longer than 253");
}

static void test_parse_ipv4(void **state)
{
	struct net_rule r = parse_ok("93.184.216.34");

	assert_int_equal(r.kind, NET_RULE_CIDR);
	assert_int_equal(r.ip.family, AF_INET);
	assert_int_equal(r.prefix, 32);
	assert_int_equal(r.nports, 0);
	r = parse_ok("93.184.216.34:22");
	assert_int_equal(r.nports, 1);
	r = parse_ok("10.0.0.0/8:80,443");
	assert_int_equal(r.prefix, 8);
	assert_int_equal(r.nports, 2);
	r = parse_ok("UDP:8.8.8.8:53");
	assert_int_equal(r.proto, NET_UDP);
	r = parse_ok("tcp:8.8.8.8:53");
	assert_int_equal(r.proto, NET_TCP);
	r = parse_ok("tcp:example.com");
	assert_int_equal(r.kind, NET_RULE_NAME);
	parse_bad("udp:", "no host");
	r = parse_ok("0.0.0.0/0");
	assert_int_equal(r.prefix, 0);

	parse_bad("10.0.0.1/8", "host bits set");
	parse_bad("10.0.0.1/8", "did you mean 10.0.0.0/8");
	parse_bad("192.168.1.1/31", "192.168.1.0/31");
	parse_bad("10.0.0.0/33", "bad prefix");
	parse_bad("10.0.0.0/", "bad prefix");
	parse_bad("10.0.0.0/-1", "bad prefix");
	parse_bad("10.0.0.0/8/8", "bad prefix");
	parse_bad("256.1.1.1", "not an IPv4");
	parse_bad("1.2.3.04", "not an IPv4");
	parse_bad("10.0.0/8", "not an IPv4");
	parse_bad("example.com/8", "not an IPv4");
	parse_bad("[1.2.3.4]:80", "brackets are for IPv6");
}

static void test_parse_ipv6(void **state)
{
	struct net_rule r = parse_ok("2001:db8::1");

	assert_int_equal(r.ip.family, AF_INET6);
	assert_int_equal(r.prefix, 128);
	assert_int_equal(r.nports, 0);
	r = parse_ok("[2001:DB8::1]:443");
	assert_int_equal(r.prefix, 128);
	assert_int_equal(r.nports, 1);
	assert_int_equal(r.ports[0], 443);
	r = parse_ok("[2001:db8::/32]:80,443");
	assert_int_equal(r.prefix, 32);
	assert_int_equal(r.nports, 2);
	r = parse_ok("2001:db8::/32");
	assert_int_equal(r.nports, 0);
	r = parse_ok("[2001:db8::1]");
	assert_int_equal(r.nports, 0);
	r = parse_ok("udp:[2001:db8::53]:53");
	assert_int_equal(r.proto, NET_UDP);
	r = parse_ok("::/0");
	assert_int_equal(r.prefix, 0);

	parse_bad("2001:db8::1:80,443", "must be in brackets");
	parse_bad("2001:db8::1:80,443", "[2001:db8::1]:80,443");
	parse_bad("2001:db8::/32:443", "[2001:db8::/32]:443");
	parse_bad("2001:db8::1/32", "host bits set");
	parse_bad("[2001:db8::1/32]:443", "did you mean 2001:db8::/32");
	parse_bad("[2001:db8::/129]", "bad prefix");
	parse_bad("[2001:db8::1", "without ']'");
	parse_bad("[2001:db8::1]x", "after ']'");
	parse_bad("[2001:db8::1]:", "empty port list");
	parse_bad("[2001:db8:::1]:80", "not an IPv4 or IPv6");
	parse_bad("::ffff:1.2.3.4", "IPv4-mapped");
	parse_bad("fe80::1%eth0", "not an IPv4 or IPv6");
}

static void test_parse_messages(void **state)
{
	char longrule[600];
	struct net_rule r;

	/* Long rules are cut in the message; still one line, still named. */
	memset(longrule, 'a', sizeof(longrule) - 1);
	longrule[sizeof(longrule) - 1] = '\0';
	assert_int_equal(net_rule_parse(longrule, &r, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "longer than 512"));
	assert_non_null(strstr(err, "...'"));
	assert_true(strlen(err) < 160);
	/* Control characters are not echoed. */
	assert_int_equal(net_rule_parse("a\x1b[2Jb.com", &r, err, sizeof(err)), -EINVAL);
	assert_null(strchr(err, '\x1b'));
	/* A tiny buffer is still terminated; no buffer at all is fine. */
	assert_int_equal(net_rule_parse("bad..name", &r, err, 8), -EINVAL);
	assert_int_equal(strlen(err), 7);
	assert_int_equal(net_rule_parse("bad..name", &r, NULL, 0), -EINVAL);
	assert_int_equal(net_rule_parse(NULL, &r, err, sizeof(err)), -EINVAL);
}

/* Random rules from the characters that matter: never a crash, and what is
 * accepted is well formed. */
static void test_parse_fuzz(void **state)
{
	static const char chars[] = "0123456789abcdefxn:./[],*-udp:tcp:";
	uint32_t seed = 4242;
	char text[64];
	struct net_rule r;
	unsigned accepted = 0;

	for (int iter = 0; iter < 100000; iter++) {
		size_t len;

		seed = seed * 1103515245u + 12345u;
		len = 1 + (seed >> 16) % 40;
		for (size_t i = 0; i < len; i++) {
			seed = seed * 1103515245u + 12345u;
			text[i] = chars[(seed >> 16) % (sizeof(chars) - 1)];
		}
		text[len] = '\0';
		if (net_rule_parse(text, &r, err, sizeof(err))) {
			assert_null(strchr(err, '\n'));
			assert_non_null(strstr(err, "rule '"));
			continue;
		}
		accepted++;
		assert_true(r.nports <= NET_RULE_MAX_PORTS);
		for (unsigned i = 1; i < r.nports; i++)
			assert_true(r.ports[i - 1] < r.ports[i]);
		if (r.kind == NET_RULE_NAME) {
			assert_true(r.nports >= 1);
			assert_true(strlen(r.name) >= 1 && strlen(r.name) <= NET_NAME_MAX);
			assert_int_equal(r.proto, NET_TCP);
		} else {
			assert_true(r.prefix <= (r.ip.family == AF_INET ? 32u : 128u));
		}
	}
	assert_true(accepted > 100);
}

static void test_policy_cap(void **state)
{
	struct net_policy *p = net_policy_new(0);
	char text[64];

	assert_non_null(p);
	for (unsigned i = 0; i < NET_RULES_MAX; i++) {
		snprintf(text, sizeof(text), "h%u.example.com", i);
		assert_int_equal(net_policy_add_rule(p, text, err, sizeof(err)), 0);
	}
	assert_int_equal(net_policy_add_rule(p, "one.more.com", err, sizeof(err)), -ENOSPC);
	assert_non_null(strstr(err, "too many rules"));
	assert_int_equal(net_policy_nrules(p), NET_RULES_MAX);
	assert_string_equal(net_policy_rule(p, 7)->name, "h7.example.com");
	assert_null(net_policy_rule(p, NET_RULES_MAX));
	/* A bad rule is not added. */
	net_policy_free(p);
	p = net_policy_new(0);
	assert_int_equal(net_policy_add_rule(p, "bad..name", err, sizeof(err)), -EINVAL);
	assert_int_equal(net_policy_nrules(p), 0);
	net_policy_free(p);
	net_policy_free(NULL);
	assert_null(net_policy_new(NET_PINS_MAX + 1));
}

static void test_ip_helpers(void **state)
{
	struct net_ip a;
	char s[64];

	assert_int_equal(net_ip_parse("::ffff:10.1.2.3", &a), 0);
	assert_int_equal(a.family, AF_INET);
	net_ip_str(&a, s, sizeof(s));
	assert_string_equal(s, "10.1.2.3");
	a = ip("2001:db8::1");
	net_ip_str(&a, s, sizeof(s));
	assert_string_equal(s, "2001:db8::1");
	net_ip_str(&a, s, 4);
	assert_int_equal(strlen(s), 1); /* "?" when it does not fit */
	assert_int_equal(net_ip_parse("1.2.3.4/32", &a), -EINVAL);
	assert_int_equal(net_ip_parse("", &a), -EINVAL);
}

/* ---- DNS verdicts ---- */

static void test_dns_names(void **state)
{
	const char *rules[] = { "api.example.com:443", "*.svc.example.org", "pypi.org" };
	struct net_policy *p = policy(rules, 3, 0);
	struct net_decision d;

	d = net_decide_dns(p, "api.example.com", 1, 1);
	assert_verdict(d, NET_ALLOW, "rule");
	assert_int_equal(d.rule, 0);
	assert_verdict(net_decide_dns(p, "API.EXAMPLE.COM.", 28, 1), NET_ALLOW, "rule");
	assert_verdict(net_decide_dns(p, "example.com", 1, 1), NET_DENY, "no-rule");
	assert_verdict(net_decide_dns(p, "x.api.example.com", 1, 1), NET_DENY, "no-rule");
	/* Wildcards: subdomains at any depth, never the apex or a look-alike. */
	d = net_decide_dns(p, "a.svc.example.org", 1, 1);
	assert_verdict(d, NET_ALLOW, "rule");
	assert_int_equal(d.rule, 1);
	assert_verdict(net_decide_dns(p, "a.b.svc.example.org", 1, 1), NET_ALLOW, "rule");
	assert_verdict(net_decide_dns(p, "svc.example.org", 1, 1), NET_DENY, "no-rule");
	assert_verdict(net_decide_dns(p, "evilsvc.example.org", 1, 1), NET_DENY, "no-rule");
	assert_verdict(net_decide_dns(p, "svc.example.org.evil.com", 1, 1), NET_DENY, "no-rule");
	assert_verdict(net_decide_dns(p, "pypi.org.", 28, 1), NET_ALLOW, "rule");
	net_policy_free(p);
}

static void test_dns_types_and_bad_names(void **state)
{
	const char *rules[] = { "pypi.org", "10.0.0.0/8" };
	struct net_policy *p = policy(rules, 2, 0);
	struct net_decision d;

	d = net_decide_dns(p, "pypi.org", 16 /* TXT */, 1);
	assert_verdict(d, NET_ANSWER_EMPTY, "dns-other-type");
	assert_int_equal(d.rule, 0);
	assert_verdict(net_decide_dns(p, "pypi.org", 255 /* ANY */, 1), NET_ANSWER_EMPTY,
		       "dns-other-type");
	assert_verdict(net_decide_dns(p, "other.org", 16, 1), NET_DENY, "no-rule");
	assert_verdict(net_decide_dns(p, "pypi.org", 1, 3 /* CH */), NET_DENY, "dns-class");
	assert_verdict(net_decide_dns(p, "", 1, 1), NET_DENY, "bad-name");
	assert_verdict(net_decide_dns(p, "_dmarc.pypi.org", 16, 1), NET_DENY, "bad-name");
	assert_verdict(net_decide_dns(p, "a..pypi.org", 1, 1), NET_DENY, "bad-name");
	assert_verdict(net_decide_dns(p, NULL, 1, 1), NET_DENY, "bad-name");
	/* IP rules never make names resolvable. */
	assert_verdict(net_decide_dns(p, "10.in-addr.arpa", 12, 1), NET_DENY, "no-rule");
	net_policy_free(p);
}

/* ---- pins and TCP ---- */

static void test_pin_connect(void **state)
{
	const char *rules[] = { "10.9.9.9:1", "api.example.com" };
	struct net_policy *p = policy(rules, 2, 0);
	struct net_decision d;

	assert_verdict(tcp(p, "93.184.216.34", 443, 1000), NET_DENY, "no-rule");
	assert_int_equal(pin(p, "API.example.com.", "93.184.216.34", 60, 1000), 0);
	d = tcp(p, "93.184.216.34", 443, 1000);
	assert_verdict(d, NET_ALLOW, "pinned");
	assert_int_equal(d.rule, 1);
	assert_int_equal(d.inspect, NET_INSPECT_TLS_SNI);
	d = tcp(p, "93.184.216.34", 80, 1000);
	assert_verdict(d, NET_ALLOW, "pinned");
	assert_int_equal(d.inspect, NET_INSPECT_HTTP_HOST);
	assert_verdict(tcp(p, "93.184.216.34", 22, 1000), NET_DENY, "port-not-allowed");
	/* Expiry: valid up to now + TTL, exclusive. */
	assert_verdict(tcp(p, "93.184.216.34", 443, 60999), NET_ALLOW, "pinned");
	assert_verdict(tcp(p, "93.184.216.34", 443, 61000), NET_DENY, "no-rule");
	/* No UDP through pins. */
	assert_verdict(udp(p, "93.184.216.34", 443), NET_DENY, "no-rule");
	net_policy_free(p);
}

static void test_pin_ipv6_and_mapped(void **state)
{
	const char *rules[] = { "*.example.com:443" };
	struct net_policy *p = policy(rules, 1, 0);

	assert_int_equal(pin(p, "www.example.com", "2606:2800:220:1::1", 300, 0), 0);
	assert_verdict(tcp(p, "2606:2800:220:1::1", 443, 1), NET_ALLOW, "pinned");
	assert_verdict(tcp(p, "2606:2800:220:1::2", 443, 1), NET_DENY, "no-rule");
	/* An IPv4 pin matches the same address reached as IPv4-mapped IPv6. */
	assert_int_equal(pin(p, "www.example.com", "93.184.216.34", 300, 0), 0);
	{
		struct net_ip a = { .family = AF_INET6 };

		memcpy(a.b, "\0\0\0\0\0\0\0\0\0\0\xff\xff\x5d\xb8\xd8\x22", 16);
		assert_verdict(net_decide_connect(p, NET_TCP, &a, 443, 1), NET_ALLOW, "pinned");
	}
	/* The apex is not allowed, so it is never pinned. */
	assert_int_equal(pin(p, "example.com", "93.184.216.35", 300, 0), -EPERM);
	assert_verdict(tcp(p, "93.184.216.35", 443, 1), NET_DENY, "no-rule");
	assert_int_equal(pin(p, "bad..name", "93.184.216.35", 300, 0), -EINVAL);
	net_policy_free(p);
}

static void test_pin_ttl_clamp(void **state)
{
	const char *rules[] = { "a.example.com", "b.example.com" };
	struct net_policy *p = policy(rules, 2, 0);
	const uint64_t t0 = 5000000;

	assert_int_equal(pin(p, "a.example.com", "93.184.216.1", 0, t0), 0);
	assert_verdict(tcp(p, "93.184.216.1", 443, t0 + 4999), NET_ALLOW, "pinned");
	assert_verdict(tcp(p, "93.184.216.1", 443, t0 + 5000), NET_DENY, "no-rule");
	assert_int_equal(pin(p, "b.example.com", "93.184.216.2", 0xffffffffu, t0), 0);
	assert_verdict(tcp(p, "93.184.216.2", 443, t0 + 3600 * 1000 - 1), NET_ALLOW, "pinned");
	assert_verdict(tcp(p, "93.184.216.2", 443, t0 + 3600 * 1000), NET_DENY, "no-rule");
	/* A clock near its end does not wrap. */
	assert_int_equal(pin(p, "a.example.com", "93.184.216.3", 60, UINT64_MAX - 10), 0);
	assert_verdict(tcp(p, "93.184.216.3", 443, UINT64_MAX - 1), NET_ALLOW, "pinned");
	/* Re-pinning refreshes the expiry. */
	assert_int_equal(pin(p, "a.example.com", "93.184.216.1", 10, t0 + 100000), 0);
	assert_verdict(tcp(p, "93.184.216.1", 443, t0 + 109999), NET_ALLOW, "pinned");
	assert_int_equal(net_pin_count(p, t0 + 100000), 3); /* .1, .2 and the far one */
	net_policy_free(p);
}

static void test_pin_eviction(void **state)
{
	const char *rules[] = { "*.example.com" };
	struct net_policy *p = policy(rules, 1, 4);
	char name[64], addr[32];

	for (int i = 0; i < 4; i++) {
		snprintf(name, sizeof(name), "h%d.example.com", i);
		snprintf(addr, sizeof(addr), "93.184.216.%d", i + 1);
		assert_int_equal(pin(p, name, addr, 600, 0), 0);
	}
	assert_int_equal(net_pin_count(p, 0), 4);
	/* Refresh h0: h1 is now the oldest and goes first. */
	assert_int_equal(pin(p, "h0.example.com", "93.184.216.1", 600, 1), 0);
	assert_int_equal(pin(p, "h4.example.com", "93.184.216.5", 600, 2), 0);
	assert_int_equal(net_pin_count(p, 2), 4);
	assert_verdict(tcp(p, "93.184.216.1", 443, 3), NET_ALLOW, "pinned");
	assert_verdict(tcp(p, "93.184.216.2", 443, 3), NET_DENY, "no-rule");
	assert_verdict(tcp(p, "93.184.216.5", 443, 3), NET_ALLOW, "pinned");
	/* h9 evicts h2; once h9 has expired, h10 takes its place, not a live one. */
	assert_int_equal(pin(p, "h9.example.com", "93.184.216.9", 5, 3), 0);
	assert_verdict(tcp(p, "93.184.216.3", 443, 4), NET_DENY, "no-rule");
	assert_int_equal(pin(p, "h10.example.com", "93.184.216.10", 600, 10000), 0);
	assert_verdict(tcp(p, "93.184.216.1", 443, 10001), NET_ALLOW, "pinned");
	assert_verdict(tcp(p, "93.184.216.4", 443, 10001), NET_ALLOW, "pinned");
	assert_verdict(tcp(p, "93.184.216.5", 443, 10001), NET_ALLOW, "pinned");
	assert_verdict(tcp(p, "93.184.216.10", 443, 10001), NET_ALLOW, "pinned");
	assert_verdict(tcp(p, "93.184.216.9", 443, 10001), NET_DENY, "no-rule");
	/* Many names on one address (a CDN) and one name on many addresses. */
	net_policy_free(p);
	p = policy(rules, 1, 0);
	for (int i = 0; i < 300; i++) {
		snprintf(name, sizeof(name), "h%d.example.com", i);
		assert_int_equal(pin(p, name, "93.184.216.7", 600, 0), 0);
	}
	assert_int_equal(net_pin_count(p, 0), 300);
	net_policy_free(p);
}

static void test_pin_ports_from_rules(void **state)
{
	const char *rules[] = { "git.example.com:22", "git.example.com:443", "*.example.com:8443",
				"plain.example.com:80" };
	struct net_policy *p = policy(rules, 4, 0);
	struct net_decision d;

	assert_int_equal(pin(p, "git.example.com", "93.184.216.1", 60, 0), 0);
	d = tcp(p, "93.184.216.1", 22, 0);
	assert_verdict(d, NET_ALLOW, "pinned");
	assert_int_equal(d.rule, 0);
	assert_int_equal(d.inspect, NET_INSPECT_NONE); /* nothing to look at on other ports */
	d = tcp(p, "93.184.216.1", 443, 0);
	assert_int_equal(d.rule, 1);
	assert_int_equal(d.inspect, NET_INSPECT_TLS_SNI);
	d = tcp(p, "93.184.216.1", 8443, 0);
	assert_verdict(d, NET_ALLOW, "pinned");
	assert_int_equal(d.rule, 2);
	assert_verdict(tcp(p, "93.184.216.1", 80, 0), NET_DENY, "port-not-allowed");
	assert_int_equal(pin(p, "plain.example.com", "93.184.216.2", 60, 0), 0);
	assert_verdict(tcp(p, "93.184.216.2", 443, 0), NET_DENY, "port-not-allowed");
	d = tcp(p, "93.184.216.2", 80, 0);
	assert_int_equal(d.inspect, NET_INSPECT_HTTP_HOST);
	net_policy_free(p);
}

static void test_cidr_connect(void **state)
{
	const char *rules[] = { "10.1.0.0/16:22", "203.0.113.7", "[2001:db8::/32]:443",
				"192.0.2.0/25:80,443" };
	struct net_policy *p = policy(rules, 4, 0);
	struct net_decision d;

	d = tcp(p, "10.1.2.3", 22, 0);
	assert_verdict(d, NET_ALLOW, "rule");
	assert_int_equal(d.rule, 0);
	assert_int_equal(d.inspect, NET_INSPECT_NONE);
	assert_verdict(tcp(p, "10.1.255.255", 22, 0), NET_ALLOW, "rule");
	assert_verdict(tcp(p, "10.1.2.3", 23, 0), NET_DENY, "no-rule");
	assert_verdict(tcp(p, "10.2.0.1", 22, 0), NET_DENY, "no-rule");
	/* A bare address allows every port, without inspection. */
	d = tcp(p, "203.0.113.7", 443, 0);
	assert_verdict(d, NET_ALLOW, "rule");
	assert_int_equal(d.inspect, NET_INSPECT_NONE);
	assert_verdict(tcp(p, "203.0.113.7", 1, 0), NET_ALLOW, "rule");
	assert_verdict(tcp(p, "203.0.113.8", 443, 0), NET_DENY, "no-rule");
	assert_verdict(tcp(p, "2001:db8:ffff::1", 443, 0), NET_ALLOW, "rule");
	assert_verdict(tcp(p, "2001:db9::1", 443, 0), NET_DENY, "no-rule");
	assert_verdict(tcp(p, "2001:db8::1", 80, 0), NET_DENY, "no-rule");
	/* Odd prefix lengths. */
	assert_verdict(tcp(p, "192.0.2.127", 80, 0), NET_ALLOW, "rule");
	assert_verdict(tcp(p, "192.0.2.128", 80, 0), NET_DENY, "no-rule");
	/* TCP rules do not allow UDP. */
	assert_verdict(udp(p, "203.0.113.7", 53), NET_DENY, "no-rule");
	net_policy_free(p);
}

static void test_rule_order(void **state)
{
	const char *rules[] = { "10.0.0.0/8:443", "10.1.0.0/16", "10.1.2.3:443" };
	struct net_policy *p = policy(rules, 3, 0);

	assert_int_equal(tcp(p, "10.1.2.3", 443, 0).rule, 0);
	assert_int_equal(tcp(p, "10.1.2.3", 80, 0).rule, 1);
	net_policy_free(p);
}

static void test_udp_and_icmp(void **state)
{
	const char *rules[] = { "udp:8.8.8.8:53", "udp:[2001:4860:4860::8888]:53,853",
				"0.0.0.0/0", "dns.google" };
	struct net_policy *p = policy(rules, 4, 0);
	struct net_ip a = ip("8.8.8.8");
	struct net_decision d;

	d = udp(p, "8.8.8.8", 53);
	assert_verdict(d, NET_ALLOW, "rule");
	assert_int_equal(d.rule, 0);
	assert_int_equal(d.inspect, NET_INSPECT_NONE);
	assert_verdict(udp(p, "8.8.8.8", 54), NET_DENY, "no-rule");
	assert_verdict(udp(p, "8.8.4.4", 53), NET_DENY, "no-rule");
	assert_verdict(udp(p, "2001:4860:4860::8888", 853), NET_ALLOW, "rule");
	/* TCP to it comes from the all-ports 0.0.0.0/0 rule instead. */
	assert_int_equal(tcp(p, "8.8.8.8", 53, 0).rule, 2);
	/* Pins never open UDP. */
	assert_int_equal(pin(p, "dns.google", "8.8.4.4", 60, 0), 0);
	assert_verdict(udp(p, "8.8.4.4", 443), NET_DENY, "no-rule");
	/* ICMP never. */
	assert_verdict(net_decide_icmp(p, &a), NET_DENY, "icmp");
	net_policy_free(p);
}

static void test_bad_args(void **state)
{
	const char *rules[] = { "0.0.0.0/0" };
	struct net_policy *p = policy(rules, 1, 0);
	struct net_ip a = { .family = 0 };

	assert_verdict(net_decide_connect(p, NET_TCP, &a, 80, 0), NET_DENY, "bad-argument");
	assert_verdict(net_decide_connect(p, NET_TCP, NULL, 80, 0), NET_DENY, "bad-argument");
	assert_verdict(tcp(p, "1.1.1.1", 0, 0), NET_DENY, "bad-argument");
	assert_verdict(net_decide_connect(p, (enum net_proto)7, &a, 80, 0), NET_DENY,
		       "bad-argument");
	assert_int_equal(net_pin_add(p, "x.com", &a, 60, 0, NULL), -EINVAL);
	assert_int_equal(net_ip_judge(p, &a, NULL), NET_ADDR_DENIED);
	assert_int_equal(net_ip_judge(p, NULL, NULL), NET_ADDR_DENIED);
	net_policy_free(p);
}

/* ---- always denied ---- */

static const char *const reserved[] = {
	"169.254.169.254", "169.254.0.1",    "169.254.255.255", "127.0.0.1",
	"127.255.255.254", "0.0.0.0",	     "0.1.2.3",		"224.0.0.1",
	"239.255.255.250", "255.255.255.255", "::1",		"::",
	"fe80::1",	   "febf:ffff::1",    "ff02::1",	"ff0e::fb",
	"fd00:ec2::254",   "::ffff:169.254.169.254", "::ffff:127.0.0.1", "64:ff9b::a9fe:a9fe",
	"64:ff9b::7f00:1",
};

static void test_reserved_denied(void **state)
{
	const char *rules[] = { "0.0.0.0/0", "::/0", "udp:0.0.0.0/0", "udp:::/0" };
	struct net_policy *p = policy(rules, 4, 0);

	for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++) {
		struct net_decision d = tcp(p, reserved[i], 80, 0);

		if (d.verdict != NET_DENY || d.reason != NET_R_RESERVED)
			fail_msg("%s: %s", reserved[i], net_reason_str(d.reason));
		assert_verdict(udp(p, reserved[i], 53), NET_DENY, "reserved-address");
	}
	/* Their neighbours are ordinary addresses. */
	assert_verdict(tcp(p, "169.253.255.255", 80, 0), NET_ALLOW, "rule");
	assert_verdict(tcp(p, "128.0.0.1", 80, 0), NET_ALLOW, "rule");
	assert_verdict(tcp(p, "1.0.0.0", 80, 0), NET_ALLOW, "rule");
	assert_verdict(tcp(p, "223.255.255.255", 80, 0), NET_ALLOW, "rule");
	assert_verdict(tcp(p, "2001:4860::2", 80, 0), NET_ALLOW, "rule");
	/* 240/4 (255.255.255.255 aside) is non-public, not always denied. */
	assert_verdict(tcp(p, "255.255.255.254", 80, 0), NET_DENY, "private-address");
	assert_verdict(tcp(p, "64:ff9b::808:808", 80, 0), NET_ALLOW, "rule");
	/* ::2 is IPv4-compatible 0.0.0.2: as reserved as 0.0.0.2 itself. */
	assert_verdict(tcp(p, "::2", 80, 0), NET_DENY, "reserved-address");
	/* Non-public ones: a CIDR rule as wide as 0.0.0.0/0 does not open them. */
	assert_verdict(tcp(p, "fec0::1", 80, 0), NET_DENY, "private-address");
	assert_verdict(tcp(p, "fd00:ec2::253", 80, 0), NET_DENY, "private-address");
	assert_verdict(tcp(p, "10.1.2.3", 80, 0), NET_DENY, "private-address");
	net_policy_free(p);
}

static void test_reserved_exact_rule(void **state)
{
	const char *rules[] = { "169.254.169.254:80", "169.254.0.0/16", "127.0.0.1",
				"[::1]:8080",	      "udp:224.0.0.251:5353", "127.0.0.0/8" };
	struct net_policy *p = policy(rules, 6, 0);
	struct net_decision d;

	d = tcp(p, "169.254.169.254", 80, 0);
	assert_verdict(d, NET_ALLOW, "rule");
	assert_int_equal(d.rule, 0);
	assert_verdict(tcp(p, "169.254.169.254", 443, 0), NET_DENY, "reserved-address");
	assert_verdict(tcp(p, "169.254.1.1", 80, 0), NET_DENY, "reserved-address");
	assert_int_equal(tcp(p, "127.0.0.1", 5432, 0).rule, 2);
	assert_verdict(tcp(p, "127.0.0.2", 5432, 0), NET_DENY, "reserved-address");
	assert_verdict(tcp(p, "::1", 8080, 0), NET_ALLOW, "rule");
	assert_verdict(tcp(p, "::1", 8081, 0), NET_DENY, "reserved-address");
	assert_verdict(udp(p, "224.0.0.251", 5353), NET_ALLOW, "rule");
	assert_verdict(tcp(p, "224.0.0.251", 5353, 0), NET_DENY, "reserved-address");
	/* The IPv4-mapped form of an exactly named address is the address. */
	assert_verdict(tcp(p, "::ffff:127.0.0.1", 22, 0), NET_ALLOW, "rule");
	net_policy_free(p);
}

static void test_host_addresses(void **state)
{
	const char *rules[] = { "0.0.0.0/0", "::/0", "93.184.216.10:8000", "*.example.com;private",
				"10.0.0.0/8", "udp:0.0.0.0/0" };
	struct net_policy *p = policy(rules, 6, 0);
	char s[64];

	(void)state;
	assert_verdict(tcp(p, "93.184.216.10", 22, 0), NET_ALLOW, "rule");
	/* The host takes on an address: from then on it is denied, everywhere. */
	fake_add("93.184.216.10");
	fake_add("2001:4860::10");
	fake_add("10.1.1.1");
	assert_verdict(tcp(p, "93.184.216.10", 22, 0), NET_DENY, "host-address");
	assert_verdict(tcp(p, "::ffff:93.184.216.10", 22, 0), NET_DENY, "host-address");
	assert_verdict(tcp(p, "2001:4860::10", 443, 0), NET_DENY, "host-address");
	assert_verdict(udp(p, "93.184.216.10", 53), NET_DENY, "host-address");
	assert_verdict(tcp(p, "10.1.1.1", 22, 0), NET_DENY, "host-address");
	assert_verdict(tcp(p, "10.1.1.2", 22, 0), NET_ALLOW, "rule");
	assert_verdict(tcp(p, "93.184.216.11", 22, 0), NET_ALLOW, "rule");
	/* Named exactly: allowed on that port only. */
	assert_int_equal(tcp(p, "93.184.216.10", 8000, 0).rule, 2);
	/* No table to fill: a thousand addresses, all of them denied. */
	for (int i = 0; fake.n < FAKE_HOST_MAX; i++) {
		snprintf(s, sizeof(s), i % 2 ? "2001:4860:1::%x" : "100.%d.%d.1", i / 200 + 1,
			 i % 200);
		if (i % 2)
			snprintf(s, sizeof(s), "2001:4860:1::%x", i);
		fake_add(s);
	}
	for (unsigned i = 0; i < fake.n; i++) {
		struct net_decision d = net_decide_connect(p, NET_TCP, &fake.addr[i], 443, 0);

		net_ip_str(&fake.addr[i], s, sizeof(s));
		if (d.verdict != NET_DENY || d.reason != NET_R_HOST_ADDR)
			fail_msg("%s: %s", s, net_reason_str(d.reason));
	}
	/* The guest's own virtual network is the host's, whatever the kernel says. */
	assert_verdict(tcp(p, "10.0.2.2", 22, 0), NET_DENY, "host-address");
	assert_verdict(tcp(p, "10.0.2.100", 1, 0), NET_DENY, "host-address");
	assert_verdict(tcp(p, "fd00::3", 53, 0), NET_DENY, "host-address");
	/* DNS answers naming them are withheld. */
	assert_string_equal(pin_why(p, "a.example.com", "93.184.216.10"), "host-address");
	assert_string_equal(pin_why(p, "a.example.com", "2001:4860::10"), "host-address");
	assert_string_equal(pin_why(p, "a.example.com", "10.1.1.1"), "host-address");
	assert_string_equal(pin_why(p, "a.example.com", "2001:4860:1::1"), "host-address");
	assert_string_equal(pin_why(p, "a.example.com", "10.0.2.2"), "host-address");
	net_policy_free(p);
}

/* The host check failing, or no route: fail closed. */
static void test_host_check_fails(void **state)
{
	const char *rules[] = { "0.0.0.0/0", "::/0", "*.example.com", "93.184.216.9" };
	struct net_policy *p = policy(rules, 4, 0);
	struct net_ip a = ip("93.184.216.34");

	(void)state;
	fake.fail = -ETIMEDOUT;
	assert_verdict(tcp(p, "93.184.216.34", 443, 0), NET_DENY, "host-check-failed");
	/* No rule could allow it: the host is not even asked. */
	fake.calls = 0;
	assert_verdict(udp(p, "93.184.216.34", 443), NET_DENY, "no-rule");
	assert_int_equal(fake.calls, 0);
	assert_int_equal(net_ip_judge(p, &a, NULL), NET_ADDR_DENIED);
	/* An exact rule needs no check. */
	assert_verdict(tcp(p, "93.184.216.9", 443, 0), NET_ALLOW, "rule");
	fake.fail = -ENETUNREACH;
	assert_verdict(tcp(p, "93.184.216.34", 443, 0), NET_DENY, "no-route");
	assert_string_equal(pin_why(p, "a.example.com", "2001:4860::1"), "no-route");
	fake.fail = -EIO;
	assert_string_equal(pin_why(p, "a.example.com", "93.184.216.35"), "host-check-failed");
	fake.fail = 0;
	/* A translator's IPv4 side without a route here is fine... */
	fake.unroutable = ip("8.8.8.8");
	assert_verdict(tcp(p, "64:ff9b::808:808", 443, 0), NET_ALLOW, "rule");
	/* ...but not a destination itself. */
	assert_verdict(tcp(p, "8.8.8.8", 443, 0), NET_DENY, "no-route");
	net_policy_free(p);
	/* No host check at all: nothing that needs one is allowed. */
	p = net_policy_new(0);
	assert_int_equal(net_policy_add_rule(p, "0.0.0.0/0", err, sizeof(err)), 0);
	assert_verdict(tcp(p, "93.184.216.34", 443, 0), NET_DENY, "host-check-failed");
	net_policy_free(p);
}

/* Every translated IPv6 form is judged by the IPv4 address it carries. */
static void test_translated_forms(void **state)
{
	const char *rules[] = { "::/0", "*.example.com", "udp:::/0" };
	static const struct {
		const char *addr, *reason;
	} cases[] = {
		/* NAT64 well-known prefix */
		{ "64:ff9b::7f00:1", "reserved-address" },
		{ "64:ff9b::a9fe:a9fe", "reserved-address" },
		{ "64:ff9b::a00:1", "private-address" },
		{ "64:ff9b::c0a8:101", "private-address" },
		{ "64:ff9b::6440:1", "private-address" },
		{ "64:ff9b::5db8:d80a", "host-address" },
		/* NAT64 local-use 64:ff9b:1::/48, at the /96 and /48 positions */
		{ "64:ff9b:1::7f00:1", "reserved-address" },
		{ "64:ff9b:1:a00:1:100::", "reserved-address" }, /* /48: 10.0.1.1, /56: 0.1.1.0 */
		{ "64:ff9b:1:0:a9:fea9:fe00:0", "reserved-address" }, /* /64: 169.254.169.254 */
		{ "64:ff9b:1::808:808", "private-address" },	  /* local-use: non-public itself */
		{ "64:ff9b:1::5db8:d80a", "host-address" },
		/* IPv4-translated, IPv4-compatible */
		{ "::ffff:0:7f00:1", "reserved-address" },
		{ "::ffff:0:a00:1", "private-address" },
		{ "::7f00:1", "reserved-address" },
		{ "::a9fe:a9fe", "reserved-address" },
		{ "::5db8:d80a", "host-address" },
		/* 6to4 */
		{ "2002:7f00:1::1", "reserved-address" },
		{ "2002:a00:1::1", "private-address" },
		{ "2002:5db8:d80a::1", "host-address" },
		/* Teredo: server, and the client (obfuscated: inverted) */
		{ "2001:0:7f00:1::1", "reserved-address" },
		{ "2001:0:808:808:0:0:80ff:fffe", "reserved-address" },	/* client 127.0.0.1 */
		{ "2001:0:808:808:0:0:f5ff:fffe", "private-address" },	/* client 10.0.0.1 */
		{ "2001:0:808:808:0:0:a247:27f5", "host-address" },	/* client 93.184.216.10 */
		/* ISATAP interface identifiers */
		{ "2001:4860:1:2:0:5efe:7f00:1", "reserved-address" },
		{ "2001:4860:1:2:200:5efe:a00:1", "private-address" },
		/* The IPv6 address itself a host address */
		{ "2001:4860::10", "host-address" },
	};
	struct net_policy *p = policy(rules, 3, 0);

	(void)state;
	fake_add("93.184.216.10");
	fake_add("2001:4860::10");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct net_decision d = tcp(p, cases[i].addr, 443, 0);
		const char *w = pin_why(p, "x.example.com", cases[i].addr);

		if (d.verdict != NET_DENY || strcmp(net_reason_str(d.reason), cases[i].reason))
			fail_msg("connect %s: %s, want %s", cases[i].addr, net_reason_str(d.reason),
				 cases[i].reason);
		if (strcmp(w, cases[i].reason))
			fail_msg("DNS answer %s: %s, want %s", cases[i].addr, w, cases[i].reason);
		assert_int_equal(udp(p, cases[i].addr, 53).verdict, NET_DENY);
	}
	/* The same forms around public addresses are public. */
	assert_verdict(tcp(p, "64:ff9b::808:808", 443, 0), NET_ALLOW, "rule");
	assert_verdict(tcp(p, "2002:808:808::1", 443, 0), NET_ALLOW, "rule");
	assert_verdict(tcp(p, "2001:0:808:808:0:0:f7f7:f7f7", 443, 0), NET_ALLOW, "rule");
	assert_string_equal(pin_why(p, "x.example.com", "64:ff9b::808:808"), "pinned");
	net_policy_free(p);
}

/* Non-public addresses: withheld from names, closed to wide CIDR rules,
 * open to ;private and to CIDR rules inside a non-public block. */
static void test_private(void **state)
{
	const char *rules[] = { "*.example.com", "internal.corp:443;private", "0.0.0.0/0:80",
				"10.0.0.0/8:22", "[fd00:1::/32]:22", "0.0.0.0/0:8080;private",
				"*.mixed.test:443", "*.mixed.test:8443;private", "[::/0]:8080;private", "[::/0]:80" };
	static const char *const priv[] = {
		"10.1.2.3",	  "172.16.0.1",	  "172.31.255.255", "192.168.1.1",  "100.64.0.1",
		"100.127.255.254", "192.0.0.1",	  "192.0.2.1",	    "198.51.100.1", "203.0.113.1",
		"198.18.0.1",	  "198.19.255.1", "240.0.0.1",	    "255.255.255.254", "192.88.99.1",
		"fd12::1",	  "fc00::1",	  "fec0::1",	    "2001:db8::1",  "3fff::1",
		"100::1",	  "2001:2::1",	  "2001:10::1",	    "2001:20::1",   "5f00::1",
	};
	static const char *const pub[] = { "172.15.255.255", "172.32.0.0", "100.63.255.255",
					   "100.128.0.0",    "192.0.1.1",  "198.17.255.255",
					   "198.20.0.0",     "11.0.0.1",   "2001:4860::1", "fe00::1" };
	struct net_policy *p = policy(rules, 10, 0);
	struct net_decision d;
	struct net_ip a;

	(void)state;
	for (size_t i = 0; i < sizeof(priv) / sizeof(priv[0]); i++) {
		a = ip(priv[i]);
		if (net_ip_judge(p, &a, NULL) != NET_ADDR_PRIVATE)
			fail_msg("%s is not judged private", priv[i]);
		d = tcp(p, priv[i], 80, 0);
		if (d.verdict != NET_DENY || d.reason != NET_R_PRIVATE)
			fail_msg("%s:80 %s", priv[i], net_reason_str(d.reason));
		d = tcp(p, priv[i], 8080, 0);
		if (d.verdict != NET_ALLOW)
			fail_msg("%s:8080 %s", priv[i], net_reason_str(d.reason));
		if (strcmp(pin_why(p, "a.example.com", priv[i]), "private-address"))
			fail_msg("%s is pinned for a.example.com", priv[i]);
		assert_string_equal(pin_why(p, "internal.corp", priv[i]), "pinned");
	}
	for (size_t i = 0; i < sizeof(pub) / sizeof(pub[0]); i++) {
		a = ip(pub[i]);
		if (net_ip_judge(p, &a, NULL) != NET_ADDR_PUBLIC)
			fail_msg("%s is not judged public", pub[i]);
	}
	/* CIDR rules inside one non-public block open it. */
	assert_verdict(tcp(p, "10.9.9.9", 22, 0), NET_ALLOW, "rule");
	assert_verdict(tcp(p, "fd00:1:2::3", 22, 0), NET_ALLOW, "rule");
	assert_verdict(tcp(p, "fd00:2::3", 22, 0), NET_DENY, "no-rule");
	/* A private pin opens its address to the ;private rule's ports only. */
	assert_int_equal(pin(p, "internal.corp", "10.20.30.40", 60, 0), 0);
	assert_verdict(tcp(p, "10.20.30.40", 443, 1), NET_ALLOW, "pinned");
	assert_int_equal(pin(p, "a.mixed.test", "10.20.30.41", 60, 0), 0);
	assert_verdict(tcp(p, "10.20.30.41", 8443, 1), NET_ALLOW, "pinned");
	assert_verdict(tcp(p, "10.20.30.41", 443, 1), NET_DENY, "private-address");
	{
		struct net_ip b = ip("10.20.30.41");

		assert_verdict(net_check_sni(p, &b, 8443, "a.mixed.test", 1), NET_ALLOW, "pinned");
		assert_verdict(net_check_sni(p, &b, 443, "a.mixed.test", 1), NET_DENY,
			       "private-address");
	}
	/* ;private never opens reserved or host addresses. */
	fake_add("10.1.1.1");
	assert_string_equal(pin_why(p, "internal.corp", "10.1.1.1"), "host-address");
	assert_string_equal(pin_why(p, "internal.corp", "127.0.0.1"), "reserved-address");
	assert_string_equal(pin_why(p, "internal.corp", "169.254.169.254"), "reserved-address");
	assert_verdict(tcp(p, "169.254.169.254", 8080, 0), NET_DENY, "reserved-address");
	net_policy_free(p);
}

static void test_parse_private(void **state)
{
	struct net_rule r;

	(void)state;
	r = parse_ok("internal.corp;private");
	assert_true(r.private_opt);
	assert_true(r.private);
	assert_string_equal(r.name, "internal.corp");
	r = parse_ok("*.corp:8443;private");
	assert_true(r.private && r.wildcard);
	assert_int_equal(r.ports[0], 8443);
	r = parse_ok("internal.corp");
	assert_false(r.private);
	r = parse_ok("0.0.0.0/0;private");
	assert_true(r.private);
	r = parse_ok("0.0.0.0/0");
	assert_false(r.private);
	r = parse_ok("10.0.0.0/8");
	assert_true(r.private);
	assert_false(r.private_opt);
	r = parse_ok("10.0.0.0/7");
	assert_false(r.private);
	r = parse_ok("[fd00::/8]:22");
	assert_true(r.private);
	r = parse_ok("udp:192.168.1.53:53");
	assert_true(r.private);
	parse_bad("internal.corp;privat", "unknown option");
	parse_bad("internal.corp;private;private", "unknown option");
	parse_bad("internal.corp;", "unknown option");
	parse_bad(";private", "empty rule");
	parse_bad("internal.corp:443;private,x", "unknown option");
}

static void test_rebinding(void **state)
{
	const char *rules[] = { "*.example.com", "127.0.0.1:8080" };
	struct net_policy *p = policy(rules, 2, 0);

	assert_int_equal(pin(p, "evil.example.com", "127.0.0.1", 60, 0), 1);
	assert_int_equal(pin(p, "evil.example.com", "169.254.169.254", 60, 0), 1);
	assert_int_equal(pin(p, "evil.example.com", "::ffff:169.254.169.254", 60, 0), 1);
	assert_int_equal(pin(p, "evil.example.com", "10.0.2.2", 60, 0), 1);
	assert_int_equal(pin(p, "evil.example.com", "fe80::1", 60, 0), 1);
	/* Denied addresses say why, marker or not. */
	assert_verdict(tcp(p, "127.0.0.1", 443, 1), NET_DENY, "reserved-address");
	assert_verdict(tcp(p, "169.254.169.254", 80, 1), NET_DENY, "reserved-address");
	assert_verdict(tcp(p, "10.0.2.2", 443, 1), NET_DENY, "host-address");
	assert_verdict(tcp(p, "fe80::1", 443, 1), NET_DENY, "reserved-address");
	/* A marker on a non-public address no rule opens names the rebinding. */
	assert_int_equal(pin(p, "evil.example.com", "10.9.8.7", 60, 0), 1);
	assert_verdict(tcp(p, "10.9.8.7", 443, 1), NET_DENY, "rebinding");
	assert_verdict(tcp(p, "10.9.8.7", 443, 60000), NET_DENY, "no-rule");
	/* An explicit exact rule still works; the marker adds nothing. */
	assert_verdict(tcp(p, "127.0.0.1", 8080, 1), NET_ALLOW, "rule");
	/* SNI/Host naming the rebinding name does not help either. */
	{
		struct net_ip a = ip("169.254.169.254");

		assert_verdict(net_check_sni(p, &a, 443, "evil.example.com", 1), NET_DENY,
			       "not-pinned");
		assert_verdict(net_check_http_host(p, &a, 80, "evil.example.com", 0, 1), NET_DENY,
			       "not-pinned");
	}
	/* Once the markers expire the reason is the plain one. */
	assert_verdict(tcp(p, "169.254.169.254", 80, 60000), NET_DENY, "reserved-address");
	assert_verdict(tcp(p, "10.0.2.2", 80, 60000), NET_DENY, "host-address");
	net_policy_free(p);
}

/* ---- first payload checks ---- */

static void test_check_sni(void **state)
{
	const char *rules[] = { "*.example.com:443", "web.example.org:80", "cdn.other.net:443" };
	struct net_policy *p = policy(rules, 3, 0);
	struct net_ip a = ip("93.184.216.1"), b = ip("93.184.216.2");
	struct net_decision d;

	assert_int_equal(pin(p, "a.example.com", "93.184.216.1", 60, 0), 0);
	assert_int_equal(pin(p, "cdn.other.net", "93.184.216.1", 60, 0), 0);
	assert_int_equal(pin(p, "web.example.org", "93.184.216.1", 60, 0), 0);
	d = net_check_sni(p, &a, 443, "a.example.com", 1);
	assert_verdict(d, NET_ALLOW, "pinned");
	assert_int_equal(d.rule, 0);
	assert_verdict(net_check_sni(p, &a, 443, "A.Example.COM.", 1), NET_ALLOW, "pinned");
	/* A shared address: each pinned name passes, others do not. */
	assert_int_equal(net_check_sni(p, &a, 443, "cdn.other.net", 1).rule, 2);
	assert_verdict(net_check_sni(p, &a, 443, "b.example.com", 1), NET_DENY, "not-pinned");
	assert_verdict(net_check_sni(p, &a, 443, "evil.com", 1), NET_DENY, "no-rule");
	assert_verdict(net_check_sni(p, &a, 443, "web.example.org", 1), NET_DENY,
		       "port-not-allowed");
	assert_verdict(net_check_sni(p, &b, 443, "a.example.com", 1), NET_DENY, "not-pinned");
	assert_verdict(net_check_sni(p, &a, 443, "a.example.com", 60000), NET_DENY, "not-pinned");
	assert_verdict(net_check_sni(p, &a, 443, "", 1), NET_DENY, "bad-name");
	assert_verdict(net_check_sni(p, &a, 443, NULL, 1), NET_DENY, "bad-name");
	assert_verdict(net_check_sni(p, &a, 443, "1.2.3.4", 1), NET_DENY, "bad-name");
	assert_verdict(net_check_sni(p, &a, 0, "a.example.com", 1), NET_DENY, "bad-argument");
	net_policy_free(p);
}

static void test_check_http_host(void **state)
{
	const char *rules[] = { "web.example.org:80,8080" };
	struct net_policy *p = policy(rules, 1, 0);
	struct net_ip a = ip("93.184.216.1");

	assert_int_equal(pin(p, "web.example.org", "93.184.216.1", 60, 0), 0);
	assert_verdict(net_check_http_host(p, &a, 80, "web.example.org", 0, 1), NET_ALLOW,
		       "pinned");
	assert_verdict(net_check_http_host(p, &a, 80, "web.example.org", 80, 1), NET_ALLOW,
		       "pinned");
	assert_verdict(net_check_http_host(p, &a, 80, "web.example.org", 8080, 1), NET_DENY,
		       "host-port");
	assert_verdict(net_check_http_host(p, &a, 8080, "web.example.org", 8080, 1), NET_ALLOW,
		       "pinned");
	assert_verdict(net_check_http_host(p, &a, 80, "other.example.org", 0, 1), NET_DENY,
		       "no-rule");
	net_policy_free(p);
}

static void test_reason_strings(void **state)
{
	for (int r = NET_R_RULE; r <= NET_R_NO_ROUTE; r++)
		assert_string_not_equal(net_reason_str((enum net_reason)r), "?");
	assert_string_equal(net_reason_str(NET_R_REBINDING), "rebinding");
	assert_string_equal(net_reason_str((enum net_reason)99), "?");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_name_defaults),
		cmocka_unit_test(test_parse_name_normalised),
		cmocka_unit_test(test_parse_wildcard),
		cmocka_unit_test(test_parse_ports),
		cmocka_unit_test(test_parse_bad_names),
		cmocka_unit_test(test_parse_ipv4),
		cmocka_unit_test(test_parse_ipv6),
		cmocka_unit_test(test_parse_messages),
		cmocka_unit_test(test_parse_fuzz),
		cmocka_unit_test(test_policy_cap),
		cmocka_unit_test(test_ip_helpers),
		cmocka_unit_test(test_dns_names),
		cmocka_unit_test(test_dns_types_and_bad_names),
		cmocka_unit_test(test_pin_connect),
		cmocka_unit_test(test_pin_ipv6_and_mapped),
		cmocka_unit_test(test_pin_ttl_clamp),
		cmocka_unit_test(test_pin_eviction),
		cmocka_unit_test(test_pin_ports_from_rules),
		cmocka_unit_test(test_cidr_connect),
		cmocka_unit_test(test_rule_order),
		cmocka_unit_test(test_udp_and_icmp),
		cmocka_unit_test(test_bad_args),
		cmocka_unit_test(test_reserved_denied),
		cmocka_unit_test(test_reserved_exact_rule),
		cmocka_unit_test(test_host_addresses),
		cmocka_unit_test(test_host_check_fails),
		cmocka_unit_test(test_translated_forms),
		cmocka_unit_test(test_private),
		cmocka_unit_test(test_parse_private),
		cmocka_unit_test(test_rebinding),
		cmocka_unit_test(test_check_sni),
		cmocka_unit_test(test_check_http_host),
		cmocka_unit_test(test_reason_strings),
	};

	return cmocka_run_group_tests_name("net_rules", tests, NULL, NULL);
}
