/*
 * kiln-router's view of a host's address and the hosts file (docs/daemon.md,
 * "kiln-router"): one host per line, "HOSTID URL", where URL is
 * http://HOST:PORT or unix:/PATH; '#' starts a comment; blank lines are
 * skipped. Nothing here does I/O: the parsers are fed bytes and unit-tested
 * with hostile input.
 */
#ifndef KILN_ROUTER_HOSTS_H
#define KILN_ROUTER_HOSTS_H

#include <stdbool.h>
#include <stddef.h>

#include "fleetid.h"

#define HOSTS_FILE_MAX (1 << 20)  /* bytes */
#define HOSTS_MAX 1024		  /* hosts in a fleet */
#define HOSTS_URL_MAX 200
#define HOSTS_NAME_MAX 128	  /* a DNS name or an IP literal */

struct up_addr {
	bool is_unix;
	char path[108];			/* unix: sun_path */
	char host[HOSTS_NAME_MAX + 1];	/* http: name or literal, without brackets */
	char port[6];
	char url[HOSTS_URL_MAX + 1];	/* as written, for messages */
};

struct hosts_entry {
	char id[FLEET_HOST_MAX + 1];
	struct up_addr addr;
};

/* "http://HOST:PORT" (HOST a name, IPv4 or [IPv6]; PORT 1..65535; an
 * optional trailing '/') or "unix:/ABSOLUTE/PATH". 0 or -EINVAL. */
int hosts_url_parse(const char *url, struct up_addr *out);

/* The whole file's text (len bytes, NULs refused) into a new array of
 * entries; duplicate ids, bad ids or URLs, more than HOSTS_MAX hosts are
 * -EINVAL with "line N: why" in err. An empty list is fine. */
int hosts_parse(const char *text, size_t len, struct hosts_entry **out, size_t *n, char *err,
		size_t errlen);

#endif
