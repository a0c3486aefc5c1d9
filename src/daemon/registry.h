/*
 * kilnd's sandboxes: ids, tenants, quotas, deadlines, and the one lifecycle
 * thread that boots and destroys every VM (docs/daemon.md). Request threads
 * hold references; a reference keeps the entry's memory, never the VM.
 */
#ifndef KILN_DAEMON_REGISTRY_H
#define KILN_DAEMON_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "lib/template.h"

struct kiln_agent;
struct records;
struct tokens_tenant;

struct registry;
struct reg_sandbox;

struct registry_config {
	const char *vmm, *kernel, *initrd, *netbin;
	const char *image_dir;	/* NAME.img files */
	const char *state_dir;	/* audit/ lives here */
	unsigned max_sandboxes; /* on this host, all tenants */
	unsigned max_cpus;	/* vCPUs booked on this host, all tenants */
	uint64_t max_memory_mib; /* guest memory booked on this host, all tenants */
	const char *host_id;	/* in every sandbox id: sb-<host_id>-<32 hex> */
	bool no_cgroup;
	int stop_fd;		/* readable once kilnd stops: every wait gives up */
	struct records *records;
	/* Called by the lifecycle thread once a sandbox's VM is gone. */
	void (*on_gone)(void *ctx, const char *tenant, const char *id);
	void *on_gone_ctx;
};

#define REG_MAX_ALLOW 64
#define REG_IMAGE_MAX 63

struct registry_create {
	const struct tokens_tenant *tenant;
	char image[REG_IMAGE_MAX + 1];
	unsigned cpus;
	uint64_t memory_mib, disk_mib, timeout_s, net_rate;
	const char *allow[REG_MAX_ALLOW]; /* checked rules, borrowed */
	unsigned nallow;
	const char *metadata_json;	  /* borrowed, "{}" for none */
	/* A template of the tenant to restore instead of booting ("": boot);
	 * its image, vCPUs, memory and disk replace the fields above. */
	char template_name[KILN_TEMPLATE_NAME_MAX + 1];
	/* A fork (registry_fork): template_name is in template_dir, not the
	 * tenant's, and the sandbox says whose fork it is. NULL otherwise. */
	const char *template_dir, *forked_from;
};

int registry_start(const struct registry_config *c, struct registry **out, char *err,
		   size_t errlen);
/* Destroys every VM (records: daemon-stopped) and frees. */
void registry_stop(struct registry *r);

/* Boots a sandbox; blocks the calling thread until it runs or failed. On
 * success *out is a reference. -EDQUOT: over the tenant's quota (429);
 * -ENOSPC: the host is full (429); -EINVAL: bad
 * request (400), also a stale template; -ENOENT: the tenant has no such
 * template on this host (404, a router tries another); -EAGAIN: the host is draining (503); anything else: it did not boot (err says why). */
int registry_create(struct registry *r, const struct registry_create *req,
		    struct reg_sandbox **out, char *err, size_t errlen);
/* A reference to the tenant's running sandbox, or NULL (unknown, another
 * tenant's, or ending: all look the same). */
struct reg_sandbox *registry_get(struct registry *r, const char *tenant, const char *id);
void registry_put(struct registry *r, struct reg_sandbox *sb);
/* Ends it (record reason "deleted") and returns once the VM is destroyed. */
void registry_delete(struct registry *r, struct reg_sandbox *sb);
/* The deadline is now + timeout_s; -EDQUOT beyond the tenant's max. */
int registry_set_timeout(struct registry *r, struct reg_sandbox *sb, uint64_t timeout_s);
/* A new agent connection (its calls cut short when kilnd stops); -ENOENT
 * once the sandbox is ending. */
int registry_connect(struct registry *r, struct reg_sandbox *sb, struct kiln_agent **out);
/* Stop (pause) or restart the vCPUs of a running sandbox; while paused its
 * agent is not reached (registry_connect: -EBUSY) and its deadline runs on.
 * 0, -ENOENT (not running), or the VMM's failure (-ETIMEDOUT, -EPIPE). */
int registry_pause(struct registry *r, struct reg_sandbox *sb, bool pause);
/* Save a running sandbox (no network rules) as template name of its tenant
 * (lib/template.h), in the tenant's template dir; a sandbox that ran goes on
 * running. 0 and *out (the template's JSON), or -errno with err: -ENOENT not
 * running, -EINVAL it has network rules, -EEXIST the name is taken. */
int registry_template_save(struct registry *r, struct reg_sandbox *sb, const char *name,
			   json_t **out, char *err, size_t errlen);
/* count clones of a running sandbox (no network rules) at this instant,
 * each with its own identity, disk and memory (copy-on-write), the
 * source's machine, timeout and metadata; the source runs on. All or none:
 * 0 and out[0..count-1] references, or -errno with err: -ENOENT not
 * running, -EINVAL it has network rules, registry_create's quota, capacity
 * and draining refusals, anything else a failure to save or restore. */
int registry_fork(struct registry *r, const struct tokens_tenant *tenant, struct reg_sandbox *sb,
		  unsigned count, struct reg_sandbox **out, char *err, size_t errlen);
/* A tenant's templates: state_dir/templates/t-TENANT. 0 or -ENAMETOOLONG. */
int registry_template_dir(struct registry *r, const char *tenant, char *buf, size_t len);
const char *registry_id(const struct reg_sandbox *sb);

json_t *registry_sandbox_json(struct registry *r, struct reg_sandbox *sb);
json_t *registry_list_json(struct registry *r, const char *tenant, const char *state);
/* Running and booting sandboxes; and the host's cap. */
void registry_capacity(struct registry *r, unsigned *used, unsigned *max);
/* What GET /v1/capacity reports. */
struct registry_cap {
	unsigned slots, used, starting, free_cpus;
	uint64_t free_memory_mib;
	bool draining;
};
void registry_capacity_full(struct registry *r, struct registry_cap *c);
/* Draining: creates fail with -EAGAIN, running sandboxes run out. */
void registry_set_draining(struct registry *r, bool on);

/* Counters the API bumps. */
enum registry_counter { REG_EXECS, REG_EXEC_TIMEOUTS, REG_FILES_IN, REG_FILES_OUT, REG_NCOUNTERS };
void registry_count(struct registry *r, enum registry_counter c, uint64_t n);
/* Prometheus text exposition; the caller frees. */
char *registry_metrics(struct registry *r);

#endif
