/*
 * libkiln: one cgroup v2 leaf per VM (see cgroup.h and docs/cgroups.md).
 *
 * Every file of a VM's cgroup is reached with openat() on the cgroup's
 * directory fd, so the path is resolved once; every read is bounded by the
 * caller's buffer.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/magic.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "lib/cgroup.h"
#include "util.h"

#define CG_ROOT "/sys/fs/cgroup"
#define KILN_DIR "kiln"
#define RUN_PREFIX "run-"
#define RUN_RANDOM_DIGITS 8
#define DESTROY_WAIT_MS 3000
#define MiB (1024ULL * 1024ULL)
#define PIDS_LIMIT 4194304ULL /* the kernel's PID_MAX_LIMIT */

static const char *const controllers[] = {"cpu", "memory", "pids"};

struct kiln_cgroup {
	int fd;               /* the run-* directory */
	char path[PATH_MAX];
	uint64_t mem_max;     /* memory.max as written at creation */
	bool mem_grown;       /* kiln_cgroup_mem_allow() done */
};

/* ---- pure parts ---- */

int kiln_cgroup_compute(const struct kiln_cgroup_limits *l, struct kiln_cgroup_values *v)
{
	uint64_t guest, pct;

	if (!l || !v || l->vcpus == 0 || l->vcpus > KILN_CGROUP_MAX_VCPUS || l->mem_mib == 0 ||
	    l->mem_mib > KILN_CGROUP_MAX_MEM_MIB || l->cpu_pct > KILN_CGROUP_MAX_VCPUS * 100U ||
	    l->pids_max > PIDS_LIMIT)
		return -EINVAL;
	pct = l->cpu_pct ? l->cpu_pct : (uint64_t)l->vcpus * 100;
	v->cpu_period_us = KILN_CGROUP_PERIOD_US;
	v->cpu_quota_us = pct * KILN_CGROUP_PERIOD_US / 100; /* >= 1000 us, the kernel's minimum */
	guest = l->mem_mib * MiB;
	v->mem_max = ALIGN_UP(guest + KILN_CGROUP_MEM_OVERHEAD_MIB * MiB +
				      guest / 100 * KILN_CGROUP_MEM_OVERHEAD_PCT,
			      4096);
	v->pids_max = l->pids_max ? l->pids_max : l->vcpus + KILN_CGROUP_PIDS_EXTRA;
	return 0;
}

int kiln_cgroup_fmt_cpu_max(char *buf, size_t len, uint64_t quota_us, uint64_t period_us)
{
	int n;

	if (period_us == 0)
		return -EINVAL;
	if (quota_us == 0)
		n = snprintf(buf, len, "max %" PRIu64, period_us);
	else
		n = snprintf(buf, len, "%" PRIu64 " %" PRIu64, quota_us, period_us);
	return n < 0 || (size_t)n >= len ? -ENOSPC : 0;
}

int kiln_cgroup_parse_name(const char *name, pid_t *owner)
{
	const char *p = name + strlen(RUN_PREFIX);
	uint64_t pid = 0;
	int digits = 0;

	if (strncmp(name, RUN_PREFIX, strlen(RUN_PREFIX)))
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (++digits > 10)
			return -EINVAL;
		pid = pid * 10 + (uint64_t)(*p - '0');
	}
	if (digits == 0 || pid == 0 || pid > INT_MAX || *p++ != '-')
		return -EINVAL;
	for (digits = 0; (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'); p++)
		digits++;
	if (digits != RUN_RANDOM_DIGITS || *p)
		return -EINVAL;
	*owner = (pid_t)pid;
	return 0;
}

int kiln_cgroup_parse_keyed(const char *text, const char *key, uint64_t *out)
{
	size_t klen = strlen(key);
	const char *p = text;

	while (*p) {
		size_t vlen;
		char val[32];

		if (!strncmp(p, key, klen) && p[klen] == ' ') {
			p += klen + 1;
			vlen = strcspn(p, "\n");
			if (vlen == 0 || vlen >= sizeof(val))
				return -EINVAL;
			memcpy(val, p, vlen);
			val[vlen] = 0;
			return parse_u64(val, 0, UINT64_MAX, out);
		}
		p += strcspn(p, "\n");
		if (*p)
			p++;
	}
	return -ENOENT;
}

/* ---- file helpers ---- */

/* One write() per value: cgroup files take a value per write. 0 or -errno. */
static int write_at(int dirfd, const char *file, const char *val)
{
	size_t len = strlen(val);
	ssize_t n;
	int fd, ret = 0;

	fd = openat(dirfd, file, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = write(fd, val, len);
	if (n < 0)
		ret = -errno;
	else if ((size_t)n != len)
		ret = -EIO;
	close(fd);
	return ret;
}

/* Up to cap - 1 bytes, NUL-terminated. Length or -errno. */
static ssize_t read_at(int dirfd, const char *file, char *buf, size_t cap)
{
	size_t got = 0;
	ssize_t n = 0;
	int fd;

	buf[0] = 0;
	fd = openat(dirfd, file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	while (got < cap - 1) {
		n = read(fd, buf + got, cap - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	if (n < 0)
		n = -errno;
	close(fd);
	buf[got] = 0;
	return n < 0 ? n : (ssize_t)got;
}

/* A single-number file ("max" reads as UINT64_MAX). */
static int read_u64_at(int dirfd, const char *file, uint64_t *out)
{
	char buf[64];
	ssize_t n = read_at(dirfd, file, buf, sizeof(buf));

	if (n < 0)
		return (int)n;
	buf[strcspn(buf, "\n")] = 0;
	if (!strcmp(buf, "max")) {
		*out = UINT64_MAX;
		return 0;
	}
	return parse_u64(buf, 0, UINT64_MAX, out);
}

static int read_keyed_at(int dirfd, const char *file, const char *key, uint64_t *out)
{
	char buf[2048];
	ssize_t n = read_at(dirfd, file, buf, sizeof(buf));

	return n < 0 ? (int)n : kiln_cgroup_parse_keyed(buf, key, out);
}

static bool has_word(const char *list, const char *word)
{
	size_t wlen = strlen(word);
	const char *p = list;

	while (*p) {
		size_t len;

		p += strspn(p, " \n");
		len = strcspn(p, " \n");
		if (len == wlen && !strncmp(p, word, wlen))
			return true;
		p += len;
	}
	return false;
}

static bool is_populated(int dirfd)
{
	uint64_t v = 1;

	/* Unreadable counts as populated: never remove what we cannot see into. */
	if (read_keyed_at(dirfd, "cgroup.events", "populated", &v))
		return true;
	return v != 0;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* ---- finding and preparing kiln/ ---- */

__attribute__((format(printf, 3, 4)))
static void fail(char *err, size_t errlen, const char *fmt, ...)
{
	char why[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	snprintf(err, errlen, "no usable cgroup v2 at " CG_ROOT ": %s; pass --no-cgroup to run without",
		 why);
}

/* Our own cgroup ("/..." from the "0::" line of /proc/self/cgroup). 0 or -errno. */
static int own_cgroup(char *buf, size_t len)
{
	char text[4096];
	const char *p;
	size_t plen;
	ssize_t n = read_at(AT_FDCWD, "/proc/self/cgroup", text, sizeof(text));

	if (n < 0)
		return (int)n;
	if (!strncmp(text, "0::", 3))
		p = text + 3;
	else if ((p = strstr(text, "\n0::")))
		p += 4;
	else
		return -ENOENT;
	plen = strcspn(p, "\n");
	if (plen == 0 || p[0] != '/' || plen >= len)
		return -EINVAL;
	memcpy(buf, p, plen);
	buf[plen] = 0;
	return 0;
}

/* Enable cpu, memory and pids for the children of dir (fd dirfd). */
static int enable_controllers(int dirfd, const char *dir, char *err, size_t errlen)
{
	char have[512], avail[512];
	ssize_t n;
	size_t i;
	int ret;

	n = read_at(dirfd, "cgroup.subtree_control", have, sizeof(have));
	if (n < 0) {
		fail(err, errlen, "cannot read %s/cgroup.subtree_control: %s", dir, strerror((int)-n));
		return (int)n;
	}
	n = read_at(dirfd, "cgroup.controllers", avail, sizeof(avail));
	if (n < 0) {
		fail(err, errlen, "cannot read %s/cgroup.controllers: %s", dir, strerror((int)-n));
		return (int)n;
	}
	for (i = 0; i < ARRAY_SIZE(controllers); i++) {
		char plus[16];

		if (has_word(have, controllers[i]))
			continue;
		if (!has_word(avail, controllers[i])) {
			fail(err, errlen, "the %s controller is not available in %s (bound to cgroup v1?)",
			     controllers[i], dir);
			return -ENOTSUP;
		}
		snprintf(plus, sizeof(plus), "+%s", controllers[i]);
		ret = write_at(dirfd, "cgroup.subtree_control", plus);
		if (ret) {
			fail(err, errlen, "cannot enable the %s controller in %s/cgroup.subtree_control: %s%s",
			     controllers[i], dir, strerror(-ret),
			     ret == -EBUSY ? " (it holds processes)" : "");
			return ret;
		}
	}
	return 0;
}

/* <base>/kiln with the controllers enabled for its children (and for base's
 * own children first if enable_base). Returns its fd and path, or -errno. */
static int open_kiln_dir(const char *base, bool enable_base, char *path, size_t plen, char *err,
			 size_t errlen)
{
	int bfd = -1, kfd = -1, ret, n;

	n = snprintf(path, plen, "%s/" KILN_DIR, base);
	if (n < 0 || (size_t)n >= plen) {
		fail(err, errlen, "cgroup path too long under %s", base);
		return -ENAMETOOLONG;
	}
	bfd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (bfd < 0) {
		ret = -errno;
		fail(err, errlen, "cannot open %s: %s", base, strerror(errno));
		goto out;
	}
	if (enable_base) {
		ret = enable_controllers(bfd, base, err, errlen);
		if (ret)
			goto out;
	}
	if (mkdirat(bfd, KILN_DIR, 0755) < 0 && errno != EEXIST) {
		ret = -errno;
		fail(err, errlen, "cannot create %s: %s", path, strerror(errno));
		goto out;
	}
	kfd = openat(bfd, KILN_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (kfd < 0) {
		ret = -errno;
		fail(err, errlen, "cannot open %s: %s", path, strerror(errno));
		goto out;
	}
	ret = enable_controllers(kfd, path, err, errlen);
	if (ret)
		goto out;
	ret = kfd;
	kfd = -1;
out:
	if (kfd >= 0)
		close(kfd);
	if (bfd >= 0)
		close(bfd);
	return ret;
}

/* The parent of our own cgroup, when it is not the root and already gives
 * cpu, memory and pids to its children: kiln/ then goes next to our own
 * cgroup (the one holding us cannot have controllers for children), inside
 * whatever slice or delegated subtree we were started in. */
static int delegated_base(char *base, size_t len)
{
	char own[PATH_MAX - 64], have[512];
	char *slash;
	int fd, n;

	if (own_cgroup(own, sizeof(own)))
		return -ENOENT;
	slash = strrchr(own, '/');
	if (!slash || slash == own)
		return -ENOENT; /* we are in the root or one of its children */
	*slash = 0;
	n = snprintf(base, len, CG_ROOT "%s", own);
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	fd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = (int)read_at(fd, "cgroup.subtree_control", have, sizeof(have));
	close(fd);
	if (n < 0)
		return n;
	for (size_t i = 0; i < ARRAY_SIZE(controllers); i++)
		if (!has_word(have, controllers[i]))
			return -ENOENT;
	return 0;
}

int kiln_cgroup_mem_allow(struct kiln_cgroup *cg, uint64_t bytes)
{
	char mem[32];
	int ret;

	if (!cg || cg->mem_grown)
		return 0;
	if (bytes > UINT64_MAX - cg->mem_max)
		return -EOVERFLOW;
	snprintf(mem, sizeof(mem), "%" PRIu64, ALIGN_UP(cg->mem_max + bytes, 4096));
	ret = write_at(cg->fd, "memory.max", mem);
	if (!ret)
		cg->mem_grown = true;
	return ret;
}

static int write_limits(int fd, const char *path, const struct kiln_cgroup_values *v, char *err,
			size_t errlen)
{
	char cpu[64], mem[32], pids[32];
	struct {
		const char *file, *val;
		bool optional;
	} w[] = {
		{"cpu.max", cpu, false},
		{"memory.max", mem, false},
		{"memory.swap.max", "0", true},  /* absent without swap accounting */
		{"memory.oom.group", "1", true}, /* an OOM kill takes the whole VMM */
		{"pids.max", pids, false},
	};
	int ret;

	ret = kiln_cgroup_fmt_cpu_max(cpu, sizeof(cpu), v->cpu_quota_us, v->cpu_period_us);
	if (ret)
		return ret;
	snprintf(mem, sizeof(mem), "%" PRIu64, v->mem_max);
	snprintf(pids, sizeof(pids), "%" PRIu64, v->pids_max);
	for (size_t i = 0; i < ARRAY_SIZE(w); i++) {
		ret = write_at(fd, w[i].file, w[i].val);
		if (ret == -ENOENT && w[i].optional)
			continue;
		if (ret) {
			fail(err, errlen, "cannot write '%s' to %s/%s: %s", w[i].val, path, w[i].file,
			     strerror(-ret));
			return ret;
		}
	}
	return 0;
}

int kiln_cgroup_create(struct kiln_cgroup **out, const struct kiln_cgroup_limits *l, char *err,
		       size_t errlen)
{
	struct kiln_cgroup_values v;
	struct kiln_cgroup *cg = NULL;
	char base[PATH_MAX - 64], kiln[PATH_MAX - 32], name[64];
	struct statfs sfs;
	int kfd = -1, ret, n;

	*out = NULL;
	ret = kiln_cgroup_compute(l, &v);
	if (ret) {
		snprintf(err, errlen, "invalid cgroup limits (vCPUs 1-%u, memory 1-%llu MiB)",
			 KILN_CGROUP_MAX_VCPUS, (unsigned long long)KILN_CGROUP_MAX_MEM_MIB);
		goto out;
	}
	if (statfs(CG_ROOT, &sfs) < 0) {
		ret = -errno;
		fail(err, errlen, "%s", strerror(errno));
		goto out;
	}
	if (sfs.f_type != CGROUP2_SUPER_MAGIC) {
		ret = -ENOTSUP;
		fail(err, errlen, "not a cgroup2 mount (cgroup v1 or hybrid layout)");
		goto out;
	}
	cg = calloc(1, sizeof(*cg));
	if (!cg) {
		ret = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	cg->fd = -1;

	/* Next to our own cgroup if its parent gives out the controllers; else under the root. */
	if (!delegated_base(base, sizeof(base)))
		kfd = open_kiln_dir(base, false, kiln, sizeof(kiln), err, errlen);
	if (kfd < 0)
		kfd = open_kiln_dir(CG_ROOT, true, kiln, sizeof(kiln), err, errlen);
	if (kfd < 0) {
		ret = kfd;
		goto out;
	}

	for (int tries = 0;; tries++) {
		uint32_t r;

		if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
			r = (uint32_t)now_ns() ^ ((uint32_t)getpid() << 16) ^ (uint32_t)tries;
		snprintf(name, sizeof(name), RUN_PREFIX "%d-%08" PRIx32, (int)getpid(), r);
		if (mkdirat(kfd, name, 0755) == 0)
			break;
		if (errno != EEXIST || tries == 8) {
			ret = -errno;
			fail(err, errlen, "cannot create %s/%s: %s", kiln, name, strerror(errno));
			goto out;
		}
	}
	n = snprintf(cg->path, sizeof(cg->path), "%s/%s", kiln, name);
	if (n < 0 || (size_t)n >= sizeof(cg->path)) {
		unlinkat(kfd, name, AT_REMOVEDIR);
		ret = -ENAMETOOLONG;
		fail(err, errlen, "cgroup path too long under %s", kiln);
		goto out;
	}
	cg->fd = openat(kfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (cg->fd < 0) {
		ret = -errno;
		unlinkat(kfd, name, AT_REMOVEDIR);
		fail(err, errlen, "cannot open %s: %s", cg->path, strerror(errno));
		goto out;
	}
	cg->mem_max = v.mem_max;
	ret = write_limits(cg->fd, cg->path, &v, err, errlen);
	if (ret) {
		close(cg->fd);
		cg->fd = -1;
		unlinkat(kfd, name, AT_REMOVEDIR);
		goto out;
	}
	*out = cg;
	cg = NULL;
out:
	if (kfd >= 0)
		close(kfd);
	free(cg);
	return ret;
}

/* ---- using it ---- */

int kiln_cgroup_attach(struct kiln_cgroup *cg, pid_t pid)
{
	char buf[16];
	size_t n = sizeof(buf);
	unsigned long v = (unsigned long)pid;
	ssize_t w;
	int fd, ret = 0;

	if (!cg || pid < 0)
		return -EINVAL;
	/* No snprintf: this runs between fork and exec. "0" is the writer itself. */
	do {
		buf[--n] = (char)('0' + v % 10);
		v /= 10;
	} while (v && n > 0);
	fd = openat(cg->fd, "cgroup.procs", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	w = write(fd, buf + n, sizeof(buf) - n);
	if (w < 0)
		ret = -errno;
	else if ((size_t)w != sizeof(buf) - n)
		ret = -EIO;
	close(fd);
	return ret;
}

int kiln_cgroup_fd(const struct kiln_cgroup *cg)
{
	return cg ? cg->fd : -1;
}

const char *kiln_cgroup_path(const struct kiln_cgroup *cg)
{
	return cg ? cg->path : NULL;
}

int kiln_cgroup_stat(struct kiln_cgroup *cg, struct kiln_cgroup_stat *st)
{
	int ret;

	memset(st, 0, sizeof(*st));
	if (!cg)
		return -EINVAL;
	ret = read_u64_at(cg->fd, "memory.current", &st->mem_current);
	if (ret)
		return ret;
	st->has_peak = read_u64_at(cg->fd, "memory.peak", &st->mem_peak) == 0;
	if (!st->has_peak)
		st->mem_peak = st->mem_current;
	ret = read_keyed_at(cg->fd, "cpu.stat", "usage_usec", &st->cpu_usage_us);
	if (!ret)
		ret = read_u64_at(cg->fd, "pids.current", &st->pids_current);
	if (!ret)
		ret = read_keyed_at(cg->fd, "memory.events", "oom_kill", &st->oom_kills);
	return ret;
}

/* SIGKILL everything in it: cgroup.kill (Linux 5.14+), else pid by pid. */
static void kill_all(int fd)
{
	if (write_at(fd, "cgroup.kill", "1") == 0)
		return;
	for (int round = 0; round < 100; round++) {
		char buf[4096], *p, *nl;
		int killed = 0;

		if (read_at(fd, "cgroup.procs", buf, sizeof(buf)) <= 0)
			return;
		/* Only whole lines: a pid cut by the buffer's end waits for the next round. */
		for (p = buf; (nl = strchr(p, '\n')); p = nl + 1) {
			uint64_t pid;

			*nl = 0;
			if (!parse_u64(p, 1, INT_MAX, &pid) && (pid_t)pid != getpid() &&
			    kill((pid_t)pid, SIGKILL) == 0)
				killed++;
		}
		if (!killed)
			return;
		sleep_ms(10);
	}
}

void kiln_cgroup_destroy(struct kiln_cgroup *cg)
{
	if (!cg)
		return;
	if (cg->fd >= 0) {
		kill_all(cg->fd);
		for (int waited = 0; waited < DESTROY_WAIT_MS && is_populated(cg->fd); waited += 10)
			sleep_ms(10);
		close(cg->fd);
	}
	/* rmdir can briefly see EBUSY while the last task finishes exiting. */
	for (int tries = 0; tries < 100; tries++) {
		if (rmdir(cg->path) == 0 || errno != EBUSY)
			break;
		sleep_ms(10);
	}
	/* kiln/ itself stays: another kiln may be creating in it right now. */
	free(cg);
}

/* Empty run-* cgroups under <base>/kiln whose owner is gone. */
static void sweep_dir(const char *base)
{
	char path[PATH_MAX];
	struct dirent *e;
	DIR *d;
	int n;

	n = snprintf(path, sizeof(path), "%s/" KILN_DIR, base);
	if (n < 0 || (size_t)n >= sizeof(path))
		return;
	d = opendir(path);
	if (!d)
		return;
	while ((e = readdir(d))) {
		pid_t owner;
		bool busy;
		int fd;

		if (e->d_type != DT_DIR || kiln_cgroup_parse_name(e->d_name, &owner) ||
		    owner == getpid() || kill(owner, 0) == 0 || errno != ESRCH)
			continue;
		fd = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0)
			continue;
		busy = is_populated(fd);
		close(fd);
		if (!busy)
			unlinkat(dirfd(d), e->d_name, AT_REMOVEDIR);
	}
	closedir(d);
}

void kiln_cgroup_sweep(void)
{
	char base[PATH_MAX - 64];
	struct statfs sfs;

	if (statfs(CG_ROOT, &sfs) < 0 || sfs.f_type != CGROUP2_SUPER_MAGIC)
		return;
	if (!delegated_base(base, sizeof(base)))
		sweep_dir(base);
	sweep_dir(CG_ROOT);
}
