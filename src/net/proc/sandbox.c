/*
 * kiln-net's own walls. It must reach the network (it is the egress), so it
 * stays in the host's network namespace; everything else goes:
 *   - a private mount namespace (in a user namespace when not root) whose
 *     root is an empty read-only tmpfs holding only the guestfwd socket that
 *     slirp connects to: no view of the host's files;
 *   - no capabilities, uid/gid 65534 when started as root, NO_NEW_PRIVS,
 *     not dumpable, rlimits, and the parent-death signal;
 *   - a seccomp filter: sockets of the kinds it uses, I/O on them, poll,
 *     memory and clocks; no open, no exec, no fork, no ptrace. A violation
 *     is reported on stderr and kills the process.
 */
#include <errno.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "privs.h"
#include "net/proc/knet.h"

#define SANDBOX_ROOT "/tmp"  /* where the new root is mounted, privately */
#define SANDBOX_ID   65534u
#define FWD_NAME     "fwd.sock"

#ifndef SYS_SECCOMP
#define SYS_SECCOMP 1
#endif

static int fail(char *why, size_t len, int err, const char *what)
{
	snprintf(why, len, "%s: %s", what, strerror(err));
	return -err;
}

/* At most KNET_FILES_MAX open files (the poll set is sized by it); a lower
 * hard limit already there is kept. 0 or -errno. */
static int limit_files(void)
{
	struct rlimit rl;

	if (!privs_set_limit(RLIMIT_NOFILE, KNET_FILES_MAX))
		return 0;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_max > KNET_FILES_MAX)
		return -EPERM;
	rl.rlim_cur = rl.rlim_max;
	return setrlimit(RLIMIT_NOFILE, &rl) < 0 ? -errno : 0;
}

/* The Unix listener behind slirp's guestfwd, at dir/fwd.sock. */
static int fwd_listener(struct knet *k, const char *dir)
{
	struct sockaddr_un su = { .sun_family = AF_UNIX };
	int fd;

	snprintf(k->fwd_path, sizeof(k->fwd_path), "%s/" FWD_NAME, dir);
	if (strlen(k->fwd_path) >= sizeof(su.sun_path))
		return -ENAMETOOLONG;
	memcpy(su.sun_path, k->fwd_path, strlen(k->fwd_path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&su, sizeof(su)) < 0 || listen(fd, 16) < 0) {
		int err = errno;

		close(fd);
		return -err;
	}
	k->fwd_listen = fd;
	return 0;
}

static int new_root(struct knet *k, bool userns, char *why, size_t len)
{
	const unsigned long hard = MS_NOSUID | MS_NODEV | MS_NOEXEC;
	char opts[64];
	int ret;

	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return fail(why, len, errno, "cannot make mounts private");
	snprintf(opts, sizeof(opts), "mode=0755,size=16k,nr_inodes=8,uid=%u,gid=%u",
		 userns ? (unsigned)getuid() : SANDBOX_ID, userns ? (unsigned)getgid() : SANDBOX_ID);
	if (mount("kiln-net", SANDBOX_ROOT, "tmpfs", hard, opts) < 0)
		return fail(why, len, errno, "cannot mount the sandbox's tmpfs");
	if (chdir(SANDBOX_ROOT) < 0 || syscall(SYS_pivot_root, ".", ".") < 0)
		return fail(why, len, errno, "cannot pivot_root into the sandbox");
	if (umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
		return fail(why, len, errno, "cannot detach the host's root");
	ret = fwd_listener(k, "");
	if (!ret && !userns && chown(k->fwd_path, SANDBOX_ID, SANDBOX_ID) < 0)
		ret = -errno;
	if (ret)
		return fail(why, len, -ret, "cannot create the guestfwd socket");
	if (mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | hard, NULL) < 0)
		return fail(why, len, errno, "cannot make the sandbox's root read-only");
	return 0;
}

static int jail(struct knet *k, char *why, size_t len)
{
	bool userns = geteuid() != 0;
	uid_t uid = getuid();
	gid_t gid = getgid();
	const char *what = "";
	int ret;

	if (unshare((userns ? CLONE_NEWUSER : 0) | CLONE_NEWNS | CLONE_NEWIPC) < 0)
		return fail(why, len, errno, "cannot create kiln-net's namespaces");
	if (userns && (ret = privs_map_ids(uid, gid)))
		return fail(why, len, -ret, "cannot map ids in the user namespace");
	ret = new_root(k, userns, why, len);
	if (ret)
		return ret;
	signal(SIGXFSZ, SIG_IGN);
	if (limit_files() || privs_set_limit(RLIMIT_CORE, 0) ||
	    privs_set_limit(RLIMIT_MEMLOCK, 0))
		return fail(why, len, errno, "cannot set resource limits");
	ret = privs_drop(userns, SANDBOX_ID, SANDBOX_ID, &what);
	if (ret)
		return fail(why, len, -ret, what);
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
		return fail(why, len, errno, "cannot set the parent-death signal");
	return 0;
}

/* Without the jail (diagnosis only): the socket in a private temp directory. */
static int no_jail(struct knet *k, char *why, size_t len)
{
	char dir[] = "/tmp/kiln-net.XXXXXX";
	int ret;

	/* The poll set is sized by this limit (knet.h). */
	if (limit_files())
		return fail(why, len, EPERM, "cannot set the file limit");
	if (!mkdtemp(dir))
		return fail(why, len, errno, "cannot create a temporary directory");
	ret = fwd_listener(k, dir);
	if (ret) {
		rmdir(dir);
		return fail(why, len, -ret, "cannot create the guestfwd socket");
	}
	return 0;
}

void sandbox_cleanup(struct knet *k)
{
	char *slash;

	if (!k->fwd_path[0] || k->fwd_path[0] != '/' || !strncmp(k->fwd_path, "/" FWD_NAME, 9))
		return;
	unlink(k->fwd_path);
	slash = strrchr(k->fwd_path, '/');
	if (slash && slash != k->fwd_path) {
		*slash = '\0';
		rmdir(k->fwd_path);
	}
}

int sandbox_enter(struct knet *k, bool use_jail, char *why, size_t whylen)
{
	return use_jail ? jail(k, why, whylen) : no_jail(k, why, whylen);
}

/* ---- seccomp ---- */

static void on_sigsys(int sig, siginfo_t *si, void *uctx)
{
	char msg[80];
	int n;

	(void)uctx;
	n = snprintf(msg, sizeof(msg), "kiln-net: seccomp violation: syscall %d\n",
		     si->si_code == SYS_SECCOMP ? si->si_syscall : -1);
	if (n > 0)
		(void)!write(STDERR_FILENO, msg, (size_t)n);
	signal(sig, SIG_DFL);
	raise(sig);
	_exit(128 + SIGSYS);
}

#define R(name) SCMP_SYS(name)

static const int allowed[] = {
	R(read), R(write), R(readv), R(writev), R(close), R(poll), R(ppoll),
	R(recvfrom), R(sendto), R(recvmsg), R(sendmsg), R(recvmmsg), R(sendmmsg), R(accept4), R(connect), R(shutdown),
	R(getsockopt), R(setsockopt), R(getsockname), R(getpeername), R(fcntl),
	R(clock_gettime), R(gettimeofday), R(nanosleep), R(clock_nanosleep),
	R(brk), R(munmap), R(mremap), R(madvise), R(futex), R(getrandom),
	R(rt_sigreturn), R(rt_sigprocmask), R(exit), R(exit_group), R(getpid), R(gettid),
	R(lseek), R(fstat), R(newfstatat),
};

int sandbox_filter(bool jailed, char *why, size_t whylen)
{
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_TRAP);
	struct sigaction sa;
	int ret = -ENOMEM;

	if (!ctx)
		goto out;
	ret = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
	for (size_t i = 0; !ret && i < sizeof(allowed) / sizeof(allowed[0]); i++)
		ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, allowed[i], 0);
	/* Sockets: IPv4/IPv6 stream and datagram (outbound, resolver), Unix
	 * stream (slirp's guestfwd connect). No raw, netlink or packet sockets. */
	for (int fam = 0; !ret && fam < 3; fam++) {
		int f = fam == 0 ? AF_INET : fam == 1 ? AF_INET6 : AF_UNIX;

		for (int t = 0; !ret && t < 2; t++) {
			int type = t == 0 ? SOCK_STREAM : SOCK_DGRAM;

			if (f == AF_UNIX && type == SOCK_DGRAM)
				continue;
			ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 2,
					       SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)f),
					       SCMP_A1(SCMP_CMP_MASKED_EQ, 0xf, (scmp_datum_t)type));
		}
	}
	for (int i = 0; !ret && i < 2; i++)
		ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
				       SCMP_A1(SCMP_CMP_EQ, i ? FIONBIO : FIONREAD));
	/* Memory without PROT_EXEC only. */
	if (!ret)
		ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mmap), 1,
				       SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
	if (!ret)
		ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mprotect), 1,
				       SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
	/* Signals to ourselves only (raise/abort). */
	if (!ret)
		ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 1,
				       SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)getpid()));
	if (!ret)
		ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(rt_sigaction), 0);
	/* Opening a file fails quietly: there is none to see in the jail anyway
	 * (glib may still look for /dev/urandom). */
	if (!ret)
		ret = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(openat), 0);
	if (!ret)
		ret = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(open), 0);
	/* Unjailed (diagnosis), the socket's temporary directory is removed at exit. */
	for (int i = 0; !ret && !jailed && i < 3; i++)
		ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW,
				       i == 0 ? SCMP_SYS(unlink) : i == 1 ? SCMP_SYS(unlinkat) : SCMP_SYS(rmdir), 0);
	if (ret)
		goto out;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigsys;
	sa.sa_flags = SA_SIGINFO;
	if (sigaction(SIGSYS, &sa, NULL) < 0) {
		ret = -errno;
		goto out;
	}
	ret = seccomp_load(ctx);
out:
	if (ctx)
		seccomp_release(ctx);
	return ret ? fail(why, whylen, -ret, "cannot load the seccomp filter") : 0;
}
