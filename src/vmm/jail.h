/*
 * The VMM's jail (see docs/security.md): one linear, fail-closed sequence in
 * two stages around the VM's creation.
 *
 * jail_begin(), before anything is opened: close every fd not passed on the
 * command line, clear the environment, enter new user (when not root), mount,
 * PID, IPC, UTS and network namespaces, and fork. The parent stays behind as a
 * small waiter that relays SIGINT/SIGTERM/SIGHUP and ends with the VMM's own
 * status; it never returns. The child, PID 1 of its namespace, returns and
 * becomes the VMM.
 *
 * jail_finish(), once everything the VM needs is open (KVM, guest RAM,
 * kernel, disks, console, vsock socket) and before any guest code runs: make
 * an empty tmpfs holding only the vsock socket's directory the root
 * (pivot_root; the old root is detached), read-only; rlimits; drop to the
 * unprivileged uid/gid; no capabilities, NO_NEW_PRIVS, not dumpable;
 * PDEATHSIG. Nothing of it is left on the host when the VMM dies: the mounts
 * live in its own mount namespace.
 */
#ifndef KILN_VMM_JAIL_H
#define KILN_VMM_JAIL_H

#include <stddef.h>
#include <stdint.h>

struct vmm_config;

/* 0 in the jailed child, or -errno with a one-line reason. */
int jail_begin(const struct vmm_config *c, char *why, size_t whylen);
/* 0, or -errno with a one-line reason. Single-threaded callers only. */
int jail_finish(const struct vmm_config *c, char *why, size_t whylen);

/* Time jail_begin() took (0 without it), for the VMM's cost report. */
uint64_t jail_begin_ns(void);

/* The uid/gid a root caller drops to by default (nobody/nogroup). */
#define JAIL_DEFAULT_ID 65534u
/* RLIMIT_NOFILE inside the jail. */
#define JAIL_MAX_FILES 512u
/* RLIMIT_FSIZE: at least this, or the largest writable disk. */
#define JAIL_MIN_FSIZE (64ull << 20)

#endif
