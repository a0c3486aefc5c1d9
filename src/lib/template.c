/*
 * Templates on disk (template.h): names, the cache directory, template.json
 * both ways, staging and commit, removal and the sparse copy of a disk.
 */
#include "lib/template.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/image.h"
#include "lib/sandbox.h"
#include "util.h"

#define INFO_MAX (64 << 10)
#define STAGE_PREFIX ".new-"
/* What a template directory may hold; kiln_template_remove_dir removes these. */
static const char *const template_files[] = { "state", "mem", "scratch", "template.json",
					       "template.json.tmp" };

bool kiln_template_name_ok(const char *s)
{
	return kiln_image_name_ok(s) && s[0] != '-' && strlen(s) <= KILN_TEMPLATE_NAME_MAX;
}

int kiln_template_dir(char *buf, size_t len)
{
	return kiln_cache_dir("templates", buf, len);
}

int kiln_template_file_stat(struct kiln_template_file *f, const char *path)
{
	struct stat st;

	size_t n = strlen(path);

	if (n >= sizeof(f->path))
		return -ENAMETOOLONG;
	if (stat(path, &st) < 0)
		return -errno;
	memmove(f->path, path, n + 1); /* path may be f->path itself */
	f->size = (uint64_t)st.st_size;
	f->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
	return 0;
}

/* FNV-1a, 64 bits: a cache key, not a defence (the files are the user's). */
static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

int kiln_template_auto_name(const char *kernel, const char *initrd, const char *image,
			    unsigned cpus, uint64_t mem_mib, uint64_t disk_mib, char *out,
			    size_t len)
{
	const char *paths[3] = { kernel, initrd, image };
	const uint64_t machine[3] = { cpus, mem_mib, disk_mib };
	struct kiln_template_file f;
	uint64_t h = 0xcbf29ce484222325ULL;
	int ret;

	for (unsigned i = 0; i < 3; i++) {
		ret = kiln_template_file_stat(&f, paths[i]);
		if (ret)
			return ret;
		h = fnv1a(h, f.path, strlen(f.path) + 1);
		h = fnv1a(h, &f.size, sizeof(f.size));
		h = fnv1a(h, &f.mtime_ns, sizeof(f.mtime_ns));
	}
	h = fnv1a(h, machine, sizeof(machine));
	ret = snprintf(out, len, KILN_TEMPLATE_AUTO_PREFIX "%016llx", (unsigned long long)h);
	return ret < 0 || (size_t)ret >= len ? -ENAMETOOLONG : 0;
}

bool kiln_template_file_current(const struct kiln_template_file *f)
{
	struct kiln_template_file now;

	return kiln_template_file_stat(&now, f->path) == 0 && now.size == f->size &&
	       now.mtime_ns == f->mtime_ns;
}

static json_t *file_json(const struct kiln_template_file *f)
{
	return json_pack("{s:s, s:I, s:I}", "path", f->path, "size", (json_int_t)f->size, "mtime_ns",
			 (json_int_t)f->mtime_ns);
}

json_t *kiln_template_info_json(const struct kiln_template_info *t)
{
	return json_pack("{s:i, s:s, s:I, s:o, s:o, s:o, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:s}",
			 "format", KILN_TEMPLATE_FORMAT, "name", t->name, "created",
			 (json_int_t)t->created, "kernel", file_json(&t->kernel), "initrd",
			 file_json(&t->initrd), "image", file_json(&t->image), "cpus", (int)t->cpus,
			 "mem_mib", (json_int_t)t->mem_mib, "disk_mib", (json_int_t)t->disk_mib,
			 "state_bytes", (json_int_t)t->state_bytes, "ram_bytes",
			 (json_int_t)t->ram_bytes, "boot_ms", (json_int_t)t->boot_ms, "snapshot_ms",
			 (json_int_t)t->snapshot_ms, "warmup", t->warmup);
}

/* A non-negative integer field of at most max. */
static int get_u64(const json_t *j, const char *key, uint64_t max, uint64_t *out, char *why,
		   size_t whylen)
{
	json_t *v = json_object_get(j, key);

	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    (uint64_t)json_integer_value(v) > max) {
		snprintf(why, whylen, "template.json: \"%s\" is missing or not an integer in 0..%llu",
			 key, (unsigned long long)max);
		return -1;
	}
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

static int get_str(const json_t *j, const char *key, char *buf, size_t len, char *why,
		   size_t whylen)
{
	json_t *v = json_object_get(j, key);

	if (!json_is_string(v) || json_string_length(v) >= len ||
	    strlen(json_string_value(v)) != json_string_length(v)) {
		snprintf(why, whylen, "template.json: \"%s\" is missing, not a string or too long",
			 key);
		return -1;
	}
	memcpy(buf, json_string_value(v), json_string_length(v) + 1);
	return 0;
}

static int get_file(const json_t *j, const char *key, struct kiln_template_file *f, char *why,
		    size_t whylen)
{
	json_t *o = json_object_get(j, key);
	uint64_t size, mtime;

	if (!json_is_object(o)) {
		snprintf(why, whylen, "template.json: \"%s\" is missing or not an object", key);
		return -1;
	}
	if (get_str(o, "path", f->path, sizeof(f->path), why, whylen) ||
	    get_u64(o, "size", INT64_MAX, &size, why, whylen) ||
	    get_u64(o, "mtime_ns", INT64_MAX, &mtime, why, whylen))
		return -1;
	f->size = size;
	f->mtime_ns = (int64_t)mtime;
	return 0;
}

int kiln_template_info_parse(const json_t *j, struct kiln_template_info *t, char *why,
			     size_t whylen)
{
	uint64_t format, created, cpus;

	memset(t, 0, sizeof(*t));
	if (!json_is_object(j)) {
		snprintf(why, whylen, "template.json: not a JSON object");
		return -1;
	}
	if (get_u64(j, "format", UINT32_MAX, &format, why, whylen))
		return -1;
	if (format != KILN_TEMPLATE_FORMAT) {
		snprintf(why, whylen, "template.json: format %llu, this kiln reads %d",
			 (unsigned long long)format, KILN_TEMPLATE_FORMAT);
		return -1;
	}
	if (get_str(j, "name", t->name, sizeof(t->name), why, whylen))
		return -1;
	if (!kiln_template_name_ok(t->name)) {
		snprintf(why, whylen, "template.json: \"name\" is not a template name");
		return -1;
	}
	if (get_u64(j, "created", INT64_MAX, &created, why, whylen) ||
	    get_file(j, "kernel", &t->kernel, why, whylen) ||
	    get_file(j, "initrd", &t->initrd, why, whylen) ||
	    get_file(j, "image", &t->image, why, whylen) ||
	    get_u64(j, "cpus", 255, &cpus, why, whylen) ||
	    get_u64(j, "mem_mib", 1ULL << 30, &t->mem_mib, why, whylen) ||
	    get_u64(j, "disk_mib", 1ULL << 30, &t->disk_mib, why, whylen) ||
	    get_u64(j, "state_bytes", INT64_MAX, &t->state_bytes, why, whylen) ||
	    get_u64(j, "ram_bytes", INT64_MAX, &t->ram_bytes, why, whylen) ||
	    get_u64(j, "boot_ms", INT64_MAX, &t->boot_ms, why, whylen) ||
	    get_u64(j, "snapshot_ms", INT64_MAX, &t->snapshot_ms, why, whylen) ||
	    get_str(j, "warmup", t->warmup, sizeof(t->warmup), why, whylen))
		return -1;
	if (cpus == 0) {
		snprintf(why, whylen, "template.json: \"cpus\" is 0");
		return -1;
	}
	t->created = (int64_t)created;
	t->cpus = (unsigned)cpus;
	return 0;
}

int kiln_template_info_load(const char *dir, const char *name, struct kiln_template_info *t,
			    char *why, size_t whylen)
{
	char path[PATH_MAX];
	json_t *j = NULL;
	int ret = -1;

	if (!kiln_template_name_ok(name)) {
		snprintf(why, whylen, "'%s' is not a template name ([a-z0-9_-], 1 to %d)", name,
			 KILN_TEMPLATE_NAME_MAX);
		return -1;
	}
	if (snprintf(path, sizeof(path), "%s/%s/template.json", dir, name) >= (int)sizeof(path)) {
		snprintf(why, whylen, "the template directory's path is too long");
		return -1;
	}
	if (access(path, F_OK) < 0 && errno == ENOENT) {
		snprintf(why, whylen, "no template '%s' (kiln template ls)", name);
		return -ENOENT;
	}
	j = kiln_image_json_load(path);
	if (!j) {
		snprintf(why, whylen, "%s: unreadable, not JSON or over 1 MiB", path);
		goto out;
	}
	if (kiln_template_info_parse(j, t, why, whylen))
		goto out;
	if (strcmp(t->name, name)) {
		snprintf(why, whylen, "%s: names template '%s'", path, t->name);
		goto out;
	}
	ret = 0;
out:
	json_decref(j);
	return ret;
}

/* mkdir -p with mode for the directories it creates. */
static int make_dirs(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	size_t n = strlen(path);

	if (n == 0 || n >= sizeof(buf)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(buf, path, n + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	return mkdir(buf, mode) < 0 && errno != EEXIST ? -1 : 0;
}

int kiln_template_stage(const char *dir, const char *name, char *out, size_t outlen, char *why,
			size_t whylen)
{
	if (!kiln_template_name_ok(name)) {
		snprintf(why, whylen, "'%s' is not a template name ([a-z0-9_-], 1 to %d)", name,
			 KILN_TEMPLATE_NAME_MAX);
		return -1;
	}
	if (make_dirs(dir, 0700) < 0) {
		snprintf(why, whylen, "cannot create %s: %s", dir, strerror(errno));
		return -1;
	}
	if (snprintf(out, outlen, "%s/" STAGE_PREFIX "%s.%ld.XXXXXX", dir, name, (long)getpid()) >=
	    (int)outlen) {
		snprintf(why, whylen, "the template directory's path is too long");
		return -1;
	}
	if (!mkdtemp(out)) {
		snprintf(why, whylen, "cannot create a directory in %s: %s", dir, strerror(errno));
		return -1;
	}
	return 0;
}

int kiln_template_commit(const char *stage, const char *dir, const struct kiln_template_info *t,
			 char *why, size_t whylen)
{
	char tmp[PATH_MAX], final[PATH_MAX], dst[PATH_MAX];
	json_t *j = kiln_template_info_json(t);
	int ret = -1;

	if (!j) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	if (snprintf(tmp, sizeof(tmp), "%s/template.json.tmp", stage) >= (int)sizeof(tmp) ||
	    snprintf(final, sizeof(final), "%s/template.json", stage) >= (int)sizeof(final) ||
	    snprintf(dst, sizeof(dst), "%s/%s", dir, t->name) >= (int)sizeof(dst)) {
		snprintf(why, whylen, "the template directory's path is too long");
		goto out;
	}
	if (json_dump_file(j, tmp, JSON_INDENT(1) | JSON_SORT_KEYS) || rename(tmp, final) < 0) {
		snprintf(why, whylen, "cannot write %s", final);
		goto out;
	}
	/* One step, and never over an existing template. */
	if (renameat2(AT_FDCWD, stage, AT_FDCWD, dst, RENAME_NOREPLACE) < 0) {
		ret = -errno;
		if (errno == EEXIST || errno == ENOTEMPTY)
			snprintf(why, whylen, "template '%s' exists (kiln template rm %s)", t->name,
				 t->name);
		else
			snprintf(why, whylen, "cannot rename %s to %s: %s", stage, dst, strerror(errno));
		goto out;
	}
	ret = 0;
out:
	json_decref(j);
	return ret;
}

int kiln_template_remove_dir(const char *path)
{
	char f[PATH_MAX];

	for (size_t i = 0; i < sizeof(template_files) / sizeof(template_files[0]); i++) {
		if (snprintf(f, sizeof(f), "%s/%s", path, template_files[i]) >= (int)sizeof(f))
			return -ENAMETOOLONG;
		if (unlink(f) < 0 && errno != ENOENT)
			return -errno;
	}
	return rmdir(path) < 0 ? -errno : 0;
}

void kiln_template_sweep(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d))) {
		char path[PATH_MAX];
		const char *dot;
		char *end;
		long pid;

		if (strncmp(e->d_name, STAGE_PREFIX, strlen(STAGE_PREFIX)))
			continue;
		/* .new-NAME.PID.XXXXXX: NAME has no dots. */
		dot = strchr(e->d_name + strlen(STAGE_PREFIX), '.');
		if (!dot)
			continue;
		errno = 0;
		pid = strtol(dot + 1, &end, 10);
		if (errno || *end != '.' || pid <= 0 || pid > INT32_MAX)
			continue;
		if (kill((pid_t)pid, 0) == 0 || errno == EPERM)
			continue; /* its creator still runs */
		if (snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) < (int)sizeof(path))
			kiln_template_remove_dir(path);
	}
	closedir(d);
}

/* One chunk by read and write, where copy_file_range cannot (across file
 * systems on some kernels): bytes copied, or -1 with errno. */
static ssize_t copy_chunk(int in_fd, int out_fd, off_t at, size_t want)
{
	static __thread char buf[1 << 16];
	ssize_t n = pread(in_fd, buf, want < sizeof(buf) ? want : sizeof(buf), at);

	if (n <= 0)
		return n;
	for (ssize_t done = 0; done < n;) {
		ssize_t w = pwrite(out_fd, buf + done, (size_t)(n - done), at + done);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			if (w == 0)
				errno = EIO;
			return -1;
		}
		done += w;
	}
	return n;
}

int kiln_copy_sparse(int in_fd, int out_fd)
{
	struct stat st;
	off_t pos = 0;

	if (fstat(in_fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	if (ioctl(out_fd, FICLONE, in_fd) == 0)
		return 0;
	if (ftruncate(out_fd, 0) < 0 || ftruncate(out_fd, st.st_size) < 0)
		return -errno;
	while (pos < st.st_size) {
		off_t data = lseek(in_fd, pos, SEEK_DATA), hole;

		if (data < 0)
			return errno == ENXIO ? 0 : -errno; /* only a hole is left */
		hole = lseek(in_fd, data, SEEK_HOLE);
		if (hole < 0)
			return -errno;
		for (off_t at = data; at < hole;) {
			loff_t in_off = at, out_off = at;
			size_t want = (size_t)(hole - at);
			ssize_t n = copy_file_range(in_fd, &in_off, out_fd, &out_off, want, 0);

			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS ||
				      errno == EOPNOTSUPP))
				n = copy_chunk(in_fd, out_fd, at, want);
			if (n < 0)
				return -errno;
			if (n == 0)
				return -EIO; /* the file shrank under us */
			at += n;
		}
		pos = hole;
	}
	return 0;
}

int kiln_template_save(struct kiln_sandbox *sb, const char *dir, struct kiln_template_info *t,
		       int timeout_ms, uint64_t *disk_bytes, char *err, size_t errlen)
{
	static const char *const names[3] = { "state", "mem", "scratch" };
	char stage[PATH_MAX] = "", path[PATH_MAX];
	int fds[3] = { -1, -1, -1 }, ret = -1;
	uint64_t t0, used = 0;

	kiln_template_sweep(dir);
	if (kiln_template_stage(dir, t->name, stage, sizeof(stage), err, errlen)) {
		stage[0] = 0;
		goto out;
	}
	for (int i = 0; i < (t->disk_mib ? 3 : 2); i++) {
		snprintf(path, sizeof(path), "%s/%s", stage, names[i]);
		fds[i] = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fds[i] < 0) {
			ret = -errno;
			snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
			goto out;
		}
	}
	t0 = now_ns();
	ret = kiln_sandbox_snapshot(sb, fds[0], fds[1], fds[2], timeout_ms, &t->state_bytes,
				    &t->ram_bytes, err, errlen);
	t->snapshot_ms = (now_ns() - t0) / 1000000ULL;
	if (ret)
		goto out;
	ret = -1;
	for (int i = 0; i < 3; i++) {
		struct stat st;

		if (fds[i] < 0)
			continue;
		if (fsync(fds[i]) < 0 || fstat(fds[i], &st) < 0) {
			ret = -errno;
			snprintf(err, errlen, "cannot write %s/%s: %s", stage, names[i], strerror(errno));
			goto out;
		}
		used += (uint64_t)st.st_blocks * 512;
	}
	t->created = (int64_t)time(NULL);
	if (kiln_template_file_stat(&t->kernel, t->kernel.path) ||
	    kiln_template_file_stat(&t->initrd, t->initrd.path) ||
	    kiln_template_file_stat(&t->image, t->image.path)) {
		snprintf(err, errlen, "the kernel, initramfs or image went away while the template was made");
		goto out;
	}
	ret = kiln_template_commit(stage, dir, t, err, errlen);
	if (ret)
		goto out;
	stage[0] = 0;
	if (disk_bytes)
		*disk_bytes = used;
out:
	for (int i = 0; i < 3; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	if (stage[0])
		kiln_template_remove_dir(stage);
	return ret;
}
