/*
 * libkiln: one sandbox = one kiln-vmm process booting one fresh microVM.
 * Create boots it (scratch disk, VMM, wait for the guest agent); destroy
 * shuts the guest down, reaps the VMM and removes every host-side file.
 * The VMM dies with its parent (PR_SET_PDEATHSIG), and runs in its own
 * process group so a terminal's Ctrl-C reaches only the caller, which tears
 * the sandbox down in order. Jailed, it is the child of a small waiter
 * process (src/vmm/jail.h); a caller that is PR_SET_CHILD_SUBREAPER gets to
 * reap it even when the waiter was killed first. With network rules, kiln-net
 * (netproc.h) starts before the VMM and is stopped after it.
 */
#ifndef KILN_LIB_SANDBOX_H
#define KILN_LIB_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "lib/netproc.h"

struct kiln_sandbox;
struct kiln_agent;

struct kiln_sandbox_config {
	const char *vmm;     /* kiln-vmm binary */
	const char *kernel;  /* guest vmlinux */
	const char *initrd;  /* initramfs with kiln-init as /init */
	const char *image;   /* read-only base image (vda) */
	unsigned cpus;
	uint64_t mem_mib;
	uint64_t disk_mib;   /* writable scratch disk (vdb), 0: the guest uses tmpfs */
	const char *console; /* file for the guest console, NULL: discarded */
	int boot_timeout_ms; /* spawn to the agent's hello, in all */
	/* Readable (a signal handler's self-pipe): every wait here and in the
	 * agent client gives up at once (create: -ECANCELED; shutdown: the VM is
	 * killed, not waited for). Polled, never read. -1: none (set it: 0 is
	 * stdin). */
	int cancel_fd;
	/* Defence in depth (docs/security.md). Each "no_" is for diagnosis only. */
	unsigned cpu_pct;    /* cgroup cpu.max in % of one host CPU; 0: cpus * 100 */
	bool no_cgroup;
	bool no_jail;
	bool no_seccomp;
	bool test_hooks;     /* pass --test-hooks (a VMM built with KILN_TEST_HOOKS) */
	/* Network: NULL means no network device at all (default deny). Otherwise
	 * kiln-net starts first (same cgroup, its stderr in the run directory),
	 * the VMM gets a virtio-net NIC wired to it, and the guest kernel
	 * GUESTNET_BOOTARGS (src/common/guestnet.h). no_jail and no_seccomp
	 * apply to kiln-net as well. */
	const struct kiln_net_config *net;
	/* Identity (docs/protocol.md, IDENTITY), sent right after the agent's
	 * hello when it offers PROTO_CAP_IDENTITY, with fresh host entropy and
	 * the host's clock. id: sb-<host>-<32 hex> (common/fleetid.h); NULL: a new
	 * one for this machine. hostname: one RFC 1123 label; NULL: "sb-" and the
	 * first 12 hex digits of the id. */
	const char *id;
	const char *hostname;
	/* Restore instead of boot (issue 14, docs/snapshot.md): a template
	 * directory (lib/template.h) whose state, mem and scratch files the VMM
	 * resumes; kernel and initrd are then unused, and cpus, mem_mib and
	 * disk_mib must be the template's. The scratch disk starts as an exact
	 * (sparse or reflinked) copy of the template's, so the guest's cached
	 * file system state matches it; the template is never written. The
	 * guest's vsock connections from before the save are reset, and the
	 * identity above is sent as after a boot. NULL: boot. */
	const char *restore_dir;
};

struct kiln_cgroup_stat;

struct kiln_sandbox_times {
	uint64_t boot_ns;       /* spawn to agent hello */
	uint64_t spawn_ns;      /* start to the VMM's spawn (run dir, scratch disk, cgroup, kiln-net) */
	uint64_t ready_ns;      /* start to the VMM's ready byte (booted or restored, agent listening) */
	uint64_t guest_boot_ns; /* the VMM's boot timer (0 if not reported) */
	uint64_t walls_ns;      /* the VMM's jail + seccomp set-up (0 if not reported) */
};

/* Boot a sandbox and wait for its guest agent. On failure returns -errno and
 * writes a one-line reason. The same as start, then boot_step whenever one of
 * the boot fds turns readable, until it is not -EINPROGRESS. */
int kiln_sandbox_create(struct kiln_sandbox **out, const struct kiln_sandbox_config *c, char *err,
			size_t errlen);

/* For an event loop that boots many at once (kilnd). Start does the host's
 * part (run directory, scratch disk, cgroup, kiln-net, the VMM's spawn) and
 * returns while the guest boots. Nothing here polls: the VMM writes a byte
 * to a pipe when the guest marks its boot (its agent listening), and its
 * pidfd, kiln-net's fd and the cancel fd tell the rest. */
#define KILN_BOOT_FDS 4
int kiln_sandbox_start(struct kiln_sandbox **out, const struct kiln_sandbox_config *c, char *err,
		       size_t errlen);
/* The fds to wait on for POLLIN while booting (0 once booted), into fds[]. */
int kiln_sandbox_boot_fds(const struct kiln_sandbox *s, int fds[KILN_BOOT_FDS]);
/* When booting must have ended (monotonic ns, as now_ns()). */
uint64_t kiln_sandbox_boot_deadline(const struct kiln_sandbox *s);
/* After a boot fd turned readable or the deadline passed: 0 when booted (the
 * agent greeted, bounded by the boot deadline), -EINPROGRESS to wait more,
 * else -errno with a one-line reason (the caller kills and destroys it). */
int kiln_sandbox_boot_step(struct kiln_sandbox *s, char *err, size_t errlen);
struct kiln_agent *kiln_sandbox_agent(struct kiln_sandbox *s);
/* The sandbox id and the hostname it was given (or was to be given). */
const char *kiln_sandbox_id(const struct kiln_sandbox *s);
const char *kiln_sandbox_hostname(const struct kiln_sandbox *s);
/* One more greeted connection to the guest agent, for callers that run
 * requests side by side (kilnd opens one per API request): within
 * timeout_ms, every call on it cut short by cancel_fd (-1: none). The caller
 * frees it; closing it makes the guest kill the processes it started. */
int kiln_sandbox_connect(struct kiln_sandbox *s, int timeout_ms, int cancel_fd,
			 struct kiln_agent **out);
/* Turns readable (POLLIN) once the VMM has ended; -1 on kernels without
 * pidfds. Poll it, never read or close it. */
int kiln_sandbox_pidfd(const struct kiln_sandbox *s);
/* Absolute CLOCK_MONOTONIC deadline (now_ns()) for every later step: the
 * agent's calls and kiln_sandbox_shutdown's waits. 0: none (shutdown then
 * still bounds its own steps). */
void kiln_sandbox_set_deadline(struct kiln_sandbox *s, uint64_t deadline_ns);
pid_t kiln_sandbox_vmm_pid(const struct kiln_sandbox *s);
void kiln_sandbox_times(const struct kiln_sandbox *s, struct kiln_sandbox_times *t);
/* The VM's cgroup usage; -ENOENT without a cgroup. */
int kiln_sandbox_cgroup_stat(struct kiln_sandbox *s, struct kiln_cgroup_stat *st);
/* Has the VMM exited (reaped here)? Then *status is its exit status, or
 * 128 + the signal that killed it. */
bool kiln_sandbox_vmm_exited(struct kiln_sandbox *s, int *status);
/* Wait up to timeout_ms for the VMM to end by itself; as kiln_sandbox_vmm_exited(). */
bool kiln_sandbox_vmm_wait(struct kiln_sandbox *s, int timeout_ms, int *status);
/* The VMM's last stderr line (its exit reason, or a seccomp report). */
void kiln_sandbox_vmm_reason(const struct kiln_sandbox *s, char *buf, size_t len);
/* The VMM's reports of faults: a vCPU that shut down (its last exits,
 * registers), vsock connections it ended; lines ending in '\n', "" for none. */
void kiln_sandbox_vmm_report(const struct kiln_sandbox *s, char *buf, size_t len);
/* Stop or restart every vCPU of a booted VM through the VMM's control
 * channel (its devices stay up; the guest's clock is told). 0 (also when it
 * already was), -ETIMEDOUT after timeout_ms, -EPIPE once the VMM is gone. Not
 * thread-safe: one caller at a time per sandbox. */
int kiln_sandbox_pause(struct kiln_sandbox *s, int timeout_ms);
int kiln_sandbox_resume(struct kiln_sandbox *s, int timeout_ms);
/* Pause the VM and save it (docs/vmm.md, "Snapshots"): the VMM writes its
 * state into state_fd and the guest RAM into mem_fd (regular files open for
 * writing, truncated first); then the scratch disk is copied, sparse, into
 * scratch_fd (-1: not wanted). The VM stays paused. 0, or -errno with a
 * one-line reason; *state_bytes and *ram_bytes: what the VMM wrote. */
int kiln_sandbox_snapshot(struct kiln_sandbox *s, int state_fd, int mem_fd, int scratch_fd,
			  int timeout_ms, uint64_t *state_bytes, uint64_t *ram_bytes, char *err,
			  size_t errlen);
/* Kill the VM at once (timeouts, signals); destroy still has to be called. */
void kiln_sandbox_kill(struct kiln_sandbox *s);
/* kiln-net's liveness: -1 without network, else an fd that turns readable
 * (POLLIN or POLLHUP) once kiln-net ends. Poll it, never read it. */
int kiln_sandbox_net_fd(const struct kiln_sandbox *s);
/* Has kiln-net ended before kiln_sandbox_shutdown, while the VMM still runs
 * (a VMM that ends makes kiln-net end too: that is not kiln-net's failure)?
 * Then why (its last stderr line and how it ended, e.g. "kiln-net: ...
 * (exit 1)") is in buf. Waits up to 0.5 s for the VMM when kiln-net ended. */
bool kiln_sandbox_net_failed(struct kiln_sandbox *s, char *buf, size_t len);
/* Orderly end without freeing: guest shutdown (unless killed; at most 5 s
 * and the deadline), reap the VMM (SIGKILL at once if the agent did not
 * agree, or after a grace period of 10 s within the deadline, or when the
 * cancel fd fires), then let kiln-net end (it sees the VMM hang up; SIGKILL
 * after 2 s) and read its counters. Idempotent. */
void kiln_sandbox_shutdown(struct kiln_sandbox *s);
/* After kiln_sandbox_shutdown: kiln-net's counters. 0, -ENOENT without
 * network, -ENODATA when it reported none. */
int kiln_sandbox_net_stats(const struct kiln_sandbox *s, struct kiln_net_stats *st);
/* After kiln_sandbox_shutdown: 0 when kiln-net ended cleanly (or there was
 * none), else -ECHILD with why in buf. */
int kiln_sandbox_net_exit(struct kiln_sandbox *s, char *buf, size_t len);
/* kiln_sandbox_shutdown if not done, then remove the cgroup and the run
 * directory and free. Safe on NULL. */
void kiln_sandbox_destroy(struct kiln_sandbox *s);

/* Remove run directories and cgroups that a SIGKILLed kiln left behind. */
void kiln_sandbox_sweep(void);

#endif
