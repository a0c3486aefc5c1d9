/*
 * kilnd's HTTP API (docs/daemon.md): libmicrohttpd with a thread per
 * connection, so a slow client or a blocked guest call holds only its own
 * thread. Requests are validated into registry and agent calls here; the
 * registry never sees HTTP.
 */
#ifndef KILN_DAEMON_API_H
#define KILN_DAEMON_API_H

#include <stddef.h>
#include <stdint.h>

struct idem;
struct procs;
struct registry;
struct records;
struct tokens;

struct api_config {
	struct registry *reg;
	struct records *rec;
	struct procs *procs;
	struct idem *idem;	   /* Idempotency-Keys of creates */
	struct tokens *tokens;
	const char *host_id;	   /* X-Kiln-Host on every answer, /v1/capacity */
	const char *state_dir;	   /* tmp/ holds uploads and downloads on their way */
	const char *image_dir;	   /* NAME.json: an imported image's defaults for processes */
	uint64_t max_upload;	   /* bytes, PUT files and GET files */
	unsigned max_connections;  /* per listener */
	int stop_fd;		   /* readable once kilnd stops */
	int log_json;
};

struct api;

/* One per listening socket (fd: bound and listening, now owned by the api). */
int api_start(const struct api_config *c, int listen_fd, struct api **out, char *err,
	      size_t errlen);
/* Stops accepting and waits for the connection threads (set stop_fd first). */
void api_stop(struct api *a);

#endif
