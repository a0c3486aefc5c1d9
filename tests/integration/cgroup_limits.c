/*
 * libkiln's cgroup v2 module against the real kernel (run as root inside
 * scripts/with-kvm): limits read back, a memory hog OOM-killed inside its
 * cgroup and counted, fork refused at pids.max, CPU throttled at cpu.max,
 * CLONE_INTO_CGROUP, destroy killing what is left and removing the
 * directory, and the sweep removing only empty cgroups of dead owners.
 * Prints TAP lines; exits non-zero on any failure.
 *
 * For t-cgroup.sh: "--where" creates a cgroup, prints its path and destroys
 * it; "--sweep" runs the sweep.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/cgroup.h"
#include "util.h"

static int ntest;
static int nfail;

static void report(int ok, const char *fmt, const char *arg)
{
	ntest++;
	if (!ok)
		nfail++;
	printf("%sok %d - cgroup: ", ok ? "" : "not ", ntest);
	fputs(fmt, stdout);
	if (arg)
		printf(" (%s)", arg);
	putchar('\n');
	fflush(stdout);
}

/* Whole file (all lines) into buf. */
static int read_all(const char *dir, const char *file, char *buf, size_t cap)
{
	char path[4200];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, cap - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = 0;
	return 0;
}

/* First line of the file. */
static int read_file(const char *dir, const char *file, char *buf, size_t cap)
{
	int ret = read_all(dir, file, buf, cap);

	if (!ret)
		buf[strcspn(buf, "\n")] = 0;
	return ret;
}

static int file_is(const char *dir, const char *file, const char *want, char *got, size_t cap)
{
	return read_file(dir, file, got, cap) == 0 && !strcmp(got, want);
}

/* Does this process's cgroup (the "0::" line) end with the cgroup's path? */
static int in_cgroup(const char *cgpath)
{
	char buf[4096];
	const char *rel = cgpath + strlen("/sys/fs/cgroup");

	if (read_file("/proc/self", "cgroup", buf, sizeof(buf)))
		return 0;
	return !strncmp(buf, "0::", 3) && !strcmp(buf + 3, rel);
}

static void reap_all(void)
{
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

static void test_limits_oom_pids(void)
{
	struct kiln_cgroup_limits l = {.vcpus = 2, .mem_mib = 256};
	struct kiln_cgroup_values v;
	struct kiln_cgroup_stat st;
	struct kiln_cgroup *cg = NULL;
	char err[512], got[256], want[64], path[4096];
	int p[2], status = 0, ret;
	pid_t child;
	struct stat sb;

	ret = kiln_cgroup_create(&cg, &l, err, sizeof(err));
	report(ret == 0, "create for 2 vCPUs / 256 MiB", ret ? err : NULL);
	if (ret)
		return;
	snprintf(path, sizeof(path), "%s", kiln_cgroup_path(cg));
	report(!strncmp(path, "/sys/fs/cgroup/kiln/run-", 24), "path is kiln/run-*", path);
	kiln_cgroup_compute(&l, &v);
	report(file_is(path, "cpu.max", "200000 100000", got, sizeof(got)), "cpu.max reads back", got);
	snprintf(want, sizeof(want), "%" PRIu64, v.mem_max);
	report(v.mem_max == 340914176ULL && file_is(path, "memory.max", want, got, sizeof(got)),
	       "memory.max reads back (256 MiB + 64 MiB + 2%)", got);
	report(file_is(path, "pids.max", "34", got, sizeof(got)), "pids.max reads back", got);
	if (read_file(path, "memory.swap.max", got, sizeof(got)) == 0)
		report(!strcmp(got, "0"), "memory.swap.max is 0", got);
	report(kiln_cgroup_stat(cg, &st) == 0 && st.pids_current == 0 && st.oom_kills == 0,
	       "stat of the empty cgroup", NULL);

	/* A memory hog twice the limit, attached from inside (pid 0). */
	child = fork();
	if (child == 0) {
		if (kiln_cgroup_attach(cg, 0) || !in_cgroup(path))
			_exit(3);
		for (int i = 0; i < 640; i++) {
			char *m = malloc(1 << 20);

			if (!m)
				_exit(4);
			memset(m, i, 1 << 20);
		}
		_exit(0);
	}
	waitpid(child, &status, 0);
	snprintf(got, sizeof(got), "status 0x%x", status);
	report(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "memory hog killed by SIGKILL", got);
	ret = kiln_cgroup_stat(cg, &st);
	snprintf(got, sizeof(got), "oom_kill %" PRIu64 ", peak %" PRIu64 "%s, usage %" PRIu64 " us", st.oom_kills,
		 st.mem_peak, st.has_peak ? "" : " (current)", st.cpu_usage_us);
	report(ret == 0 && st.oom_kills >= 1, "memory.events oom_kill counted", got);
	report(ret == 0 && (!st.has_peak || (st.mem_peak > v.mem_max / 2 && st.mem_peak <= v.mem_max)),
	       "memory.peak near the limit, never above", got);

	/* Fork until refused: the attached child counts, so 33 more. */
	if (pipe(p) == 0) {
		child = fork();
		if (child == 0) {
			int n = 0, e = 0;

			close(p[0]);
			if (kiln_cgroup_attach(cg, getpid()))
				_exit(3);
			for (;;) {
				pid_t g = fork();

				if (g == 0) {
					pause();
					_exit(0);
				}
				if (g < 0) {
					e = errno;
					break;
				}
				if (++n > 100)
					break;
			}
			dprintf(p[1], "%d %d\n", n, e);
			close(p[1]);
			pause();
			_exit(0);
		}
		close(p[1]);
		memset(got, 0, sizeof(got));
		if (read(p[0], got, sizeof(got) - 1) <= 0)
			got[0] = 0;
		close(p[0]);
		got[strcspn(got, "\n")] = 0;
		snprintf(want, sizeof(want), "33 %d", EAGAIN);
		report(!strcmp(got, want), "fork fails with EAGAIN at pids.max (forks, errno)", got);
		ret = kiln_cgroup_stat(cg, &st);
		snprintf(got, sizeof(got), "%" PRIu64, st.pids_current);
		report(ret == 0 && st.pids_current == 34, "pids.current at the limit", got);
	}

	kiln_cgroup_destroy(cg);
	status = 0;
	waitpid(child, &status, 0);
	report(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "destroy killed what was left", NULL);
	report(stat(path, &sb) < 0 && errno == ENOENT, "destroy removed the directory", path);
	reap_all();
}

static void test_cpu_throttle(void)
{
	struct kiln_cgroup_limits l = {.vcpus = 1, .mem_mib = 64, .cpu_pct = 20};
	struct kiln_cgroup_stat st;
	struct kiln_cgroup *cg = NULL;
	char err[512], got[256];
	int status = 0, ret;
	pid_t child;

	ret = kiln_cgroup_create(&cg, &l, err, sizeof(err));
	report(ret == 0, "create with a 20% CPU quota", ret ? err : NULL);
	if (ret)
		return;
	report(file_is(kiln_cgroup_path(cg), "cpu.max", "20000 100000", got, sizeof(got)),
	       "cpu.max for 20%", got);
	/* Not timed: the child spins until the kernel has throttled it at its
	 * quota a few times (cpu.stat nr_throttled), or a generous deadline. */
	child = fork();
	if (child == 0) {
		if (kiln_cgroup_attach(cg, 0))
			_exit(3);
		for (;;)
			;
	}
	uint64_t throttled = 0, deadline = now_ns() + 120000000000ULL;
	struct timespec ts = { 0, 50000000 };
	char text[1024];

	while (throttled < 3 && now_ns() < deadline && waitpid(child, &status, WNOHANG) == 0) {
		nanosleep(&ts, NULL);
		if (read_all(kiln_cgroup_path(cg), "cpu.stat", text, sizeof(text)) == 0)
			kiln_cgroup_parse_keyed(text, "nr_throttled", &throttled);
	}
	kill(child, SIGKILL);
	waitpid(child, &status, 0);
	ret = kiln_cgroup_stat(cg, &st);
	snprintf(got, sizeof(got), "nr_throttled %" PRIu64 ", %" PRIu64 " us of CPU", throttled,
		 st.cpu_usage_us);
	report(ret == 0 && WIFSIGNALED(status) && throttled >= 3,
	       "the kernel throttles a spinning child at its quota", got);
	kiln_cgroup_destroy(cg);
}

static void test_clone_into_cgroup(void)
{
	struct kiln_cgroup_limits l = {.vcpus = 1, .mem_mib = 64};
	struct clone_args args;
	struct kiln_cgroup *cg = NULL;
	char err[512], got[64];
	int status = 0, ret;
	long child;

	ret = kiln_cgroup_create(&cg, &l, err, sizeof(err));
	report(ret == 0 && kiln_cgroup_fd(cg) >= 0, "create for clone3", ret ? err : NULL);
	if (ret)
		return;
	memset(&args, 0, sizeof(args));
	args.flags = CLONE_INTO_CGROUP;
	args.exit_signal = SIGCHLD;
	args.cgroup = (uint64_t)kiln_cgroup_fd(cg);
	child = syscall(SYS_clone3, &args, sizeof(args));
	if (child == 0)
		_exit(in_cgroup(kiln_cgroup_path(cg)) ? 0 : 1);
	if (child > 0)
		waitpid((pid_t)child, &status, 0);
	snprintf(got, sizeof(got), "clone3 %ld, status 0x%x", child, status);
	report(child > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
	       "clone3 CLONE_INTO_CGROUP starts the child inside", got);
	kiln_cgroup_destroy(cg);
}

static pid_t dead_pid(void)
{
	pid_t pid = fork();

	if (pid == 0)
		_exit(0);
	waitpid(pid, NULL, 0);
	return pid;
}

static void test_sweep(void)
{
	char stale[256], busy[256], live[256], procs[300], num[16];
	struct stat sb;
	pid_t sleeper;
	int fd;

	/* kiln/ exists by now (created by the tests above). */
	snprintf(stale, sizeof(stale), "/sys/fs/cgroup/kiln/run-%d-deadbeef", (int)dead_pid());
	snprintf(busy, sizeof(busy), "/sys/fs/cgroup/kiln/run-%d-0000abcd", (int)dead_pid());
	snprintf(live, sizeof(live), "/sys/fs/cgroup/kiln/run-%d-12345678", (int)getpid());
	report(mkdir(stale, 0755) == 0 && mkdir(busy, 0755) == 0 && mkdir(live, 0755) == 0,
	       "made stale, busy and live run-* cgroups", NULL);
	sleeper = fork();
	if (sleeper == 0) {
		pause();
		_exit(0);
	}
	snprintf(procs, sizeof(procs), "%s/cgroup.procs", busy);
	snprintf(num, sizeof(num), "%d", (int)sleeper);
	fd = open(procs, O_WRONLY | O_CLOEXEC);
	report(fd >= 0 && write(fd, num, strlen(num)) == (ssize_t)strlen(num), "a process in the busy one",
	       NULL);
	if (fd >= 0)
		close(fd);

	kiln_cgroup_sweep();
	report(stat(stale, &sb) < 0 && errno == ENOENT, "sweep removed the empty one of a dead owner", stale);
	report(stat(busy, &sb) == 0, "sweep kept the populated one", busy);
	report(stat(live, &sb) == 0, "sweep kept the one of a live owner", live);

	kill(sleeper, SIGKILL);
	waitpid(sleeper, NULL, 0);
	for (int i = 0; i < 100 && stat(busy, &sb) == 0; i++) {
		struct timespec ts = {0, 10000000};

		kiln_cgroup_sweep();
		nanosleep(&ts, NULL);
	}
	report(stat(busy, &sb) < 0 && errno == ENOENT, "sweep removed it once empty", busy);
	rmdir(live);
	rmdir(stale);
	rmdir(busy);
}

static void test_bad_limits(void)
{
	struct kiln_cgroup_limits l = {.vcpus = 0, .mem_mib = 256};
	struct kiln_cgroup *cg = (struct kiln_cgroup *)&l;
	char err[256] = "";
	int ret = kiln_cgroup_create(&cg, &l, err, sizeof(err));

	report(ret == -EINVAL && cg == NULL && err[0], "0 vCPUs refused with a message", err);
	kiln_cgroup_destroy(NULL);
	report(1, "destroy(NULL) is harmless", NULL);
}

static int where(void)
{
	struct kiln_cgroup_limits l = {.vcpus = 1, .mem_mib = 64};
	struct kiln_cgroup *cg = NULL;
	char err[512];

	if (kiln_cgroup_create(&cg, &l, err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	printf("%s\n", kiln_cgroup_path(cg));
	kiln_cgroup_destroy(cg);
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 2 && !strcmp(argv[1], "--where"))
		return where();
	if (argc == 2 && !strcmp(argv[1], "--sweep")) {
		kiln_cgroup_sweep();
		return 0;
	}
	if (geteuid() != 0) {
		report(0, "needs root (run through scripts/with-kvm)", NULL);
		return 1;
	}
	/* Orphaned grandchildren of the pids test come back to us to be reaped. */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	test_bad_limits();
	test_limits_oom_pids();
	test_cpu_throttle();
	test_clone_into_cgroup();
	test_sweep();
	printf("1..%d\n", ntest);
	return nfail ? 1 : 0;
}
