/*
 * seccomp-bpf filters, one per thread role (see docs/seccomp.md).
 *
 * Each role's allowlist is a table in seccomp.c. seccomp_apply() loads the
 * role's filter on the calling thread only (no TSYNC), with NO_NEW_PRIVS.
 * A call outside the list traps: the SIGSYS handler writes
 * "kiln-vmm: seccomp violation: syscall N (<role> thread)" to stderr and the
 * process dies by SIGSYS. A filter is inherited by threads created after it,
 * so the main thread's filter goes on last, once every thread runs.
 */
#ifndef KILN_VMM_SECCOMP_H
#define KILN_VMM_SECCOMP_H

#include <stdbool.h>
#include <sys/types.h>

enum seccomp_role {
	SECCOMP_ROLE_MAIN,  /* main loop and teardown */
	SECCOMP_ROLE_VCPU,  /* KVM_RUN and synchronous device emulation */
	SECCOMP_ROLE_VSOCK, /* the vsock event thread */
	SECCOMP_ROLE_WAITER, /* the jail's waiter process (jail.c) */
	SECCOMP_ROLE_NET,   /* the virtio-net event thread */
	SECCOMP_ROLE_COUNT,
};

/* Install role's filter on the calling thread. 0 or -errno. */
int seccomp_apply(enum seccomp_role role);
/* The waiter's filter: it may only signal child (the VMM). 0 or -errno. */
int seccomp_apply_waiter(pid_t child);

/* "main", "vcpu", "vsock", "waiter", "net"; NULL for anything else. */
const char *seccomp_role_name(enum seccomp_role role);

/* Write role's compiled BPF program (pfc = false) or its libseccomp
 * pseudo-filter-code listing (pfc = true) to fd, as it would be loaded by this
 * process. 0 or -errno. For tests and for reading the policy. */
int seccomp_role_export(enum seccomp_role role, int fd, bool pfc);

#endif
