#include "lib/sandbox.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "guestnet.h"
#include "lib/agent.h"
#include "lib/cgroup.h"
#include "lib/netproc.h"
#include "lib/vsock_uds.h"
#include "ctl.h"
#include "lib/template.h"
#include "fleetid.h"
#include "hostname.h"
#include "proto.h"
#include "sanitize.h"
#include "util.h"

#define AGENT_PORT 52
#define BOOT_MARK_PORT "0x440"
#define SCRATCH_FD 3
#define IMAGE_FD 4
#define NET_FD 5
#define READY_FD 6 /* the VMM's --ready-fd */
#define CONTROL_FD 7 /* the VMM's --control-fd */
#define BOOT_NOPIDFD_MS 100 /* without a pidfd (Linux < 5.3), how often a boot looks at the VMM */
#define NET_GRACE_MS 2000  /* kiln-net ending by itself once the VMM is gone */
#define NET_REAP_MS 500    /* waiting for an ended kiln-net's exit status */
#define SHUTDOWN_GRACE_MS 10000
#define SHUTDOWN_REPLY_MS 5000 /* the agent's answer to SHUTDOWN */
#define RUN_PREFIX "run."
#define HOST_ID_HEX 12 /* hex digits of the sandbox id in the default hostname */

struct kiln_sandbox {
	char id[FLEET_ID_MAX + 1];
	char hostname[HOSTNAME_LABEL_MAX + 1];
	char dir[PATH_MAX];
	char sock[108];
	pid_t vmm;
	int pidfd;	/* the VMM's, or -1 (then waits look every 5 ms) */
	int cancel_fd;
	int ready_fd;	/* while booting: POLLIN once the guest is ready (a byte) or the VMM ended (EOF) */
	int ctl_fd;	/* the VMM's control channel (common/ctl.h), -1 once it failed */
	uint32_t ctl_id; /* the last request's */
	uint64_t boot_deadline;
	uint64_t deadline; /* 0: none */
	bool reaped;
	int vmm_status;
	bool killed;
	int scratch_fd;
	uint64_t mem_mib;	/* the guest's RAM */
	int image_fd;
	struct kiln_agent *agent;
	struct kiln_cgroup *cg;
	struct kiln_netproc *net;
	bool shut;
	uint64_t t0;
	struct kiln_sandbox_times times;
};

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static bool cancelled(const struct kiln_sandbox *s)
{
	struct pollfd p = { .fd = s->cancel_fd, .events = POLLIN };

	return s->cancel_fd >= 0 && poll(&p, 1, 0) > 0;
}

/* ms until deadline (0 when past), at most cap. */
static int ms_left(uint64_t deadline, int cap)
{
	uint64_t now = now_ns(), left;

	if (now >= deadline)
		return 0;
	left = (deadline - now + 999999) / 1000000;
	return left < (uint64_t)cap ? (int)left : cap;
}

/* Until the VMM has exited (reaped here), the deadline, or (cancellable) the
 * cancel fd: one poll on its pidfd and the cancel fd, no sleeping loop. */
static bool vmm_wait_until(struct kiln_sandbox *s, uint64_t deadline, bool cancellable)
{
	while (!kiln_sandbox_vmm_exited(s, NULL)) {
		struct pollfd p[2] = { { .fd = s->pidfd, .events = POLLIN },
				       { .fd = cancellable ? s->cancel_fd : -1, .events = POLLIN } };
		int ms = ms_left(deadline, s->pidfd >= 0 ? 1000000 : 5);

		if (!ms && now_ns() >= deadline)
			break;
		if (poll(p, 2, ms) > 0 && p[1].revents)
			break;
	}
	return kiln_sandbox_vmm_exited(s, NULL);
}

/* ${TMPDIR:-/tmp}/kiln-<uid>: private to this user. */
static int base_dir(char *buf, size_t len)
{
	const char *tmp = getenv("TMPDIR");
	struct stat st;
	int n;

	if (!tmp || tmp[0] != '/')
		tmp = "/tmp";
	n = snprintf(buf, len, "%s/kiln-%u", tmp, (unsigned)getuid());
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	if (mkdir(buf, 0700) < 0 && errno != EEXIST)
		return -errno;
	if (lstat(buf, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode) || st.st_uid != getuid() || (st.st_mode & 077))
		return -EPERM; /* someone else's, or not private */
	return 0;
}

/* Remove a run directory: flat, holding only files kiln or the VMM created. */
static void remove_run_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int dfd;

	if (!d)
		return;
	dfd = dirfd(d);
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			unlinkat(dfd, e->d_name, 0);
	closedir(d);
	rmdir(dir);
}

void kiln_sandbox_sweep(void)
{
	char base[PATH_MAX], path[PATH_MAX + 300], owner[32];
	struct dirent *e;
	DIR *d;

	kiln_cgroup_sweep();
	if (base_dir(base, sizeof(base)))
		return;
	d = opendir(base);
	if (!d)
		return;
	while ((e = readdir(d))) {
		uint64_t pid;
		ssize_t n;
		int fd;

		if (strncmp(e->d_name, RUN_PREFIX, strlen(RUN_PREFIX)))
			continue;
		snprintf(path, sizeof(path), "%s/%s/owner", base, e->d_name);
		fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0)
			continue; /* being created right now, or not ours */
		n = read(fd, owner, sizeof(owner) - 1);
		close(fd);
		owner[n > 0 ? n : 0] = 0;
		owner[strcspn(owner, "\n")] = 0;
		if (parse_u64(owner, 1, INT_MAX, &pid) || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
			continue;
		snprintf(path, sizeof(path), "%s/%s", base, e->d_name);
		remove_run_dir(path);
	}
	closedir(d);
}

static int make_run_dir(struct kiln_sandbox *s)
{
	char base[PATH_MAX], owner[32], path[PATH_MAX + 16];
	int ret, fd, n;

	ret = base_dir(base, sizeof(base));
	if (ret)
		return ret;
	n = snprintf(s->dir, sizeof(s->dir), "%s/" RUN_PREFIX "XXXXXX", base);
	if (n < 0 || (size_t)n >= sizeof(s->dir))
		return -ENAMETOOLONG;
	if (!mkdtemp(s->dir)) {
		s->dir[0] = 0;
		return -errno;
	}
	n = snprintf(s->sock, sizeof(s->sock), "%s/v.sock", s->dir);
	if (n < 0 || (size_t)n >= sizeof(s->sock) - 12) /* room for "_<port>" */
		return -ENAMETOOLONG;
	snprintf(path, sizeof(path), "%s/owner", s->dir);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	n = snprintf(owner, sizeof(owner), "%d\n", (int)getpid());
	ret = write_full(fd, owner, (size_t)n);
	close(fd);
	return ret;
}

/* Run argv with fd 3 = fd, stdout to /dev/null, stderr to log; 0 if it exits 0. */
static int run_with_fd(char *const argv[], int fd, const char *log)
{
	pid_t pid;
	int st;

	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);
		int lfd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);

		if (null < 0 || lfd < 0 || dup2(fd, 3) < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 ||
		    dup2(lfd, 2) < 0)
			_exit(127);
		closefrom(4);
		execvp(argv[0], argv);
		_exit(127);
	}
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -EIO;
}

/* An empty scratch file of mib MiB that has no name: it vanishes with its last fd. */
static int open_scratch(struct kiln_sandbox *s, uint64_t mib, char *err, size_t errlen)
{
	int ret;

	s->scratch_fd = open(s->dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (s->scratch_fd < 0 && errno == EOPNOTSUPP) {
		/* No O_TMPFILE here (overlayfs, 9p): name it, then unlink at once. */
		char path[PATH_MAX + 32];

		snprintf(path, sizeof(path), "%s/scratch.XXXXXX", s->dir);
		s->scratch_fd = mkostemp(path, O_CLOEXEC);
		if (s->scratch_fd >= 0)
			unlink(path);
	}
	if (s->scratch_fd < 0) {
		snprintf(err, errlen, "cannot create the scratch disk in %s: %s", s->dir, strerror(errno));
		return -errno;
	}
	if (ftruncate(s->scratch_fd, (off_t)(mib << 20)) < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot size the scratch disk to %llu MiB: %s",
			 (unsigned long long)mib, strerror(errno));
		return ret;
	}
	return 0;
}

/* A sparse ext4 scratch disk that has no name. */
static int make_scratch(struct kiln_sandbox *s, uint64_t mib, char *err, size_t errlen)
{
	char log[PATH_MAX + 16];
	char *argv[] = { (char *)"mkfs.ext4", (char *)"-q", (char *)"-F", (char *)"-m", (char *)"0",
			 (char *)"-O", (char *)"^has_journal", (char *)"-E",
			 (char *)"lazy_itable_init=1,nodiscard", (char *)"-L", (char *)"kiln-scratch",
			 (char *)"/proc/self/fd/3", NULL };
	int ret;

	ret = open_scratch(s, mib, err, errlen);
	if (ret)
		return ret;
	snprintf(log, sizeof(log), "%s/mkfs.log", s->dir);
	ret = run_with_fd(argv, s->scratch_fd, log);
	if (ret) {
		/* Root's PATH has /sbin; others may not. */
		argv[0] = (char *)"/sbin/mkfs.ext4";
		ret = run_with_fd(argv, s->scratch_fd, log);
	}
	if (ret)
		snprintf(err, errlen, "mkfs.ext4 failed on the scratch disk (is e2fsprogs installed?)");
	return ret;
}

/* A restored clone's scratch disk: the template's, copied exactly (holes
 * kept, a reflink where the file system has them), of the size it was made
 * with; the template's own file is only read. */
static int copy_scratch(struct kiln_sandbox *s, const char *tdir, uint64_t mib, char *err,
			size_t errlen)
{
	char path[PATH_MAX];
	struct stat st;
	int in, ret;

	if (snprintf(path, sizeof(path), "%s/scratch", tdir) >= (int)sizeof(path)) {
		snprintf(err, errlen, "the template's path is too long");
		return -ENAMETOOLONG;
	}
	in = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (in < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot open the template's scratch disk %s: %s", path,
			 strerror(errno));
		return ret;
	}
	ret = fstat(in, &st) < 0 ? -errno : 0;
	if (!ret && (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != mib << 20)) {
		snprintf(err, errlen, "the template's scratch disk %s is not a %llu MiB file", path,
			 (unsigned long long)mib);
		ret = -EINVAL;
		goto out;
	}
	if (!ret)
		ret = open_scratch(s, mib, err, errlen);
	else
		snprintf(err, errlen, "cannot stat %s: %s", path, strerror(-ret));
	if (!ret) {
		ret = kiln_copy_sparse(in, s->scratch_fd);
		if (ret)
			snprintf(err, errlen, "cannot copy the template's scratch disk: %s",
				 strerror(-ret));
	}
out:
	close(in);
	return ret;
}

static int spawn_vmm(struct kiln_sandbox *s, const struct kiln_sandbox_config *c, char *err,
		     size_t errlen)
{
	char cpus[16], mem[32], drive_img[32], drive_scr[32], net[16], cmdline[512];
	char log[PATH_MAX + 16], ready_arg[16], ctl_arg[16];
	const char *argv[34];
	int n = 0, ready[2], ctl[2];
	pid_t parent = getpid();

	snprintf(ready_arg, sizeof(ready_arg), "%d", READY_FD);
	snprintf(ctl_arg, sizeof(ctl_arg), "%d", CONTROL_FD);
	snprintf(cpus, sizeof(cpus), "%u", c->cpus);
	snprintf(mem, sizeof(mem), "%llu", (unsigned long long)c->mem_mib);
	snprintf(drive_img, sizeof(drive_img), "fd=%d,ro,serial=kiln-base", IMAGE_FD);
	snprintf(drive_scr, sizeof(drive_scr), "fd=%d,serial=kiln-scratch", SCRATCH_FD);
	snprintf(cmdline, sizeof(cmdline),
		 "console=ttyS0 reboot=k panic=-1 pci=off io_delay=none quiet "
		 "kiln.bootmark=" BOOT_MARK_PORT " kiln.port=%d kiln.scratch=%s%s",
		 AGENT_PORT, s->scratch_fd >= 0 ? "/dev/vdb" : "tmpfs",
		 s->net ? " " GUESTNET_BOOTARGS : "");
	snprintf(net, sizeof(net), "fd=%d", NET_FD);
	snprintf(log, sizeof(log), "%s/vmm.log", s->dir);

	argv[n++] = c->vmm;
	if (c->restore_dir) {
		/* The kernel, its command line and the devices' guest side are
		 * the template's; the backends are this sandbox's. */
		argv[n++] = "--restore";
		argv[n++] = c->restore_dir;
	} else {
		argv[n++] = "--kernel";
		argv[n++] = c->kernel;
		argv[n++] = "--initrd";
		argv[n++] = c->initrd;
	}
	argv[n++] = "--cpus";
	argv[n++] = cpus;
	argv[n++] = "--mem";
	argv[n++] = mem;
	argv[n++] = "--console";
	argv[n++] = c->console ? c->console : "none";
	argv[n++] = "--drive";
	argv[n++] = drive_img;
	if (s->scratch_fd >= 0) {
		argv[n++] = "--drive";
		argv[n++] = drive_scr;
	}
	if (s->net) {
		argv[n++] = "--net";
		argv[n++] = net;
	}
	argv[n++] = "--vsock";
	argv[n++] = s->sock;
	if (!c->restore_dir) {
		argv[n++] = "--cmdline";
		argv[n++] = cmdline;
	}
	argv[n++] = "--print-boot-time";
	argv[n++] = "--ready-fd";
	argv[n++] = ready_arg;
	argv[n++] = "--control-fd";
	argv[n++] = ctl_arg;
	if (c->no_jail)
		argv[n++] = "--no-jail";
	if (c->no_seccomp)
		argv[n++] = "--no-seccomp";
	if (c->test_hooks)
		argv[n++] = "--test-hooks";
	argv[n] = NULL;

	if (pipe2(ready, O_CLOEXEC) < 0) {
		int e = errno;

		if (s->net)
			kiln_netproc_close_vmm_end(s->net);
		snprintf(err, errlen, "cannot make a pipe for kiln-vmm: %s", strerror(e));
		return -e;
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ctl) < 0) {
		int e = errno;

		close(ready[0]);
		close(ready[1]);
		if (s->net)
			kiln_netproc_close_vmm_end(s->net);
		snprintf(err, errlen, "cannot make a pipe for kiln-vmm: %s", strerror(e));
		return -e;
	}
	s->vmm = fork();
	if (s->vmm < 0) {
		int e = errno;

		close(ready[0]);
		close(ready[1]);
		close(ctl[0]);
		close(ctl[1]);
		if (s->net)
			kiln_netproc_close_vmm_end(s->net);
		snprintf(err, errlen, "cannot start kiln-vmm: %s", strerror(e));
		return -e;
	}
	if (s->vmm == 0) {
		const int src[5] = { s->scratch_fd, s->image_fd, s->net ? kiln_netproc_vmm_fd(s->net) : -1,
				     ready[1], ctl[1] };
		const int dst[5] = { SCRATCH_FD, IMAGE_FD, NET_FD, READY_FD, CONTROL_FD };
		/* In the VM's cgroup before it runs a single instruction, and before
		 * the fds move: the cgroup's own fd may have one of their numbers. */
		int cg_err = s->cg ? kiln_cgroup_attach(s->cg, 0) : 0;
		sigset_t none;
		int null, lfd;

		/* Our fds first, out of the way of 0-2 and of each other. */
		if (kiln_child_place_fds(src, dst, 5) < 0)
			_exit(127);
		null = open("/dev/null", O_RDWR);
		lfd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		/* Dies with us, whatever kills us; out of the terminal's process group. */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
			_exit(127);
		if (cg_err < 0) {
			dprintf(lfd >= 0 ? lfd : 2, "kiln-vmm: cannot join the VM's cgroup (exit 127)\n");
			_exit(127);
		}
		setpgid(0, 0);
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		if (null < 0 || lfd < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(lfd, 2) < 0)
			_exit(127);
		if (s->scratch_fd < 0)
			close(SCRATCH_FD);
		if (!s->net)
			close(NET_FD);
		closefrom(CONTROL_FD + 1);
		execv(c->vmm, (char *const *)argv);
		dprintf(2, "kiln-vmm: cannot execute %s: %s (exit 127)\n", c->vmm, strerror(errno));
		_exit(127);
	}
	/* The VMM holds its own copies now: kiln-net must see the hang-up when
	 * it ends, and so must we on the ready pipe. */
	if (s->net)
		kiln_netproc_close_vmm_end(s->net);
	close(ready[1]);
	close(ctl[1]);
	s->ready_fd = ready[0];
	s->ctl_fd = ctl[0];
	/* Sends never wait on a VMM that stopped reading (control() polls). */
	fcntl(s->ctl_fd, F_SETFL, fcntl(s->ctl_fd, F_GETFL) | O_NONBLOCK);
	s->pidfd = (int)syscall(SYS_pidfd_open, s->vmm, 0); /* -1 before Linux 5.3 */
	return 0;
}

/* The last line of a log in the run directory (an exit reason), for messages. */
static void log_last_line(const struct kiln_sandbox *s, const char *name, char *buf, size_t len)
{
	char path[PATH_MAX + 16], tail[512];
	ssize_t n;
	off_t size;
	int fd;

	snprintf(buf, len, "no reason given");
	snprintf(path, sizeof(path), "%s/%s", s->dir, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	size = lseek(fd, 0, SEEK_END);
	n = pread(fd, tail, sizeof(tail) - 1, size > (off_t)sizeof(tail) - 1 ? size - (off_t)sizeof(tail) + 1 : 0);
	close(fd);
	if (n <= 0)
		return;
	tail[n] = 0;
	while (n > 0 && tail[n - 1] == '\n')
		tail[--n] = 0;
	/* Such lines may carry what the guest made them say: made printable. */
	text_sanitize_str(buf, len, strrchr(tail, '\n') ? strrchr(tail, '\n') + 1 : tail);
}

static void vmm_last_line(const struct kiln_sandbox *s, char *buf, size_t len)
{
	log_last_line(s, "vmm.log", buf, len);
}

/* The VMM's "boot-time-us=N walls-us=M" line. */
static void vmm_boot_times(struct kiln_sandbox *s)
{
	char path[PATH_MAX + 16], buf[4096];
	unsigned long long us = 0, walls = 0;
	const char *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/vmm.log", s->dir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = 0;
	p = strstr(buf, "boot-time-us=");
	if (p && sscanf(p, "boot-time-us=%llu", &us) == 1)
		s->times.guest_boot_ns = (uint64_t)us * 1000;
	p = strstr(buf, " walls-us=");
	if (p && sscanf(p, " walls-us=%llu", &walls) == 1)
		s->times.walls_ns = (uint64_t)walls * 1000;
}

bool kiln_sandbox_vmm_exited(struct kiln_sandbox *s, int *status)
{
	int st;

	if (!s->reaped && s->vmm > 0 && waitpid(s->vmm, &st, WNOHANG) == s->vmm) {
		s->reaped = true;
		s->vmm_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	}
	if (s->reaped && status)
		*status = s->vmm_status;
	return s->reaped;
}

/* The guest is ready: connect once (its agent listens before it marks its
 * boot) and greet it, within the boot deadline. */
static int greet_agent(struct kiln_sandbox *s, char *err, size_t errlen)
{
	uint64_t deadline = s->boot_deadline;
	uint8_t greeting[KILN_AGENT_GREETING_MAX];
	int ret, len, fd = -1;

	/* HELLO, then before anything else runs in the guest its own entropy,
	 * clock and name: sent with the CONNECT line, one round trip for all. */
	len = kiln_agent_greeting(greeting, sizeof(greeting), s->hostname, s->id);
	if (len < 0) {
		snprintf(err, errlen, "cannot prepare the agent's greeting: %s", strerror(-len));
		return len;
	}
	ret = vsock_uds_connect(s->sock, AGENT_PORT, greeting, (size_t)len,
				ms_left(deadline, INT_MAX), &fd);
	explicit_bzero(greeting, sizeof(greeting));
	if (ret) {
		snprintf(err, errlen, "cannot reach the guest agent: %s", strerror(-ret));
		return ret;
	}
	ret = kiln_agent_create(fd, &s->agent);
	if (ret) {
		close(fd);
		snprintf(err, errlen, "cannot set up the agent connection: %s", strerror(-ret));
		return ret;
	}
	kiln_agent_set_cancel_fd(s->agent, s->cancel_fd);
	kiln_agent_set_deadline(s->agent, deadline); /* a silent or trickling hello too */
	ret = kiln_agent_greeted(s->agent, true, NULL);
	if (ret && ret != -ECANCELED && ret != -ETIMEDOUT && kiln_agent_status(s->agent) == 0) {
		/* HELLO went through (else the connection broke): IDENTITY did not. */
		snprintf(err, errlen, "the guest agent did not take the sandbox's identity: %s%s%s",
			 strerror(-ret), kiln_agent_error(s->agent)[0] ? ": " : "",
			 kiln_agent_error(s->agent));
		return ret;
	}
	if (ret == -ECANCELED) {
		snprintf(err, errlen, "interrupted while booting");
		return ret;
	}
	if (ret == -ETIMEDOUT) {
		snprintf(err, errlen, "the guest agent did not greet us in time");
		return ret;
	}
	if (ret) {
		snprintf(err, errlen, "the guest agent did not greet us: %s%s%s", strerror(-ret),
			 kiln_agent_error(s->agent)[0] ? ": " : "", kiln_agent_error(s->agent));
		return ret;
	}
	kiln_agent_set_deadline(s->agent, s->deadline);
	s->times.boot_ns = now_ns() - s->t0;
	vmm_boot_times(s);
	return 0;
}

int kiln_sandbox_boot_fds(const struct kiln_sandbox *s, int fds[KILN_BOOT_FDS])
{
	int n = 0;

	if (s->agent)
		return 0;
	if (s->ready_fd >= 0)
		fds[n++] = s->ready_fd;
	if (s->pidfd >= 0)
		fds[n++] = s->pidfd;
	if (kiln_sandbox_net_fd(s) >= 0)
		fds[n++] = kiln_sandbox_net_fd(s);
	if (s->cancel_fd >= 0)
		fds[n++] = s->cancel_fd;
	return n;
}

uint64_t kiln_sandbox_boot_deadline(const struct kiln_sandbox *s)
{
	return s->boot_deadline;
}

int kiln_sandbox_boot_step(struct kiln_sandbox *s, char *err, size_t errlen)
{
	struct pollfd p = { .fd = s->ready_fd, .events = POLLIN };
	char why[256], report[1024], byte;
	int st;
	ssize_t n;

	if (s->agent)
		return 0;
	if (s->ready_fd >= 0 && poll(&p, 1, 0) > 0) {
		/* A byte: ready. EOF: the VMM is gone (told below, once reaped). */
		n = read(s->ready_fd, &byte, 1);
		if (n >= 0 || errno != EINTR) {
			close(s->ready_fd);
			s->ready_fd = -1;
		}
		if (n == 1) {
			s->times.ready_ns = now_ns() - s->t0;
			return greet_agent(s, err, errlen);
		}
	}
	if (kiln_sandbox_vmm_exited(s, &st)) {
		char *nl;

		vmm_last_line(s, why, sizeof(why));
		kiln_sandbox_vmm_report(s, report, sizeof(report));
		nl = strchr(report, '\n'); /* its first line: the last exits */
		if (nl)
			*nl = 0;
		snprintf(err, errlen, "the microVM ended while booting: %s%s%s", why,
			 report[0] ? "; " : "", report);
		return -ECHILD;
	}
	if (kiln_sandbox_net_failed(s, why, sizeof(why))) {
		snprintf(err, errlen, "the network process (kiln-net) died while the microVM booted: %s",
			 why);
		return -ECHILD;
	}
	if (cancelled(s)) {
		snprintf(err, errlen, "interrupted while booting");
		return -ECANCELED;
	}
	if (now_ns() >= s->boot_deadline) {
		snprintf(err, errlen, "the guest did not become ready within %llu s",
			 (unsigned long long)((s->boot_deadline - s->t0) / 1000000000ULL));
		return -ETIMEDOUT;
	}
	/* Without a pidfd (Linux < 5.3) a VMM gone before its mark is seen on
	 * the next wake-up: the caller's deadline or this pause. */
	return -EINPROGRESS;
}

/* The config's id and hostname, checked, or new ones. */
static int set_identity(struct kiln_sandbox *s, const struct kiln_sandbox_config *c, char *err,
			size_t errlen)
{
	char host[FLEET_HOST_MAX + 1];
	size_t n;
	int ret;

	if (c->id) {
		if (!fleet_sandbox_id_ok(c->id)) {
			snprintf(err, errlen, "invalid sandbox id (want sb-HOST-<32 hex digits>)");
			return -EINVAL;
		}
		snprintf(s->id, sizeof(s->id), "%s", c->id);
	} else {
		fleet_host_id_default(host, sizeof(host));
		ret = fleet_sandbox_id_new(host, s->id, sizeof(s->id));
		if (ret) {
			snprintf(err, errlen, "cannot make a sandbox id: %s", strerror(-ret));
			return ret;
		}
	}
	if (c->hostname) {
		n = strnlen(c->hostname, sizeof(s->hostname));
		if (!hostname_label_ok(c->hostname, n)) {
			snprintf(err, errlen, "invalid hostname (want 1..63 letters, digits and '-')");
			return -EINVAL;
		}
		memcpy(s->hostname, c->hostname, n);
		s->hostname[n] = 0;
	} else {
		n = strlen(s->id);
		snprintf(s->hostname, sizeof(s->hostname), "sb-%.*s", HOST_ID_HEX,
			 s->id + n - FLEET_RAND_HEX);
	}
	return 0;
}

/* kiln-net, before the VMM; its stderr goes to net.log in the run directory. */
static int start_net(struct kiln_sandbox *s, const struct kiln_sandbox_config *c, char *err,
		     size_t errlen)
{
	char log[PATH_MAX + 16];
	struct kiln_netproc_opts o = { .log = log, .cg = s->cg, .no_jail = c->no_jail,
					.no_seccomp = c->no_seccomp };

	snprintf(log, sizeof(log), "%s/net.log", s->dir);
	return kiln_netproc_start(&s->net, c->net, &o, err, errlen);
}

int kiln_sandbox_start(struct kiln_sandbox **out, const struct kiln_sandbox_config *c, char *err,
		       size_t errlen)
{
	struct kiln_sandbox *s;
	int ret = -ENOMEM;

	*out = NULL;
	s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return ret;
	}
	s->scratch_fd = s->image_fd = s->pidfd = s->ready_fd = s->ctl_fd = -1;
	s->mem_mib = c->mem_mib;
	s->cancel_fd = c->cancel_fd;
	s->t0 = now_ns();
	s->boot_deadline = s->t0 + (uint64_t)(c->boot_timeout_ms > 0 ? c->boot_timeout_ms : 0) * 1000000ULL;
	if (c->restore_dir && c->net) {
		snprintf(err, errlen, "a restored sandbox has no network device (its template has none)");
		ret = -EINVAL;
		goto out;
	}
	ret = set_identity(s, c, err, errlen);
	if (ret)
		goto out;
	s->image_fd = open(c->image, O_RDONLY | O_CLOEXEC);
	if (s->image_fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot open image %s: %s", c->image, strerror(errno));
		goto out;
	}
	ret = make_run_dir(s);
	if (ret) {
		snprintf(err, errlen, "cannot create a run directory under %s: %s",
			 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", strerror(-ret));
		goto out;
	}
	if (c->disk_mib) {
		ret = c->restore_dir ? copy_scratch(s, c->restore_dir, c->disk_mib, err, errlen)
				     : make_scratch(s, c->disk_mib, err, errlen);
		if (ret)
			goto out;
	}

	if (!c->no_cgroup) {
		struct kiln_cgroup_limits l = { .vcpus = c->cpus, .mem_mib = c->mem_mib,
						.cpu_pct = c->cpu_pct };

		ret = kiln_cgroup_create(&s->cg, &l, err, errlen);
		if (ret)
			goto out;
	}
	if (c->net) {
		ret = start_net(s, c, err, errlen);
		if (ret)
			goto out;
	}
	s->times.spawn_ns = now_ns() - s->t0;
	ret = spawn_vmm(s, c, err, errlen);
	if (ret)
		goto out;
	*out = s;
	s = NULL;
out:
	if (s) {
		kiln_sandbox_kill(s);
		kiln_sandbox_destroy(s);
	}
	return ret;
}

int kiln_sandbox_create(struct kiln_sandbox **out, const struct kiln_sandbox_config *c, char *err,
			size_t errlen)
{
	struct kiln_sandbox *s;
	int ret;

	*out = NULL;
	ret = kiln_sandbox_start(&s, c, err, errlen);
	if (ret)
		return ret;
	while ((ret = kiln_sandbox_boot_step(s, err, errlen)) == -EINPROGRESS) {
		struct pollfd p[KILN_BOOT_FDS];
		int fds[KILN_BOOT_FDS], n = kiln_sandbox_boot_fds(s, fds);

		for (int i = 0; i < n; i++)
			p[i] = (struct pollfd){ .fd = fds[i], .events = POLLIN };
		poll(p, (nfds_t)n, ms_left(s->boot_deadline, s->pidfd >= 0 ? INT_MAX : BOOT_NOPIDFD_MS));
	}
	if (ret) {
		kiln_sandbox_kill(s);
		kiln_sandbox_destroy(s);
		return ret;
	}
	*out = s;
	return 0;
}

struct kiln_agent *kiln_sandbox_agent(struct kiln_sandbox *s)
{
	return s->agent;
}

const char *kiln_sandbox_id(const struct kiln_sandbox *s)
{
	return s->id;
}

const char *kiln_sandbox_hostname(const struct kiln_sandbox *s)
{
	return s->hostname;
}


void kiln_sandbox_set_deadline(struct kiln_sandbox *s, uint64_t deadline_ns)
{
	s->deadline = deadline_ns;
	if (s->agent)
		kiln_agent_set_deadline(s->agent, deadline_ns);
}

int kiln_sandbox_connect(struct kiln_sandbox *s, int timeout_ms, int cancel_fd,
			 struct kiln_agent **out)
{
	uint64_t deadline = now_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000ULL;
	struct kiln_agent *a = NULL;
	int fd = -1, ret;

	/* A later connection (kilnd's per-exec ones) waits for the CONNECT
	 * reply before its HELLO: only the boot greeting is sent ahead. */
	*out = NULL;
	ret = vsock_uds_connect(s->sock, AGENT_PORT, NULL, 0, timeout_ms, &fd);
	if (ret)
		goto out;
	ret = kiln_agent_create(fd, &a);
	if (ret) {
		close(fd);
		goto out;
	}
	kiln_agent_set_cancel_fd(a, cancel_fd);
	kiln_agent_set_deadline(a, deadline);
	ret = kiln_agent_hello(a, NULL);
	if (ret)
		goto out;
	kiln_agent_set_deadline(a, 0);
	*out = a;
	a = NULL;
out:
	kiln_agent_free(a);
	return ret;
}

int kiln_sandbox_pidfd(const struct kiln_sandbox *s)
{
	return s->pidfd;
}

pid_t kiln_sandbox_vmm_pid(const struct kiln_sandbox *s)
{
	return s->vmm;
}

void kiln_sandbox_times(const struct kiln_sandbox *s, struct kiln_sandbox_times *t)
{
	*t = s->times;
}

/* The jailed VMM is a child of the jail's waiter, in the waiter's process
 * group. A waiter killed before it reaped it leaves it to the nearest
 * subreaper: when that is us (kiln run sets PR_SET_CHILD_SUBREAPER), reap it
 * here, so no VMM outlives the sandbox. Bounded; ECHILD ends it at once. */
static void reap_group(pid_t pgid)
{
	uint64_t deadline = now_ns() + SHUTDOWN_GRACE_MS * 1000000ULL;
	pid_t r;

	while ((r = waitpid(-pgid, NULL, WNOHANG)) >= 0 && now_ns() < deadline)
		if (r == 0)
			sleep_ms(5);
}

bool kiln_sandbox_vmm_wait(struct kiln_sandbox *s, int timeout_ms, int *status)
{
	vmm_wait_until(s, now_ns() + (uint64_t)timeout_ms * 1000000ULL, true);
	return kiln_sandbox_vmm_exited(s, status);
}

void kiln_sandbox_vmm_reason(const struct kiln_sandbox *s, char *buf, size_t len)
{
	vmm_last_line(s, buf, len);
}

/* The next line of the VMM's that says where a vCPU or a vsock connection
 * ended for a fault. */
static const char *next_report(const char *p)
{
	const char *a = strstr(p, "kiln-vmm: vCPU "), *b = strstr(p, "kiln-vmm: vsock: ");

	return !a ? b : !b ? a : a < b ? a : b;
}

void kiln_sandbox_vmm_report(const struct kiln_sandbox *s, char *buf, size_t len)
{
	char path[PATH_MAX + 16], tail[4096], line[1024];
	const char *p, *nl;
	size_t used = 0;
	off_t size;
	ssize_t n;
	int fd;

	buf[0] = 0;
	snprintf(path, sizeof(path), "%s/vmm.log", s->dir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	size = lseek(fd, 0, SEEK_END);
	n = pread(fd, tail, sizeof(tail) - 1,
		  size > (off_t)sizeof(tail) - 1 ? size - (off_t)sizeof(tail) + 1 : 0);
	close(fd);
	if (n <= 0)
		return;
	tail[n] = 0;
	for (p = next_report(tail); p && used + 1 < len; p = next_report(p)) {
		size_t l;

		nl = strchr(p, '\n');
		l = nl ? (size_t)(nl - p) : strlen(p);
		if (l >= sizeof(line))
			l = sizeof(line) - 1;
		memcpy(line, p, l);
		line[l] = 0;
		/* The VMM wrote it, but keep the terminal safe all the same. */
		text_sanitize_str(buf + used, len - used, line);
		used += strlen(buf + used);
		if (used + 1 < len)
			buf[used++] = '\n', buf[used] = 0;
		p += l;
	}
}

int kiln_sandbox_cgroup_stat(struct kiln_sandbox *s, struct kiln_cgroup_stat *st)
{
	return s->cg ? kiln_cgroup_stat(s->cg, st) : -ENOENT;
}

void kiln_sandbox_kill(struct kiln_sandbox *s)
{
	/* The VMM's process group: the jail's waiter and the VMM itself. */
	if (s && s->vmm > 0 && !s->reaped && kill(-s->vmm, SIGKILL) < 0)
		kill(s->vmm, SIGKILL);
	if (s)
		s->killed = true;
}

int kiln_sandbox_net_fd(const struct kiln_sandbox *s)
{
	return s->net ? kiln_netproc_poll_fd(s->net) : -1;
}

/* "LAST STDERR LINE (exit N)" */
static void net_why(struct kiln_sandbox *s, char *buf, size_t len)
{
	char how[64], line[384];

	kiln_netproc_how(s->net, NET_REAP_MS, how, sizeof(how));
	log_last_line(s, "net.log", line, sizeof(line));
	snprintf(buf, len, "%s (%s)", line, how);
}

bool kiln_sandbox_net_failed(struct kiln_sandbox *s, char *buf, size_t len)
{
	if (!s->net || s->shut || !kiln_netproc_ended(s->net))
		return false;
	/* A VMM that ended first made kiln-net end too: the VM's failure, not its. */
	if (kiln_sandbox_vmm_wait(s, NET_REAP_MS, NULL))
		return false;
	net_why(s, buf, len);
	return true;
}

/* Wait for the VMM to end by itself until grace_deadline (cut short by the
 * cancel fd), then SIGKILL and reap it. */
static void reap_vmm(struct kiln_sandbox *s, uint64_t grace_deadline)
{
	if (!vmm_wait_until(s, grace_deadline, true)) {
		if (kill(-s->vmm, SIGKILL) < 0)
			kill(s->vmm, SIGKILL);
		/* Not cancellable: a SIGKILLed process is reaped promptly. */
		vmm_wait_until(s, now_ns() + SHUTDOWN_GRACE_MS * 1000000ULL, false);
	}
	/* A VMM that survives SIGKILL is stuck in the host kernel: say so
	 * rather than hang; it is reparented when we exit. */
	if (!s->reaped)
		fprintf(stderr, "kiln: kiln-vmm (pid %d) did not exit after SIGKILL\n", (int)s->vmm);
	else
		reap_group(s->vmm);
}

void kiln_sandbox_shutdown(struct kiln_sandbox *s)
{
	uint64_t grace;
	bool agreed = false;

	if (!s || s->shut)
		return;
	s->shut = true;
	if (s->agent && !s->killed && !s->reaped && !cancelled(s)) {
		uint64_t dl = now_ns() + SHUTDOWN_REPLY_MS * 1000000ULL;

		kiln_agent_set_deadline(s->agent, s->deadline && s->deadline < dl ? s->deadline : dl);
		agreed = kiln_agent_shutdown(s->agent) == 0;
	}
	kiln_agent_free(s->agent);
	s->agent = NULL;
	/* Only a guest that agreed to go gets time to reset by itself. */
	grace = now_ns();
	if (agreed) {
		grace += SHUTDOWN_GRACE_MS * 1000000ULL;
		if (s->deadline && s->deadline < grace)
			grace = s->deadline;
	}
	if (s->vmm > 0)
		reap_vmm(s, grace);
	/* The VMM's end of the socket pair is closed: kiln-net sees the hang-up. */
	if (s->net)
		kiln_netproc_stop(s->net, NET_GRACE_MS);
}

int kiln_sandbox_net_stats(const struct kiln_sandbox *s, struct kiln_net_stats *st)
{
	return s->net ? kiln_netproc_stats(s->net, st) : -ENOENT;
}

int kiln_sandbox_net_exit(struct kiln_sandbox *s, char *buf, size_t len)
{
	if (!s->net || kiln_netproc_stop(s->net, NET_GRACE_MS) == 0)
		return 0;
	net_why(s, buf, len);
	return -ECHILD;
}

/*
 * One request on the control channel and its reply. What the VMM sends is
 * checked like any input (ctl_check); events and stale replies (of a request
 * that timed out before) are skipped. A channel that fails is not used again.
 */
static int control(struct kiln_sandbox *s, enum ctl_type type, const int *fds, unsigned nfds,
		   int timeout_ms, struct ctl_msg *reply)
{
	uint64_t until = now_ns() + (uint64_t)timeout_ms * 1000000ULL;
	uint8_t buf[sizeof(struct ctl_msg) + 1];
	struct ctl_msg m;
	const char *why;
	int ret;

	if (s->ctl_fd < 0)
		return -EPIPE;
	if (++s->ctl_id == 0)
		s->ctl_id = 1;
	ctl_init(&m, type, s->ctl_id, 0, NULL);
	ret = ctl_send_fds(s->ctl_fd, &m, fds, nfds);
	if (ret) {
		ret = ret == -EAGAIN ? -EAGAIN : -EPIPE;
		goto out;
	}
	for (;;) {
		struct pollfd p = { .fd = s->ctl_fd, .events = POLLIN };
		uint64_t now = now_ns();
		ssize_t n;

		if (now >= until) {
			ret = -ETIMEDOUT;
			break;
		}
		n = poll(&p, 1, (int)((until - now) / 1000000ULL) + 1);
		if (n < 0 && errno != EINTR) {
			ret = -errno;
			break;
		}
		if (n <= 0)
			continue;
		n = recv(s->ctl_fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0) {
			ret = -EPIPE; /* the VMM is gone */
			break;
		}
		if (ctl_check(buf, (size_t)n, &m, &why)) {
			ret = -EPROTO;
			break;
		}
		if (m.type == CTL_REPLY && m.id == s->ctl_id) {
			ret = m.result > 0 || m.result < -4095 ? -EPROTO : m.result;
			if (reply)
				*reply = m;
			break;
		}
	}
out:
	if (ret == -EPIPE || ret == -EPROTO) {
		close(s->ctl_fd);
		s->ctl_fd = -1;
	}
	return ret;
}

int kiln_sandbox_pause(struct kiln_sandbox *s, int timeout_ms)
{
	return control(s, CTL_PAUSE, NULL, 0, timeout_ms, NULL);
}

int kiln_sandbox_resume(struct kiln_sandbox *s, int timeout_ms)
{
	return control(s, CTL_RESUME, NULL, 0, timeout_ms, NULL);
}

int kiln_sandbox_snapshot(struct kiln_sandbox *s, int state_fd, int mem_fd, int scratch_fd,
			  int timeout_ms, uint64_t *state_bytes, uint64_t *ram_bytes, char *err,
			  size_t errlen)
{
	int fds[2] = { state_fd, mem_fd };
	struct ctl_msg reply;
	int ret;

	ret = control(s, CTL_PAUSE, NULL, 0, timeout_ms, NULL);
	if (ret) {
		snprintf(err, errlen, "cannot pause the microVM: %s", strerror(-ret));
		return ret;
	}
	/* The files are at most the guest's RAM and a state file; the VMM
	 * writes them, so its cgroup pays for their page cache. */
	ret = kiln_cgroup_mem_allow(s->cg, (s->mem_mib + 1) * 1024 * 1024);
	if (ret) {
		snprintf(err, errlen, "cannot make room in the microVM's cgroup for its snapshot: %s",
			 strerror(-ret));
		return ret;
	}
	memset(&reply, 0, sizeof(reply));
	ret = control(s, CTL_SNAPSHOT, fds, 2, timeout_ms, &reply);
	if (ret) {
		/* The VMM's own words, sanitized: they end up on a terminal. */
		char text[CTL_TEXT_MAX];

		snprintf(text, sizeof(text), "%s", reply.text);
		for (char *p = text; *p; p++)
			if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
				*p = '?';
		/* Gone mid-request: its log's last line says why (a seccomp
		 * violation, a fatal error), already made printable. */
		if (ret == -EPIPE && !text[0])
			vmm_last_line(s, text, sizeof(text));
		snprintf(err, errlen, "the VMM could not save the microVM: %s%s%s", strerror(-ret),
			 text[0] ? ": " : "", text);
		return ret;
	}
	*state_bytes = reply.a;
	*ram_bytes = reply.b;
	/* The disk at the same instant: the vCPUs are stopped. */
	if (scratch_fd >= 0) {
		if (s->scratch_fd < 0) {
			snprintf(err, errlen, "the microVM has no scratch disk to save");
			return -ENOENT;
		}
		ret = kiln_copy_sparse(s->scratch_fd, scratch_fd);
		if (ret) {
			snprintf(err, errlen, "cannot copy the scratch disk: %s", strerror(-ret));
			return ret;
		}
	}
	return 0;
}

void kiln_sandbox_destroy(struct kiln_sandbox *s)
{
	if (!s)
		return;
	kiln_sandbox_shutdown(s);
	/* Kills whatever is left in it (the VMM inside the jail), then removes it. */
	kiln_cgroup_destroy(s->cg);
	kiln_netproc_free(s->net);
	if (s->pidfd >= 0)
		close(s->pidfd);
	if (s->ready_fd >= 0)
		close(s->ready_fd);
	if (s->ctl_fd >= 0)
		close(s->ctl_fd);
	if (s->scratch_fd >= 0)
		close(s->scratch_fd);
	if (s->image_fd >= 0)
		close(s->image_fd);
	if (s->dir[0])
		remove_run_dir(s->dir);
	free(s);
}
