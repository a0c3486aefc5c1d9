/*
 * The agent server: one epoll loop serving the kiln protocol on any number of
 * listening sockets (AF_VSOCK in the VM, AF_UNIX in tests). Memory is bounded
 * by design: a fixed transmit buffer per connection, a fixed stdin window per
 * process, and caps on connections, processes and streams.
 */
#ifndef KILN_GUEST_AGENTD_H
#define KILN_GUEST_AGENTD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct agentd;

struct agentd_config {
	bool pid1;  /* reap every child (orphans too), reset children's oom_score_adj,
		       advertise PROTO_CAP_REBOOT */
	bool debug; /* log connections and protocol errors to stderr */
	size_t tx_cap; /* transmit buffer per connection; 0: 256 KiB (tests use less) */
	const char *etc_dir; /* passwd and group for EXEC's user; NULL: /etc (tests use others) */
};

/* Counters for tests and debugging; safe to read from another thread. */
struct agentd_stats {
	size_t tx_cap;	     /* transmit buffer of each connection */
	size_t tx_peak;	     /* most bytes ever queued on one connection */
	size_t stdin_window; /* stdin buffer of each process */
	size_t stdin_peak;   /* most stdin bytes ever buffered for one process */
	uint64_t pipe_bytes; /* read from processes' stdout and stderr */
	uint64_t proto_errors;
	unsigned conns;
	unsigned execs;
};

#define AGENTD_STOPPED	0
#define AGENTD_SHUTDOWN 1

/* Ignores SIGPIPE process-wide (writes to closed pipes fail with EPIPE instead). */
int agentd_create(const struct agentd_config *cfg, struct agentd **out);
int agentd_listen_unix(struct agentd *d, const char *path);
int agentd_listen_vsock(struct agentd *d, uint32_t port);
/*
 * Serve until agentd_stop (AGENTD_STOPPED) or a SHUTDOWN request whose reply
 * has been flushed (AGENTD_SHUTDOWN), or a negative errno.
 */
int agentd_run(struct agentd *d);
/* From any thread or a signal handler. */
void agentd_stop(struct agentd *d);
void agentd_get_stats(struct agentd *d, struct agentd_stats *st);
/* Kills and reaps the processes still running, closes everything. */
void agentd_free(struct agentd *d);

#endif
