/*
 * kiln-router's fleet: the hosts it knows (from a hosts file, DNS SRV or A
 * records), each host's last capacity report, and placement. One refresher
 * thread re-reads discovery and every host's GET /v1/capacity each refresh
 * interval; request threads read the table under its mutex and copy what
 * they need (a host's address), so nothing they hold goes away under them.
 */
#ifndef KILN_ROUTER_FLEET_H
#define KILN_ROUTER_FLEET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "router/hosts.h"

struct fleet;

struct fleet_config {
	const char *hosts_file;	/* or */
	const char *dns_srv;	/* _kiln._tcp.NAME, or */
	const char *dns_a;	/* NAME:PORT */
	unsigned refresh_s;	/* 1 .. 3600 */
	unsigned sample;	/* K: hosts sampled per placement */
	const char *upstream_token; /* for /v1/capacity; NULL: the client's */
	int stop_fd;		/* readable once the router stops */
};

int fleet_start(const struct fleet_config *c, struct fleet **out, char *err, size_t errlen);
void fleet_stop(struct fleet *f);

/* The address of host id: 0, or -ENOENT (not in discovery). */
int fleet_addr(struct fleet *f, const char *id, struct up_addr *out);
/* Every host's address (for fan-outs); *n at most max. */
size_t fleet_addrs(struct fleet *f, struct up_addr *out, char (*ids)[FLEET_HOST_MAX + 1],
		   size_t max);

/* Placement: the best of K sampled hosts with room, not draining, not in
 * exclude (ids); -EAGAIN if none. auth: the client's Authorization header
 * for capacity reports when there is no upstream token. On success the
 * host's in-flight count is up: fleet_placed() takes it down again. */
int fleet_place(struct fleet *f, const char *auth, const char (*exclude)[FLEET_HOST_MAX + 1],
		size_t nexclude, char *id, struct up_addr *addr);
/* The create placed on id ended: created tells whether it holds a slot now;
 * failed (no answer, or 429/503) marks the host's report stale or down. */
void fleet_placed(struct fleet *f, const char *id, bool created, bool failed, bool down);
/* A sandbox on id was deleted through the router: its slot is free now in
 * the last report too (until the next report says how things are). */
void fleet_released(struct fleet *f, const char *id);

/* The fleet's capacity: sums of every live host's last report. */
struct fleet_sum {
	unsigned hosts, live, slots, used, starting, free_cpus, draining;
	uint64_t free_memory_mib;
};
void fleet_sum(struct fleet *f, struct fleet_sum *s);

/* Parses a capacity report (GET /v1/capacity's JSON). 0 or -EINVAL. */
struct fleet_cap {
	char host_id[FLEET_HOST_MAX + 1];
	unsigned slots, used, starting, free_cpus;
	uint64_t free_memory_mib;
	bool draining;
};
int fleet_cap_parse(const char *json, size_t len, struct fleet_cap *out);

#endif
