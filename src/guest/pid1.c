/*
 * PID-1 set-up of the guest. The kernel starts kiln-init from a tiny
 * initramfs; kiln-init mounts the read-only base image (/dev/vda, erofs or
 * ext4) under a writable layer (a pre-formatted ext4 scratch disk, or tmpfs)
 * as an overlay, moves /proc and /dev into it and switches root, staying
 * PID 1. See docs/protocol.md ("Guest boot") for the contract with the VMM.
 */
#include "guest/pid1.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <sys/io.h>
#endif

#include "guest/bootargs.h"

#define RAMFS_MAGIC_ 0x858458f6u
#define TMPFS_MAGIC_ 0x01021994u
#define DEV_WAIT_MS  1000
#define KILL_WAIT_MS 1000
#define BOOTMARK     0x6b696c6eu
#define MOUNTS_MAX   64
#define MIN_TTL_MS   "1000" /* the working set the guest keeps before an OOM kill */

static void vlog(const char *prefix, const char *fmt, va_list ap)
{
	char buf[512];
	int n = snprintf(buf, sizeof(buf), "kiln-init: %s", prefix);
	int m;

	if (n < 0)
		return;
	m = vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
	if (m < 0)
		return;
	n += m;
	if ((size_t)n > sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	if (write(STDERR_FILENO, buf, (size_t)n) < 0) {
		/* no console: nowhere to say it */
	}
}

void pid1_log(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog("", fmt, ap);
	va_end(ap);
}

void pid1_fatal(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog("fatal: ", fmt, ap);
	va_end(ap);
	sync();
	reboot(RB_AUTOBOOT);
	/* Not allowed to reboot (not really PID 1?): exiting panics the kernel. */
	_exit(1);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* mkdir that accepts an existing directory. */
static int mkdir_ok(const char *path, mode_t mode)
{
	if (mkdir(path, mode) && errno != EEXIST)
		return -errno;
	return 0;
}

static int mount_at(const char *src, const char *dir, const char *type, unsigned long flags,
		    const char *data, mode_t dmode)
{
	int ret = mkdir_ok(dir, dmode);

	if (ret)
		return ret;
	if (mount(src, dir, type, flags, data) && errno != EBUSY)
		return -errno;
	return 0;
}

int pid1_early(void)
{
	int ret, fd;

	umask(022);
	if (chdir("/"))
		return -errno;
	ret = mount_at("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, 0555);
	if (ret)
		return ret;
	/* EBUSY: the kernel mounted it already (CONFIG_DEVTMPFS_MOUNT). */
	ret = mount_at("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755", 0755);
	if (ret)
		return ret;
	/* Without /dev/console in the initramfs the kernel gave us no fds 0-2. */
	if (fcntl(STDERR_FILENO, F_GETFD) < 0 || fcntl(STDIN_FILENO, F_GETFD) < 0) {
		fd = open("/dev/console", O_RDWR | O_NOCTTY);
		if (fd < 0)
			fd = open("/dev/null", O_RDWR);
		if (fd < 0)
			return -errno;
		for (int i = 0; i < 3; i++)
			if (fd != i)
				dup2(fd, i);
		if (fd > 2)
			close(fd);
	}
	return 0;
}

void pid1_bootargs(struct bootargs *ba)
{
	char buf[BOOTARGS_CMDLINE_MAX];
	char err[256], warn[256];
	size_t len = 0;
	int fd;

	bootargs_defaults(ba);
	fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		pid1_fatal("/proc/cmdline: %s", strerror(errno));
	while (len < sizeof(buf)) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	if (bootargs_parse(buf, len, ba, err, sizeof(err), warn, sizeof(warn)))
		pid1_fatal("kernel command line: %s", err);
	if (warn[0])
		pid1_log("kernel command line: %s", warn);
}

static bool wait_dev(const char *dev)
{
	for (int t = 0; t < DEV_WAIT_MS; t += 10) {
		if (!access(dev, F_OK))
			return true;
		sleep_ms(10);
	}
	return false;
}

static int mount_base(const struct bootargs *ba)
{
	static const char *const types[] = { "erofs", "ext4" };
	int err[2] = { 0, 0 };

	if (!wait_dev(ba->root))
		pid1_fatal("base image %s: no such device", ba->root);
	for (int i = 0; i < 2; i++) {
		if ((ba->rootfstype == BOOTARGS_FS_EROFS && i != 0) ||
		    (ba->rootfstype == BOOTARGS_FS_EXT4 && i != 1))
			continue;
		/* noload: never replay a journal on the shared, read-only image. */
		if (!mount(ba->root, "/kiln/lower", types[i], MS_RDONLY | MS_NOATIME,
			   i == 1 ? "noload" : NULL))
			return 0;
		err[i] = errno;
	}
	pid1_fatal("mount base image %s: erofs: %s, ext4: %s", ba->root,
		   err[0] ? strerror(err[0]) : "not tried", err[1] ? strerror(err[1]) : "not tried");
}

static int mount_scratch(const struct bootargs *ba)
{
	const char *dev = NULL;

	if (!strcmp(ba->scratch, "auto")) {
		if (!access("/dev/vdb", F_OK))
			dev = "/dev/vdb";
	} else if (strcmp(ba->scratch, "tmpfs")) {
		dev = ba->scratch;
		if (!wait_dev(dev))
			pid1_fatal("scratch disk %s: no such device", dev);
	}
	if (dev) {
		/* Formatted by the host: kiln-init never runs mkfs (too slow at boot). */
		if (mount(dev, "/kiln/rw", "ext4", MS_NOATIME, NULL))
			pid1_fatal("mount scratch disk %s (ext4): %s", dev, strerror(errno));
	} else if (mount("tmpfs", "/kiln/rw", "tmpfs", 0, "mode=0755")) {
		pid1_fatal("mount tmpfs scratch: %s", strerror(errno));
	}
	if (mkdir_ok("/kiln/rw/upper", 0755) || mkdir_ok("/kiln/rw/work", 0700))
		pid1_fatal("scratch layer: %s", strerror(errno));
	return 0;
}

int pid1_root(const struct bootargs *ba)
{
	struct statfs sf;

	if (!strcmp(ba->root, "none"))
		return 0;
	/* Booted without an initramfs (the kernel mounted a root): keep it. */
	if (statfs("/", &sf) || ((uint32_t)sf.f_type != RAMFS_MAGIC_ &&
				 (uint32_t)sf.f_type != TMPFS_MAGIC_)) {
		pid1_log("root already mounted, no overlay");
		return 0;
	}
	if (mkdir_ok("/kiln", 0700) || mkdir_ok("/kiln/lower", 0755) ||
	    mkdir_ok("/kiln/rw", 0755) || mkdir_ok("/kiln/root", 0755))
		pid1_fatal("/kiln: %s", strerror(errno));
	mount_base(ba);
	mount_scratch(ba);
	if (mount("overlay", "/kiln/root", "overlay", 0,
		  "lowerdir=/kiln/lower,upperdir=/kiln/rw/upper,workdir=/kiln/rw/work"))
		pid1_fatal("mount overlay root: %s", strerror(errno));
	if (mkdir_ok("/kiln/root/proc", 0555) || mkdir_ok("/kiln/root/dev", 0755))
		pid1_fatal("root mount points: %s", strerror(errno));
	if (mount("/proc", "/kiln/root/proc", NULL, MS_MOVE, NULL) ||
	    mount("/dev", "/kiln/root/dev", NULL, MS_MOVE, NULL))
		pid1_fatal("move /proc, /dev: %s", strerror(errno));
	/* The initramfs cannot be unmounted: mount over it (as switch_root does). */
	if (chdir("/kiln/root") || mount(".", "/", NULL, MS_MOVE, NULL) || chroot(".") ||
	    chdir("/"))
		pid1_fatal("switch root: %s", strerror(errno));
	return 0;
}

static void loopback_up(void)
{
	struct ifreq ifr;
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		pid1_log("loopback: %s", strerror(errno));
		return;
	}
	memset(&ifr, 0, sizeof(ifr));
	memcpy(ifr.ifr_name, "lo", 3);
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) == 0) {
		ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
		if (ioctl(fd, SIOCSIFFLAGS, &ifr) == 0) {
			close(fd);
			return;
		}
	}
	pid1_log("loopback: %s", strerror(errno));
	close(fd);
}

/* A kernel knob; a failure is logged, not fatal (the guest still runs). */
static void write_knob(const char *path, const char *value)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);

	if (fd < 0 || write(fd, value, strlen(value)) < 0)
		pid1_log("%s: %s", path, strerror(errno));
	if (fd >= 0)
		close(fd);
}

int pid1_system(const struct bootargs *ba)
{
	static const struct {
		const char *src, *dir, *type;
		unsigned long flags;
		const char *data;
		mode_t mode;
	} mounts[] = {
		{ "sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, 0555 },
		{ "cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC,
		  "nsdelegate", 0755 },
		{ "devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
		  "mode=0620,ptmxmode=0666", 0755 },
		{ "tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", 01777 },
		{ "tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", 01777 },
		{ "tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755", 0755 },
	};
	static const char *const links[][2] = {
		{ "/proc/self/fd", "/dev/fd" },
		{ "/proc/self/fd/0", "/dev/stdin" },
		{ "/proc/self/fd/1", "/dev/stdout" },
		{ "/proc/self/fd/2", "/dev/stderr" },
	};
	int ret;

	for (size_t i = 0; i < sizeof(mounts) / sizeof(mounts[0]); i++) {
		ret = mount_at(mounts[i].src, mounts[i].dir, mounts[i].type, mounts[i].flags,
			       mounts[i].data, mounts[i].mode);
		if (ret)
			pid1_log("mount %s: %s", mounts[i].dir, strerror(-ret));
	}
	for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++)
		if (symlink(links[i][0], links[i][1]) && errno != EEXIST)
			pid1_log("%s: %s", links[i][1], strerror(errno));
	if (sethostname(ba->hostname, strlen(ba->hostname)))
		pid1_log("hostname: %s", strerror(errno));
	loopback_up();
	/* The agent must survive memory pressure; gexec resets this in children. */
	write_knob("/proc/self/oom_score_adj", "-1000");
	/*
	 * A guest short of memory thrashes on file pages (its programs' text
	 * dropped and read back) long before an allocation fails: with the
	 * multi-gen LRU keeping the last MIN_TTL_MS of working set, the kernel
	 * OOM-kills instead (Documentation/admin-guide/mm/multigen_lru.rst).
	 */
	write_knob("/sys/kernel/mm/lru_gen/min_ttl_ms", MIN_TTL_MS);
	return 0;
}

void pid1_bootmark(int port)
{
	if (port < 0)
		return;
#if defined(__x86_64__) || defined(__i386__)
	if (ioperm((unsigned long)port, 4, 1)) {
		pid1_log("boot mark: ioperm: %s", strerror(errno));
		return;
	}
	outl(BOOTMARK, (unsigned short)port);
	ioperm((unsigned long)port, 4, 0);
#else
	pid1_log("boot mark: no port I/O on this architecture");
#endif
}

/* Mount points from /proc/self/mounts, deepest last; bounded. */
static int read_mounts(char *buf, size_t size, char **mp, int max)
{
	size_t len = 0;
	int n = 0, fd = open("/proc/self/mounts", O_RDONLY | O_CLOEXEC);
	char *line;

	if (fd < 0)
		return 0;
	while (len < size - 1) {
		ssize_t r = read(fd, buf + len, size - 1 - len);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	buf[len] = 0;
	for (line = buf; line && *line && n < max;) {
		char *nl = strchr(line, '\n'), *sp, *end;

		if (nl)
			*nl = 0;
		sp = strchr(line, ' ');
		if (sp) {
			end = strchr(sp + 1, ' ');
			if (end) {
				*end = 0;
				mp[n++] = sp + 1; /* octal escapes (\040) left alone: best effort */
			}
		}
		line = nl ? nl + 1 : NULL;
	}
	return n;
}

void pid1_poweroff(void)
{
	static char buf[16384];
	char *mp[MOUNTS_MAX];
	int n;

	kill(-1, SIGKILL);
	for (int t = 0; t < KILL_WAIT_MS; t += 5) {
		pid_t pid;

		while ((pid = waitpid(-1, NULL, WNOHANG)) > 0)
			;
		if (pid < 0 && errno == ECHILD)
			break;
		sleep_ms(5);
	}
	sync();
	n = read_mounts(buf, sizeof(buf), mp, MOUNTS_MAX);
	for (int i = n - 1; i >= 0; i--)
		if (strcmp(mp[i], "/"))
			umount2(mp[i], MNT_DETACH);
	sync();
	reboot(RB_AUTOBOOT);
	pid1_fatal("reboot: %s", strerror(errno));
}
