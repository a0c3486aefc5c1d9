/* Applying a sandbox's identity in the guest (see identity.h). */
#include "guest/identity.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ID_TMP "sandbox-id.tmp"
#define ID_NAME "sandbox-id"

/* The bytes into the input pool, credited at 8 bits a byte (the host's
 * getrandom() output), then the CRNG reseeded from it at once. */
static int add_entropy(const struct proto_identity *m)
{
	union {
		struct rand_pool_info info;
		uint8_t raw[sizeof(struct rand_pool_info) + PROTO_ENTROPY_MAX];
	} u;
	int fd, ret = 0;

	memset(&u, 0, sizeof(u));
	u.info.entropy_count = (int)(m->entropy_len * 8);
	u.info.buf_size = (int)m->entropy_len;
	memcpy(u.info.buf, m->entropy, m->entropy_len);
	fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	if (ioctl(fd, RNDADDENTROPY, &u.info) || ioctl(fd, RNDRESEEDCRNG))
		ret = -errno;
	close(fd);
out:
	explicit_bzero(&u, sizeof(u));
	return ret;
}

/* dir/sandbox-id, mode 0444, replaced atomically: a reader sees the old
 * id or the new one, never part of one. */
static int write_id(const char *dir, const char *id)
{
	char line[PROTO_SANDBOX_ID_MAX + 2];
	int dfd = -1, fd = -1, ret, n;
	ssize_t w;

	n = snprintf(line, sizeof(line), "%s\n", id);
	if (n < 0 || (size_t)n >= sizeof(line))
		return -EINVAL;
	if (mkdir(dir, 0755) && errno != EEXIST)
		return -errno;
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	if (unlinkat(dfd, ID_TMP, 0) && errno != ENOENT) {
		ret = -errno;
		goto out;
	}
	fd = openat(dfd, ID_TMP, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0444);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	w = write(fd, line, (size_t)n);
	ret = w == n ? 0 : w < 0 ? -errno : -EIO;
	if (!ret && fchmod(fd, 0444))
		ret = -errno;
	if (close(fd) && !ret)
		ret = -errno;
	fd = -1;
	if (!ret && renameat(dfd, ID_TMP, dfd, ID_NAME))
		ret = -errno;
	if (ret)
		unlinkat(dfd, ID_TMP, 0);
out:
	close(dfd);
	return ret;
}

int identity_apply(const struct proto_identity *m, const char *dir, char *err, size_t errlen)
{
	struct timespec ts = { .tv_sec = (time_t)m->sec, .tv_nsec = (long)m->nsec };
	const char *step;
	int ret;

	step = "entropy";
	ret = add_entropy(m);
	if (ret)
		goto out;
	step = "clock";
	if (clock_settime(CLOCK_REALTIME, &ts)) {
		ret = -errno;
		goto out;
	}
	step = "hostname";
	if (sethostname(m->hostname, strlen(m->hostname))) {
		ret = -errno;
		goto out;
	}
	step = "sandbox id";
	ret = write_id(dir, m->sandbox_id);
out:
	if (ret)
		snprintf(err, errlen, "identity: %s: %s", step, strerror(-ret));
	return ret;
}
