/*
 * kiln-router's parsers of untrusted text (src/router/hosts.c,
 * src/common/fleetid.c, fleet_cap_parse in src/router/fleet.c is left to
 * the unit tests: it is jansson's parser plus range checks).
 *
 * Input: any bytes, read as a hosts file, as one host URL and as one
 * sandbox id (each the whole input, NUL-terminated where a string is
 * wanted).
 *
 * Properties:
 *  - a hosts file that parses holds at most HOSTS_MAX entries, each with a
 *    valid host id, no id twice, and a URL that parses again to the same
 *    address; one that does not parse has a one-line reason and no list;
 *  - a URL that parses is http with a port of 1..65535 or unix with an
 *    absolute path, and nothing in it is a control byte;
 *  - a sandbox id names a host only if it is exactly sb-<host>-<32 hex>
 *    with a valid host id; an id without one is exactly sb-<32 hex>.
 */
#include <errno.h>

#include "fleetid.h"
#include "fuzz.h"
#include "router/hosts.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	return 0;
}

static void check_addr(const struct up_addr *a)
{
	uint64_t port = 0;

	if (a->is_unix) {
		FZ_CHECK(a->path[0] == '/', "unix path %s", a->path);
		for (const char *p = a->path; *p; p++)
			FZ_CHECK((unsigned char)*p > 0x20 && *p != 0x7f, "control byte in a path");
		return;
	}
	FZ_CHECK(a->host[0], "http without a host");
	for (const char *p = a->port; *p; p++)
		FZ_CHECK(*p >= '0' && *p <= '9', "port %s", a->port);
	port = strtoull(a->port, NULL, 10);
	FZ_CHECK(port >= 1 && port <= 65535, "port %s", a->port);
	for (const char *p = a->host; *p; p++)
		FZ_CHECK((unsigned char)*p > 0x20 && *p != 0x7f && *p != '/' && *p != '@',
			 "bad byte in host %s", a->host);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct hosts_entry *e = NULL;
	struct up_addr a, b;
	char err[256], host[FLEET_HOST_MAX + 1];
	char *s = malloc(size + 1);
	size_t n = 0;
	int r;

	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = 0;

	err[0] = 0;
	r = hosts_parse((const char *)data, size, &e, &n, err, sizeof(err));
	if (r == 0) {
		FZ_CHECK(e && n <= HOSTS_MAX, "%zu entries", n);
		for (size_t i = 0; i < n; i++) {
			FZ_CHECK(fleet_host_id_ok(e[i].id), "id %s", e[i].id);
			for (size_t j = 0; j < i; j++)
				FZ_CHECK(strcmp(e[i].id, e[j].id), "%s twice", e[i].id);
			check_addr(&e[i].addr);
			FZ_CHECK(hosts_url_parse(e[i].addr.url, &b) == 0, "%s again", e[i].addr.url);
			FZ_CHECK(!memcmp(&b, &e[i].addr, sizeof(b)), "%s parses otherwise",
				 e[i].addr.url);
		}
	} else {
		FZ_CHECK(!e && n == 0, "a list with an error");
		FZ_CHECK(err[0] && !strchr(err, '\n'), "reason '%s'", err);
	}
	free(e);

	if (hosts_url_parse(s, &a) == 0)
		check_addr(&a);

	r = fleet_sandbox_host(s, host, sizeof(host));
	if (r == 0) {
		char back[FLEET_ID_MAX + 2];

		FZ_CHECK(fleet_host_id_ok(host), "host %s", host);
		snprintf(back, sizeof(back), "sb-%s-%s", host, s + strlen(s) - FLEET_RAND_HEX);
		FZ_CHECK(!strcmp(back, s), "%s is not %s", s, back);
	} else if (r == -ENOENT) {
		FZ_CHECK(strlen(s) == 3 + FLEET_RAND_HEX && !strncmp(s, "sb-", 3), "old id %s", s);
	} else {
		FZ_CHECK(r == -EINVAL, "r %d", r);
		FZ_CHECK(!fleet_sandbox_id_ok(s), "%s ok", s);
	}
	free(s);
	return 0;
}
