/*
 * kiln.* kernel command line parameters. The command line is at most
 * BOOTARGS_CMDLINE_MAX bytes; every value is checked against its own cap.
 */
#include "guest/bootargs.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define TOKEN_MAX 512 /* longer parameters are not kiln's, or are bad */

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

static bool valid_hostname(const char *s)
{
	size_t n = strlen(s);

	if (n < 1 || n > BOOTARGS_HOST_MAX || s[0] == '-' || s[0] == '.')
		return false;
	for (; *s; s++) {
		char c = *s;

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '.'))
			return false;
	}
	return true;
}

static bool valid_dev(const char *s)
{
	return strlen(s) <= BOOTARGS_DEV_MAX && !strncmp(s, "/dev/", 5) && s[5] &&
	       !strstr(s, "..");
}

/* One kiln.KEY=VALUE; 1 when KEY is unknown. */
static int apply(struct bootargs *ba, const char *key, const char *val)
{
	uint32_t v;

	if (!strcmp(key, "hostname")) {
		if (!valid_hostname(val))
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
		r = apply(ba, key, val);
		if (r == 1) {
			note(warn, warnlen, "unknown parameter kiln.", key);
		} else if (r < 0) {
			note(err, errlen, "bad value for kiln.", key);
			ret = -EINVAL;
			break;
		}
	}
	return ret;
}
