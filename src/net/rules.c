/*
 * kiln-net's egress policy (docs/net.md). Everything here is a pure function
 * of the rules, the pins and the arguments: the caller supplies the clock.
 */
#include "net/rules.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "util.h"

struct pin {
	char name[NET_NAME_MAX + 1];
	struct net_ip ip;
	uint64_t expiry_ms; /* valid while now < expiry_ms */
	uint64_t seq;	    /* when added or refreshed, for eviction */
	bool used;
	bool rebinding;	    /* marker only: never allows anything */
};

struct net_policy {
	struct net_rule rules[NET_RULES_MAX];
	unsigned nrules;
	struct net_ip host[NET_HOST_ADDRS_MAX];
	unsigned nhost;
	struct pin *pins;
	unsigned pin_cap;
	uint64_t pin_seq;
};

/* ---- names ---- */

static bool is_ldh(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

static char lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/*
 * Validate a host name and write its normal form (lower case, no trailing
 * dot) to out[NET_NAME_MAX + 1]. On failure returns -EINVAL and points *why at
 * a static explanation.
 */
static int name_normalise(const char *in, char *out, const char **why)
{
	size_t n = strlen(in);
	size_t label = 0;
	bool numeric = true; /* the current label is all digits */

	if (n > 0 && in[n - 1] == '.')
		n--;
	if (n == 0) {
		*why = "empty name";
		return -EINVAL;
	}
	if (n > NET_NAME_MAX) {
		*why = "name longer than 253 characters";
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++) {
		char c = lower(in[i]);

		if ((unsigned char)c >= 0x80) {
			*why = "non-ASCII name: write internationalised names in punycode (xn--...)";
			return -EINVAL;
		}
		if (c == '.') {
			if (label == 0) {
				*why = "empty label (two dots in a row, or a leading dot)";
				return -EINVAL;
			}
			if (out[i - 1] == '-') {
				*why = "a label ends with '-'";
				return -EINVAL;
			}
			out[i] = c;
			label = 0;
			numeric = true;
			continue;
		}
		if (!is_ldh(c)) {
			*why = "invalid character in name (letters, digits, '-' and '.' only)";
			return -EINVAL;
		}
		if (label == 0 && c == '-') {
			*why = "a label starts with '-'";
			return -EINVAL;
		}
		if (++label > 63) {
			*why = "a label is longer than 63 characters";
			return -EINVAL;
		}
		if (c < '0' || c > '9')
			numeric = false;
		out[i] = c;
	}
	if (label == 0) {
		*why = "empty label (two dots in a row)";
		return -EINVAL;
	}
	if (out[n - 1] == '-') {
		*why = "a label ends with '-'";
		return -EINVAL;
	}
	if (numeric) {
		*why = "the last label is all digits: not a host name (an IP address?)";
		return -EINVAL;
	}
	out[n] = '\0';
	return 0;
}

static bool rule_matches_name(const struct net_rule *r, const char *name)
{
	size_t n, s;

	if (r->kind != NET_RULE_NAME)
		return false;
	if (!r->wildcard)
		return strcmp(r->name, name) == 0;
	n = strlen(name);
	s = strlen(r->name);
	return n > s + 1 && name[n - s - 1] == '.' && memcmp(name + n - s, r->name, s) == 0;
}

static bool rule_has_port(const struct net_rule *r, uint16_t port)
{
	if (r->nports == 0)
		return true;
	for (unsigned i = 0; i < r->nports; i++)
		if (r->ports[i] == port)
			return true;
	return false;
}

/* ---- addresses ---- */

static const uint8_t v4mapped_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

static unsigned ip_bits(const struct net_ip *ip)
{
	return ip->family == AF_INET ? 32 : 128;
}

static int ip_parse(const char *s, struct net_ip *out, bool *mapped)
{
	memset(out, 0, sizeof(*out));
	*mapped = false;
	if (inet_pton(AF_INET, s, out->b) == 1) {
		out->family = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, s, out->b) == 1) {
		out->family = AF_INET6;
		if (!memcmp(out->b, v4mapped_prefix, 12)) {
			*mapped = true;
			memmove(out->b, out->b + 12, 4);
			memset(out->b + 4, 0, 12);
			out->family = AF_INET;
		}
		return 0;
	}
	return -EINVAL;
}

int net_ip_parse(const char *s, struct net_ip *out)
{
	bool mapped;

	return ip_parse(s, out, &mapped);
}

void net_ip_str(const struct net_ip *ip, char *buf, size_t len)
{
	if (len == 0)
		return;
	buf[0] = '\0';
	if (!ip || (ip->family != AF_INET && ip->family != AF_INET6) ||
	    !inet_ntop(ip->family, ip->b, buf, (socklen_t)(len > 0x7fffffff ? 0x7fffffff : len)))
		snprintf(buf, len, "?");
}

/* Copy of ip with IPv4-mapped IPv6 turned into IPv4; false for a bad family. */
static bool ip_norm(const struct net_ip *in, struct net_ip *out)
{
	if (!in || (in->family != AF_INET && in->family != AF_INET6))
		return false;
	memset(out, 0, sizeof(*out));
	out->family = in->family;
	if (in->family == AF_INET) {
		memcpy(out->b, in->b, 4);
	} else if (!memcmp(in->b, v4mapped_prefix, 12)) {
		out->family = AF_INET;
		memcpy(out->b, in->b + 12, 4);
	} else {
		memcpy(out->b, in->b, 16);
	}
	return true;
}

static bool ip_eq(const struct net_ip *a, const struct net_ip *b)
{
	return a->family == b->family && !memcmp(a->b, b->b, a->family == AF_INET ? 4 : 16);
}

/* Do the first `prefix` bits of a and b agree? */
static bool prefix_eq(const uint8_t *a, const uint8_t *b, unsigned prefix)
{
	unsigned full = prefix / 8, rest = prefix % 8;

	if (memcmp(a, b, full))
		return false;
	if (rest) {
		uint8_t mask = (uint8_t)(0xff00 >> rest);

		return ((a[full] ^ b[full]) & mask) == 0;
	}
	return true;
}

static bool in_net(const struct net_ip *ip, const char *net, unsigned prefix)
{
	struct net_ip n;
	bool mapped;

	if (ip_parse(net, &n, &mapped) || n.family != ip->family)
		return false;
	return prefix_eq(ip->b, n.b, prefix);
}

/* The always-denied ranges (docs/net.md). ip is normalised. */
static bool ip_reserved(const struct net_ip *ip)
{
	static const struct {
		const char *net;
		unsigned prefix;
	} list[] = {
		{ "0.0.0.0", 8 },	    { "127.0.0.0", 8 },	   { "169.254.0.0", 16 },
		{ "224.0.0.0", 4 },	    { "255.255.255.255", 32 }, { "::", 128 },
		{ "::1", 128 },		    { "fe80::", 10 },	   { "ff00::", 8 },
		{ "fd00:ec2::254", 128 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(list); i++)
		if (in_net(ip, list[i].net, list[i].prefix))
			return true;
	/* NAT64 (64:ff9b::/96) in front of a reserved IPv4 address. */
	if (in_net(ip, "64:ff9b::", 96)) {
		struct net_ip v4 = { .family = AF_INET };

		memcpy(v4.b, ip->b + 12, 4);
		return ip_reserved(&v4);
	}
	return false;
}

static bool ip_is_host(const struct net_policy *p, const struct net_ip *ip)
{
	for (unsigned i = 0; i < p->nhost; i++)
		if (ip_eq(&p->host[i], ip))
			return true;
	return false;
}

/* ---- rule parsing ---- */

/* "rule 'TEXT': " with TEXT made printable and cut short, then the message. */
__attribute__((format(printf, 4, 5))) static int fail(char *err, size_t errlen, const char *text,
						      const char *fmt, ...)
{
	char shown[84];
	size_t i, n = 0, used;
	va_list ap;

	for (i = 0; text[i] && n < 80; i++)
		shown[n++] = (text[i] >= 0x20 && text[i] < 0x7f) ? text[i] : '?';
	if (text[i])
		shown[n - 3] = shown[n - 2] = shown[n - 1] = '.';
	shown[n] = '\0';
	if (!err || errlen == 0)
		return -EINVAL;
	snprintf(err, errlen, "rule '%s': ", shown);
	used = strlen(err);
	va_start(ap, fmt);
	vsnprintf(err + used, errlen - used, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* A decimal number of at most `digits` digits in [min, max]. */
static int parse_dec(const char *s, size_t len, unsigned digits, unsigned min, unsigned max,
		     unsigned *out)
{
	unsigned v = 0;

	if (len == 0 || len > digits)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v < min || v > max)
		return -ERANGE;
	*out = v;
	return 0;
}

static int cmp_u16(const void *a, const void *b)
{
	return (int)*(const uint16_t *)a - (int)*(const uint16_t *)b;
}

static int parse_ports(const char *text, const char *s, struct net_rule *r, char *err,
		       size_t errlen)
{
	unsigned n = 0;

	if (*s == '\0')
		return fail(err, errlen, text, "empty port list after ':'");
	for (;;) {
		const char *comma = strchr(s, ',');
		size_t len = comma ? (size_t)(comma - s) : strlen(s);
		unsigned v;

		if (len == 0)
			return fail(err, errlen, text, "empty port in the port list");
		if (n == NET_RULE_MAX_PORTS)
			return fail(err, errlen, text, "more than %d ports", NET_RULE_MAX_PORTS);
		if (parse_dec(s, len, 5, 1, 65535, &v))
			return fail(err, errlen, text, "bad port '%.*s' (a number from 1 to 65535)",
				    (int)(len > 8 ? 8 : len), s);
		r->ports[n++] = (uint16_t)v;
		if (!comma)
			break;
		s = comma + 1;
	}
	qsort(r->ports, n, sizeof(r->ports[0]), cmp_u16);
	r->nports = 0;
	for (unsigned i = 0; i < n; i++)
		if (r->nports == 0 || r->ports[r->nports - 1] != r->ports[i])
			r->ports[r->nports++] = r->ports[i];
	return 0;
}

/* An address or CIDR (brackets already removed). */
static int parse_cidr(const char *text, char *host, struct net_rule *r, char *err, size_t errlen)
{
	char *slash = strchr(host, '/');
	unsigned prefix;
	bool mapped;
	struct net_ip net;
	char shown[INET6_ADDRSTRLEN];

	if (slash)
		*slash = '\0';
	if (ip_parse(host, &r->ip, &mapped))
		return fail(err, errlen, text, "'%s' is not an IPv4 or IPv6 address", host);
	if (mapped)
		return fail(err, errlen, text,
			    "IPv4-mapped IPv6 address: write the IPv4 address instead");
	r->kind = NET_RULE_CIDR;
	r->prefix = ip_bits(&r->ip);
	if (!slash)
		return 0;
	if (parse_dec(slash + 1, strlen(slash + 1), 3, 0, ip_bits(&r->ip), &prefix))
		return fail(err, errlen, text, "bad prefix length '/%s' (0 to %u)", slash + 1,
			    ip_bits(&r->ip));
	r->prefix = prefix;
	net = r->ip;
	for (unsigned bit = prefix; bit < ip_bits(&net); bit++)
		net.b[bit / 8] &= (uint8_t) ~(0x80u >> (bit % 8));
	if (!ip_eq(&net, &r->ip)) {
		net_ip_str(&net, shown, sizeof(shown));
		return fail(err, errlen, text,
			    "host bits set: %s/%u has bits beyond the prefix (did you mean %s/%u?)",
			    host, prefix, shown, prefix);
	}
	return 0;
}

static int parse_name(const char *text, const char *host, struct net_rule *r, char *err,
		      size_t errlen)
{
	const char *why;

	if (!strncmp(host, "*.", 2)) {
		r->wildcard = true;
		host += 2;
	}
	if (strchr(host, '*'))
		return fail(err, errlen, text,
			    "'*' is allowed only as a whole first label, as in *.example.com");
	if (name_normalise(host, r->name, &why))
		return fail(err, errlen, text, "%s", why);
	r->kind = NET_RULE_NAME;
	return 0;
}

/* Split host and ports and parse both; out is zeroed by the caller. */
static int rule_parse(const char *text, char *buf, struct net_rule *out, char *err,
		      size_t errlen)
{
	char *host = buf, *ports = NULL, *colon;
	int ret;

	for (size_t i = 0; buf[i]; i++)
		if (buf[i] == ' ' || buf[i] == '\t' || (unsigned char)buf[i] < 0x20)
			return fail(err, errlen, text, "blank or control character in the rule");
	out->proto = NET_TCP;
	if (!strncasecmp(host, "udp:", 4)) {
		out->proto = NET_UDP;
		host += 4;
	} else if (!strncasecmp(host, "tcp:", 4)) {
		host += 4;
	}

	if (*host == '[') {
		char *close = strchr(host, ']');

		if (!close)
			return fail(err, errlen, text, "'[' without ']'");
		*close = '\0';
		host++;
		if (close[1] == ':')
			ports = close + 2;
		else if (close[1] != '\0')
			return fail(err, errlen, text, "unexpected text after ']'");
		if (!strchr(host, ':'))
			return fail(err, errlen, text, "brackets are for IPv6 addresses only");
		ret = parse_cidr(text, host, out, err, errlen);
	} else if ((colon = strchr(host, ':')) && strchr(colon + 1, ':')) {
		/* Several colons: bare IPv6, which cannot carry ports. */
		char copy[NET_RULE_TEXT_MAX + 1];
		char *last;
		size_t hlen = strlen(host);

		if (strcspn(host, ".ghijklmnopqrstuvwxyzGHIJKLMNOPQRSTUVWXYZ") < (size_t)(colon - host))
			return fail(err, errlen, text,
				    "too many ':' (ports are separated by ',', as in name:80,443)");
		memcpy(copy, host, hlen + 1);
		ret = parse_cidr(text, host, out, err, errlen);
		last = strrchr(copy, ':');
		if (ret && strspn(last + 1, "0123456789,") == strlen(last + 1)) {
			struct net_rule probe;

			*last = '\0';
			if (!parse_cidr(text, copy, &probe, NULL, 0)) {
				memcpy(copy, text + (host - buf), hlen + 1); /* undo parse_cidr's cuts */
				copy[last - copy] = '\0';
				ret = fail(err, errlen, text,
					   "an IPv6 address with ports must be in brackets, as in "
					   "[%s]:%s",
					   copy, copy + (last - copy) + 1);
			}
		}
	} else {
		if (colon) {
			*colon = '\0';
			ports = colon + 1;
		}
		if (*host == '\0')
			return fail(err, errlen, text, "no host before ':'");
		if (strchr(host, '/') || (host[0] >= '0' && host[0] <= '9' &&
					  strspn(host, "0123456789./") == strlen(host)))
			ret = parse_cidr(text, host, out, err, errlen);
		else
			ret = parse_name(text, host, out, err, errlen);
	}
	if (ret)
		return ret;
	if (out->kind == NET_RULE_NAME && out->proto == NET_UDP)
		return fail(err, errlen, text, "udp: rules take an IP address or CIDR, not a name");
	if (ports)
		return parse_ports(text, ports, out, err, errlen);
	if (out->kind == NET_RULE_NAME) {
		out->ports[0] = 80;
		out->ports[1] = 443;
		out->nports = 2;
	}
	return 0;
}

int net_rule_parse(const char *text, struct net_rule *out, char *err, size_t errlen)
{
	char buf[NET_RULE_TEXT_MAX + 1];
	size_t n;
	int ret;

	memset(out, 0, sizeof(*out));
	if (err && errlen)
		err[0] = '\0';
	if (!text)
		text = "";
	n = strlen(text);
	if (n == 0)
		return fail(err, errlen, text, "empty rule");
	if (n > NET_RULE_TEXT_MAX)
		return fail(err, errlen, text, "longer than %d characters", NET_RULE_TEXT_MAX);
	memcpy(buf, text, n + 1);
	ret = rule_parse(text, buf, out, err, errlen);
	if (ret)
		memset(out, 0, sizeof(*out)); /* nothing half-parsed */
	return ret;
}

/* ---- the policy ---- */

struct net_policy *net_policy_new(unsigned pin_cap)
{
	struct net_policy *p;

	if (pin_cap == 0)
		pin_cap = NET_PINS_DEFAULT;
	if (pin_cap > NET_PINS_MAX)
		return NULL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->pins = calloc(pin_cap, sizeof(*p->pins));
	if (!p->pins) {
		free(p);
		return NULL;
	}
	p->pin_cap = pin_cap;
	return p;
}

void net_policy_free(struct net_policy *p)
{
	if (!p)
		return;
	free(p->pins);
	free(p);
}

int net_policy_add_rule(struct net_policy *p, const char *text, char *err, size_t errlen)
{
	int ret;

	if (p->nrules == NET_RULES_MAX) {
		fail(err, errlen, text ? text : "", "too many rules (at most %d)", NET_RULES_MAX);
		return -ENOSPC;
	}
	ret = net_rule_parse(text, &p->rules[p->nrules], err, errlen);
	if (ret == 0)
		p->nrules++;
	return ret;
}

unsigned net_policy_nrules(const struct net_policy *p)
{
	return p->nrules;
}

const struct net_rule *net_policy_rule(const struct net_policy *p, unsigned idx)
{
	return idx < p->nrules ? &p->rules[idx] : NULL;
}

int net_policy_add_host_addr(struct net_policy *p, const struct net_ip *ip)
{
	struct net_ip n;

	if (!ip_norm(ip, &n))
		return -EINVAL;
	if (ip_is_host(p, &n))
		return 0;
	if (p->nhost == NET_HOST_ADDRS_MAX)
		return -ENOSPC;
	p->host[p->nhost++] = n;
	return 0;
}

const char *net_reason_str(enum net_reason r)
{
	switch (r) {
	case NET_R_RULE: return "rule";
	case NET_R_PIN: return "pinned";
	case NET_R_NO_RULE: return "no-rule";
	case NET_R_PORT: return "port-not-allowed";
	case NET_R_RESERVED: return "reserved-address";
	case NET_R_HOST_ADDR: return "host-address";
	case NET_R_REBINDING: return "rebinding";
	case NET_R_ICMP: return "icmp";
	case NET_R_BAD_NAME: return "bad-name";
	case NET_R_DNS_CLASS: return "dns-class";
	case NET_R_DNS_OTHER_TYPE: return "dns-other-type";
	case NET_R_NOT_PINNED: return "not-pinned";
	case NET_R_HOST_PORT: return "host-port";
	case NET_R_BAD_ARG: return "bad-argument";
	}
	return "?";
}

static struct net_decision verdict(enum net_verdict v, enum net_reason r, int rule)
{
	struct net_decision d = { .verdict = v, .reason = r, .inspect = NET_INSPECT_NONE, .rule = rule };

	return d;
}

/* First name rule matching name; with port != 0, also allowing port. -1 if none. */
static int find_name_rule(const struct net_policy *p, const char *name, uint16_t port)
{
	for (unsigned i = 0; i < p->nrules; i++)
		if (rule_matches_name(&p->rules[i], name) && (!port || rule_has_port(&p->rules[i], port)))
			return (int)i;
	return -1;
}

struct net_decision net_decide_dns(const struct net_policy *p, const char *name, uint16_t qtype,
				   uint16_t qclass)
{
	char norm[NET_NAME_MAX + 1];
	const char *why;
	int r;

	if (!name || name_normalise(name, norm, &why))
		return verdict(NET_DENY, NET_R_BAD_NAME, -1);
	if (qclass != 1)
		return verdict(NET_DENY, NET_R_DNS_CLASS, -1);
	r = find_name_rule(p, norm, 0);
	if (r < 0)
		return verdict(NET_DENY, NET_R_NO_RULE, -1);
	if (qtype != 1 && qtype != 28)
		return verdict(NET_ANSWER_EMPTY, NET_R_DNS_OTHER_TYPE, r);
	return verdict(NET_ALLOW, NET_R_RULE, r);
}

/* ---- pins ---- */

static bool pin_live(const struct pin *e, uint64_t now_ms)
{
	return e->used && now_ms < e->expiry_ms;
}

int net_pin_add(struct net_policy *p, const char *name, const struct net_ip *ip, uint32_t ttl,
		uint64_t now_ms)
{
	char norm[NET_NAME_MAX + 1];
	const char *why;
	struct net_ip n;
	struct pin *slot = NULL;
	uint64_t ms;
	bool rebinding;

	if (!name || name_normalise(name, norm, &why) || !ip_norm(ip, &n))
		return -EINVAL;
	if (find_name_rule(p, norm, 0) < 0)
		return -EPERM;
	rebinding = ip_reserved(&n) || ip_is_host(p, &n);
	if (ttl < NET_PIN_TTL_MIN_S)
		ttl = NET_PIN_TTL_MIN_S;
	if (ttl > NET_PIN_TTL_MAX_S)
		ttl = NET_PIN_TTL_MAX_S;
	ms = (uint64_t)ttl * 1000;

	for (unsigned i = 0; i < p->pin_cap; i++) {
		struct pin *e = &p->pins[i];

		if (e->used && ip_eq(&e->ip, &n) && !strcmp(e->name, norm)) {
			slot = e;
			break;
		}
	}
	for (unsigned i = 0; !slot && i < p->pin_cap; i++)
		if (!pin_live(&p->pins[i], now_ms))
			slot = &p->pins[i];
	if (!slot) {
		slot = &p->pins[0]; /* pin_cap is never 0 */
		for (unsigned i = 1; i < p->pin_cap; i++)
			if (p->pins[i].seq < slot->seq)
				slot = &p->pins[i];
	}

	memcpy(slot->name, norm, sizeof(norm));
	slot->ip = n;
	slot->expiry_ms = now_ms > UINT64_MAX - ms ? UINT64_MAX : now_ms + ms;
	slot->seq = ++p->pin_seq;
	slot->used = true;
	slot->rebinding = rebinding;
	return rebinding ? 1 : 0;
}

unsigned net_pin_count(const struct net_policy *p, uint64_t now_ms)
{
	unsigned n = 0;

	for (unsigned i = 0; i < p->pin_cap; i++)
		n += pin_live(&p->pins[i], now_ms);
	return n;
}

/* ---- connections ---- */

struct net_decision net_decide_connect(const struct net_policy *p, enum net_proto proto,
				       const struct net_ip *dst, uint16_t port, uint64_t now_ms)
{
	struct net_ip n;
	bool reserved, host, pinned = false, marked = false;
	struct net_decision d;

	if (!ip_norm(dst, &n) || port == 0 || (proto != NET_TCP && proto != NET_UDP))
		return verdict(NET_DENY, NET_R_BAD_ARG, -1);
	reserved = ip_reserved(&n);
	host = ip_is_host(p, &n);

	/* IP/CIDR rules; for a denied address only one naming it exactly. */
	for (unsigned i = 0; i < p->nrules; i++) {
		const struct net_rule *r = &p->rules[i];

		if (r->kind != NET_RULE_CIDR || r->proto != proto || r->ip.family != n.family ||
		    !rule_has_port(r, port))
			continue;
		if ((reserved || host) ? (r->prefix == ip_bits(&n) && ip_eq(&r->ip, &n))
				       : prefix_eq(r->ip.b, n.b, r->prefix))
			return verdict(NET_ALLOW, NET_R_RULE, (int)i);
	}

	for (unsigned i = 0; i < p->pin_cap; i++) {
		const struct pin *e = &p->pins[i];
		int r;

		if (!pin_live(e, now_ms) || !ip_eq(&e->ip, &n))
			continue;
		if (e->rebinding) {
			marked = true;
			continue;
		}
		pinned = true;
		if (proto != NET_TCP || reserved || host)
			continue;
		r = find_name_rule(p, e->name, port);
		if (r < 0)
			continue;
		d = verdict(NET_ALLOW, NET_R_PIN, r);
		d.inspect = port == 443 ? NET_INSPECT_TLS_SNI
			  : port == 80	? NET_INSPECT_HTTP_HOST
					: NET_INSPECT_NONE;
		return d;
	}
	if (marked)
		return verdict(NET_DENY, NET_R_REBINDING, -1);
	if (reserved)
		return verdict(NET_DENY, NET_R_RESERVED, -1);
	if (host)
		return verdict(NET_DENY, NET_R_HOST_ADDR, -1);
	if (pinned && proto == NET_TCP)
		return verdict(NET_DENY, NET_R_PORT, -1);
	return verdict(NET_DENY, NET_R_NO_RULE, -1);
}

struct net_decision net_decide_icmp(const struct net_policy *p, const struct net_ip *dst)
{
	return verdict(NET_DENY, NET_R_ICMP, -1);
}

struct net_decision net_check_sni(const struct net_policy *p, const struct net_ip *dst,
				  uint16_t port, const char *sni, uint64_t now_ms)
{
	char norm[NET_NAME_MAX + 1];
	const char *why;
	struct net_ip n;
	int r;

	if (!ip_norm(dst, &n) || port == 0)
		return verdict(NET_DENY, NET_R_BAD_ARG, -1);
	if (!sni || name_normalise(sni, norm, &why))
		return verdict(NET_DENY, NET_R_BAD_NAME, -1);
	if (find_name_rule(p, norm, 0) < 0)
		return verdict(NET_DENY, NET_R_NO_RULE, -1);
	r = find_name_rule(p, norm, port);
	if (r < 0)
		return verdict(NET_DENY, NET_R_PORT, -1);
	if (ip_reserved(&n) || ip_is_host(p, &n))
		return verdict(NET_DENY, NET_R_NOT_PINNED, -1);
	for (unsigned i = 0; i < p->pin_cap; i++) {
		const struct pin *e = &p->pins[i];

		if (pin_live(e, now_ms) && !e->rebinding && ip_eq(&e->ip, &n) &&
		    !strcmp(e->name, norm))
			return verdict(NET_ALLOW, NET_R_PIN, r);
	}
	return verdict(NET_DENY, NET_R_NOT_PINNED, -1);
}

struct net_decision net_check_http_host(const struct net_policy *p, const struct net_ip *dst,
					uint16_t port, const char *host, uint16_t host_port,
					uint64_t now_ms)
{
	if (host_port != 0 && host_port != port)
		return verdict(NET_DENY, NET_R_HOST_PORT, -1);
	return net_check_sni(p, dst, port, host, now_ms);
}
