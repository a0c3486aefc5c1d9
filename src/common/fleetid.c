/* Host ids and sandbox ids (see fleetid.h). */
#include "fleetid.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

static bool host_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

static bool hex_lower(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

static bool host_ok_n(const char *s, size_t n)
{
	if (n < 1 || n > FLEET_HOST_MAX || s[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!host_char(s[i]))
			return false;
	return true;
}

bool fleet_host_id_ok(const char *s)
{
	return s && host_ok_n(s, strnlen(s, FLEET_HOST_MAX + 1));
}

void fleet_host_id_default(char *buf, size_t len)
{
	char name[256] = "";
	size_t n = 0;

	if (!buf || !len)
		return;
	if (gethostname(name, sizeof(name) - 1))
		name[0] = 0;
	for (const char *p = name; *p && n < FLEET_HOST_MAX && n + 1 < len; p++) {
		char c = *p;

		if (c >= 'A' && c <= 'Z')
			c = (char)(c - 'A' + 'a');
		if (!host_char(c))
			c = '-';
		if (c == '-' && n == 0)
			continue;
		buf[n++] = c;
	}
	while (n && buf[n - 1] == '-')
		n--;
	buf[n] = 0;
	if (!n)
		snprintf(buf, len, "kiln");
}

int fleet_sandbox_host(const char *id, char *host, size_t len)
{
	size_t n = id ? strnlen(id, FLEET_ID_MAX + 1) : 0;
	const char *dash;

	if (host && len)
		host[0] = 0;
	if (n > FLEET_ID_MAX || n < 3 + FLEET_RAND_HEX || strncmp(id, "sb-", 3) ||
	    !hex_lower(id + n - FLEET_RAND_HEX, FLEET_RAND_HEX))
		return -EINVAL;
	if (n == 3 + FLEET_RAND_HEX)
		return -ENOENT;
	dash = id + n - FLEET_RAND_HEX - 1;
	if (*dash != '-' || !host_ok_n(id + 3, (size_t)(dash - id - 3)))
		return -EINVAL;
	if (!host || len <= (size_t)(dash - id - 3))
		return -ENAMETOOLONG;
	memcpy(host, id + 3, (size_t)(dash - id - 3));
	host[dash - id - 3] = 0;
	return 0;
}

bool fleet_sandbox_id_ok(const char *id)
{
	char host[FLEET_HOST_MAX + 1];
	int r = fleet_sandbox_host(id, host, sizeof(host));

	return r == 0 || r == -ENOENT;
}

int fleet_sandbox_id_new(const char *host, char *buf, size_t len)
{
	uint8_t raw[FLEET_RAND_HEX / 2];
	int ret = -EINVAL, n;

	if (!fleet_host_id_ok(host) || len < FLEET_ID_MAX + 1)
		goto out;
	ret = -EIO;
	if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
		goto out;
	n = snprintf(buf, len, "sb-%s-", host);
	for (unsigned i = 0; i < sizeof(raw); i++)
		snprintf(buf + n + 2 * i, 3, "%02x", raw[i]);
	ret = 0;
out:
	return ret;
}
