/*
 * libkiln: kiln-net, the per-VM network egress process (issue 6, docs/net.md).
 * Started before the VMM with one end of an AF_UNIX SOCK_SEQPACKET pair (one
 * Ethernet frame per message); the VMM gets the other end as --net fd=N.
 * kiln-net dies with its parent (PR_SET_PDEATHSIG), sits in its own process
 * group (a terminal's Ctrl-C reaches only the caller) and, at its end, writes
 * one JSON line of counters on a status pipe. Command line contract:
 *
 *   kiln-net --fd N --allow RULE [--allow RULE ...] [--audit-fd N]
 *            [--status-fd N] [--rate BYTES] [--dns-rate N] [--no-jail]
 *            [--no-seccomp]
 *
 * Exit status 0 normally, 2 on bad arguments, 1 on failure; one line on
 * stderr when it fails.
 */
#ifndef KILN_LIB_NETPROC_H
#define KILN_LIB_NETPROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KILN_NET_STATUS_MAX 1024 /* bytes of the status line read at most */

struct kiln_cgroup;

/* What a libkiln caller asks for. */
struct kiln_net_config {
	const char *bin;	  /* the kiln-net binary */
	const char *const *rules; /* --allow rules (checked with net_rule_parse first) */
	unsigned nrules;	  /* at least 1 */
	int audit_fd;		  /* audit file (JSON lines, O_APPEND), or -1 */
	uint64_t rate;		  /* bytes per second each way, 0: unlimited */
	uint64_t dns_rate;	  /* upstream DNS questions per second, 0: kiln-net's default */
};

/* kiln-net's counters from its status line. */
struct kiln_net_stats {
	uint64_t allowed;     /* connection attempts and DNS queries let through */
	uint64_t blocked;     /* denied */
	uint64_t dns_queries;
	uint64_t bytes_up;    /* guest to the world */
	uint64_t bytes_down;
};

/* What the sandbox adds. */
struct kiln_netproc_opts {
	const char *log;	/* kiln-net's stderr (created 0600, truncated) */
	struct kiln_cgroup *cg; /* joined before exec, or NULL */
	bool no_jail, no_seccomp;
};

struct kiln_netproc;

/* Create the socket pair and the status pipe, start kiln-net with them (and
 * the audit fd) as its fds 3, 4 (and 5). On failure returns -errno, writes a
 * one-line reason and leaves nothing behind. */
int kiln_netproc_start(struct kiln_netproc **out, const struct kiln_net_config *c,
		       const struct kiln_netproc_opts *o, char *err, size_t errlen);
/* The VMM's end of the pair (O_CLOEXEC: the VMM's child dup2()s it), until
 * kiln_netproc_close_vmm_end(); -1 after. */
int kiln_netproc_vmm_fd(const struct kiln_netproc *np);
/* Drop our copy of the VMM's end once the VMM holds its own, so kiln-net sees
 * the hang-up when the VMM ends. */
void kiln_netproc_close_vmm_end(struct kiln_netproc *np);
/* Becomes readable (POLLIN or POLLHUP) when kiln-net ends: poll it, never
 * read it. -1 once stopped. */
int kiln_netproc_poll_fd(const struct kiln_netproc *np);
/* Has kiln-net ended (or started to)? Non-blocking. */
bool kiln_netproc_ended(struct kiln_netproc *np);
/* How it ended, after waiting up to wait_ms for it to be reaped: "exit 2",
 * "killed by signal 9", or "still running". */
void kiln_netproc_how(struct kiln_netproc *np, int wait_ms, char *buf, size_t len);
/* After the VMM has gone: wait up to grace_ms for kiln-net to end by itself,
 * then SIGTERM its process group (it still reports), then SIGKILL; reap it
 * and read its status line. 0 when it exited 0, -ECHILD when it exited
 * otherwise or was killed, -ETIME when even SIGKILL did not end it. Once
 * only; later calls return the first result. */
int kiln_netproc_stop(struct kiln_netproc *np, int grace_ms);
/* Its counters, after kiln_netproc_stop: 0, or -ENODATA when it wrote no
 * usable status line. */
int kiln_netproc_stats(const struct kiln_netproc *np, struct kiln_net_stats *st);
/* Stop (without grace) if not done, close everything, free. Safe on NULL. */
void kiln_netproc_free(struct kiln_netproc *np);

/* In a forked child: put src[i] (skipped when < 0) on fd dst[i], without
 * CLOEXEC, whatever numbers they had before (sources may be targets).
 * Async-signal-safe. 0 or -1. */
int kiln_child_place_fds(const int *src, const int *dst, unsigned n);

/* Parse a status line: {"allowed":A,"blocked":B,"dns_queries":Q,"bytes_up":U,
 * "bytes_down":D}, non-negative integers; other keys are ignored. 0 or -EINVAL. */
int kiln_net_stats_parse(const char *buf, size_t len, struct kiln_net_stats *st);

#endif
