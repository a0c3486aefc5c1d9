/*
 * seccomp-bpf filters per thread role (see seccomp.h, docs/seccomp.md).
 *
 * The policy is data: one table of rules shared by every role (what glibc
 * does on its own: locks, thread exit, malloc, abort) and one table per role.
 * A rule allows a syscall, optionally only when up to three arguments match,
 * or makes it fail with an errno. Rules for the same syscall are alternatives.
 * Everything else traps into a SIGSYS handler that reports the syscall number
 * and kills the process with SIGSYS; a foreign architecture (or the x32 ABI)
 * kills the process outright.
 */
#include "vmm/seccomp.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <seccomp.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "vmm/vcpu.h"

#ifndef SYS_SECCOMP
#define SYS_SECCOMP 1 /* si_code of a seccomp SIGSYS */
#endif

#define SC_MAX_ARGS 3
/* Stand for the caller's pid, and the waiter's child, in an argument comparison. */
#define SC_SELF_PID UINT64_MAX
#define SC_PEER_PID (UINT64_MAX - 1)
/* Socket type bits, without SOCK_NONBLOCK / SOCK_CLOEXEC. */
#define SC_SOCK_TYPE_MASK 0xfULL

struct sc_rule {
	int nr;			/* SCMP_SYS(name) */
	int err;		/* 0: allow; otherwise fail with this errno */
	unsigned nargs;
	struct scmp_arg_cmp args[SC_MAX_ARGS];
};

#define ARG(i, op_, a) { .arg = (i), .op = (op_), .datum_a = (a) }
#define ARG_MASK(i, mask, val) \
	{ .arg = (i), .op = SCMP_CMP_MASKED_EQ, .datum_a = (mask), .datum_b = (val) }
#define ALLOW(name) { .nr = SCMP_SYS(name) }
#define ALLOW_IF(name, n, ...) { .nr = SCMP_SYS(name), .nargs = (n), .args = { __VA_ARGS__ } }
#define FAIL(name, e) { .nr = SCMP_SYS(name), .err = (e) }
/* A signal sent to a thread of this process. */
#define ALLOW_SELF_SIGNAL(sig) \
	ALLOW_IF(tgkill, 2, ARG(0, SCMP_CMP_EQ, SC_SELF_PID), ARG(2, SCMP_CMP_EQ, (sig)))
#define NO_EXEC(i) ARG_MASK(i, PROT_EXEC, 0)

/* Every role: what glibc needs around the role's own calls. */
static const struct sc_rule sc_common[] = {
	ALLOW(futex),			/* pthread mutexes and pthread_join */
	ALLOW(rt_sigreturn),		/* return from the vCPU kick handler */
	ALLOW(rt_sigprocmask),		/* glibc masks signals in pthread_kill, abort, thread exit */
	ALLOW(restart_syscall),		/* a restarted call after a signal */
	ALLOW(exit),			/* thread exit */
	ALLOW(exit_group),		/* process exit */
	ALLOW(getpid),			/* pthread_kill, raise, the SIGSYS handler */
	ALLOW(gettid),			/* raise, the SIGSYS handler */
	ALLOW_SELF_SIGNAL(SIGSYS),	/* the SIGSYS handler ends the process */
	ALLOW_SELF_SIGNAL(SIGABRT),	/* abort(): malloc's consistency checks */
	ALLOW(clock_gettime),		/* now_ns() when the vDSO falls back */
	ALLOW(sched_getaffinity),	/* malloc sizing its arena count */
	ALLOW_IF(mmap, 1, NO_EXEC(2)),	/* malloc: large blocks and per-thread arenas */
	ALLOW_IF(mprotect, 1, NO_EXEC(2)), /* malloc: growing a thread arena */
	ALLOW(munmap),			/* free(), thread stacks */
	ALLOW(madvise),			/* free(), glibc releasing an exited thread's stack */
	ALLOW(brk),			/* malloc's main arena */
	ALLOW_IF(write, 1, ARG(0, SCMP_CMP_EQ, STDERR_FILENO)),	/* messages, the SIGSYS report */
	ALLOW_IF(writev, 1, ARG(0, SCMP_CMP_EQ, STDERR_FILENO)),	/* glibc's fatal messages */
	/* No new files, but fail rather than kill: glibc opens /proc and /sys
	 * files on its own (malloc's check_may_shrink_heap) and copes with EACCES. */
	FAIL(open, EACCES),
	FAIL(openat, EACCES),
	FAIL(openat2, EACCES),
	FAIL(creat, EACCES),
#ifdef __SANITIZE_ADDRESS__
	ALLOW(sigaltstack),		/* ASan's runtime, at thread exit (SANITIZE=1 builds) */
#endif
};

/* The main thread from the main loop on, including the teardown in vmm_run(). */
static const struct sc_rule sc_main[] = {
	ALLOW(poll),			/* main_loop() */
	ALLOW(ppoll),			/* poll() where glibc implements it so */
	ALLOW(read),			/* signalfd, stdin */
	ALLOW(write),			/* stop eventfd, UART irqfd (serial_rx), console flush */
	ALLOW_SELF_SIGNAL(VCPU_KICK_SIGNAL), /* vcpu_kick() */
	ALLOW(close),			/* teardown */
	ALLOW(newfstatat),		/* vsock_free(): lstat of the socket file; snapshot fds' fstat */
	ALLOW(unlink),			/* vsock_free(): remove our socket file */
	/* The control channel and CTL_SNAPSHOT (src/vmm/snapshot.c). */
	ALLOW(recvmsg),			/* ctl_recv(): a request and the fds it carries */
	ALLOW_IF(fcntl, 1, ARG(1, SCMP_CMP_EQ, F_GETFL)), /* snapshot fds: open for writing? */
	ALLOW(fstat),			/* snapshot fds: regular files? (older glibc) */
	ALLOW(ftruncate),		/* snapshot files: emptied, memory file sized (holes) */
	ALLOW(pwrite64),		/* snapshot files: state, RAM's non-zero pages */
	ALLOW_IF(ioctl, 1, ARG(1, SCMP_CMP_EQ, KVM_GET_IRQCHIP)), /* PIC master, slave, IOAPIC */
	ALLOW_IF(ioctl, 1, ARG(1, SCMP_CMP_EQ, KVM_GET_PIT2)),	/* the PIT */
	ALLOW_IF(ioctl, 1, ARG(1, SCMP_CMP_EQ, KVM_GET_CLOCK)),	/* kvmclock */
};

/* A vCPU thread from the top of its run loop, with the devices it runs. */
static const struct sc_rule sc_vcpu[] = {
	ALLOW_IF(ioctl, 1, ARG(1, SCMP_CMP_EQ, KVM_RUN)),	/* the run loop */
	ALLOW_IF(ioctl, 1, ARG(1, SCMP_CMP_EQ, KVM_GET_REGS)),	/* report_shutdown() */
	ALLOW_IF(ioctl, 1, ARG(1, SCMP_CMP_EQ, KVM_GET_SREGS)),	/* report_shutdown() */
	ALLOW_IF(ioctl, 1, ARG(1, SCMP_CMP_EQ, KVM_KVMCLOCK_CTRL)), /* park(): the guest was paused */
	/* vcpu_save(), parked, for CTL_SNAPSHOT: each vCPU's state from its own thread. */
	ALLOW_IF(ioctl, 1, ARG(1, SCMP_CMP_EQ, KVM_GET_MP_STATE)),
	ALLOW_IF(ioctl, 1, ARG(1, SCMP_CMP_EQ, KVM_GET_FPU)),
	ALLOW_IF(ioctl, 1, ARG(1, SCMP_CMP_EQ, KVM_GET_XSAVE)),
	ALLOW_IF(ioctl, 1, ARG(1, SCMP_CMP_EQ, KVM_GET_XSAVE2)),
	ALLOW_IF(ioctl, 1, ARG(1, SCMP_CMP_EQ, KVM_GET_XCRS)),
	ALLOW_IF(ioctl, 1, ARG(1, SCMP_CMP_EQ, KVM_GET_DEBUGREGS)),
	ALLOW_IF(ioctl, 1, ARG(1, SCMP_CMP_EQ, KVM_GET_LAPIC)),
	ALLOW_IF(ioctl, 1, ARG(1, SCMP_CMP_EQ, KVM_GET_MSRS)),
	ALLOW_IF(ioctl, 1, ARG(1, SCMP_CMP_EQ, KVM_GET_TSC_KHZ)),
	ALLOW_IF(ioctl, 1, ARG(1, SCMP_CMP_EQ, KVM_GET_VCPU_EVENTS)),
	ALLOW(write),			/* console, irqfds, stop eventfd, vsock kick eventfd, report */
	ALLOW(pread64),			/* virtio-blk reads */
	ALLOW(pwrite64),		/* virtio-blk writes */
	ALLOW(fdatasync),		/* virtio-blk flush */
	ALLOW_IF(getrandom, 1, ARG(2, SCMP_CMP_EQ, 0)),	/* virtio-rng */
};

/* The vsock event thread from the top of vsock_thread(). */
static const struct sc_rule sc_vsock[] = {
	ALLOW(epoll_wait),		/* the event loop */
	ALLOW(epoll_pwait),		/* epoll_wait() where glibc implements it so */
	ALLOW(epoll_ctl),		/* arming connections, pausing the listener */
	ALLOW(accept4),			/* host-initiated connections */
	/* Guest-initiated connections: a Unix stream socket to "<path>_<port>". */
	ALLOW_IF(socket, 3, ARG(0, SCMP_CMP_EQ, AF_UNIX),
		 ARG_MASK(1, SC_SOCK_TYPE_MASK, SOCK_STREAM), ARG(2, SCMP_CMP_EQ, 0)),
	ALLOW(connect),
	ALLOW(read),			/* kick eventfd */
	ALLOW(write),			/* irqfds (virtio_mmio_run() signalling used buffers) */
	ALLOW(readv),			/* host to guest data */
	ALLOW(recvfrom),		/* the CONNECT line (recv, MSG_PEEK) */
	ALLOW(sendmsg),			/* guest to host data, replies */
	ALLOW(shutdown),		/* half-closes */
	ALLOW(close),			/* connections */
};

/* The virtio-net event thread from the top of vnet_thread(). The backend
 * socket comes connected from vnet_create()'s caller: no socket calls here. */
static const struct sc_rule sc_net[] = {
	ALLOW(epoll_wait),		/* the event loop */
	ALLOW(epoll_pwait),		/* epoll_wait() where glibc implements it so */
	ALLOW(epoll_ctl),		/* arming the backend for EPOLLIN / EPOLLOUT */
	ALLOW(read),			/* kick eventfd */
	ALLOW(write),			/* irqfds (virtio_mmio_run() signalling used buffers) */
	ALLOW(recvmsg),			/* backend to guest frames */
	ALLOW(sendmsg),			/* guest to backend frames */
};

/* The jail's waiter: relays signals to the VMM, waits for it, ends like it. */
static const struct sc_rule sc_waiter[] = {
	ALLOW(poll),			/* signalfd and the ready pipe */
	ALLOW(ppoll),
	ALLOW(read),			/* signalfd, ready pipe */
	ALLOW(close),			/* ready pipe */
	ALLOW(wait4),			/* the VMM's status */
	ALLOW_IF(kill, 1, ARG(0, SCMP_CMP_EQ, SC_PEER_PID)), /* relaying signals to the VMM */
	ALLOW(rt_sigaction),		/* ending by the VMM's signal: back to SIG_DFL */
	ALLOW_IF(tgkill, 1, ARG(0, SCMP_CMP_EQ, SC_SELF_PID)), /* ... and raise() it */
};

static const struct {
	const char *name;
	const struct sc_rule *rules;
	size_t nrules;
} sc_roles[SECCOMP_ROLE_COUNT] = {
	[SECCOMP_ROLE_MAIN] = { "main", sc_main, sizeof(sc_main) / sizeof(sc_main[0]) },
	[SECCOMP_ROLE_VCPU] = { "vcpu", sc_vcpu, sizeof(sc_vcpu) / sizeof(sc_vcpu[0]) },
	[SECCOMP_ROLE_VSOCK] = { "vsock", sc_vsock, sizeof(sc_vsock) / sizeof(sc_vsock[0]) },
	[SECCOMP_ROLE_WAITER] = { "waiter", sc_waiter, sizeof(sc_waiter) / sizeof(sc_waiter[0]) },
	[SECCOMP_ROLE_NET] = { "net", sc_net, sizeof(sc_net) / sizeof(sc_net[0]) },
};

/* The role of the calling thread, for the report. */
static __thread const char *sc_thread_role = "unfiltered";

const char *seccomp_role_name(enum seccomp_role role)
{
	return (unsigned)role < SECCOMP_ROLE_COUNT ? sc_roles[role].name : NULL;
}

static size_t sc_append(char *buf, size_t at, size_t cap, const char *s)
{
	while (*s && at < cap)
		buf[at++] = *s++;
	return at;
}

/*
 * Runs on the violating thread; async-signal-safe calls only. SA_RESETHAND
 * has already put SIGSYS back to its default action and SA_NODEFER left it
 * unblocked, so raising it ends the process with WTERMSIG == SIGSYS. Should
 * that fail, exit with the status a shell would show for it.
 */
static void sc_sigsys(int sig, siginfo_t *si, void *uctx)
{
	char msg[96], num[12];
	size_t n = 0, k = 0;
	unsigned nr;
	ssize_t w;

	(void)uctx;
	nr = si->si_code == SYS_SECCOMP ? (unsigned)si->si_syscall : 0;
	do
		num[k++] = (char)('0' + nr % 10);
	while ((nr /= 10) && k < sizeof(num));
	n = sc_append(msg, n, sizeof(msg), "kiln-vmm: seccomp violation: syscall ");
	while (k && n < sizeof(msg))
		msg[n++] = num[--k];
	n = sc_append(msg, n, sizeof(msg), " (");
	n = sc_append(msg, n, sizeof(msg), sc_thread_role);
	n = sc_append(msg, n, sizeof(msg), " thread)\n");
	w = write(STDERR_FILENO, msg, n);
	(void)w;
	syscall(SYS_tgkill, getpid(), gettid(), sig);
	/* Still here: as PID 1 of its namespace (the jail) the VMM ignores a
	 * signal it sends itself without a handler. A forbidden call makes the
	 * kernel force SIGSYS, which kills even a namespace's init. */
	syscall(SYS_getppid);
	syscall(SYS_exit_group, 128 + SIGSYS);
}

static int sc_add(scmp_filter_ctx ctx, const struct sc_rule *r, size_t n, uint64_t pid,
		  uint64_t peer)
{
	struct scmp_arg_cmp args[SC_MAX_ARGS];
	int ret = 0;

	for (size_t i = 0; i < n && !ret; i++) {
		uint32_t action = r[i].err ? SCMP_ACT_ERRNO((uint32_t)r[i].err) : SCMP_ACT_ALLOW;

		memcpy(args, r[i].args, sizeof(args));
		for (unsigned a = 0; a < r[i].nargs; a++)
			if (args[a].datum_a == SC_SELF_PID)
				args[a].datum_a = pid;
			else if (args[a].datum_a == SC_PEER_PID)
				args[a].datum_a = peer;
		ret = seccomp_rule_add_exact_array(ctx, action, r[i].nr, r[i].nargs, args);
	}
	return ret;
}

/* The role's filter, ready to load or export. NULL out on error. */
static int sc_build(enum seccomp_role role, uint64_t peer, scmp_filter_ctx *out)
{
	scmp_filter_ctx ctx = NULL;
	uint64_t pid = (uint64_t)getpid();
	int ret = -EINVAL;

	*out = NULL;
	if ((unsigned)role >= SECCOMP_ROLE_COUNT)
		goto out;
	ret = -ENOMEM;
	ctx = seccomp_init(SCMP_ACT_TRAP);
	if (!ctx)
		goto out;
	ret = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
	if (!ret)
		ret = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 1);
	if (!ret)
		ret = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 0);
	/* A binary search over syscall numbers; an older libseccomp may lack it. */
	if (!ret)
		(void)seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
	if (!ret)
		ret = sc_add(ctx, sc_common, sizeof(sc_common) / sizeof(sc_common[0]), pid, peer);
	if (!ret)
		ret = sc_add(ctx, sc_roles[role].rules, sc_roles[role].nrules, pid, peer);
	if (ret)
		goto out;
	*out = ctx;
	ctx = NULL;
out:
	if (ctx)
		seccomp_release(ctx);
	return ret;
}

static int sc_apply(enum seccomp_role role, uint64_t peer)
{
	scmp_filter_ctx ctx = NULL;
	struct sigaction sa;
	sigset_t set;
	int ret;

	ret = sc_build(role, peer, &ctx);
	if (ret)
		goto out;
	/* The report needs SIGSYS deliverable on this thread: the vsock thread
	 * blocks every signal. The kernel would unblock it anyway, but with the
	 * default action, so without the report. */
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = sc_sigsys;
	sa.sa_flags = SA_SIGINFO | SA_RESETHAND | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGSYS, &sa, NULL) < 0) {
		ret = -errno;
		goto out;
	}
	sigemptyset(&set);
	sigaddset(&set, SIGSYS);
	ret = -pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	if (ret)
		goto out;
	sc_thread_role = sc_roles[role].name;
	ret = seccomp_load(ctx);
	if (ret)
		sc_thread_role = "unfiltered";
out:
	if (ctx)
		seccomp_release(ctx);
	return ret;
}

int seccomp_apply(enum seccomp_role role)
{
	/* Only the waiter has a peer, and it must name it. */
	return role == SECCOMP_ROLE_WAITER ? -EINVAL : sc_apply(role, 0);
}

int seccomp_apply_waiter(pid_t child)
{
	return child > 0 ? sc_apply(SECCOMP_ROLE_WAITER, (uint64_t)child) : -EINVAL;
}

int seccomp_role_export(enum seccomp_role role, int fd, bool pfc)
{
	scmp_filter_ctx ctx = NULL;
	int ret;

	/* The waiter's peer shows as pid 0 here. */
	ret = sc_build(role, 0, &ctx);
	if (!ret)
		ret = pfc ? seccomp_export_pfc(ctx, fd) : seccomp_export_bpf(ctx, fd);
	if (ctx)
		seccomp_release(ctx);
	return ret;
}
