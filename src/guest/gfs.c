/*
 * File operations of the guest agent: mkdir -p, rm -r, stat, and opening
 * files for streaming. Recursion is bounded by GFS_DEPTH_MAX open directories.
 */
#include "guest/gfs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proto.h"

#define GFS_DEPTH_MAX 128
#define GFS_RM_PASSES 4

int gfs_check_path(const char *path)
{
	if (path[0] != '/')
		return -EINVAL;
	if (strnlen(path, PROTO_PATH_MAX + 1) > PROTO_PATH_MAX)
		return -ENAMETOOLONG;
	return 0;
}

static int is_dir(const char *path)
{
	struct stat st;

	if (stat(path, &st))
		return -errno;
	return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

int gfs_mkdir(const char *path, mode_t mode, bool parents)
{
	char buf[PROTO_PATH_MAX + 1];
	size_t n;
	int ret;

	ret = gfs_check_path(path);
	if (ret)
		goto out;
	n = strlen(path);
	memcpy(buf, path, n + 1);
	while (n > 1 && buf[n - 1] == '/')
		buf[--n] = 0;
	if (parents) {
		/* Every proper prefix ending before a '/', left to right. */
		for (size_t i = 1; i < n; i++) {
			if (buf[i] != '/')
				continue;
			buf[i] = 0;
			if (mkdir(buf, 0755)) {
				ret = errno == EEXIST ? is_dir(buf) : -errno;
				if (ret)
					goto out;
			}
			buf[i] = '/';
		}
	}
	if (mkdir(buf, mode & 07777)) {
		ret = -errno;
		if (ret == -EEXIST && parents)
			ret = is_dir(buf);
		goto out;
	}
	/* Exactly the mode asked for, whatever the umask. */
	if (chmod(buf, mode & 07777))
		ret = -errno;
out:
	return ret;
}

static int rm_at(int dfd, const char *name, int depth)
{
	struct stat st;
	DIR *d = NULL;
	int fd = -1, ret = 0;

	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW)) {
		ret = -errno;
		goto out;
	}
	if (!S_ISDIR(st.st_mode)) {
		if (unlinkat(dfd, name, 0))
			ret = -errno;
		goto out;
	}
	if (depth >= GFS_DEPTH_MAX) {
		ret = -ELOOP;
		goto out;
	}
	fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	d = fdopendir(fd);
	if (!d) {
		ret = -errno;
		goto out;
	}
	fd = -1;
	/* Removing while reading may hide entries on some file systems: a few passes. */
	for (int pass = 0; pass < GFS_RM_PASSES; pass++) {
		struct dirent *e;

		rewinddir(d);
		while ((e = readdir(d))) {
			if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
				continue;
			ret = rm_at(dirfd(d), e->d_name, depth + 1);
			if (ret && ret != -ENOENT)
				goto out;
			ret = 0;
		}
		if (!unlinkat(dfd, name, AT_REMOVEDIR))
			goto out;
		ret = -errno;
		if (ret != -ENOTEMPTY)
			goto out;
	}
out:
	if (d)
		closedir(d);
	if (fd >= 0)
		close(fd);
	return ret;
}

int gfs_remove(const char *path, bool recursive)
{
	struct stat st;
	int ret;

	ret = gfs_check_path(path);
	if (ret)
		goto out;
	if (path[strspn(path, "/")] == 0) {
		ret = -EBUSY; /* never "/" */
		goto out;
	}
	if (recursive) {
		ret = rm_at(AT_FDCWD, path, 0);
		goto out;
	}
	if (lstat(path, &st)) {
		ret = -errno;
		goto out;
	}
	if (S_ISDIR(st.st_mode) ? rmdir(path) : unlink(path))
		ret = -errno;
out:
	return ret;
}

int gfs_stat(const char *path, bool nofollow, struct proto_stat *out)
{
	struct stat st;
	int ret;

	ret = gfs_check_path(path);
	if (ret)
		goto out;
	if (nofollow ? lstat(path, &st) : stat(path, &st)) {
		ret = -errno;
		goto out;
	}
	out->mode = st.st_mode;
	out->uid = st.st_uid;
	out->gid = st.st_gid;
	out->nlink = (uint32_t)st.st_nlink;
	out->size = (uint64_t)st.st_size;
	out->mtime_sec = st.st_mtim.tv_sec;
	out->mtime_nsec = (uint32_t)st.st_mtim.tv_nsec;
out:
	return ret;
}

static int parent_dirs(const char *path)
{
	char buf[PROTO_PATH_MAX + 1];
	char *slash;

	snprintf(buf, sizeof(buf), "%s", path);
	slash = strrchr(buf, '/');
	if (!slash || slash == buf)
		return 0;
	*slash = 0;
	return gfs_mkdir(buf, 0755, true);
}

int gfs_open_put(const char *path, mode_t mode, uint32_t uid, uint32_t gid, bool parents,
		 int *out)
{
	struct stat st;
	int fd = -1, ret;

	*out = -1;
	ret = gfs_check_path(path);
	if (ret)
		goto out;
	if (parents) {
		ret = parent_dirs(path);
		if (ret)
			goto out;
	}
	/* No O_TRUNC before we know it is a regular file; O_NONBLOCK for FIFOs. */
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, mode & 07777);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	if (fstat(fd, &st)) {
		ret = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		ret = -EINVAL;
		goto out;
	}
	if (ftruncate(fd, 0) || fcntl(fd, F_SETFL, 0) || fchmod(fd, mode & 07777)) {
		ret = -errno;
		goto out;
	}
	if ((uid != PROTO_ID_KEEP || gid != PROTO_ID_KEEP) &&
	    fchown(fd, (uid_t)uid, (gid_t)gid)) {
		ret = -errno;
		goto out;
	}
	*out = fd;
	fd = -1;
out:
	if (fd >= 0)
		close(fd);
	return ret;
}

int gfs_open_get(const char *path, int *out)
{
	struct stat st;
	int fd = -1, ret;

	*out = -1;
	ret = gfs_check_path(path);
	if (ret)
		goto out;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	if (fstat(fd, &st)) {
		ret = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		ret = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
		goto out;
	}
	*out = fd;
	fd = -1;
out:
	if (fd >= 0)
		close(fd);
	return ret;
}

int gfs_write_all(int fd, const void *buf, size_t n)
{
	const char *p = buf;

	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}
