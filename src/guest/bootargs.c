/*
 * kiln.* kernel command line parameters. The command line is at most
 * BOOTARGS_CMDLINE_MAX bytes; every value is checked against its own cap.
 */
#include "guest/bootargs.h"
#include "hostname.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#define TOKEN_MAX 512 /* longer parameters are not kiln's, or are bad */
#define IPARG_MAX 128 /* longest kiln.ip / kiln.ip6 value */

void bootargs_defaults(struct bootargs *ba)
{
	memset(ba, 0, sizeof(*ba));
	snprintf(ba->hostname, sizeof(ba->hostname), "kiln");
	ba->port = 52;
	snprintf(ba->root, sizeof(ba->root), "/dev/vda");
	ba->rootfstype = BOOTARGS_FS_AUTO;
	snprintf(ba->scratch, sizeof(ba->scratch), "auto");
	ba->bootmark = -1;
	ba->debug = false;
}

/* Decimal, or hex with 0x. No sign, no spaces, no overflow past max. */
static int parse_num(const char *s, uint32_t max, uint32_t *out)
{
	unsigned base = 10;
	uint64_t v = 0;

	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
	}
	if (!*s)
		return -EINVAL;
	for (; *s; s++) {
		unsigned d;

		if (*s >= '0' && *s <= '9')
			d = (unsigned)(*s - '0');
		else if (base == 16 && *s >= 'a' && *s <= 'f')
			d = (unsigned)(*s - 'a' + 10);
		else if (base == 16 && *s >= 'A' && *s <= 'F')
			d = (unsigned)(*s - 'A' + 10);
		else
			return -EINVAL;
		v = v * base + d;
		if (v > max)
			return -ERANGE;
	}
	*out = (uint32_t)v;
	return 0;
}

static bool valid_dev(const char *s)
{
	return strlen(s) <= BOOTARGS_DEV_MAX && !strncmp(s, "/dev/", 5) && s[5] &&
	       !strstr(s, "..");
}

/* A prefix length: 1 to 3 decimal digits, no leading zero, in [1, max]. */
static int parse_prefix(const char *s, unsigned max, unsigned *out)
{
	unsigned v = 0;
	size_t n = strlen(s);

	if (n < 1 || n > 3 || s[0] == '0')
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		v = v * 10 + (unsigned)(*s - '0');
	}
	if (v < 1 || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

/*
 * Split "A/P,G[,D]" in place (buf is a copy of at most IPARG_MAX bytes) into
 * its fields: exactly 2 or (when maxf is 3) 3 comma-separated fields, the
 * first with one '/'.
 */
static int split_ip(char *buf, unsigned maxf, char **addr, char **prefix, char **f, unsigned *nf)
{
	char *slash, *comma;

	*nf = 0;
	*addr = buf;
	for (char *p = buf; p; p = comma) {
		comma = strchr(p, ',');
		if (comma)
			*comma++ = 0;
		if (*nf > maxf - 1 || !*p)
			return -EINVAL;
		if (*nf)
			f[*nf - 1] = p;
		(*nf)++;
	}
	if (*nf < 2)
		return -EINVAL;
	(*nf)--; /* fields after the address */
	slash = strchr(buf, '/');
	if (!slash)
		return -EINVAL;
	*slash = 0;
	*prefix = slash + 1;
	return 0;
}

static uint32_t mask4(unsigned prefix)
{
	return prefix ? 0xffffffffu << (32 - prefix) : 0;
}

/* A host address: not 0/8, loopback, multicast, reserved or broadcast. */
static bool unicast4(struct in_addr a)
{
	uint32_t h = ntohl(a.s_addr);

	return (h >> 24) != 0 && (h >> 24) != 127 && h < 0xe0000000u;
}

/* addr and gw both hosts of one subnet (neither its network nor its
 * broadcast address below /31), and distinct. */
static bool same_subnet4(struct in_addr a, struct in_addr g, unsigned prefix, const char **why)
{
	uint32_t m = mask4(prefix), ha = ntohl(a.s_addr), hg = ntohl(g.s_addr);

	if ((ha & m) != (hg & m)) {
		*why = "the gateway is outside the subnet";
		return false;
	}
	if (ha == hg) {
		*why = "the gateway is the address itself";
		return false;
	}
	if (prefix < 31 && ((ha & ~m) == 0 || (ha & ~m) == ~m || (hg & ~m) == 0 || (hg & ~m) == ~m)) {
		*why = "a subnet's network or broadcast address";
		return false;
	}
	return true;
}

/* kiln.ip=ADDR/PREFIX,GW[,DNS] */
static int parse_ip4(const char *val, struct bootargs_ip4 *out, const char **why)
{
	struct bootargs_ip4 ip = { .set = true };
	char buf[IPARG_MAX + 1], *addr, *prefix, *f[2];
	unsigned nf;

	*why = "want ADDR/PREFIX,GW[,DNS]";
	if (strlen(val) > IPARG_MAX)
		return -EINVAL;
	snprintf(buf, sizeof(buf), "%s", val);
	if (split_ip(buf, 3, &addr, &prefix, f, &nf))
		return -EINVAL;
	*why = "not an IPv4 address";
	if (inet_pton(AF_INET, addr, &ip.addr) != 1 || inet_pton(AF_INET, f[0], &ip.gw) != 1 ||
	    (nf == 2 && inet_pton(AF_INET, f[1], &ip.dns) != 1))
		return -EINVAL;
	*why = "the prefix must be from 1 to 31";
	if (parse_prefix(prefix, 31, &ip.prefix))
		return -EINVAL;
	ip.has_dns = nf == 2;
	*why = "not a unicast address";
	if (!unicast4(ip.addr) || !unicast4(ip.gw) || (ip.has_dns && !unicast4(ip.dns)))
		return -EINVAL;
	if (!same_subnet4(ip.addr, ip.gw, ip.prefix, why))
		return -EINVAL;
	*out = ip;
	return 0;
}

/* Not ::, ::1, multicast or IPv4-mapped; link-local only where allowed. */
static bool unicast6(const struct in6_addr *a, bool link_local_ok)
{
	return !IN6_IS_ADDR_UNSPECIFIED(a) && !IN6_IS_ADDR_LOOPBACK(a) &&
	       !IN6_IS_ADDR_MULTICAST(a) && !IN6_IS_ADDR_V4MAPPED(a) &&
	       (link_local_ok || !IN6_IS_ADDR_LINKLOCAL(a));
}

static bool same_prefix6(const struct in6_addr *a, const struct in6_addr *b, unsigned prefix)
{
	unsigned whole = prefix / 8, rest = prefix % 8;

	if (memcmp(a->s6_addr, b->s6_addr, whole))
		return false;
	return !rest || !((a->s6_addr[whole] ^ b->s6_addr[whole]) & (0xff << (8 - rest)));
}

/* kiln.ip6=ADDR/PREFIX,GW (GW in the prefix, or link-local) */
static int parse_ip6(const char *val, struct bootargs_ip6 *out, const char **why)
{
	struct bootargs_ip6 ip = { .set = true };
	char buf[IPARG_MAX + 1], *addr, *prefix, *f[1];
	unsigned nf;

	*why = "want ADDR/PREFIX,GW";
	if (strlen(val) > IPARG_MAX)
		return -EINVAL;
	snprintf(buf, sizeof(buf), "%s", val);
	if (split_ip(buf, 2, &addr, &prefix, f, &nf))
		return -EINVAL;
	*why = "not an IPv6 address";
	if (inet_pton(AF_INET6, addr, &ip.addr) != 1 || inet_pton(AF_INET6, f[0], &ip.gw) != 1)
		return -EINVAL;
	*why = "the prefix must be from 1 to 128";
	if (parse_prefix(prefix, 128, &ip.prefix))
		return -EINVAL;
	*why = "not a unicast address";
	if (!unicast6(&ip.addr, false) || !unicast6(&ip.gw, true))
		return -EINVAL;
	*why = "the gateway is the address itself";
	if (!memcmp(&ip.addr, &ip.gw, sizeof(ip.gw)))
		return -EINVAL;
	*why = "the gateway is neither in the prefix nor link-local";
	if (!IN6_IS_ADDR_LINKLOCAL(&ip.gw) && !same_prefix6(&ip.addr, &ip.gw, ip.prefix))
		return -EINVAL;
	*out = ip;
	return 0;
}

/* One kiln.KEY=VALUE; 1 when KEY is unknown. A bad value may set *why. */
static int apply(struct bootargs *ba, const char *key, const char *val, const char **why)
{
	uint32_t v;

	if (!strcmp(key, "hostname")) {
		if (!hostname_ok(val, strlen(val), BOOTARGS_HOST_MAX))
			return -EINVAL;
		snprintf(ba->hostname, sizeof(ba->hostname), "%s", val);
	} else if (!strcmp(key, "port")) {
		if (parse_num(val, 0xfffffffeu, &v) || v == 0)
			return -EINVAL;
		ba->port = v;
	} else if (!strcmp(key, "root")) {
		if (strcmp(val, "none") && !valid_dev(val))
			return -EINVAL;
		snprintf(ba->root, sizeof(ba->root), "%s", val);
	} else if (!strcmp(key, "rootfstype")) {
		if (!strcmp(val, "auto"))
			ba->rootfstype = BOOTARGS_FS_AUTO;
		else if (!strcmp(val, "erofs"))
			ba->rootfstype = BOOTARGS_FS_EROFS;
		else if (!strcmp(val, "ext4"))
			ba->rootfstype = BOOTARGS_FS_EXT4;
		else
			return -EINVAL;
	} else if (!strcmp(key, "scratch")) {
		if (strcmp(val, "auto") && strcmp(val, "tmpfs") && !valid_dev(val))
			return -EINVAL;
		snprintf(ba->scratch, sizeof(ba->scratch), "%s", val);
	} else if (!strcmp(key, "bootmark")) {
		if (!strcmp(val, "off")) {
			ba->bootmark = -1;
		} else {
			/* outl touches 4 ports. */
			if (parse_num(val, 0xfffc, &v))
				return -EINVAL;
			ba->bootmark = (int)v;
		}
	} else if (!strcmp(key, "ip")) {
		return parse_ip4(val, &ba->ip, why);
	} else if (!strcmp(key, "ip6")) {
		return parse_ip6(val, &ba->ip6, why);
	} else if (!strcmp(key, "debug")) {
		if (!strcmp(val, "1") || !*val)
			ba->debug = true;
		else if (!strcmp(val, "0"))
			ba->debug = false;
		else
			return -EINVAL;
	} else {
		return 1;
	}
	return 0;
}

static void note(char *buf, size_t len, const char *what, const char *tok)
{
	size_t used;

	if (!buf || !len)
		return;
	used = strnlen(buf, len);
	if (used + 1 >= len)
		return;
	snprintf(buf + used, len - used, "%s%s%.64s", used ? "; " : "", what, tok);
}

/* " (why)" after the last note. */
static void note_more(char *buf, size_t len, const char *why)
{
	size_t used;

	if (!buf || !len)
		return;
	used = strnlen(buf, len);
	if (used + 1 < len)
		snprintf(buf + used, len - used, " (%s)", why);
}

int bootargs_parse(const char *cmdline, size_t len, struct bootargs *ba, char *err,
		   size_t errlen, char *warn, size_t warnlen)
{
	char tok[TOKEN_MAX + 1];
	size_t i = 0;
	int ret = 0;

	if (err && errlen)
		err[0] = 0;
	if (warn && warnlen)
		warn[0] = 0;
	if (len > BOOTARGS_CMDLINE_MAX)
		len = BOOTARGS_CMDLINE_MAX;
	while (i < len && cmdline[i]) {
		size_t n = 0;
		bool quoted = false, toolong = false;
		const char *why = NULL;
		char *key, *val, *eq;
		int r;

		while (i < len && (cmdline[i] == ' ' || cmdline[i] == '\t' || cmdline[i] == '\n'))
			i++;
		if (i >= len || !cmdline[i])
			break;
		/* A token ends at white space outside double quotes; quotes are dropped. */
		for (; i < len && cmdline[i]; i++) {
			char c = cmdline[i];

			if (c == '"') {
				quoted = !quoted;
				continue;
			}
			if (!quoted && (c == ' ' || c == '\t' || c == '\n'))
				break;
			if (n < TOKEN_MAX)
				tok[n++] = c;
			else
				toolong = true;
		}
		tok[n] = 0;
		if (strncmp(tok, "kiln.", 5))
			continue;
		if (toolong) {
			note(err, errlen, "parameter too long: ", tok);
			ret = -EINVAL;
			break;
		}
		key = tok + 5;
		eq = strchr(key, '=');
		if (eq) {
			*eq = 0;
			val = eq + 1;
		} else {
			val = key + strlen(key); /* empty value */
		}
		r = apply(ba, key, val, &why);
		if (r == 1) {
			note(warn, warnlen, "unknown parameter kiln.", key);
		} else if (r < 0) {
			note(err, errlen, "bad value for kiln.", key);
			if (why)
				note_more(err, errlen, why);
			ret = -EINVAL;
			break;
		}
	}
	return ret;
}
