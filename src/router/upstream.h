/*
 * kiln-router's client side: one HTTP/1.1 request per connection
 * (Connection: close) to a kilnd over TCP or a unix socket. Plain sockets,
 * blocking with deadlines: a request thread owns its upstream connection and
 * its backpressure is the socket's. Response heads are capped
 * (UP_HEAD_MAX); bodies are read in pieces, chunked encoding decoded here.
 */
#ifndef KILN_ROUTER_UPSTREAM_H
#define KILN_ROUTER_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "router/hosts.h"

#define UP_HEAD_MAX 16384
#define UP_UNKNOWN_LEN UINT64_MAX

struct up_conn;

/* Connects within timeout_ms: 0 or -errno. */
int up_open(const struct up_addr *a, int timeout_ms, struct up_conn **out);
void up_close(struct up_conn *c);
int up_fd(const struct up_conn *c);
/* True if up_read_body would not wait (bytes buffered, or at the end). */
bool up_pending(const struct up_conn *c);
/* Every read and write waits at most this long (0: forever). */
void up_set_timeout(struct up_conn *c, int timeout_ms);
/* Every wait also ends (-ECONNABORTED) when hangup_fd hangs up or stop_fd
 * is readable (-1: none). */
void up_set_abort(struct up_conn *c, int hangup_fd, int stop_fd);
/* A connection over an already connected fd, owned from here on success (tests). */
int up_attach(int fd, int timeout_ms, struct up_conn **out);

/* The request line and headers (hdrs: name, value pairs, NULL-terminated);
 * body_len UP_UNKNOWN_LEN sends the body chunked. */
int up_send_head(struct up_conn *c, const char *method, const char *target,
		 const char *const *hdrs, uint64_t body_len);
int up_send_body(struct up_conn *c, const void *data, size_t len);
int up_end_body(struct up_conn *c);

/* The answer's status line and headers: 0 or -errno (-EPROTO: not HTTP). */
int up_read_head(struct up_conn *c, unsigned *status);
/* A header of the answer (case-insensitive name) or NULL. */
const char *up_header(const struct up_conn *c, const char *name);
/* The body's length if the answer said it, else UP_UNKNOWN_LEN. */
uint64_t up_body_len(const struct up_conn *c);
/* Body bytes, decoded: > 0, 0 at its end, -errno. */
ssize_t up_read_body(struct up_conn *c, void *buf, size_t len);

/* up_exchange on an open connection (left open), its timeout for the
 * whole exchange. */
int up_exchange_on(struct up_conn *c, const char *method, const char *target,
		   const char *const *hdrs, const void *body, size_t body_len, unsigned *status,
		   char **resp, size_t *resp_len, size_t max, char *host_hdr, size_t host_len);
/* A whole small exchange (within timeout_ms in all): body read up to max bytes (-EFBIG beyond), NUL
 * terminated, *resp freed by the caller. */
int up_exchange(const struct up_addr *a, const char *method, const char *target,
		const char *const *hdrs, const void *body, size_t body_len, int timeout_ms,
		unsigned *status, char **resp, size_t *resp_len, size_t max,
		char *host_hdr, size_t host_len);

#endif
