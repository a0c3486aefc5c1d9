/*
 * kiln image: import OCI/Docker images as erofs root images, list and remove
 * them; and the defaults (Env, WorkingDir, User, Entrypoint + Cmd) that
 * `kiln run` takes from an imported image. docs/images.md, "Imported images".
 *
 * Import runs scripts/lib/image-import.py in this process's place (exec, no
 * shell): it drives skopeo, umoci and mkfs.erofs and scans every layer, which
 * is a few hundred lines of Python against a few thousand of C (tar, gzip,
 * JSON, SHA-256 and child process plumbing). Names, paths and the size cap
 * are checked here first.
 */
#include "cli/image.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/image.h"
#include "util.h"

#define EXIT_USAGE 2
#define NAME_MAX_LEN KILN_IMAGE_NAME_MAX
#define DEFAULT_MAX_SIZE (8ULL << 30)

static int cache_dir(char *buf, size_t len)
{
	return kiln_cache_dir("oci", buf, len);
}

/* A default name from SRC: the last path element of its file, directory or
 * repository, without tag, extension or characters a name may not have. */
static void default_name(const char *src, char *out, size_t len)
{
	const char *colon = strchr(src, ':'), *p, *end, *slash;
	size_t n = 0;

	p = colon ? colon + 1 : src;
	while (*p == '/')
		p++;
	end = strchr(p, ':');
	if (!end)
		end = p + strlen(p);
	while (end > p && end[-1] == '/')
		end--;
	for (slash = end; slash > p && slash[-1] != '/'; slash--)
		;
	for (p = slash; p < end && *p != '.' && *p != '@' && n + 1 < len && n < NAME_MAX_LEN; p++) {
		char c = *p;

		if (c >= 'A' && c <= 'Z')
			c = (char)(c - 'A' + 'a');
		out[n++] = ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_') ? c : '-';
	}
	out[n] = 0;
}

static int parse_size(const char *s, uint64_t *out)
{
	char num[32];
	size_t n = strlen(s);
	unsigned shift = 0;
	uint64_t v;

	if (n == 0 || n >= sizeof(num))
		return -1;
	memcpy(num, s, n + 1);
	switch (num[n - 1]) {
	case 'K': shift = 10; break;
	case 'M': shift = 20; break;
	case 'G': shift = 30; break;
	case 'T': shift = 40; break;
	default: break;
	}
	if (shift)
		num[n - 1] = 0;
	if (parse_u64(num, 1, UINT64_MAX >> 40, &v))
		return -1;
	*out = v << shift;
	return *out < (1ULL << 20) || *out > (1ULL << 44) ? -1 : 0;
}

static int image_import(int argc, char **argv, const char *self)
{
	static const struct option opts[] = {
		{ "name", required_argument, NULL, 'n' },
		{ "max-size", required_argument, NULL, 's' },
		{ "image-dir", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char name[NAME_MAX_LEN + 1] = "", dir[PATH_MAX], cache[PATH_MAX], helper[PATH_MAX],
	     bindir[PATH_MAX], maxs[32];
	const char *env_helper = getenv("KILN_IMPORT_HELPER");
	uint64_t max_size = DEFAULT_MAX_SIZE;
	int opt;

	kiln_image_dir(self, dir, sizeof(dir));
	optind = 1;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (opt) {
		case 'n':
			if (!kiln_image_name_ok(optarg)) {
				fprintf(stderr, "kiln image import: bad name '%s' (1 to %d of [a-z0-9_-])\n", optarg,
					NAME_MAX_LEN);
				return EXIT_USAGE;
			}
			snprintf(name, sizeof(name), "%s", optarg);
			break;
		case 's':
			if (parse_size(optarg, &max_size)) {
				fprintf(stderr, "kiln image import: --max-size must be bytes from 1M to 16T (suffix K, M, G, T: x1024), not '%s'\n",
					optarg);
				return EXIT_USAGE;
			}
			break;
		case 'd':
			snprintf(dir, sizeof(dir), "%s", optarg);
			break;
		case 'h':
			puts("usage: kiln image import SRC [--name NAME] [--max-size BYTES] [--image-dir DIR]\n"
			     "SRC: oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE, docker://REF\n"
			     "  --name NAME        the name for kiln run --image (default: from SRC)\n"
			     "  --max-size BYTES   refuse an image that unpacks to more (default 8G)\n"
			     "  --image-dir DIR    where names live (default $KILN_IMAGE_DIR or images/ beside kiln)");
			return 0;
		case ':':
			fprintf(stderr, "kiln image import: option %s needs a value\n", argv[optind - 1]);
			return EXIT_USAGE;
		default:
			fprintf(stderr, "kiln image import: unknown option '%s'\n", argv[optind - 1]);
			return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc) {
		fputs("kiln image import: usage: kiln image import SRC [--name NAME] [--max-size BYTES]\n", stderr);
		return EXIT_USAGE;
	}
	if (!name[0]) {
		default_name(argv[optind], name, sizeof(name));
		if (!kiln_image_name_ok(name)) {
			fprintf(stderr, "kiln image import: cannot make a name from '%s': give --name NAME\n",
				argv[optind]);
			return EXIT_USAGE;
		}
	}
	if (cache_dir(cache, sizeof(cache))) {
		fputs("kiln image import: no cache directory (set KILN_CACHE or HOME)\n", stderr);
		return 1;
	}
	exe_dir(self, bindir, sizeof(bindir));
	if (env_helper && env_helper[0])
		snprintf(helper, sizeof(helper), "%s", env_helper);
	else
		snprintf(helper, sizeof(helper), "%s/../scripts/lib/image-import.py", bindir);
	if (access(helper, R_OK) < 0) {
		fprintf(stderr, "kiln image import: the import helper %s is missing\n", helper);
		return 1;
	}
	snprintf(maxs, sizeof(maxs), "%llu", (unsigned long long)max_size);
	{
		const char *const args[] = { "python3", helper, "--cache", cache, "--image-dir", dir,
					     "--name", name, "--max-size", maxs, "--", argv[optind], NULL };

		fflush(NULL);
		execv("/usr/bin/python3", (char *const *)args);
	}
	fprintf(stderr, "kiln image import: cannot run /usr/bin/python3: %s\n", strerror(errno));
	return 1;
}

static const char *jstr(json_t *o, const char *key, const char *dflt)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : dflt;
}

static void human(uint64_t v, char *buf, size_t len)
{
	if (v >= (1ULL << 30))
		snprintf(buf, len, "%.1fG", (double)v / (1ULL << 30));
	else if (v >= (1ULL << 20))
		snprintf(buf, len, "%.1fM", (double)v / (1ULL << 20));
	else
		snprintf(buf, len, "%.1fK", (double)v / 1024);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int image_ls(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char *names[4096];
	size_t n = 0;

	if (!d) {
		if (errno == ENOENT)
			return 0;
		fprintf(stderr, "kiln image ls: %s: %s\n", dir, strerror(errno));
		return 1;
	}
	while ((e = readdir(d)) && n < sizeof(names) / sizeof(names[0])) {
		size_t l = strlen(e->d_name);

		if (l > 4 && l - 4 <= NAME_MAX_LEN && !strcmp(e->d_name + l - 4, ".img") &&
		    e->d_name[0] != '.') {
			names[n] = strndup(e->d_name, l - 4);
			if (names[n] && kiln_image_name_ok(names[n]))
				n++;
			else
				free(names[n]);
		}
	}
	closedir(d);
	qsort(names, n, sizeof(names[0]), cmp_str);
	printf("%-24s %-19s %8s  %s\n", "NAME", "DIGEST", "SIZE", "CREATED");
	for (size_t i = 0; i < n; i++) {
		char path[PATH_MAX], size[32], created[32] = "-", digest[20] = "-";
		struct stat st;
		json_t *j;

		snprintf(path, sizeof(path), "%s/%s.img", dir, names[i]);
		if (stat(path, &st) < 0) {
			free(names[i]);
			continue;
		}
		human((uint64_t)st.st_size, size, sizeof(size));
		snprintf(path, sizeof(path), "%s/%s.json", dir, names[i]);
		j = kiln_image_json_load(path);
		if (j) {
			const char *dg = jstr(j, "digest", "-");
			const char *cr = jstr(j, "created", "");

			if (!cr[0])
				cr = jstr(j, "imported", "-");
			snprintf(digest, sizeof(digest), "%.19s", dg);
			snprintf(created, sizeof(created), "%.20s", cr);
			json_decref(j);
		} else {
			struct tm tm;

			gmtime_r(&st.st_mtime, &tm);
			strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);
		}
		printf("%-24s %-19s %8s  %s\n", names[i], digest, size, created);
		free(names[i]);
	}
	return 0;
}

/* Whether some other NAME.img in dir still points at target. */
static bool still_used(const char *dir, const char *target)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	bool used = false;

	if (!d)
		return false;
	while (!used && (e = readdir(d))) {
		char p[PATH_MAX], t[PATH_MAX];
		ssize_t n;
		int r = snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);

		if (r < 0 || (size_t)r >= sizeof(p))
			continue;
		n = readlink(p, t, sizeof(t) - 1);
		if (n > 0) {
			t[n] = 0;
			used = !strcmp(t, target);
		}
	}
	closedir(d);
	return used;
}

static int image_rm(const char *dir, const char *name)
{
	char img[PATH_MAX], cfg[PATH_MAX], cache[PATH_MAX], lockp[PATH_MAX + 8], target[PATH_MAX],
	     tcfg[PATH_MAX];
	struct stat st;
	ssize_t n;
	int lock = -1, ret = 1;

	if (!kiln_image_name_ok(name)) {
		fprintf(stderr, "kiln image rm: bad name '%s' (1 to %d of [a-z0-9_-])\n", name, NAME_MAX_LEN);
		return EXIT_USAGE;
	}
	snprintf(img, sizeof(img), "%s/%s.img", dir, name);
	snprintf(cfg, sizeof(cfg), "%s/%s.json", dir, name);
	if (lstat(img, &st) < 0) {
		fprintf(stderr, "kiln image rm: no image '%s' in %s\n", name, dir);
		return 1;
	}
	if (lstat(cfg, &st) < 0) {
		fprintf(stderr, "kiln image rm: '%s' was not imported (make builds it; make clean removes it)\n",
			name);
		return 1;
	}
	/* An import holds the cache's lock while it writes names. */
	if (!cache_dir(cache, sizeof(cache))) {
		snprintf(lockp, sizeof(lockp), "%s/.lock", cache);
		lock = open(lockp, O_RDWR | O_CLOEXEC);
		if (lock >= 0 && flock(lock, LOCK_EX) < 0) {
			close(lock);
			lock = -1;
		}
	}
	n = readlink(img, target, sizeof(target) - 1);
	target[n > 0 ? n : 0] = 0;
	if (unlink(img) < 0 || (unlink(cfg) < 0 && errno != ENOENT)) {
		fprintf(stderr, "kiln image rm: cannot remove %s: %s\n", name, strerror(errno));
		goto out;
	}
	/* The cached image goes with its last name; the blobs stay in the
	 * shared layout (other images may share them). */
	if (target[0] == '/' && !still_used(dir, target)) {
		size_t l = strlen(target);

		if (l > 4 && !strcmp(target + l - 4, ".img") && strstr(target, "/oci/images/")) {
			snprintf(tcfg, sizeof(tcfg), "%.*s.json", (int)(l - 4), target);
			unlink(target);
			unlink(tcfg);
		}
	}
	ret = 0;
out:
	if (lock >= 0)
		close(lock);
	return ret;
}

int cli_image(int argc, char **argv, const char *self)
{
	char dir[PATH_MAX];

	if (argc >= 2 && !strcmp(argv[1], "import"))
		return image_import(argc - 1, argv + 1, self);
	kiln_image_dir(self, dir, sizeof(dir));
	if (argc == 2 && !strcmp(argv[1], "ls"))
		return image_ls(dir);
	if (argc == 3 && !strcmp(argv[1], "rm"))
		return image_rm(dir, argv[2]);
	fputs("usage: kiln image import SRC [--name NAME] [--max-size BYTES] [--image-dir DIR]\n"
	      "       kiln image ls\n"
	      "       kiln image rm NAME\n",
	      argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) ? stdout : stderr);
	return argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) ? 0 : EXIT_USAGE;
}
