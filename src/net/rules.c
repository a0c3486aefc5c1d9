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

#include "guestnet.h"
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
	net_host_check_fn host_check; /* NULL: every check fails */
	void *host_ctx;
	struct pin *pins;
	unsigned pin_cap;
	uint64_t pin_seq;
	uint64_t evictions;
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

struct block {
	const char *net;
	unsigned prefix;
};

static bool in_list(const struct net_ip *ip, const struct block *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (in_net(ip, list[i].net, list[i].prefix))
			return true;
	return false;
}

/* Always denied, whatever a name answers (docs/net.md): only an IP rule
 * naming the address exactly opens one. */
static const struct block reserved_list[] = {
	{ "0.0.0.0", 8 },	  /* "this network" */
	{ "127.0.0.0", 8 },	  /* loopback */
	{ "169.254.0.0", 16 },	  /* link-local, cloud metadata 169.254.169.254 */
	{ "224.0.0.0", 4 },	  /* multicast */
	{ "255.255.255.255", 32 }, /* limited broadcast */
	{ "168.63.129.16", 32 },  /* Azure's host endpoint (wireserver) */
	{ "::", 128 },		  /* unspecified */
	{ "::1", 128 },		  /* loopback */
	{ "fe80::", 10 },	  /* link-local */
	{ "ff00::", 8 },	  /* multicast */
	{ "fd00:ec2::254", 128 }, /* AWS metadata over IPv6 */
};

/* The guest's own virtual network (gateway, DNS, guestfwd, the guest):
 * answered by kiln-net, never a destination out there. */
static const struct block guest_list[] = {
	{ GUESTNET_NET4, GUESTNET_PREFIX4 },
	{ "fd00::", GUESTNET_PREFIX6 },
};

/* Non-public: not reachable through a name unless its rule says ;private,
 * and through a CIDR rule only if the rule lies inside one of these blocks
 * (or says ;private). */
static const struct block private_list[] = {
	{ "10.0.0.0", 8 },	  /* RFC 1918 */
	{ "172.16.0.0", 12 },	  /* RFC 1918 */
	{ "192.168.0.0", 16 },	  /* RFC 1918 */
	{ "100.64.0.0", 10 },	  /* shared address space (CGNAT) */
	{ "192.0.0.0", 24 },	  /* IETF protocol assignments (DS-Lite, NAT64 discovery) */
	{ "192.0.2.0", 24 },	  /* documentation TEST-NET-1 */
	{ "198.51.100.0", 24 },	  /* documentation TEST-NET-2 */
	{ "203.0.113.0", 24 },	  /* documentation TEST-NET-3 */
	{ "198.18.0.0", 15 },	  /* benchmarking */
	{ "192.88.99.0", 24 },	  /* 6to4 relay anycast (deprecated) */
	{ "240.0.0.0", 4 },	  /* reserved (255.255.255.255 is above) */
	{ "fc00::", 7 },	  /* unique local (ULA) */
	{ "fec0::", 10 },	  /* site-local (deprecated) */
	{ "2001:db8::", 32 },	  /* documentation */
	{ "3fff::", 20 },	  /* documentation (RFC 9637) */
	{ "100::", 64 },	  /* discard-only */
	{ "2001:2::", 48 },	  /* benchmarking */
	{ "2001:10::", 28 },	  /* ORCHID (deprecated) */
	{ "2001:20::", 28 },	  /* ORCHIDv2 */
	{ "5f00::", 16 },	  /* SRv6 SIDs */
	{ "64:ff9b:1::", 48 },	  /* local-use NAT64 (RFC 8215) */
};

#define EMBED_MAX 4

static void v4_at(struct net_ip *out, const uint8_t *b0, const uint8_t *b1, const uint8_t *b2,
		  const uint8_t *b3, uint8_t xor)
{
	memset(out, 0, sizeof(*out));
	out->family = AF_INET;
	out->b[0] = (uint8_t)(*b0 ^ xor);
	out->b[1] = (uint8_t)(*b1 ^ xor);
	out->b[2] = (uint8_t)(*b2 ^ xor);
	out->b[3] = (uint8_t)(*b3 ^ xor);
}

/*
 * The IPv4 addresses an IPv6 address carries for a translator or tunnel to
 * use. ip is normalised (IPv4-mapped is IPv4 already). At most EMBED_MAX.
 */
static unsigned embedded_v4(const struct net_ip *ip, struct net_ip *out)
{
	static const uint8_t zero[12];
	const uint8_t *b = ip->b;
	unsigned n = 0;

	if (ip->family != AF_INET6)
		return 0;
	if (in_net(ip, "64:ff9b::", 96)) { /* NAT64, well-known prefix */
		v4_at(&out[n++], b + 12, b + 13, b + 14, b + 15, 0);
	} else if (in_net(ip, "64:ff9b:1::", 48)) {
		/* Local-use NAT64 (RFC 8215): the prefix length is the operator's,
		 * so every RFC 6052 layout that fits a /48 and leaves its u-octet
		 * (byte 8) and suffix zero is judged. */
		v4_at(&out[n++], b + 12, b + 13, b + 14, b + 15, 0); /* /96 */
		if (b[8] == 0 && !memcmp(b + 13, zero, 3))
			v4_at(&out[n++], b + 9, b + 10, b + 11, b + 12, 0); /* /64 */
		if (b[8] == 0 && !memcmp(b + 12, zero, 4))
			v4_at(&out[n++], b + 7, b + 9, b + 10, b + 11, 0); /* /56 */
		if (b[8] == 0 && !memcmp(b + 11, zero, 5))
			v4_at(&out[n++], b + 6, b + 7, b + 9, b + 10, 0); /* /48 */
	} else if (!memcmp(b, zero, 12)) { /* IPv4-compatible ::a.b.c.d */
		v4_at(&out[n++], b + 12, b + 13, b + 14, b + 15, 0);
	} else if (in_net(ip, "::ffff:0:0:0", 96)) { /* IPv4-translated (RFC 2765) */
		v4_at(&out[n++], b + 12, b + 13, b + 14, b + 15, 0);
	} else if (in_net(ip, "2002::", 16)) { /* 6to4 */
		v4_at(&out[n++], b + 2, b + 3, b + 4, b + 5, 0);
	} else if (in_net(ip, "2001::", 32)) { /* Teredo: server, then obfuscated client */
		v4_at(&out[n++], b + 4, b + 5, b + 6, b + 7, 0);
		v4_at(&out[n++], b + 12, b + 13, b + 14, b + 15, 0xff);
	}
	/* ISATAP interface identifiers (::0:5efe:a.b.c.d, ::200:5efe:a.b.c.d). */
	if (n < EMBED_MAX && (b[8] & 0xfd) == 0 && b[9] == 0 && b[10] == 0x5e && b[11] == 0xfe)
		v4_at(&out[n++], b + 12, b + 13, b + 14, b + 15, 0);
	return n;
}

/* The fixed lists alone (no host check), for one address, embedded ones aside. */
static enum net_addr_kind list_kind(const struct net_ip *ip, enum net_reason *why)
{
	if (in_list(ip, reserved_list, ARRAY_SIZE(reserved_list))) {
		*why = NET_R_RESERVED;
		return NET_ADDR_DENIED;
	}
	if (in_list(ip, guest_list, ARRAY_SIZE(guest_list))) {
		*why = NET_R_HOST_ADDR;
		return NET_ADDR_DENIED;
	}
	if (in_list(ip, private_list, ARRAY_SIZE(private_list))) {
		*why = NET_R_PRIVATE;
		return NET_ADDR_PRIVATE;
	}
	return NET_ADDR_PUBLIC;
}

/* Keep the worse of (*kind, *why) and (k, w). */
static void worse(enum net_addr_kind *kind, enum net_reason *why, enum net_addr_kind k,
		  enum net_reason w)
{
	if (k > *kind) {
		*kind = k;
		*why = w;
	}
}

/* The fixed lists for ip and what it embeds. ip is normalised. */
static enum net_addr_kind static_kind(const struct net_ip *ip, enum net_reason *why)
{
	struct net_ip emb[EMBED_MAX];
	enum net_addr_kind kind = list_kind(ip, why);
	unsigned n = embedded_v4(ip, emb);

	for (unsigned i = 0; i < n && kind != NET_ADDR_DENIED; i++) {
		enum net_reason w = NET_R_RULE;
		enum net_addr_kind k = list_kind(&emb[i], &w);

		worse(&kind, why, k, w);
	}
	return kind;
}

/* Asks the host check; embedded addresses without a route are fine (a
 * translator's IPv4 side need not be routable from here). */
static enum net_addr_kind host_kind(const struct net_policy *p, const struct net_ip *ip,
				    bool embedded, enum net_reason *why)
{
	int r = p->host_check ? p->host_check(p->host_ctx, ip) : -ENOSYS;

	if (r == 0)
		return NET_ADDR_PUBLIC;
	if (r == 1) {
		*why = NET_R_HOST_ADDR;
		return NET_ADDR_DENIED;
	}
	if (r == -ENETUNREACH || r == -EHOSTUNREACH) {
		*why = NET_R_NO_ROUTE;
		return embedded ? NET_ADDR_PUBLIC : NET_ADDR_DENIED;
	}
	*why = NET_R_HOST_CHECK;
	return NET_ADDR_DENIED;
}

/* net_ip_judge for a normalised address. */
static enum net_addr_kind judge(const struct net_policy *p, const struct net_ip *ip,
				enum net_reason *why)
{
	struct net_ip emb[EMBED_MAX];
	enum net_reason w = NET_R_RULE;
	enum net_addr_kind kind, k;
	unsigned n;

	*why = NET_R_RULE;
	kind = static_kind(ip, why);
	if (kind == NET_ADDR_DENIED)
		return kind;
	k = host_kind(p, ip, false, &w);
	worse(&kind, why, k, w);
	n = embedded_v4(ip, emb);
	for (unsigned i = 0; i < n && kind != NET_ADDR_DENIED; i++) {
		w = NET_R_RULE;
		k = host_kind(p, &emb[i], true, &w);
		worse(&kind, why, k, w);
	}
	return kind;
}

enum net_addr_kind net_ip_judge(const struct net_policy *p, const struct net_ip *ip,
				enum net_reason *why)
{
	enum net_reason dummy;
	struct net_ip n;

	if (!why)
		why = &dummy;
	if (!p || !ip_norm(ip, &n)) {
		*why = NET_R_BAD_ARG;
		return NET_ADDR_DENIED;
	}
	return judge(p, &n, why);
}

/* Does the whole CIDR net/prefix lie inside one non-public block? */
static bool cidr_in_private(const struct net_ip *net, unsigned prefix)
{
	for (size_t i = 0; i < ARRAY_SIZE(private_list); i++) {
		if (prefix >= private_list[i].prefix &&
		    in_net(net, private_list[i].net, private_list[i].prefix))
			return true;
	}
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

/* What follows ';': only "private". */
static int parse_options(const char *text, const char *opts, struct net_rule *r, char *err,
			 size_t errlen)
{
	if (strcmp(opts, "private"))
		return fail(err, errlen, text, "unknown option '%.20s' after ';' (the only one is "
			    "'private')", opts);
	r->private_opt = true;
	return 0;
}

int net_rule_parse(const char *text, struct net_rule *out, char *err, size_t errlen)
{
	char buf[NET_RULE_TEXT_MAX + 1];
	char *semi;
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
	semi = strchr(buf, ';');
	if (semi)
		*semi = '\0';
	ret = semi ? parse_options(text, semi + 1, out, err, errlen) : 0;
	if (!ret && buf[0] == '\0')
		ret = fail(err, errlen, text, "empty rule before ';'");
	if (!ret)
		ret = rule_parse(text, buf, out, err, errlen);
	if (!ret)
		out->private = out->private_opt ||
			       (out->kind == NET_RULE_CIDR && cidr_in_private(&out->ip, out->prefix));
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

void net_policy_set_host_check(struct net_policy *p, net_host_check_fn fn, void *ctx)
{
	p->host_check = fn;
	p->host_ctx = ctx;
}

unsigned net_policy_nrules(const struct net_policy *p)
{
	return p->nrules;
}

const struct net_rule *net_policy_rule(const struct net_policy *p, unsigned idx)
{
	return idx < p->nrules ? &p->rules[idx] : NULL;
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
	case NET_R_PRIVATE: return "private-address";
	case NET_R_HOST_CHECK: return "host-check-failed";
	case NET_R_NO_ROUTE: return "no-route";
	}
	return "?";
}

static struct net_decision verdict(enum net_verdict v, enum net_reason r, int rule)
{
	struct net_decision d = { .verdict = v, .reason = r, .inspect = NET_INSPECT_NONE, .rule = rule };

	return d;
}

/* First name rule matching name; with port != 0, also allowing port; with
 * priv, also opening non-public addresses. -1 if none. */
static int find_name_rule(const struct net_policy *p, const char *name, uint16_t port, bool priv)
{
	for (unsigned i = 0; i < p->nrules; i++) {
		const struct net_rule *r = &p->rules[i];

		if (rule_matches_name(r, name) && (!port || rule_has_port(r, port)) &&
		    (!priv || r->private))
			return (int)i;
	}
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
	r = find_name_rule(p, norm, 0, false);
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
		uint64_t now_ms, enum net_reason *why)
{
	char norm[NET_NAME_MAX + 1];
	const char *bad;
	enum net_reason dummy;
	enum net_addr_kind kind;
	struct net_ip n;
	struct pin *slot = NULL;
	uint64_t ms;
	bool rebinding;

	if (!why)
		why = &dummy;
	*why = NET_R_RULE;
	if (!name || name_normalise(name, norm, &bad) || !ip_norm(ip, &n))
		return -EINVAL;
	if (find_name_rule(p, norm, 0, false) < 0)
		return -EPERM;
	kind = judge(p, &n, why);
	rebinding = kind == NET_ADDR_DENIED ||
		    (kind == NET_ADDR_PRIVATE && find_name_rule(p, norm, 0, true) < 0);
	if (!rebinding)
		*why = NET_R_PIN;
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
		p->evictions++;
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

uint64_t net_pin_evictions(const struct net_policy *p)
{
	return p->evictions;
}

/* Any live entry (pin or marker) for ip? */
static bool pin_any(const struct net_policy *p, const struct net_ip *ip, uint64_t now_ms)
{
	for (unsigned i = 0; i < p->pin_cap; i++)
		if (pin_live(&p->pins[i], now_ms) && ip_eq(&p->pins[i].ip, ip))
			return true;
	return false;
}

/* ---- connections ---- */

struct net_decision net_decide_connect(const struct net_policy *p, enum net_proto proto,
				       const struct net_ip *dst, uint16_t port, uint64_t now_ms)
{
	enum net_addr_kind kind = NET_ADDR_PUBLIC;
	enum net_reason why = NET_R_RULE;
	struct net_ip n;
	bool judged = false, pinned = false, marked = false, blocked_private = false;
	struct net_decision d;

	if (!ip_norm(dst, &n) || port == 0 || (proto != NET_TCP && proto != NET_UDP))
		return verdict(NET_DENY, NET_R_BAD_ARG, -1);

	/* IP/CIDR rules in order. One naming dst exactly needs no judgement; any
	 * other only opens what net_ip_judge permits (asked once, when needed). */
	for (unsigned i = 0; i < p->nrules; i++) {
		const struct net_rule *r = &p->rules[i];

		if (r->kind != NET_RULE_CIDR || r->proto != proto || r->ip.family != n.family ||
		    !rule_has_port(r, port))
			continue;
		if (r->prefix == ip_bits(&n) && ip_eq(&r->ip, &n))
			return verdict(NET_ALLOW, NET_R_RULE, (int)i);
		if (!prefix_eq(r->ip.b, n.b, r->prefix))
			continue;
		if (!judged) {
			kind = judge(p, &n, &why);
			judged = true;
		}
		if (kind == NET_ADDR_DENIED)
			continue;
		if (kind == NET_ADDR_PRIVATE && !r->private) {
			blocked_private = true;
			continue;
		}
		return verdict(NET_ALLOW, NET_R_RULE, (int)i);
	}
	if (!judged && !(proto == NET_TCP && pin_any(p, &n, now_ms))) {
		/* Nothing could allow it: the fixed lists name the reason, no
		 * need to ask the host. */
		kind = static_kind(&n, &why);
		return verdict(NET_DENY, kind == NET_ADDR_DENIED ? why : NET_R_NO_RULE, -1);
	}
	if (!judged)
		kind = judge(p, &n, &why);
	if (kind == NET_ADDR_DENIED) /* the judgement says why, marker or not */
		return verdict(NET_DENY, why, -1);

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
		if (proto != NET_TCP)
			continue;
		r = find_name_rule(p, e->name, port, kind == NET_ADDR_PRIVATE);
		if (r < 0) {
			if (kind == NET_ADDR_PRIVATE && find_name_rule(p, e->name, port, false) >= 0)
				blocked_private = true;
			continue;
		}
		d = verdict(NET_ALLOW, NET_R_PIN, r);
		d.inspect = port == 443 ? NET_INSPECT_TLS_SNI
			  : port == 80	? NET_INSPECT_HTTP_HOST
					: NET_INSPECT_NONE;
		return d;
	}
	if (blocked_private)
		return verdict(NET_DENY, NET_R_PRIVATE, -1);
	if (marked)
		return verdict(NET_DENY, NET_R_REBINDING, -1);
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
	const char *bad;
	enum net_reason why;
	enum net_addr_kind kind;
	struct net_ip n;
	int r;

	if (!ip_norm(dst, &n) || port == 0)
		return verdict(NET_DENY, NET_R_BAD_ARG, -1);
	if (!sni || name_normalise(sni, norm, &bad))
		return verdict(NET_DENY, NET_R_BAD_NAME, -1);
	if (find_name_rule(p, norm, 0, false) < 0)
		return verdict(NET_DENY, NET_R_NO_RULE, -1);
	if (find_name_rule(p, norm, port, false) < 0)
		return verdict(NET_DENY, NET_R_PORT, -1);
	kind = judge(p, &n, &why);
	if (kind == NET_ADDR_DENIED)
		return verdict(NET_DENY, NET_R_NOT_PINNED, -1);
	r = find_name_rule(p, norm, port, kind == NET_ADDR_PRIVATE);
	if (r < 0)
		return verdict(NET_DENY, NET_R_PRIVATE, -1);
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
