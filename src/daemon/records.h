/*
 * kilnd's records in SQLite (STATE_DIR/kilnd.db, WAL): one row per sandbox
 * and one per process run in it (docs/daemon.md). Safe to call from any
 * thread (one connection behind a mutex). Times are ms since the epoch.
 */
#ifndef KILN_DAEMON_RECORDS_H
#define KILN_DAEMON_RECORDS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct records;

struct records_sandbox {
	const char *id;
	const char *tenant;
	const char *image;
	unsigned cpus;
	uint64_t memory_mib, disk_mib, timeout_s;
	const char *allow_json;	   /* JSON array text, "[]" for none */
	const char *metadata_json; /* JSON object text, "{}" for none */
	const char *audit_path;	   /* network audit file, or NULL */
	int64_t created_ms;
};

/* Opens (creating the schema if needed). 0 or -errno with a reason in err. */
int records_open(const char *path, struct records **out, char *err, size_t errlen);
void records_close(struct records *r);
/* Every sandbox without an end gets end reason "daemon-stopped" (and so do
 * its processes without an end); *n how many sandboxes. At start-up. */
int records_mark_stopped(struct records *r, int64_t now_ms, unsigned *n);
int records_sandbox_start(struct records *r, const struct records_sandbox *s);
int records_sandbox_booted(struct records *r, const char *id, uint64_t boot_ms);
/* reason: deleted | timeout | memory | seccomp | vmm-lost | daemon-stopped | boot-failed */
int records_sandbox_end(struct records *r, const char *id, const char *reason, int64_t ended_ms);
/* *row names the process for records_process_end. */
int records_process_start(struct records *r, const char *sandbox_id, const char *argv_json,
			  int64_t started_ms, int64_t *row);
/* signal 0: exited with code; code -1 and signal 0: ended without an exit
 * (connection lost, sandbox gone). */
int records_process_end(struct records *r, int64_t row, int code, int signal, uint64_t bytes_out,
			int64_t ended_ms);
/* The tenant's sandboxes, newest first, at most limit (1 .. 1000), each
 * {"id","image","cpus","memory_mib","disk_mib","timeout_s","allow","metadata",
 *  "created_at","ended_at","end_reason","boot_ms","audit","processes":N}
 * (times as RFC 3339 UTC strings, null when not set). */
int records_list(struct records *r, const char *tenant, unsigned limit, json_t **out);
/* One sandbox's record as above plus "processes": [{"argv","started_at",
 * "ended_at","exit_code","signal","bytes_out"}...] (at most 1000, oldest
 * first); -ENOENT when it does not exist or belongs to another tenant. */
int records_get(struct records *r, const char *tenant, const char *id, json_t **out);

#endif
