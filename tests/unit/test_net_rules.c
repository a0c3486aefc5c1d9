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

static struct net_policy *policy(const char *const *rules, unsigned n, unsigned pins)
{
	struct net_policy *p = net_policy_new(pins);

	assert_non_null(p);
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

	return net_pin_add(p, name, &a, ttl, now);
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

	assert_int_equal(pin(p, "a.example.com", "198.51.100.1", 0, t0), 0);
	assert_verdict(tcp(p, "198.51.100.1", 443, t0 + 4999), NET_ALLOW, "pinned");
	assert_verdict(tcp(p, "198.51.100.1", 443, t0 + 5000), NET_DENY, "no-rule");
	assert_int_equal(pin(p, "b.example.com", "198.51.100.2", 0xffffffffu, t0), 0);
	assert_verdict(tcp(p, "198.51.100.2", 443, t0 + 3600 * 1000 - 1), NET_ALLOW, "pinned");
	assert_verdict(tcp(p, "198.51.100.2", 443, t0 + 3600 * 1000), NET_DENY, "no-rule");
	/* A clock near its end does not wrap. */
	assert_int_equal(pin(p, "a.example.com", "198.51.100.3", 60, UINT64_MAX - 10), 0);
	assert_verdict(tcp(p, "198.51.100.3", 443, UINT64_MAX - 1), NET_ALLOW, "pinned");
	/* Re-pinning refreshes the expiry. */
	assert_int_equal(pin(p, "a.example.com", "198.51.100.1", 10, t0 + 100000), 0);
	assert_verdict(tcp(p, "198.51.100.1", 443, t0 + 109999), NET_ALLOW, "pinned");
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
		snprintf(addr, sizeof(addr), "198.51.100.%d", i + 1);
		assert_int_equal(pin(p, name, addr, 600, 0), 0);
	}
	assert_int_equal(net_pin_count(p, 0), 4);
	/* Refresh h0: h1 is now the oldest and goes first. */
	assert_int_equal(pin(p, "h0.example.com", "198.51.100.1", 600, 1), 0);
	assert_int_equal(pin(p, "h4.example.com", "198.51.100.5", 600, 2), 0);
	assert_int_equal(net_pin_count(p, 2), 4);
	assert_verdict(tcp(p, "198.51.100.1", 443, 3), NET_ALLOW, "pinned");
	assert_verdict(tcp(p, "198.51.100.2", 443, 3), NET_DENY, "no-rule");
	assert_verdict(tcp(p, "198.51.100.5", 443, 3), NET_ALLOW, "pinned");
	/* h9 evicts h2; once h9 has expired, h10 takes its place, not a live one. */
	assert_int_equal(pin(p, "h9.example.com", "198.51.100.9", 5, 3), 0);
	assert_verdict(tcp(p, "198.51.100.3", 443, 4), NET_DENY, "no-rule");
	assert_int_equal(pin(p, "h10.example.com", "198.51.100.10", 600, 10000), 0);
	assert_verdict(tcp(p, "198.51.100.1", 443, 10001), NET_ALLOW, "pinned");
	assert_verdict(tcp(p, "198.51.100.4", 443, 10001), NET_ALLOW, "pinned");
	assert_verdict(tcp(p, "198.51.100.5", 443, 10001), NET_ALLOW, "pinned");
	assert_verdict(tcp(p, "198.51.100.10", 443, 10001), NET_ALLOW, "pinned");
	assert_verdict(tcp(p, "198.51.100.9", 443, 10001), NET_DENY, "no-rule");
	/* Many names on one address (a CDN) and one name on many addresses. */
	net_policy_free(p);
	p = policy(rules, 1, 0);
	for (int i = 0; i < 300; i++) {
		snprintf(name, sizeof(name), "h%d.example.com", i);
		assert_int_equal(pin(p, name, "198.51.100.7", 600, 0), 0);
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

	assert_int_equal(pin(p, "git.example.com", "198.51.100.1", 60, 0), 0);
	d = tcp(p, "198.51.100.1", 22, 0);
	assert_verdict(d, NET_ALLOW, "pinned");
	assert_int_equal(d.rule, 0);
	assert_int_equal(d.inspect, NET_INSPECT_NONE); /* nothing to look at on other ports */
	d = tcp(p, "198.51.100.1", 443, 0);
	assert_int_equal(d.rule, 1);
	assert_int_equal(d.inspect, NET_INSPECT_TLS_SNI);
	d = tcp(p, "198.51.100.1", 8443, 0);
	assert_verdict(d, NET_ALLOW, "pinned");
	assert_int_equal(d.rule, 2);
	assert_verdict(tcp(p, "198.51.100.1", 80, 0), NET_DENY, "port-not-allowed");
	assert_int_equal(pin(p, "plain.example.com", "198.51.100.2", 60, 0), 0);
	assert_verdict(tcp(p, "198.51.100.2", 443, 0), NET_DENY, "port-not-allowed");
	d = tcp(p, "198.51.100.2", 80, 0);
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
	assert_int_equal(net_policy_add_host_addr(p, &a), -EINVAL);
	assert_int_equal(net_pin_add(p, "x.com", &a, 60, 0), -EINVAL);
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
	assert_verdict(tcp(p, "255.255.255.254", 80, 0), NET_ALLOW, "rule");
	assert_verdict(tcp(p, "::2", 80, 0), NET_ALLOW, "rule");
	assert_verdict(tcp(p, "fec0::1", 80, 0), NET_ALLOW, "rule");
	assert_verdict(tcp(p, "fd00:ec2::253", 80, 0), NET_ALLOW, "rule");
	assert_verdict(tcp(p, "64:ff9b::808:808", 80, 0), NET_ALLOW, "rule");
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
	const char *rules[] = { "0.0.0.0/0", "::/0", "192.168.1.10:8000" };
	struct net_policy *p = policy(rules, 3, 0);
	struct net_ip a = ip("192.168.1.10"), b = ip("2001:db8::10");
	char s[32];
	int i;

	assert_verdict(tcp(p, "192.168.1.10", 22, 0), NET_ALLOW, "rule");
	assert_int_equal(net_policy_add_host_addr(p, &a), 0);
	assert_int_equal(net_policy_add_host_addr(p, &a), 0); /* twice is once */
	assert_int_equal(net_policy_add_host_addr(p, &b), 0);
	assert_verdict(tcp(p, "192.168.1.10", 22, 0), NET_DENY, "host-address");
	assert_verdict(tcp(p, "::ffff:192.168.1.10", 22, 0), NET_DENY, "host-address");
	assert_verdict(tcp(p, "2001:db8::10", 443, 0), NET_DENY, "host-address");
	assert_verdict(udp(p, "192.168.1.10", 53), NET_DENY, "host-address");
	assert_verdict(tcp(p, "192.168.1.11", 22, 0), NET_ALLOW, "rule");
	/* Named exactly: allowed on that port only. */
	assert_int_equal(tcp(p, "192.168.1.10", 8000, 0).rule, 2);
	for (i = 0; i < NET_HOST_ADDRS_MAX; i++) {
		struct net_ip c;

		snprintf(s, sizeof(s), "10.0.%d.%d", i / 250, i % 250 + 1);
		c = ip(s);
		if (net_policy_add_host_addr(p, &c))
			break;
	}
	assert_int_equal(i, NET_HOST_ADDRS_MAX - 2);
	net_policy_free(p);
}

static void test_rebinding(void **state)
{
	const char *rules[] = { "*.example.com", "127.0.0.1:8080" };
	struct net_policy *p = policy(rules, 2, 0);
	struct net_ip h = ip("10.0.2.2");

	assert_int_equal(net_policy_add_host_addr(p, &h), 0);
	assert_int_equal(pin(p, "evil.example.com", "127.0.0.1", 60, 0), 1);
	assert_int_equal(pin(p, "evil.example.com", "169.254.169.254", 60, 0), 1);
	assert_int_equal(pin(p, "evil.example.com", "::ffff:169.254.169.254", 60, 0), 1);
	assert_int_equal(pin(p, "evil.example.com", "10.0.2.2", 60, 0), 1);
	assert_int_equal(pin(p, "evil.example.com", "fe80::1", 60, 0), 1);
	assert_verdict(tcp(p, "127.0.0.1", 443, 1), NET_DENY, "rebinding");
	assert_verdict(tcp(p, "169.254.169.254", 80, 1), NET_DENY, "rebinding");
	assert_verdict(tcp(p, "10.0.2.2", 443, 1), NET_DENY, "rebinding");
	assert_verdict(tcp(p, "fe80::1", 443, 1), NET_DENY, "rebinding");
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
	struct net_ip a = ip("198.51.100.1"), b = ip("198.51.100.2");
	struct net_decision d;

	assert_int_equal(pin(p, "a.example.com", "198.51.100.1", 60, 0), 0);
	assert_int_equal(pin(p, "cdn.other.net", "198.51.100.1", 60, 0), 0);
	assert_int_equal(pin(p, "web.example.org", "198.51.100.1", 60, 0), 0);
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
	struct net_ip a = ip("198.51.100.1");

	assert_int_equal(pin(p, "web.example.org", "198.51.100.1", 60, 0), 0);
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
	for (int r = NET_R_RULE; r <= NET_R_BAD_ARG; r++)
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
		cmocka_unit_test(test_rebinding),
		cmocka_unit_test(test_check_sni),
		cmocka_unit_test(test_check_http_host),
		cmocka_unit_test(test_reason_strings),
	};

	return cmocka_run_group_tests_name("net_rules", tests, NULL, NULL);
}
