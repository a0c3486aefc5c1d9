/*
 * kilnd's processes: commands that kilnd runs in a sandbox and owns, so that
 * they outlive the HTTP client that started them (docs/daemon.md). Each has
 * its own agent connection, driven by a pump thread of its own, and a bounded
 * ring of numbered events (start, stdout, stderr, exit) that any number of
 * followers, up to a cap, read from a sequence number on: a follower that
 * reads nothing holds nothing but its place.
 */
#ifndef KILN_DAEMON_PROCS_H
#define KILN_DAEMON_PROCS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

struct kiln_agent;
struct kiln_exec_spec;
struct records;

#define PROC_RING_MAX (1u << 20)  /* output bytes a process keeps for followers */
#define PROCS_PER_SANDBOX 32	  /* running and finished, per sandbox */
#define PROC_FOLLOWERS_MAX 8	  /* streams of one process at a time */
#define PROC_STDIN_MAX (1u << 20) /* stdin bytes queued and not yet taken */
#define PROC_KEEPALIVE_MS 15000
#define PROC_PTY_DIM_MAX 4096u	  /* terminal rows and columns: 1..this */

struct procs;
struct proc;
struct proc_follower;

/* stop_fd: readable once kilnd stops (every wait gives up). */
int procs_create(struct records *rec, int stop_fd, struct procs **out);
/* Waits for every pump thread (their agent calls end at stop_fd); frees. */
void procs_free(struct procs *ps);

struct proc_start {
	const char *tenant, *sandbox;	/* the sandbox's owner and id */
	const struct kiln_exec_spec *spec;
	const char *cmd_json;		/* for listings and records */
	const char *tag;		/* NULL or the caller's label */
	uint64_t timeout_s;		/* 0: until it exits or the sandbox ends */
};

/* Runs it over a (taken, even on failure). A reference in *out. -EAGAIN: the
 * sandbox has PROCS_PER_SANDBOX running processes; an agent error otherwise
 * (its message in err). */
int procs_start(struct procs *ps, struct kiln_agent *a, const struct proc_start *st,
		struct proc **out, char *err, size_t errlen);
/* A reference to the process pid of that sandbox, or NULL. */
struct proc *procs_get(struct procs *ps, const char *tenant, const char *sandbox, uint32_t pid);
void proc_put(struct proc *p);
uint32_t proc_pid(const struct proc *p);
json_t *proc_json(struct proc *p);
/* {"processes": [...]} of that sandbox. */
json_t *procs_list_json(struct procs *ps, const char *tenant, const char *sandbox);
/* Forgets the sandbox's processes (it is gone); running ones end with it. */
void procs_drop_sandbox(struct procs *ps, const char *tenant, const char *sandbox);

/* Queues stdin (eof: then closes it). -EPIPE: stdin is closed or was never
 * open; -ESRCH: the process ended; -EAGAIN: over PROC_STDIN_MAX queued. */
int proc_stdin(struct proc *p, const void *buf, size_t len, bool eof);
/* A terminal's new size (the latest one wins). -ENOTTY: it has no terminal;
 * -ESRCH: it ended. */
int proc_resize(struct proc *p, unsigned rows, unsigned cols);
/* To the process or its whole group. -ESRCH: it ended. */
int proc_signal(struct proc *p, int signo, bool group);

/* A follower that gets the events after after_seq (0: all kept). -EBUSY at
 * PROC_FOLLOWERS_MAX. */
int proc_follow(struct proc *p, uint64_t after_seq, struct proc_follower **out);
/* Up to max bytes of JSON lines: blocks until there are some; 0 after the
 * last event; -1 when client_fd hangs up or kilnd stops. A keepalive line
 * after PROC_KEEPALIVE_MS of silence. */
ssize_t proc_follower_read(struct proc_follower *f, char *out, size_t max, int client_fd);
void proc_follower_free(struct proc_follower *f);

#endif
