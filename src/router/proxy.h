/*
 * kiln-router's HTTP side: kilnd's API, unchanged, in front of a fleet.
 * libmicrohttpd with a thread per connection, as kilnd: a stream's thread
 * reads its upstream as its client takes the bytes (backpressure), and a
 * client that hangs up closes the upstream connection.
 */
#ifndef KILN_ROUTER_PROXY_H
#define KILN_ROUTER_PROXY_H

#include <stddef.h>
#include <stdint.h>

struct fleet;
struct tokens;

struct proxy_config {
	struct fleet *fleet;
	const struct tokens *tokens;	/* NULL: kilnd alone checks tokens */
	unsigned max_connections;
	uint64_t max_upload;		/* bytes of one request body */
	int stop_fd;
	int create_timeout_ms;		/* a create's exchange; 0: 300 s (tests shorten it) */
};

struct proxy;

int proxy_start(const struct proxy_config *c, int listen_fd, struct proxy **out, char *err,
		size_t errlen);
void proxy_stop(struct proxy *p);

#endif
