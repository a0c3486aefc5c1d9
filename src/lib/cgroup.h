/*
 * libkiln: one cgroup v2 leaf per VM, for CPU, memory and task limits.
 *
 * Layout: <base>/kiln/run-<owner pid>-<random>. <base> is the parent of the
 * caller's own cgroup when that parent already gives cpu, memory and pids to
 * its children (a delegated subtree or slice: kiln/ goes next to the caller's
 * cgroup, which cannot give controllers out while it holds the caller), else
 * the root of the hierarchy (/sys/fs/cgroup; needs root). kiln/ never holds
 * processes, so it meets the "no internal processes" rule. See
 * docs/cgroups.md.
 */
#ifndef KILN_LIB_CGROUP_H
#define KILN_LIB_CGROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct kiln_cgroup;

#define KILN_CGROUP_PERIOD_US 100000ULL     /* cpu.max period */
#define KILN_CGROUP_MAX_VCPUS 1024U
#define KILN_CGROUP_MAX_MEM_MIB (1ULL << 30) /* 1 PiB: keeps byte counts far from overflow */
#define KILN_CGROUP_MEM_OVERHEAD_MIB 64ULL   /* VMM, device buffers, page tables */
#define KILN_CGROUP_MEM_OVERHEAD_PCT 2ULL    /* ... plus this share of guest memory */
#define KILN_CGROUP_PIDS_EXTRA 32ULL         /* tasks beyond one per vCPU */

struct kiln_cgroup_limits {
	unsigned vcpus;        /* guest vCPUs, 1..KILN_CGROUP_MAX_VCPUS */
	uint64_t mem_mib;      /* guest memory, 1..KILN_CGROUP_MAX_MEM_MIB */
	unsigned cpu_pct;      /* CPU quota in percent of one host CPU; 0: vcpus * 100 */
	uint64_t pids_max;     /* 0: vcpus + KILN_CGROUP_PIDS_EXTRA */
};

/* What gets written, computed from kiln_cgroup_limits (pure, unit-tested). */
struct kiln_cgroup_values {
	uint64_t cpu_quota_us;  /* per KILN_CGROUP_PERIOD_US */
	uint64_t cpu_period_us;
	uint64_t mem_max;       /* bytes, page aligned */
	uint64_t pids_max;
};

struct kiln_cgroup_stat {
	uint64_t mem_peak;      /* bytes: memory.peak, or memory.current where there is none */
	uint64_t mem_current;   /* bytes */
	uint64_t cpu_usage_us;  /* cpu.stat usage_usec */
	uint64_t pids_current;
	uint64_t oom_kills;     /* memory.events oom_kill */
	bool has_peak;          /* mem_peak came from memory.peak */
};

/* Create this VM's cgroup with its limits. On failure returns -errno and
 * writes a one-line reason (ending in "pass --no-cgroup to run without"). */
int kiln_cgroup_create(struct kiln_cgroup **out, const struct kiln_cgroup_limits *l, char *err,
		       size_t errlen);
/* Move pid (0: the caller) into the cgroup through cgroup.procs. Only
 * async-signal-safe calls: usable in a forked child before exec. 0 or -errno. */
int kiln_cgroup_attach(struct kiln_cgroup *cg, pid_t pid);
/* Raise memory.max by bytes, once in the cgroup's life (later calls do
 * nothing): room for a snapshot's files, which the VMM writes and so are
 * charged here, and on tmpfs cannot be reclaimed while they exist; without
 * it a snapshot of a VM using most of its RAM is an OOM kill. 0 or -errno. */
int kiln_cgroup_mem_allow(struct kiln_cgroup *cg, uint64_t bytes);
/* O_DIRECTORY fd of the cgroup, for clone3() with CLONE_INTO_CGROUP. Owned by cg. */
int kiln_cgroup_fd(const struct kiln_cgroup *cg);
const char *kiln_cgroup_path(const struct kiln_cgroup *cg);
/* Usage so far. 0 or -errno (fields it could not read stay 0). */
int kiln_cgroup_stat(struct kiln_cgroup *cg, struct kiln_cgroup_stat *st);
/* Kill whatever is left in it, wait (bounded) until it is empty, remove it,
 * free cg. Safe on NULL. The caller still reaps its own children. */
void kiln_cgroup_destroy(struct kiln_cgroup *cg);
/* Remove empty kiln/run-* cgroups whose owner process is gone. */
void kiln_cgroup_sweep(void);

/* Pure helpers, exposed for the unit tests. */
int kiln_cgroup_compute(const struct kiln_cgroup_limits *l, struct kiln_cgroup_values *v);
int kiln_cgroup_fmt_cpu_max(char *buf, size_t len, uint64_t quota_us, uint64_t period_us);
/* "run-<pid>-<8 hex digits>" -> pid. 0 or -EINVAL. */
int kiln_cgroup_parse_name(const char *name, pid_t *owner);
/* Value of "key N" in a flat-keyed file (cpu.stat, memory.events). 0 or -ENOENT/-EINVAL. */
int kiln_cgroup_parse_keyed(const char *text, const char *key, uint64_t *out);

#endif
