/*
 * kiln template create|ls|rm: booted, agent-ready microVMs saved in the
 * template cache (lib/template.h, docs/snapshot.md). create is `kiln run`
 * with the VM saved after CMD (the warm-up) instead of destroyed.
 */
#include "cli/template.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/run.h"
#include "lib/template.h"

#define EXIT_USAGE 2
#define EXIT_KILN 125
#define MAX_TEMPLATES 4096

static const char usage_text[] =
	"usage: kiln template create NAME [kiln run OPTIONS] [-- CMD [ARGS...]]\n"
	"       kiln template create --auto [kiln run OPTIONS]\n"
	"       kiln template ls\n"
	"       kiln template rm NAME...\n"
	"create boots a microVM as `kiln run` does (--image, --cpus, --mem, --disk, -e, --put\n"
	"...), runs CMD in it (the warm-up, e.g. -- python3 -c 'import numpy'; default: true),\n"
	"and if CMD exits 0 saves the paused VM (registers, devices, RAM, scratch disk) as\n"
	"template NAME in the template cache ($KILN_CACHE/templates, else\n"
	"$XDG_CACHE_HOME/kiln/templates or ~/.cache/kiln/templates). A template has no\n"
	"network device (no --allow). NAME: 1 to 63 of [a-z0-9_-].\n"
	"--auto saves a clean boot (no warm-up, no --put) as the machine's automatic\n"
	"template, auto-<hash of kernel, initramfs, image, vCPUs, memory, disk>: a later\n"
	"`kiln run` of the same machine restores it instead of booting (--cold: boots).\n"
	"ls lists the templates; \"stale\" means its kernel, initramfs or image changed since.\n";

static int bad_name(const char *name)
{
	fprintf(stderr, "kiln template: '%s' is not a template name (1 to %d of [a-z0-9_-], not starting with '-')\n",
		name, KILN_TEMPLATE_NAME_MAX);
	return EXIT_USAGE;
}

static int get_dir(char *dir, size_t len)
{
	if (kiln_template_dir(dir, len)) {
		fprintf(stderr, "kiln template: no template cache (set KILN_CACHE, XDG_CACHE_HOME or HOME)\n");
		return EXIT_USAGE;
	}
	return 0;
}

static int template_create(int argc, char **argv, const char *self)
{
	char dir[PATH_MAX], path[PATH_MAX];
	char **args = NULL;
	const char *name;
	int n = 0, ret, dashes = -1;

	if (argc < 3 || (argv[2][0] == '-' && strcmp(argv[2], "--auto"))) {
		if (argc >= 3 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"))) {
			fputs(usage_text, stdout);
			return 0;
		}
		fprintf(stderr, "kiln template create: which NAME? (kiln template create NAME [OPTIONS] [-- CMD])\n");
		return EXIT_USAGE;
	}
	name = argv[2];
	if (!strcmp(name, "--auto")) {
		/* The machine's automatic template (kiln run restores it without
		 * --template), named by the machine; run.c refuses a warm-up. */
		name = KILN_TEMPLATE_AUTO;
	} else if (!kiln_template_name_ok(name)) {
		return bad_name(name);
	}
	if ((ret = get_dir(dir, sizeof(dir))))
		return ret;
	if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path)) {
		fprintf(stderr, "kiln template create: the template cache's path is too long\n");
		return EXIT_USAGE;
	}
	if (access(path, F_OK) == 0) {
		fprintf(stderr, "kiln template create: template '%s' exists (kiln template rm %s)\n",
			name, name);
		return EXIT_USAGE;
	}
	/* kiln run's argv: "run", the options, then "--" CMD (default: true). */
	for (int i = 3; i < argc; i++)
		if (!strcmp(argv[i], "--")) {
			dashes = i;
			break;
		}
	args = calloc((size_t)argc + 4, sizeof(*args));
	if (!args) {
		fprintf(stderr, "kiln template create: out of memory\n");
		return EXIT_KILN;
	}
	args[n++] = (char *)"run";
	for (int i = 3; i < argc; i++)
		args[n++] = argv[i];
	if (dashes < 0 || dashes == argc - 1) {
		if (dashes < 0)
			args[n++] = (char *)"--";
		args[n++] = (char *)"true";
	}
	args[n] = NULL;
	ret = cli_run_template(n, args, self, name);
	free(args);
	return ret;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Bytes the files of a template take on disk. */
static double disk_mib(const char *dir, const char *name)
{
	static const char *const files[] = { "state", "mem", "scratch", "template.json" };
	double total = 0;

	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		char p[PATH_MAX];
		struct stat st;

		if (snprintf(p, sizeof(p), "%s/%s/%s", dir, name, files[i]) < (int)sizeof(p) &&
		    stat(p, &st) == 0)
			total += (double)st.st_blocks * 512.0;
	}
	return total / 1048576.0;
}

static int template_ls(void)
{
	char dir[PATH_MAX], *names[MAX_TEMPLATES];
	size_t count = 0;
	struct dirent *e;
	int ret, status = 0;
	DIR *d;

	if ((ret = get_dir(dir, sizeof(dir))))
		return ret;
	kiln_template_sweep(dir);
	printf("%-24s %4s %7s %7s %9s  %-16s  %s\n", "NAME", "CPUS", "MEM", "DISK", "ON-DISK",
	       "CREATED", "STATE");
	d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 : (fprintf(stderr, "kiln template ls: %s: %s\n", dir,
						      strerror(errno)),
					      EXIT_KILN);
	while ((e = readdir(d)) && count < MAX_TEMPLATES)
		if (e->d_name[0] != '.' && (names[count] = strdup(e->d_name)))
			count++;
	closedir(d);
	qsort(names, count, sizeof(names[0]), cmp_str);
	for (size_t i = 0; i < count; i++) {
		struct kiln_template_info t;
		char why[512], when[32] = "?";
		struct tm tm;
		time_t c;

		if (kiln_template_info_load(dir, names[i], &t, why, sizeof(why))) {
			/* Not ours or damaged: said, not hidden. */
			fprintf(stderr, "kiln template ls: %s: %s\n", names[i], why);
			status = EXIT_KILN;
			continue;
		}
		c = (time_t)t.created;
		if (localtime_r(&c, &tm))
			strftime(when, sizeof(when), "%Y-%m-%d %H:%M", &tm);
		printf("%-24s %4u %6lluM %6lluM %8.1fM  %-16s  %s\n", t.name, t.cpus,
		       (unsigned long long)t.mem_mib, (unsigned long long)t.disk_mib,
		       disk_mib(dir, t.name), when,
		       !kiln_template_file_current(&t.kernel)   ? "stale (kernel changed)"
		       : !kiln_template_file_current(&t.initrd) ? "stale (initramfs changed)"
		       : !kiln_template_file_current(&t.image)  ? "stale (image changed)"
								: "ok");
	}
	for (size_t i = 0; i < count; i++)
		free(names[i]);
	return status;
}

static int template_rm(int argc, char **argv)
{
	char dir[PATH_MAX];
	int ret, status = 0;

	if (argc < 3) {
		fprintf(stderr, "kiln template rm: which template? (kiln template rm NAME...)\n");
		return EXIT_USAGE;
	}
	if ((ret = get_dir(dir, sizeof(dir))))
		return ret;
	for (int i = 2; i < argc; i++) {
		char path[PATH_MAX];

		if (!kiln_template_name_ok(argv[i])) {
			status = bad_name(argv[i]);
			continue;
		}
		if (snprintf(path, sizeof(path), "%s/%s", dir, argv[i]) >= (int)sizeof(path)) {
			fprintf(stderr, "kiln template rm: the template cache's path is too long\n");
			status = EXIT_USAGE;
			continue;
		}
		ret = kiln_template_remove_dir(path);
		if (ret == -ENOENT) {
			fprintf(stderr, "kiln template rm: no template '%s'\n", argv[i]);
			status = status ? status : 1;
		} else if (ret == -ENOTEMPTY || ret == -EEXIST) {
			fprintf(stderr, "kiln template rm: %s holds files kiln did not write; left in place\n",
				path);
			status = EXIT_KILN;
		} else if (ret) {
			fprintf(stderr, "kiln template rm: cannot remove %s: %s\n", path,
				strerror(-ret));
			status = EXIT_KILN;
		}
	}
	return status;
}

int cli_template(int argc, char **argv, const char *self)
{
	if (argc >= 2 && !strcmp(argv[1], "create"))
		return template_create(argc, argv, self);
	if (argc == 2 && !strcmp(argv[1], "ls"))
		return template_ls();
	if (argc >= 2 && !strcmp(argv[1], "rm"))
		return template_rm(argc, argv);
	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
			  !strcmp(argv[1], "help"))) {
		fputs(usage_text, stdout);
		return 0;
	}
	if (argc >= 2)
		fprintf(stderr, "kiln template: unknown verb '%s' (create, ls, rm)\n", argv[1]);
	fputs(usage_text, stderr);
	return EXIT_USAGE;
}
