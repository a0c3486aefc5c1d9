/*
 * The VMM's jail: see jail.h and docs/security.md. Every step either succeeds
 * or ends the VMM with a reason; nothing is skipped quietly.
 */
#include "vmm/jail.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "privs.h"
#include "util.h"
#include "vmm/config.h"
#include "vmm/seccomp.h"

/* Where the new root is built, in our own mount namespace only. */
#define JAIL_BASE "/tmp"
#define JAIL_READY 'j'

/* Child side of the pipe to the waiter: written once the VMM has dropped its
 * privileges; EPIPE there means the waiter (and our parent) is gone. */
static int jail_ready_fd = -1;
static bool jail_userns;
static uint64_t jail_begin_took;

uint64_t jail_begin_ns(void)
{
	return jail_begin_took;
}

static int fail(char *why, size_t whylen, int err, const char *what)
{
	snprintf(why, whylen, "jail: %s: %s", what, strerror(err));
	return -err;
}

static int cmp_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;

	return (x > y) - (x < y);
}

/* Close every fd above 2 except keep[0..n-1] (sorted in place). */
static int close_others(int *keep, unsigned n)
{
	unsigned lo = 3;

	qsort(keep, n, sizeof(*keep), cmp_int);
	for (unsigned i = 0; i < n; i++) {
		if (keep[i] < (int)lo)
			continue;
		if ((unsigned)keep[i] > lo && syscall(SYS_close_range, lo, keep[i] - 1, 0) < 0)
			return -errno;
		lo = (unsigned)keep[i] + 1;
	}
	return syscall(SYS_close_range, lo, ~0u, 0) < 0 ? -errno : 0;
}

/* Capabilities and ids (privs.h), with the VMM's uid/gid. */
static int drop_privileges(const struct vmm_config *c, char *why, size_t whylen)
{
	const char *what = "";
	int ret = privs_drop(jail_userns, c->jail_uid, c->jail_gid, &what);

	return ret ? fail(why, whylen, -ret, what) : 0;
}

/* ---- the waiter: the parent left outside the PID namespace ---- */

/* End the way the VMM ended: same exit status, or death by the same signal. */
static void __attribute__((noreturn)) waiter_exit(int status)
{
	sigset_t set;
	int sig;

	if (WIFEXITED(status))
		_exit(WEXITSTATUS(status));
	sig = WIFSIGNALED(status) ? WTERMSIG(status) : SIGKILL;
	signal(sig, SIG_DFL);
	sigemptyset(&set);
	sigaddset(&set, sig);
	sigprocmask(SIG_UNBLOCK, &set, NULL);
	raise(sig);
	_exit(128 + sig);
}

static void __attribute__((noreturn)) waiter(const struct vmm_config *c, pid_t child,
					     pid_t parent, int ready_fd, const sigset_t *set)
{
	struct pollfd pfd[2];
	struct signalfd_siginfo si;
	char why[160];
	int status, sfd;

	prctl(PR_SET_NAME, "kiln-vmm-wait", 0, 0, 0);
	if (dup2(ready_fd, 3) < 0 || close_others((int[]){ 3 }, 1) < 0)
		goto kill;
	ready_fd = 3;
	sfd = signalfd(-1, set, SFD_CLOEXEC);
	if (sfd < 0)
		goto kill;
	pfd[0] = (struct pollfd){ .fd = sfd, .events = POLLIN };
	pfd[1] = (struct pollfd){ .fd = ready_fd, .events = POLLIN };
	for (;;) {
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			goto kill;
		}
		if (pfd[1].revents) {
			char b = 0;
			ssize_t n = read(ready_fd, &b, 1);

			close(ready_fd);
			pfd[1].fd = -1;
			/* The VMM has dropped its privileges: follow it, then filter
			 * ourselves. On EOF the VMM is gone and SIGCHLD follows. */
			if (n == 1 && b == JAIL_READY) {
				/* The pivot moved our root; our cwd must not hold the old one. */
				if (chdir("/") < 0) {
					snprintf(why, sizeof(why), "jail: the waiter cannot enter the jail");
					dprintf(2, "kiln-vmm: %s\n", why);
					goto kill;
				}
				if (drop_privileges(c, why, sizeof(why)) ||
				    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 ||
				    getppid() != parent) {
					dprintf(2, "kiln-vmm: %s\n", why);
					goto kill;
				}
				if (!c->no_seccomp && seccomp_apply_waiter(child)) {
					dprintf(2, "kiln-vmm: jail: cannot install the waiter's seccomp filter\n");
					goto kill;
				}
			}
		}
		if (!(pfd[0].revents & POLLIN))
			continue;
		if (read(sfd, &si, sizeof(si)) != (ssize_t)sizeof(si))
			continue;
		if (si.ssi_signo == SIGCHLD) {
			if (waitpid(child, &status, WNOHANG) == child)
				waiter_exit(status);
			continue;
		}
		kill(child, (int)si.ssi_signo);
	}
kill:
	kill(child, SIGKILL);
	while (waitpid(child, &status, 0) < 0 && errno == EINTR)
		;
	_exit(1);
}

/* ---- stage 1 ---- */

int jail_begin(const struct vmm_config *c, char *why, size_t whylen)
{
	int keep[CONFIG_MAX_DRIVES + 3], pipefd[2]; /* drives, net, ready, control */
	unsigned nkeep = 0;
	sigset_t set, old;
	uid_t uid = getuid();
	gid_t gid = getgid();
	pid_t parent = getppid(), child;
	uint64_t t0 = now_ns();
	int ret;

	for (unsigned i = 0; i < c->ndrives; i++)
		if (c->drives[i].fd >= 0)
			keep[nkeep++] = c->drives[i].fd;
	if (c->net_fd >= 0)
		keep[nkeep++] = c->net_fd;
	if (c->ready_fd >= 0)
		keep[nkeep++] = c->ready_fd;
	if (c->control_fd >= 0)
		keep[nkeep++] = c->control_fd;
	ret = close_others(keep, nkeep);
	if (ret)
		return fail(why, whylen, -ret, "cannot close inherited file descriptors");
	/* Wipe the strings too: /proc/PID/environ shows the original block. */
	for (char **e = environ; e && *e; e++)
		explicit_bzero(*e, strlen(*e));
	if (clearenv())
		return fail(why, whylen, ENOMEM, "cannot clear the environment");
	/* No core dumps, for the waiter too (guest RAM is excluded anyway). */
	ret = privs_set_limit(RLIMIT_CORE, 0);
	if (ret)
		return fail(why, whylen, -ret, "cannot set resource limits");

	jail_userns = geteuid() != 0;
	if (unshare((jail_userns ? CLONE_NEWUSER : 0) | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC |
		    CLONE_NEWUTS | CLONE_NEWNET) < 0) {
		ret = errno;
		snprintf(why, whylen,
			 "jail: cannot create namespaces: %s%s", strerror(ret),
			 jail_userns ? " (are unprivileged user namespaces disabled? "
				       "kernel.unprivileged_userns_clone)" : "");
		return -ret;
	}
	if (jail_userns) {
		ret = privs_map_ids(uid, gid);
		if (ret)
			return fail(why, whylen, -ret, "cannot map ids in the user namespace");
	}
	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return fail(why, whylen, errno, "cannot create a pipe");

	/* The waiter relays these; blocked before the fork so none is lost. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, &old);
	child = fork();
	if (child < 0) {
		ret = errno;
		sigprocmask(SIG_SETMASK, &old, NULL);
		close(pipefd[0]);
		close(pipefd[1]);
		return fail(why, whylen, ret, "cannot fork into the PID namespace");
	}
	if (child > 0) {
		close(pipefd[1]);
		waiter(c, child, parent, pipefd[0], &set);
	}
	close(pipefd[0]);
	jail_ready_fd = pipefd[1];
	sigprocmask(SIG_SETMASK, &old, NULL);
	/* Dies with the waiter. Set again in jail_finish(): a uid change clears it. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
		return fail(why, whylen, errno, "cannot set the parent-death signal");
	jail_begin_took = now_ns() - t0;
	return 0;
}

/* ---- stage 2 ---- */

static int mkdirs(char *path)
{
	for (char *p = path + 1;; p++) {
		if (*p != '/' && *p)
			continue;
		char saved = *p;

		*p = '\0';
		if (mkdir(path, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = saved;
		if (!saved)
			return 0;
	}
}

/* The mount flags a bind remount must keep (a user namespace may not drop
 * flags of mounts it does not own). */
static unsigned long locked_flags(const char *path)
{
	struct statvfs sv;
	unsigned long f = 0;

	if (statvfs(path, &sv) < 0)
		return 0;
	if (sv.f_flag & ST_RDONLY)
		f |= MS_RDONLY;
	if (sv.f_flag & ST_NOATIME)
		f |= MS_NOATIME;
	if (sv.f_flag & ST_NODIRATIME)
		f |= MS_NODIRATIME;
	if (sv.f_flag & ST_RELATIME)
		f |= MS_RELATIME;
	return f;
}

/* New root: an empty read-only tmpfs with only the vsock socket's directory
 * bound at its own path. */
static int new_root(const struct vmm_config *c, char *why, size_t whylen)
{
	char dir[PATH_MAX], target[PATH_MAX + sizeof(JAIL_BASE)];
	const unsigned long hard = MS_NOSUID | MS_NODEV | MS_NOEXEC;
	int tree = -1, ret;

	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return fail(why, whylen, errno, "cannot make mounts private");
	if (c->vsock_path[0]) {
		char *slash, path[sizeof(c->vsock_path)];

		snprintf(path, sizeof(path), "%s", c->vsock_path);
		slash = strrchr(path, '/');
		if (slash == path)
			return fail(why, whylen, EINVAL, "the vsock socket must not be in /");
		if (slash)
			*slash = '\0';
		if (!realpath(slash ? path : ".", dir))
			return fail(why, whylen, errno, "cannot resolve the vsock socket's directory");
		tree = (int)syscall(SYS_open_tree, AT_FDCWD, dir, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
		if (tree < 0)
			return fail(why, whylen, errno, "cannot clone the vsock socket's directory");
	}
	if (mount("kiln-jail", JAIL_BASE, "tmpfs", hard, "mode=0755,size=64k,nr_inodes=64") < 0) {
		ret = fail(why, whylen, errno, "cannot mount the jail's tmpfs on " JAIL_BASE);
		goto out;
	}
	if (tree >= 0) {
		snprintf(target, sizeof(target), JAIL_BASE "%s", dir);
		ret = mkdirs(target);
		if (ret) {
			ret = fail(why, whylen, -ret, "cannot create the vsock directory in the jail");
			goto out;
		}
		if (syscall(SYS_move_mount, tree, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0) {
			ret = fail(why, whylen, errno, "cannot bind the vsock directory into the jail");
			goto out;
		}
		if (mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | hard | locked_flags(target),
			  NULL) < 0) {
			ret = fail(why, whylen, errno, "cannot restrict the vsock directory's mount");
			goto out;
		}
	}
	if (chdir(JAIL_BASE) < 0 || syscall(SYS_pivot_root, ".", ".") < 0) {
		ret = fail(why, whylen, errno, "cannot pivot_root into the jail");
		goto out;
	}
	/* The old root is stacked under the new one: detach it. */
	if (umount2(".", MNT_DETACH) < 0 || chdir("/") < 0) {
		ret = fail(why, whylen, errno, "cannot detach the host's root");
		goto out;
	}
	if (mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | hard, NULL) < 0) {
		ret = fail(why, whylen, errno, "cannot make the jail's root read-only");
		goto out;
	}
	ret = 0;
out:
	if (tree >= 0)
		close(tree);
	return ret;
}

/* Files: what is open now plus room for vsock connections. File size: the
 * largest writable disk (writes never grow one) or the console log's cap,
 * and with a control channel the guest RAM (a snapshot's memory file). */
static int limits(const struct vmm_config *c, char *why, size_t whylen)
{
	rlim_t fsize = JAIL_MIN_FSIZE;
	int ret;

	for (unsigned i = 0; i < c->ndrives; i++) {
		struct stat st;
		int fd = c->drives[i].fd;

		if (c->drives[i].read_only || fd < 0 || fstat(fd, &st) < 0)
			continue;
		if ((rlim_t)st.st_size > fsize)
			fsize = (rlim_t)st.st_size;
	}
	if (c->control_fd >= 0 && (rlim_t)(c->mem_mib << 20) > fsize)
		fsize = (rlim_t)(c->mem_mib << 20);
	/* Past the limit a write fails with EFBIG instead of killing us. */
	signal(SIGXFSZ, SIG_IGN);
	ret = privs_set_limit(RLIMIT_NOFILE, JAIL_MAX_FILES);
	if (!ret)
		ret = privs_set_limit(RLIMIT_FSIZE, fsize);
	if (!ret)
		ret = privs_set_limit(RLIMIT_CORE, 0);
	if (!ret)
		ret = privs_set_limit(RLIMIT_MEMLOCK, 0);
	return ret ? fail(why, whylen, -ret, "cannot set resource limits") : 0;
}

int jail_finish(const struct vmm_config *c, char *why, size_t whylen)
{
	const char ready = JAIL_READY;
	int ret;

	ret = limits(c, why, whylen);
	if (!ret)
		ret = new_root(c, why, whylen);
	if (ret)
		return ret;
	if (sethostname("kiln-vmm", 8) < 0)
		return fail(why, whylen, errno, "cannot set the host name");
	ret = drop_privileges(c, why, whylen);
	if (ret)
		return ret;
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
		return fail(why, whylen, errno, "cannot set the parent-death signal");
	/* After PDEATHSIG: if the waiter died before, this write fails. */
	if (write(jail_ready_fd, &ready, 1) != 1)
		return fail(why, whylen, errno == 0 ? EPIPE : errno, "the waiter is gone");
	close(jail_ready_fd);
	jail_ready_fd = -1;
	return 0;
}
