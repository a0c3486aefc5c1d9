/*
 * Host ids and the sandbox ids that carry them (docs/daemon.md, "Fleet"):
 * a host id is [a-z0-9][a-z0-9-]{0,39}; kilnd names its sandboxes
 * sb-<hostid>-<32 hex digits>, so a router finds a sandbox's host from its
 * id alone. Ids from before host ids (sb-<32 hex>) stay valid, without a host.
 */
#ifndef KILN_FLEETID_H
#define KILN_FLEETID_H

#include <stdbool.h>
#include <stddef.h>

#define FLEET_HOST_MAX 40
#define FLEET_RAND_HEX 32
/* "sb-" + host + "-" + 32 hex digits */
#define FLEET_ID_MAX (3 + FLEET_HOST_MAX + 1 + FLEET_RAND_HEX)

bool fleet_host_id_ok(const char *s);
/* This machine's host name made into a host id (lowercased, anything else
 * becomes '-', trimmed to 40 and of leading/trailing '-'); "kiln" if that
 * leaves nothing. buf: at least FLEET_HOST_MAX + 1 bytes. */
void fleet_host_id_default(char *buf, size_t len);
/* sb-<host>-<32 hex> or the older sb-<32 hex>. */
bool fleet_sandbox_id_ok(const char *id);
/* The host id inside a sandbox id into host (at least FLEET_HOST_MAX + 1
 * bytes): 0; -ENOENT for an older id without one; -EINVAL for no id. */
int fleet_sandbox_host(const char *id, char *host, size_t len);
/* A new sandbox id for host from 16 random bytes; buf: FLEET_ID_MAX + 1. */
int fleet_sandbox_id_new(const char *host, char *buf, size_t len);

#endif
