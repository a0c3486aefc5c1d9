/*
 * Start, watch and stop kiln-net (see netproc.h for the contract). The
 * status pipe's read end doubles as the liveness signal: it turns readable
 * only when kiln-net writes its final line or its write end goes away.
 */
#include "lib/netproc.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/cgroup.h"
#include "util.h"

#define FD_NET	      3
#define FD_STATUS     4
#define FD_AUDIT      5
#define FD_LIFT	      64 /* sources move above this before they are placed */
#define TERM_WAIT_MS  500
#define KILL_WAIT_MS  10000
#define GROUP_WAIT_MS 1000

struct kiln_netproc {
	pid_t pid;
	bool reaped;
	int status; /* exit status, or 128 + signal */
	int vmm_fd;
	int status_fd;
	bool stopped;
	bool forced; /* stop had to signal it */
	int stop_ret;
	bool have_stats;
	struct kiln_net_stats stats;
	const char **argv;
	char fd_arg[16], status_arg[16], audit_arg[16], rate_arg[32], dns_rate_arg[32];
};

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

int kiln_child_place_fds(const int *src, const int *dst, unsigned n)
{
	int lifted[8];

	if (n > 8)
		return -1;
	for (unsigned i = 0; i < n; i++) {
		lifted[i] = src[i] < 0 ? -1 : fcntl(src[i], F_DUPFD_CLOEXEC, FD_LIFT);
		if (src[i] >= 0 && lifted[i] < 0)
			return -1;
	}
	for (unsigned i = 0; i < n; i++)
		if (lifted[i] >= 0 && (dup2(lifted[i], dst[i]) < 0 || close(lifted[i]) < 0))
			return -1;
	return 0;
}

static int build_argv(struct kiln_netproc *np, const struct kiln_net_config *c,
		      const struct kiln_netproc_opts *o)
{
	const char **a = calloc(2 * (size_t)c->nrules + 16, sizeof(*a));
	int n = 0;

	if (!a)
		return -ENOMEM;
	snprintf(np->fd_arg, sizeof(np->fd_arg), "%d", FD_NET);
	snprintf(np->status_arg, sizeof(np->status_arg), "%d", FD_STATUS);
	snprintf(np->audit_arg, sizeof(np->audit_arg), "%d", FD_AUDIT);
	snprintf(np->rate_arg, sizeof(np->rate_arg), "%llu", (unsigned long long)c->rate);
	snprintf(np->dns_rate_arg, sizeof(np->dns_rate_arg), "%llu",
		 (unsigned long long)c->dns_rate);
	a[n++] = c->bin;
	a[n++] = "--fd";
	a[n++] = np->fd_arg;
	for (unsigned i = 0; i < c->nrules; i++) {
		a[n++] = "--allow";
		a[n++] = c->rules[i];
	}
	if (c->audit_fd >= 0) {
		a[n++] = "--audit-fd";
		a[n++] = np->audit_arg;
	}
	a[n++] = "--status-fd";
	a[n++] = np->status_arg;
	if (c->rate) {
		a[n++] = "--rate";
		a[n++] = np->rate_arg;
	}
	if (c->dns_rate) {
		a[n++] = "--dns-rate";
		a[n++] = np->dns_rate_arg;
	}
	if (o->no_jail)
		a[n++] = "--no-jail";
	if (o->no_seccomp)
		a[n++] = "--no-seccomp";
	a[n] = NULL;
	np->argv = a;
	return 0;
}

/* The forked child: becomes kiln-net, or exits 127 with a line in its log. */
static __attribute__((noreturn)) void child(const struct kiln_netproc *np,
					    const struct kiln_net_config *c,
					    const struct kiln_netproc_opts *o, int sock, int status_w,
					    pid_t parent)
{
	const int src[3] = { sock, status_w, c->audit_fd }, dst[3] = { FD_NET, FD_STATUS, FD_AUDIT };
	/* In the VM's cgroup first: the cgroup's own fd may have one of the
	 * numbers the fds move to. */
	int cg_err = o->cg ? kiln_cgroup_attach(o->cg, 0) : 0;
	sigset_t none;
	int null, lfd;

	/* Dies with us; out of the terminal's process group. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
		_exit(127);
	/* Our fds first, out of the way of 0-2 and the targets. */
	if (kiln_child_place_fds(src, dst, 3) < 0)
		_exit(127);
	null = open("/dev/null", O_RDWR);
	lfd = open(o->log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (null < 0 || lfd < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(lfd, 2) < 0)
		_exit(127);
	if (cg_err < 0) {
		dprintf(2, "kiln-net: cannot join the VM's cgroup (exit 127)\n");
		_exit(127);
	}
	setpgid(0, 0);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	/* Everything else, null and lfd included, is closed. */
	closefrom(c->audit_fd >= 0 ? FD_AUDIT + 1 : FD_STATUS + 1);
	execv(c->bin, (char *const *)np->argv);
	dprintf(2, "kiln-net: cannot execute %s: %s (exit 127)\n", c->bin, strerror(errno));
	_exit(127);
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

int kiln_netproc_start(struct kiln_netproc **out, const struct kiln_net_config *c,
		       const struct kiln_netproc_opts *o, char *err, size_t errlen)
{
	struct kiln_netproc *np;
	int sv[2] = { -1, -1 }, pfd[2] = { -1, -1 }, ret;
	pid_t parent = getpid();

	*out = NULL;
	np = calloc(1, sizeof(*np));
	if (!np || build_argv(np, c, o)) {
		free(np);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	np->vmm_fd = np->status_fd = -1;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0 ||
	    pipe2(pfd, O_CLOEXEC) < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot create the network socket pair: %s", strerror(errno));
		goto fail;
	}
	np->pid = fork();
	if (np->pid < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot start kiln-net: %s", strerror(errno));
		goto fail;
	}
	if (np->pid == 0)
		child(np, c, o, sv[1], pfd[1], parent);
	close(sv[1]);
	close(pfd[1]);
	np->vmm_fd = sv[0];
	np->status_fd = pfd[0];
	fcntl(np->status_fd, F_SETFL, O_NONBLOCK);
	*out = np;
	return 0;
fail:
	close_fd(&sv[0]);
	close_fd(&sv[1]);
	close_fd(&pfd[0]);
	close_fd(&pfd[1]);
	free(np->argv);
	free(np);
	return ret;
}

int kiln_netproc_vmm_fd(const struct kiln_netproc *np)
{
	return np->vmm_fd;
}

void kiln_netproc_close_vmm_end(struct kiln_netproc *np)
{
	close_fd(&np->vmm_fd);
}

int kiln_netproc_poll_fd(const struct kiln_netproc *np)
{
	return np->status_fd;
}

static bool reap(struct kiln_netproc *np)
{
	int st;

	if (!np->reaped && np->pid > 0 && waitpid(np->pid, &st, WNOHANG) == np->pid) {
		np->reaped = true;
		np->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	}
	return np->reaped;
}

static bool wait_reaped(struct kiln_netproc *np, int timeout_ms)
{
	uint64_t deadline = now_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000ULL;

	while (!reap(np) && now_ns() < deadline)
		sleep_ms(5);
	return reap(np);
}

bool kiln_netproc_ended(struct kiln_netproc *np)
{
	struct pollfd p = { .fd = np->status_fd, .events = POLLIN };

	if (reap(np))
		return true;
	return np->status_fd >= 0 && poll(&p, 1, 0) > 0 && p.revents;
}

void kiln_netproc_how(struct kiln_netproc *np, int wait_ms, char *buf, size_t len)
{
	if (!wait_reaped(np, wait_ms))
		snprintf(buf, len, "still running");
	else if (np->forced && np->status > 128)
		snprintf(buf, len, "did not exit by itself after the VM ended; killed by signal %d",
			 np->status - 128);
	else if (np->status > 128)
		snprintf(buf, len, "killed by signal %d", np->status - 128);
	else
		snprintf(buf, len, "exit %d", np->status);
}

/* Whatever else is left in its process group (a jail's child), gone. */
static void kill_group(struct kiln_netproc *np)
{
	uint64_t deadline = now_ns() + GROUP_WAIT_MS * 1000000ULL;
	pid_t r;

	if (kill(-np->pid, SIGKILL) < 0)
		return;
	while ((r = waitpid(-np->pid, NULL, WNOHANG)) >= 0 && now_ns() < deadline)
		if (r == 0)
			sleep_ms(5);
}

static void read_status(struct kiln_netproc *np)
{
	char buf[KILN_NET_STATUS_MAX];
	size_t len = 0;
	char *nl;

	while (len < sizeof(buf)) {
		ssize_t n = read(np->status_fd, buf + len, sizeof(buf) - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	nl = memchr(buf, '\n', len);
	if (nl)
		len = (size_t)(nl - buf);
	np->have_stats = len && kiln_net_stats_parse(buf, len, &np->stats) == 0;
}

int kiln_netproc_stop(struct kiln_netproc *np, int grace_ms)
{
	if (np->stopped)
		return np->stop_ret;
	np->stopped = true;
	if (!wait_reaped(np, grace_ms)) {
		np->forced = true;
		if (kill(-np->pid, SIGTERM) < 0)
			kill(np->pid, SIGTERM);
		if (!wait_reaped(np, TERM_WAIT_MS)) {
			if (kill(-np->pid, SIGKILL) < 0)
				kill(np->pid, SIGKILL);
			wait_reaped(np, KILL_WAIT_MS);
		}
	}
	if (!np->reaped) {
		/* Stuck in the host kernel: say so rather than hang. */
		fprintf(stderr, "kiln: kiln-net (pid %d) did not exit after SIGKILL\n", (int)np->pid);
		np->stop_ret = -ETIME;
	} else {
		kill_group(np);
		np->stop_ret = np->status ? -ECHILD : 0;
	}
	read_status(np);
	close_fd(&np->status_fd);
	return np->stop_ret;
}

int kiln_netproc_stats(const struct kiln_netproc *np, struct kiln_net_stats *st)
{
	if (!np->have_stats)
		return -ENODATA;
	*st = np->stats;
	return 0;
}

void kiln_netproc_free(struct kiln_netproc *np)
{
	if (!np)
		return;
	kiln_netproc_stop(np, 0);
	close_fd(&np->vmm_fd);
	close_fd(&np->status_fd);
	free(np->argv);
	free(np);
}

static int get_count(json_t *o, const char *key, uint64_t *out)
{
	json_t *v = json_object_get(o, key);

	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return -EINVAL;
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

int kiln_net_stats_parse(const char *buf, size_t len, struct kiln_net_stats *st)
{
	struct kiln_net_stats s;
	json_error_t e;
	json_t *o;
	int ret = -EINVAL;

	if (len > KILN_NET_STATUS_MAX)
		return -EINVAL;
	o = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &e);
	if (json_is_object(o) && !get_count(o, "allowed", &s.allowed) &&
	    !get_count(o, "blocked", &s.blocked) && !get_count(o, "dns_queries", &s.dns_queries) &&
	    !get_count(o, "bytes_up", &s.bytes_up) && !get_count(o, "bytes_down", &s.bytes_down)) {
		*st = s;
		ret = 0;
	}
	json_decref(o);
	return ret;
}
