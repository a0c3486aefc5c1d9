/*
 * libkiln: one sandbox = one kiln-vmm process booting one fresh microVM.
 * Create boots it (scratch disk, VMM, wait for the guest agent); destroy
 * shuts the guest down, reaps the VMM and removes every host-side file.
 * The VMM dies with its parent (PR_SET_PDEATHSIG), and runs in its own
 * process group so a terminal's Ctrl-C reaches only the caller, which tears
 * the sandbox down in order. Jailed, it is the child of a small waiter
 * process (src/vmm/jail.h); a caller that is PR_SET_CHILD_SUBREAPER gets to
 * reap it even when the waiter was killed first.
 */
#ifndef KILN_LIB_SANDBOX_H
#define KILN_LIB_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

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
	int boot_timeout_ms; /* waiting for the agent */
	/* Checked while booting: non-zero makes create give up with -EINTR. */
	const volatile int *abort;
	/* Defence in depth (docs/security.md). Each "no_" is for diagnosis only. */
	unsigned cpu_pct;    /* cgroup cpu.max in % of one host CPU; 0: cpus * 100 */
	bool no_cgroup;
	bool no_jail;
	bool no_seccomp;
	bool test_hooks;     /* pass --test-hooks (a VMM built with KILN_TEST_HOOKS) */
};

struct kiln_cgroup_stat;

struct kiln_sandbox_times {
	uint64_t boot_ns;       /* spawn to agent hello */
	uint64_t guest_boot_ns; /* the VMM's boot timer (0 if not reported) */
	uint64_t walls_ns;      /* the VMM's jail + seccomp set-up (0 if not reported) */
};

/* Boot a sandbox. On failure returns -errno and writes a one-line reason. */
int kiln_sandbox_create(struct kiln_sandbox **out, const struct kiln_sandbox_config *c, char *err,
			size_t errlen);
struct kiln_agent *kiln_sandbox_agent(struct kiln_sandbox *s);
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
/* Kill the VM at once (timeouts, signals); destroy still has to be called. */
void kiln_sandbox_kill(struct kiln_sandbox *s);
/* Orderly end: guest shutdown (unless killed), reap the VMM (SIGKILL after a
 * grace period), remove the run directory. Safe on NULL. */
void kiln_sandbox_destroy(struct kiln_sandbox *s);

/* Remove run directories and cgroups that a SIGKILLed kiln left behind. */
void kiln_sandbox_sweep(void);

#endif
