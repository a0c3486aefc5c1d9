/* The hosts file and host addresses (see hosts.h). */
#include "router/hosts.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static bool name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_';
}

int hosts_url_parse(const char *url, struct up_addr *out)
{
	const char *h, *colon, *end;
	size_t n = url ? strnlen(url, HOSTS_URL_MAX + 1) : 0, hl;
	uint64_t port;
	int ret = -EINVAL;

	memset(out, 0, sizeof(*out));
	if (!n || n > HOSTS_URL_MAX)
		goto out;
	memcpy(out->url, url, n);
	if (!strncmp(url, "unix:", 5)) {
		if (url[5] != '/' || n - 5 >= sizeof(out->path))
			goto out;
		for (const char *p = url + 5; *p; p++)
			if ((unsigned char)*p <= 0x20 || *p == 0x7f)
				goto out;
		out->is_unix = true;
		memcpy(out->path, url + 5, n - 5);
		ret = 0;
		goto out;
	}
	if (strncmp(url, "http://", 7))
		goto out;
	h = url + 7;
	end = url + n;
	if (end > h && end[-1] == '/')
		end--;
	if (*h == '[') {
		const char *rb = memchr(h, ']', (size_t)(end - h));

		if (!rb || rb[1] != ':')
			goto out;
		for (const char *p = h + 1; p < rb; p++)
			if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') ||
			      (*p >= 'A' && *p <= 'F') || *p == ':' || *p == '.'))
				goto out;
		hl = (size_t)(rb - h - 1);
		h++;
		colon = rb + 1;
	} else {
		colon = memchr(h, ':', (size_t)(end - h));
		if (!colon)
			goto out;
		for (const char *p = h; p < colon; p++)
			if (!name_char(*p))
				goto out;
		hl = (size_t)(colon - h);
	}
	if (!hl || hl > HOSTS_NAME_MAX || end - colon - 1 < 1 || end - colon - 1 > 5)
		goto out;
	memcpy(out->host, h, hl);
	memcpy(out->port, colon + 1, (size_t)(end - colon - 1));
	/* Decimal, as getaddrinfo reads it (parse_u64 would read 010 as 8). */
	port = 0;
	for (const char *p = out->port; *p; p++) {
		if (*p < '0' || *p > '9')
			goto out;
		port = port * 10 + (uint64_t)(*p - '0');
	}
	if (port < 1 || port > 65535)
		goto out;
	ret = 0;
out:
	if (ret)
		memset(out, 0, sizeof(*out));
	return ret;
}

/* One line (NUL-terminated, without its newline) into e; 1 for an entry,
 * 0 for nothing, -EINVAL with why. */
static int parse_line(char *line, struct hosts_entry *e, const char **why)
{
	char *p = line, *id, *url, *hash = strchr(line, '#');

	if (hash)
		*hash = 0;
	while (*p == ' ' || *p == '\t' || *p == '\r')
		p++;
	if (!*p)
		return 0;
	id = p;
	while (*p && *p != ' ' && *p != '\t')
		p++;
	if (!*p) {
		*why = "want HOSTID URL";
		return -EINVAL;
	}
	*p++ = 0;
	while (*p == ' ' || *p == '\t')
		p++;
	url = p;
	while (*p && *p != ' ' && *p != '\t' && *p != '\r')
		p++;
	if (*p) {
		*p++ = 0;
		while (*p == ' ' || *p == '\t' || *p == '\r')
			p++;
		if (*p) {
			*why = "more than HOSTID URL on the line";
			return -EINVAL;
		}
	}
	if (!*url) {
		*why = "want HOSTID URL";
		return -EINVAL;
	}
	if (!fleet_host_id_ok(id)) {
		*why = "the host id must match [a-z0-9][a-z0-9-]{0,39}";
		return -EINVAL;
	}
	if (hosts_url_parse(url, &e->addr)) {
		*why = "the URL must be http://HOST:PORT or unix:/PATH";
		return -EINVAL;
	}
	snprintf(e->id, sizeof(e->id), "%s", id);
	return 1;
}

int hosts_parse(const char *text, size_t len, struct hosts_entry **out, size_t *n, char *err,
		size_t errlen)
{
	struct hosts_entry *arr = NULL;
	char line[512];
	const char *why = NULL;
	size_t count = 0, lineno = 0, pos = 0;
	int ret = -EINVAL;

	*out = NULL;
	*n = 0;
	if (len > HOSTS_FILE_MAX) {
		snprintf(err, errlen, "over %d bytes", HOSTS_FILE_MAX);
		goto out;
	}
	if (memchr(text, 0, len)) {
		snprintf(err, errlen, "a NUL byte in the file");
		goto out;
	}
	arr = calloc(HOSTS_MAX, sizeof(*arr));
	if (!arr) {
		ret = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	while (pos < len) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t ll = nl ? (size_t)(nl - text - pos) : len - pos;
		int r;

		lineno++;
		if (ll >= sizeof(line)) {
			snprintf(err, errlen, "line %zu: longer than %zu bytes", lineno,
				 sizeof(line) - 1);
			goto out;
		}
		memcpy(line, text + pos, ll);
		line[ll] = 0;
		pos += ll + 1;
		if (count == HOSTS_MAX) {
			struct hosts_entry extra;

			if (parse_line(line, &extra, &why) != 0) {
				snprintf(err, errlen, "line %zu: more than %d hosts", lineno,
					 HOSTS_MAX);
				goto out;
			}
			continue;
		}
		r = parse_line(line, &arr[count], &why);
		if (r < 0) {
			snprintf(err, errlen, "line %zu: %s", lineno, why);
			goto out;
		}
		if (!r)
			continue;
		for (size_t i = 0; i < count; i++) {
			if (!strcmp(arr[i].id, arr[count].id)) {
				snprintf(err, errlen, "line %zu: host %s is listed twice", lineno,
					 arr[count].id);
				goto out;
			}
		}
		count++;
	}
	*out = arr;
	*n = count;
	arr = NULL;
	ret = 0;
out:
	free(arr);
	return ret;
}
