/*
 * kiln-net's --allow rules and the policy decisions made with them
 * (src/net/rules.c).
 *
 * Input: rule texts, one per line, up to an empty line (or the end); then
 * operations on a policy built from the rules that parsed: connect verdicts,
 * pins from "resolver answers", DNS questions, SNI checks, host addresses
 * and host-check failures, the clock.
 *
 * Properties:
 *  - a rule that parses, printed in canonical form and parsed again, is the
 *    same rule; a rejected rule gets a one-line message naming it;
 *  - a connect is allowed by a rule only if that rule is an IP/CIDR rule of
 *    the same protocol and family whose prefix holds the address and whose
 *    ports hold the port; by a pin only if the harness pinned that address
 *    (unexpired) for a name that a name rule allows on that port;
 *    loopback, link-local, "this network" and multicast addresses, the
 *    host's own addresses (the harness's host check) and every address while
 *    the host check fails are never allowed except by a rule naming exactly
 *    that address; and a public address a CIDR rule covers (and none of
 *    those) is allowed, a non-public one when the rule opens non-public
 *    addresses;
 *  - a name is pinned usable to a non-public address (private, CGNAT, ULA,
 *    documentation ranges) only when a rule covering it opens them;
 *  - a DNS question is answered (forwarded or empty) only for names a name
 *    rule covers, and always for the names of exact name rules;
 *  - an SNI is accepted only for a name pinned to that address and allowed
 *    on that port.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <sys/socket.h>

#include "fuzz.h"
#include "guestnet.h"
#include "net/rules.h"

#define MAX_PINS 64

struct pin {
	char name[NET_NAME_MAX + 1];
	struct net_ip ip;
	uint64_t until;
};

struct world {
	struct net_policy *pol;
	struct net_rule rules[16];
	unsigned nrules;
	struct net_ip host[8];
	unsigned nhost;
	bool host_err;	/* the host check cannot tell: everything it judges is denied */
	struct pin pins[MAX_PINS];
	unsigned npins;
	uint64_t now;
};

/* ---- canonical text of a rule ---- */

static void rule_print(const struct net_rule *r, char *out, size_t cap)
{
	char addr[INET6_ADDRSTRLEN];
	size_t n = 0;

	/* Always with the protocol: a name rule for host "tcp" is "tcp:tcp". */
	n += (size_t)snprintf(out + n, cap - n, r->proto == NET_UDP ? "udp:" : "tcp:");
	if (r->kind == NET_RULE_NAME) {
		n += (size_t)snprintf(out + n, cap - n, "%s%s", r->wildcard ? "*." : "", r->name);
	} else {
		inet_ntop(r->ip.family, r->ip.b, addr, sizeof(addr));
		n += (size_t)snprintf(out + n, cap - n, r->ip.family == AF_INET6 ? "[%s/%u]" : "%s/%u",
				      addr, r->prefix);
	}
	for (unsigned i = 0; i < r->nports; i++)
		n += (size_t)snprintf(out + n, cap - n, "%c%u", i ? ',' : ':', r->ports[i]);
}

static bool rule_eq(const struct net_rule *a, const struct net_rule *b)
{
	return a->kind == b->kind && a->proto == b->proto && !strcmp(a->name, b->name) &&
	       a->wildcard == b->wildcard && a->ip.family == b->ip.family &&
	       !memcmp(a->ip.b, b->ip.b, 16) && a->prefix == b->prefix && a->nports == b->nports &&
	       !memcmp(a->ports, b->ports, a->nports * sizeof(a->ports[0]));
}

static void check_rule(const char *text, struct world *w)
{
	struct net_rule r, again;
	char err[NET_RULE_TEXT_MAX + 128], printed[NET_RULE_TEXT_MAX + 64];
	int ret = net_rule_parse(text, &r, err, sizeof(err));

	if (ret) {
		FZ_CHECK(ret == -EINVAL && !strncmp(err, "rule '", 6) && !strchr(err, '\n'),
			 "rejection message '%s'", err);
		return;
	}
	FZ_CHECK(r.nports <= NET_RULE_MAX_PORTS, "%u ports", r.nports);
	for (unsigned i = 0; i < r.nports; i++)
		FZ_CHECK(r.ports[i] && (i == 0 || r.ports[i - 1] < r.ports[i]), "ports not sorted");
	FZ_CHECK(r.kind == NET_RULE_NAME ? r.proto == NET_TCP && r.nports > 0 && r.name[0]
					 : r.prefix <= (r.ip.family == AF_INET ? 32u : 128u),
		 "rule fields");
	rule_print(&r, printed, sizeof(printed));
	ret = net_rule_parse(printed, &again, err, sizeof(err));
	FZ_CHECK(ret == 0 && rule_eq(&r, &again), "'%s' printed as '%s' parses %s", text, printed,
		 ret ? err : "differently");
	if (w->nrules < 16 && net_policy_add_rule(w->pol, text, err, sizeof(err)) == 0)
		w->rules[w->nrules++] = r;
}

/* ---- the harness's own view of the policy ---- */

static bool prefix_has(const uint8_t *net, const uint8_t *ip, unsigned bits)
{
	for (unsigned i = 0; i < bits; i++)
		if ((net[i / 8] ^ ip[i / 8]) & (0x80 >> (i % 8)))
			return false;
	return true;
}

/* Must never be reached unless a rule names exactly that address. */
static bool must_deny(const struct net_ip *ip)
{
	const uint8_t *b = ip->b;

	if (ip->family == AF_INET)
		return b[0] == 0 || b[0] == 127 || (b[0] == 169 && b[1] == 254) ||
		       (b[0] & 0xf0) == 224 || (b[0] == 255 && b[1] == 255 && b[2] == 255 && b[3] == 255) ||
		       (b[0] == 168 && b[1] == 63 && b[2] == 129 && b[3] == 16); /* Azure wireserver */
	return b[0] == 0xff || (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) ||
	       (!memcmp(b, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 15) && b[15] <= 1);
}

static bool is_host(const struct world *w, const struct net_ip *ip)
{
	for (unsigned i = 0; i < w->nhost; i++)
		if (w->host[i].family == ip->family && !memcmp(w->host[i].b, ip->b, 16))
			return true;
	return false;
}

/* The harness's host check: its own address list, or an error. */
static int host_cb(void *ctx, const struct net_ip *ip)
{
	const struct world *w = ctx;

	return w->host_err ? -EIO : is_host(w, ip);
}

/* Non-public for certain (kiln-net may count more as non-public). */
static bool surely_private(const struct net_ip *ip)
{
	const uint8_t *b = ip->b;

	if (ip->family == AF_INET)
		return b[0] == 10 || (b[0] == 172 && (b[1] & 0xf0) == 16) ||
		       (b[0] == 192 && b[1] == 168) || (b[0] == 100 && (b[1] & 0xc0) == 64) ||
		       (b[0] == 192 && b[1] == 0 && b[2] == 2) ||
		       (b[0] == 198 && b[1] == 51 && b[2] == 100) ||
		       (b[0] == 203 && b[1] == 0 && b[2] == 113);
	return (b[0] & 0xfe) == 0xfc || !memcmp(b, "\x20\x01\x0d\xb8", 4);
}

/* Public for certain: unicast blocks with no special-purpose range inside. */
static bool surely_public(const struct net_ip *ip)
{
	const uint8_t *b = ip->b;

	if (ip->family == AF_INET)
		return (b[0] >= 1 && b[0] <= 9) || (b[0] >= 11 && b[0] <= 99) ||
		       (b[0] >= 101 && b[0] <= 126) || (b[0] >= 128 && b[0] <= 168) ||
		       b[0] == 170 || b[0] == 171 || (b[0] >= 173 && b[0] <= 191) ||
		       (b[0] >= 193 && b[0] <= 197) || (b[0] >= 199 && b[0] <= 202) ||
		       (b[0] >= 204 && b[0] <= 222);
	return (b[0] & 0xe0) == 0x20 && !(b[0] == 0x20 && (b[1] == 0x01 || b[1] == 0x02));
}

static bool has_port(const struct net_rule *r, uint16_t port)
{
	if (!r->nports)
		return true;
	for (unsigned i = 0; i < r->nports; i++)
		if (r->ports[i] == port)
			return true;
	return false;
}

static bool name_covers(const struct net_rule *r, const char *name)
{
	size_t n = strlen(name), s = strlen(r->name);

	if (r->kind != NET_RULE_NAME)
		return false;
	if (!r->wildcard)
		return !strcmp(name, r->name);
	return n > s + 1 && name[n - s - 1] == '.' && !strcmp(name + n - s, r->name);
}

static bool exact_rule(const struct world *w, const struct net_ip *ip, enum net_proto proto,
		       uint16_t port)
{
	for (unsigned i = 0; i < w->nrules; i++) {
		const struct net_rule *r = &w->rules[i];

		if (r->kind == NET_RULE_CIDR && r->proto == proto && r->ip.family == ip->family &&
		    r->prefix == (ip->family == AF_INET ? 32u : 128u) && !memcmp(r->ip.b, ip->b, 16) &&
		    has_port(r, port))
			return true;
	}
	return false;
}

static bool pinned_for_port(const struct world *w, const struct net_ip *ip, uint16_t port,
			    const char *name)
{
	for (unsigned i = 0; i < w->npins; i++) {
		const struct pin *p = &w->pins[i];

		if (p->until <= w->now || p->ip.family != ip->family || memcmp(p->ip.b, ip->b, 16) ||
		    (name && strcmp(name, p->name)))
			continue;
		for (unsigned k = 0; k < w->nrules; k++)
			if (name_covers(&w->rules[k], p->name) && has_port(&w->rules[k], port))
				return true;
	}
	return false;
}

static void pick_ip(struct fz *in, const struct world *w, struct net_ip *ip)
{
	static const char *const special[] = { "127.0.0.1", "169.254.169.254", "0.0.0.0",
					       "224.0.0.251", "255.255.255.255", "::1", "::",
					       "fe80::1", "ff02::1", "10.0.2.2", "::ffff:127.0.0.1",
					       "192.0.2.1", "2001:db8::1" };
	uint8_t sel = fz_u8(in);

	memset(ip, 0, sizeof(*ip));
	switch (sel % 4) {
	case 0:
		FZ_CHECK(net_ip_parse(special[fz_u8(in) % 13], ip) == 0, "net_ip_parse");
		break;
	case 1: /* inside a rule's network, or a host address */
		if (w->nrules && (sel & 4)) {
			const struct net_rule *r = &w->rules[fz_u8(in) % w->nrules];

			if (r->kind == NET_RULE_CIDR) {
				*ip = r->ip;
				ip->b[(ip->family == AF_INET ? 3 : 15)] ^= fz_u8(in) & 1;
				break;
			}
		}
		if (w->nhost) {
			*ip = w->host[fz_u8(in) % w->nhost];
			break;
		}
		__attribute__((fallthrough));
	case 2:
		ip->family = AF_INET;
		for (unsigned i = 0; i < 4; i++)
			ip->b[i] = fz_u8(in);
		break;
	default:
		ip->family = AF_INET6;
		for (unsigned i = 0; i < 16; i++)
			ip->b[i] = fz_u8(in);
		break;
	}
}

static void pick_name(struct fz *in, const struct world *w, char *out)
{
	uint8_t sel = fz_u8(in);
	const uint8_t *p;
	size_t n;

	if (sel % 2 == 0 && w->nrules) {
		const struct net_rule *r = &w->rules[fz_u8(in) % w->nrules];

		if (r->kind == NET_RULE_NAME) {
			snprintf(out, NET_NAME_MAX + 1, "%s%s", r->wildcard ? "x." : "", r->name);
			return;
		}
	}
	n = fz_take(in, fz_u8(in) % (NET_NAME_MAX + 2), &p);
	memcpy(out, p, n);
	out[n] = 0;
}

/* IPv4-mapped IPv6 is judged as the IPv4 address (the policy does the same). */
static struct net_ip ip_norm(const struct net_ip *in)
{
	struct net_ip ip = *in;

	if (ip.family == AF_INET6 && !memcmp(ip.b, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12)) {
		ip.family = AF_INET;
		memmove(ip.b, in->b + 12, 4);
		memset(ip.b + 4, 0, 12);
	}
	return ip;
}

/* Addresses whose verdict follows from the rules alone: IPv4 outside the
 * always-denied ranges, and global IPv6 (2000::/3) other than 6to4 and
 * Teredo, whose embedded IPv4 addresses kiln-net may judge. */
/* No special meaning for kiln-net: not reserved, not the guest's own network
 * (always denied, ;private or not), and no IPv4 address embedded (6to4,
 * Teredo, ISATAP interface ids), which kiln-net judges as well. */
static bool plain(const struct net_ip *ip)
{
	static const uint8_t guest4[4] = { 10, 0, 2, 0 }; /* GUESTNET_NET4 */
	const uint8_t *b = ip->b;

	if (ip->family == AF_INET)
		return !must_deny(ip) && !prefix_has(guest4, b, GUESTNET_PREFIX4);
	return (b[0] & 0xe0) == 0x20 && !(b[0] == 0x20 && b[1] == 0x02) &&
	       !(b[0] == 0x20 && b[1] == 0x01 && !b[2] && !b[3]) &&
	       !((b[8] & 0xfd) == 0 && b[9] == 0 && b[10] == 0x5e && b[11] == 0xfe);
}

static void lower_name(char *dst, const char *src)
{
	size_t n = strlen(src);

	memcpy(dst, src, n + 1);
	if (n && dst[n - 1] == '.')
		dst[n - 1] = 0;
	for (size_t i = 0; dst[i]; i++)
		if (dst[i] >= 'A' && dst[i] <= 'Z')
			dst[i] = (char)(dst[i] - 'A' + 'a');
}

static void check_connect(struct world *w, struct fz *in)
{
	enum net_proto proto = fz_u8(in) & 1 ? NET_UDP : NET_TCP;
	struct net_decision d;
	struct net_ip raw, ip;
	uint16_t port;
	bool covered = false;

	pick_ip(in, w, &raw);
	ip = ip_norm(&raw);
	port = fz_u16(in);
	if (fz_u8(in) & 1)
		port = (uint16_t)(port & 1 ? 443 : 80);
	d = net_decide_connect(w->pol, proto, &raw, port, w->now);
	if (port == 0) {
		FZ_CHECK(d.verdict == NET_DENY, "port 0 allowed");
		return;
	}
	for (unsigned i = 0; i < w->nrules; i++) {
		const struct net_rule *r = &w->rules[i];

		if (r->kind == NET_RULE_CIDR && r->proto == proto && r->ip.family == ip.family &&
		    has_port(r, port) && prefix_has(r->ip.b, ip.b, r->prefix) &&
		    (r->private || surely_public(&ip)))
			covered = true;
	}
	if (d.verdict == NET_ALLOW && d.reason == NET_R_RULE) {
		const struct net_rule *r = &w->rules[d.rule];

		FZ_CHECK(d.rule >= 0 && (unsigned)d.rule < w->nrules && r->kind == NET_RULE_CIDR &&
				 r->proto == proto && r->ip.family == ip.family && has_port(r, port) &&
				 prefix_has(r->ip.b, ip.b, r->prefix),
			 "allowed by rule %d, which does not cover it", d.rule);
	} else if (d.verdict == NET_ALLOW) {
		FZ_CHECK(d.reason == NET_R_PIN && proto == NET_TCP && pinned_for_port(w, &ip, port, NULL),
			 "allowed (%s) without a pin for the port", net_reason_str(d.reason));
	}
	if (d.verdict == NET_ALLOW && (must_deny(&ip) || is_host(w, &ip) || w->host_err))
		FZ_CHECK(exact_rule(w, &ip, proto, port), "a %s address allowed without an exact rule",
			 w->host_err ? "uncheckable" : is_host(w, &ip) ? "host" : "reserved");
	if (covered && plain(&ip) && !is_host(w, &ip) && !w->host_err)
		FZ_CHECK(d.verdict == NET_ALLOW, "a CIDR rule covers it, verdict %s",
			 net_reason_str(d.reason));
}

static void check_dns(struct world *w, struct fz *in)
{
	char name[NET_NAME_MAX + 2], norm[NET_NAME_MAX + 2];
	uint16_t qtype = fz_u8(in) & 1 ? 28 : 1, qclass = fz_u8(in) & 0x10 ? 3 : 1;
	struct net_decision d;
	bool covered = false;

	pick_name(in, w, name);
	d = net_decide_dns(w->pol, name, qtype, qclass);
	lower_name(norm, name);
	for (unsigned i = 0; i < w->nrules; i++)
		if (name_covers(&w->rules[i], norm))
			covered = true;
	if (d.verdict != NET_DENY)
		FZ_CHECK(covered && qclass == 1, "DNS for '%s' answered (%s), no rule covers it", name,
			 net_reason_str(d.reason));
	for (unsigned i = 0; i < w->nrules; i++)
		if (w->rules[i].kind == NET_RULE_NAME && !w->rules[i].wildcard &&
		    !strcmp(w->rules[i].name, name) && qclass == 1)
			FZ_CHECK(d.verdict != NET_DENY, "DNS for rule name '%s' denied (%s)", name,
				 net_reason_str(d.reason));
}

static void do_pin(struct world *w, struct fz *in)
{
	char name[NET_NAME_MAX + 2];
	struct net_ip raw, ip;
	uint32_t ttl = fz_u16(in);
	int r;

	pick_name(in, w, name);
	pick_ip(in, w, &raw);
	ip = ip_norm(&raw);
	r = net_pin_add(w->pol, name, &raw, ttl, w->now, NULL);
	FZ_CHECK(r == 0 || r == 1 || r == -EPERM || r == -EINVAL, "net_pin_add: %d", r);
	if (r == 0) {
		char norm[NET_NAME_MAX + 2];
		bool opens = false;

		FZ_CHECK(!must_deny(&ip), "a reserved address pinned as usable");
		FZ_CHECK(!is_host(w, &ip) && !w->host_err, "a %s address pinned as usable",
			 w->host_err ? "uncheckable" : "host");
		lower_name(norm, name);
		for (unsigned i = 0; i < w->nrules; i++)
			if (name_covers(&w->rules[i], norm) && w->rules[i].private)
				opens = true;
		FZ_CHECK(opens || !surely_private(&ip),
			 "'%s' pinned to a non-public address without a ;private rule", name);
	}
	/* Only usable pins allow anything; remember them, name normalised. */
	if (r == 0 && w->npins < MAX_PINS) {
		struct pin *p = &w->pins[w->npins++];

		lower_name(p->name, name);
		p->ip = ip;
		ttl = ttl < NET_PIN_TTL_MIN_S ? NET_PIN_TTL_MIN_S
		      : ttl > NET_PIN_TTL_MAX_S ? NET_PIN_TTL_MAX_S : ttl;
		p->until = w->now + ttl * 1000ULL;
	}
}

static void check_sni(struct world *w, struct fz *in)
{
	char name[NET_NAME_MAX + 2], norm[NET_NAME_MAX + 2];
	struct net_decision d;
	struct net_ip raw, ip;
	uint16_t port = fz_u8(in) & 1 ? 443 : fz_u16(in);

	pick_ip(in, w, &raw);
	ip = ip_norm(&raw);
	pick_name(in, w, name);
	lower_name(norm, name);
	d = net_check_sni(w->pol, &raw, port, name, w->now);
	if (d.verdict == NET_ALLOW)
		FZ_CHECK(!must_deny(&ip) && !is_host(w, &ip) && !w->host_err &&
				 pinned_for_port(w, &ip, port, norm),
			 "SNI '%s' accepted without a pin for it on port %u", name, port);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct world *w = calloc(1, sizeof(*w));
	struct fz in = { data, size };
	char line[NET_RULE_TEXT_MAX + 2];

	FZ_CHECK(w, "calloc");
	w->pol = net_policy_new(8);
	w->now = 1000000;
	FZ_CHECK(w->pol, "net_policy_new");
	net_policy_set_host_check(w->pol, host_cb, w);
	/* Rule lines, up to an empty line. */
	while (in.n) {
		const uint8_t *nl = memchr(in.p, '\n', in.n);
		size_t n = nl ? (size_t)(nl - in.p) : in.n;

		if (n == 0) {
			fz_u8(&in);
			break;
		}
		if (n <= NET_RULE_TEXT_MAX + 1) {
			memcpy(line, in.p, n);
			line[n] = 0;
			if (strlen(line) == n)
				check_rule(line, w);
		}
		in.p += n;
		in.n -= n;
		fz_u8(&in);
	}
	while (in.n) {
		switch (fz_u8(&in) % 6) {
		case 0: check_connect(w, &in); break;
		case 1: do_pin(w, &in); break;
		case 2: check_dns(w, &in); break;
		case 3: check_sni(w, &in); break;
		case 4: /* the host gains an address, or its check starts or stops failing */
			if (fz_u8(&in) & 1) {
				w->host_err = !w->host_err;
			} else if (w->nhost < 8) {
				struct net_ip raw;

				pick_ip(&in, w, &raw);
				w->host[w->nhost++] = ip_norm(&raw);
			}
			break;
		default:
			w->now += (uint64_t)fz_u16(&in) * 100;
			break;
		}
	}
	net_policy_free(w->pol);
	free(w);
	return 0;
}
