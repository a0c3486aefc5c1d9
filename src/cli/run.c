/*
 * kiln run: boot a fresh microVM, upload files, run one command with this
 * process's stdin/stdout/stderr, download files, destroy the VM, and exit
 * with the command's status. See docs/run.md.
 */
#include "cli/run.h"
#include "cli/image.h"
#include "cli/tty.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "lib/agent.h"
#include "lib/image.h"
#include "lib/cgroup.h"
#include "lib/netproc.h"
#include "lib/sandbox.h"
#include "lib/template.h"
#include "net/rules.h"
#include "proto.h"
#include "userdb.h"
#include "util.h"

#define EXIT_USAGE 2
#define EXIT_TIMEOUT 124
#define EXIT_KILN 125
#define MAX_ENV 256
#define MAX_XFER 64
#define MIN_MEM_MIB 64
#define MAX_MEM_MIB (64ULL << 10)
#define MAX_DISK_MIB (1ULL << 20)
#define DEFAULT_BOOT_TIMEOUT_MS 120000
#define SNAPSHOT_TIMEOUT_MS 120000 /* pause + save, under the emulated host too */
/* Without --timeout: the steps before CMD (uploads, the EXEC request) and
 * those after it (vmstat, downloads, shutdown) each get this long in all. */
#define DEFAULT_STEP_TIMEOUT_S 300
/* --get: per file. Far above what an agent run hands back (logs, patches,
 * reports, a build artefact), far below a host disk; --get-max raises it. */
#define DEFAULT_GET_MAX (1ULL << 30)
#define MAX_GET_MAX (1ULL << 40)
#define VMSTAT_MAX 65536 /* /proc/vmstat is about 6 KiB on Linux 6.1 */
#define MIN_NET_RATE 4096ULL	 /* bytes/s: below a few frames a second nothing works */
#define MAX_NET_RATE (1ULL << 40)

struct xfer {
	char *local;
	char *remote;
};

struct run_opts {
	char image[PATH_MAX];
	char kernel[PATH_MAX];
	char initrd[PATH_MAX];
	char vmm[PATH_MAX];
	char netbin[PATH_MAX];
	const char *console;
	unsigned cpus;
	uint64_t mem_mib;
	uint64_t disk_mib;
	uint64_t timeout_s;
	const char *env[2 * MAX_ENV + 3]; /* defaults, the image's Env, then -e */
	unsigned nenv;
	const char *cwd;
	bool cwd_set, user_set;
	const char *user; /* USER[:GROUP] for the guest to resolve; NULL: root */
	struct xfer put[MAX_XFER];
	unsigned nput;
	struct xfer get[MAX_XFER];
	unsigned nget;
	uint64_t get_max;
	bool json;
	bool tty;
	unsigned cpu_pct;
	bool no_cgroup, no_jail, no_seccomp, test_hooks;
	const char *allow[NET_RULES_MAX];
	unsigned nallow;
	const char *audit;
	uint64_t net_rate, dns_rate;
	char **argv;
	const char *template_name; /* kiln template create: save the VM after CMD */
	const char *from_template; /* --template: restore this template instead of booting */
	char restore_dir[PATH_MAX];
	char auto_name[KILN_TEMPLATE_NAME_MAX + 1]; /* the machine's automatic template */
	unsigned machine_set;	    /* MACHINE_* given on the command line */
	bool cold;		    /* --cold: boot even when an automatic template exists */
};

/* Options a template fixes: they cannot be given with --template. */
enum { MACHINE_IMAGE = 1, MACHINE_CPUS = 2, MACHINE_MEM = 4, MACHINE_DISK = 8,
       MACHINE_KERNEL = 16, MACHINE_INITRD = 32 };

struct run_state {
	uint64_t out_bytes[3];
	uint64_t in_bytes;
	bool exited;
	int code;
	int signal;
	long long oom_kills; /* the guest's OOM kills while CMD ran (PROTO_CAP_OOM), -1: not told */
	int write_error;
	char sandbox_id[96]; /* the sandbox's identity (lib/sandbox.h), for --json */
	char hostname[64];
};

static volatile sig_atomic_t g_signal;
static int g_sigpipe[2] = { -1, -1 };
static uint64_t g_deadline; /* --timeout's, absolute; 0: none */
static char g_step[PATH_MAX + 64]; /* what kiln is doing with the agent, for messages */
static bool g_reported;		   /* the agent's failure was told already */

static void on_signal(int sig)
{
	int saved = errno;
	char c = 1;

	g_signal = sig;
	if (write(g_sigpipe[1], &c, 1) < 0) {
		/* the pipe is full: a wakeup is already pending */
	}
	errno = saved;
}

__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("kiln run: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return EXIT_USAGE;
}

static const char *g_self; /* kiln's argv[0], for the image dir */

/* Add K=V to o->env, replacing an entry with the same K. */
static int env_set(struct run_opts *o, const char *kv)
{
	size_t k = strcspn(kv, "=");

	for (unsigned i = 0; i < o->nenv; i++)
		if (!strncmp(o->env[i], kv, k) && o->env[i][k] == '=') {
			o->env[i] = kv;
			return 0;
		}
	if (o->nenv >= 2 * MAX_ENV + 2)
		return -1;
	o->env[o->nenv++] = kv;
	return 0;
}

/* An imported image's defaults under what the command line said: Env
 * under -e, WorkingDir under -w, User under --user, and its
 * Entrypoint + Cmd when no CMD was given. */
static int apply_image_config(struct run_opts *o, int argc, char **argv, int cmd_at)
{
	const char *user_env[MAX_ENV];
	unsigned nuser = 0, i;
	struct kiln_image_config c;
	char why[PATH_MAX + 128];

	if (kiln_image_config_load(o->image, &c, why, sizeof(why)))
		return usage_error("%s", why);
	for (i = 1; i < o->nenv; i++)
		user_env[nuser++] = o->env[i];
	o->nenv = 1;
	for (i = 0; c.env && c.env[i]; i++)
		if (env_set(o, c.env[i]))
			return usage_error("too many environment variables");
	for (i = 0; i < nuser; i++)
		if (env_set(o, user_env[i]))
			return usage_error("too many environment variables");
	o->env[o->nenv] = NULL;
	if (!o->cwd_set && c.workdir)
		o->cwd = c.workdir;
	else if (!o->cwd_set && o->user)
		o->cwd = NULL; /* the user's home (kiln-init), not root's */
	if (!o->user_set && c.user) {
		if (userdb_spec_ok(c.user))
			return usage_error("the image's User '%.64s' is not USER[:GROUP] (give --user)",
					   c.user);
		o->user = c.user;
	}
	if (cmd_at < argc) {
		o->argv = argv + cmd_at;
		return 0;
	}
	{
		size_t ne = 0, nc = 0, k = 0;
		char **v;

		while (c.entrypoint && c.entrypoint[ne])
			ne++;
		while (c.cmd && c.cmd[nc])
			nc++;
		if (ne + nc == 0)
			return usage_error("no command given (kiln run [OPTIONS] -- CMD [ARGS...])");
		v = calloc(ne + nc + 1, sizeof(*v));
		if (!v)
			return usage_error("out of memory");
		for (i = 0; i < ne; i++)
			v[k++] = c.entrypoint[i];
		for (i = 0; i < nc; i++)
			v[k++] = c.cmd[i];
		o->argv = v;
	}
	return 0;
}

static void print_help(void)
{
	puts("usage: kiln run [OPTIONS] -- CMD [ARGS...]\n"
	     "Boots a fresh microVM, runs CMD in it with this process's stdin, stdout and\n"
	     "stderr, destroys the VM and exits with CMD's status (128+N on signal N).\n"
	     "  --image NAME|PATH   base image: a name in the image dir (debian, tiny, imported ones:\n"
	     "                      kiln image ls) or a file. An imported image's Env, WorkingDir,\n"
	     "                      User and Entrypoint + Cmd (with no CMD) are the defaults\n"
	     "  --cpus N            vCPUs (1..32, default 1)\n"
	     "  --mem MiB           guest memory (64..65536, default 512)\n"
	     "  --disk MiB          writable scratch disk (0: in guest RAM; default 1024)\n"
	     "  --template NAME     restore the template NAME (kiln template ls) instead of booting:\n"
	     "                      its image, kernel, vCPUs, memory and disk; a fresh identity\n"
	     "  --cold              boot even when the machine has an automatic template (kiln\n"
	     "                      template create --auto): without --template or --cold, a run\n"
	     "                      restores that one when its kernel, image and machine match\n"
	     "  --timeout SEC       the whole run's deadline (boot to teardown): destroy the VM, exit 124\n"
	     "  -t, --tty           run CMD on a guest terminal of this terminal's size; a\n"
	     "                      terminal stdin goes raw (Ctrl-C reaches CMD) and comes back as\n"
	     "                      it was; window size changes follow\n"
	     "  -i, --interactive   accepted for -it: stdin always goes to CMD\n"
	     "  -e, --env K=V       environment for CMD (repeatable)\n"
	     "  -w, --workdir DIR   working directory for CMD (default /root)\n"
	     "  --user USER[:GROUP] run CMD as this user: names (the image's /etc/passwd and\n"
	     "                      /etc/group) or numbers (default root)\n"
	     "  --put LOCAL:REMOTE  upload a file before CMD runs (repeatable)\n"
	     "  --get REMOTE:LOCAL  download a file after CMD ends (repeatable)\n"
	     "  --get-max BYTES     largest --get file (suffix K, M, G, T: x1024; default 1G)\n"
	     "  --allow RULE        let the VM reach RULE (repeatable, docs/net.md): NAME, *.NAME,\n"
	     "                      IP or CIDR, then :PORT[,PORT...]; udp: for UDP; ;private\n"
	     "                      to let a name reach non-public addresses. Without --allow\n"
	     "                      the VM has no network device at all\n"
	     "  --audit FILE        append a JSON line per DNS answer and connection attempt\n"
	     "  --net-rate BYTES    bandwidth per direction in bytes/s (suffix K, M, G: x1024)\n"
	     "  --dns-rate N        DNS questions the VM may send upstream per second (default 100)\n"
	     "  --json              print a JSON result as the last line on stderr\n"
	     "  --console FILE      write the guest console to FILE (debugging)\n"
	     "  --cpu-quota PCT     host CPU for the VM in % of one CPU (default: 100 per vCPU)\n"
	     "  --no-cgroup         run without the VM's cgroup limits (hosts without cgroup v2)\n"
	     "  --no-jail, --no-seccomp  diagnosis only: the VMM and kiln-net unjailed / unfiltered\n"
	     "Exit status: CMD's; 124 timeout; 125 kiln failed; 2 bad usage; 130/143 interrupted.");
}

static int resolve_image(struct run_opts *o, const char *name, const char *dir)
{
	char idir[PATH_MAX];

	struct stat st;
	int n;

	if (strchr(name, '/') || (stat(name, &st) == 0 && S_ISREG(st.st_mode))) {
		n = snprintf(o->image, sizeof(o->image), "%s", name);
	} else {
		if (!kiln_image_name_ok(name))
			return usage_error("bad image name '%s' (a name is 1 to %d of [a-z0-9_-]; a path has a '/')",
					   name, KILN_IMAGE_NAME_MAX);
		(void)dir;
		kiln_image_dir(g_self, idir, sizeof(idir));
		n = snprintf(o->image, sizeof(o->image), "%s/%s.img", idir, name);
	}
	if (n < 0 || (size_t)n >= sizeof(o->image))
		return usage_error("image path too long: %s", name);
	if (stat(o->image, &st) < 0 || !S_ISREG(st.st_mode) || access(o->image, R_OK) < 0) {
		fprintf(stderr, "kiln run: unknown image '%s' (no readable file %s; `make image` builds debian, `make image-tiny` tiny, `kiln image import` others)\n",
			name, o->image);
		return EXIT_USAGE;
	}
	return 0;
}

static int parse_xfer(struct xfer *x, char *arg, bool put)
{
	char *colon = strchr(arg, ':');
	const char *remote;

	if (!colon || colon == arg || !colon[1])
		return usage_error(put ? "--put wants LOCAL:REMOTE, not '%s'" : "--get wants REMOTE:LOCAL, not '%s'",
				   arg);
	*colon = 0;
	x->local = put ? arg : colon + 1;
	x->remote = put ? colon + 1 : arg;
	remote = x->remote;
	if (remote[0] != '/' || strlen(remote) >= 4096)
		return usage_error("remote path '%s' must be absolute (and under 4096 bytes)", remote);
	if (put) {
		int fd = open(x->local, O_RDONLY | O_CLOEXEC);
		struct stat st;

		if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
			fprintf(stderr, "kiln run: cannot read --put file %s: %s\n", x->local,
				fd < 0 ? strerror(errno) : "not a regular file");
			if (fd >= 0)
				close(fd);
			return EXIT_USAGE;
		}
		close(fd);
	}
	return 0;
}

/* --get-max: BYTES with an optional K, M, G or T (1024-based), 1..MAX_GET_MAX. */
static int parse_get_max(const char *s, uint64_t *out)
{
	static const char units[] = "kmgt";
	size_t n = strspn(s, "0123456789");
	const char *u;
	unsigned shift = 0;
	char num[24];
	uint64_t v;

	if (n == 0 || n >= sizeof(num) || (s[n] && s[n + 1]))
		return -EINVAL;
	if (s[n]) {
		u = strchr(units, s[n] | 0x20);
		if (!u)
			return -EINVAL;
		shift = 10 * (unsigned)(u - units + 1);
	}
	memcpy(num, s, n);
	num[n] = 0;
	if (parse_u64(num, 1, MAX_GET_MAX >> shift, &v))
		return -ERANGE;
	*out = v << shift;
	return 0;
}

/* One --allow rule, checked as kiln-net will check it. */
static int add_allow(struct run_opts *o, const char *rule)
{
	struct net_rule r;
	char err[256];

	if (o->nallow >= NET_RULES_MAX)
		return usage_error("at most %d --allow rules", NET_RULES_MAX);
	if (net_rule_parse(rule, &r, err, sizeof(err))) {
		/* err is "rule 'TEXT': problem", TEXT made printable and cut short. */
		if (!strncmp(err, "rule ", 5))
			return usage_error("--allow %s", err + 5);
		return usage_error("--allow: %s", err);
	}
	o->allow[o->nallow++] = rule;
	return 0;
}

/* BYTES with an optional K, M or G (1024-based), MIN_NET_RATE..MAX_NET_RATE. */
static int parse_rate(const char *s, uint64_t *out)
{
	size_t n = strspn(s, "0123456789");
	unsigned shift = 0;
	char num[24];
	uint64_t v;

	if (n == 0 || n >= sizeof(num) || (s[n] && s[n + 1]))
		return -EINVAL;
	switch (s[n]) {
	case 0:
		break;
	case 'k':
	case 'K':
		shift = 10;
		break;
	case 'm':
	case 'M':
		shift = 20;
		break;
	case 'g':
	case 'G':
		shift = 30;
		break;
	default:
		return -EINVAL;
	}
	memcpy(num, s, n);
	num[n] = 0;
	if (parse_u64(num, 0, MAX_NET_RATE >> shift, &v) || (v << shift) < MIN_NET_RATE)
		return -ERANGE;
	*out = v << shift;
	return 0;
}

/* Network options make sense only together with --allow. */
static int check_net_opts(const struct run_opts *o)
{
	if (!o->nallow && (o->audit || o->net_rate || o->dns_rate))
		return usage_error("%s needs --allow (without --allow the VM has no network)",
				   o->audit ? "--audit" : o->net_rate ? "--net-rate" : "--dns-rate");
	if (o->nallow && access(o->netbin, X_OK) < 0)
		return usage_error("kiln-net %s is missing (make)", o->netbin);
	return 0;
}

static int take_template(struct run_opts *o, const char *dir, const char *name,
			 const struct kiln_template_info *t);

/*
 * --template NAME: the machine is the template's (its image, kernel,
 * initramfs, vCPUs, memory and disk), so none of those may be given; a
 * template whose kernel, initramfs or image changed since it was made is
 * refused, never restored with other code.
 */
static int use_template(struct run_opts *o)
{
	static const char *const names[] = { "--image", "--cpus", "--mem", "--disk", "--kernel",
					     "--initrd" };
	struct kiln_template_info t;
	char dir[PATH_MAX], why[512];

	for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (o->machine_set & (1u << i))
			return usage_error("%s cannot be used with --template (template '%s' fixes the image, kernel, vCPUs, memory and disk)",
					   names[i], o->from_template);
	if (kiln_template_dir(dir, sizeof(dir)))
		return usage_error("no template cache (set KILN_CACHE, XDG_CACHE_HOME or HOME)");
	if (kiln_template_info_load(dir, o->from_template, &t, why, sizeof(why))) {
		fprintf(stderr, "kiln run: %s\n", why);
		return EXIT_USAGE;
	}
	return take_template(o, dir, o->from_template, &t);
}

/* The machine of template name (t, in the cache dir; refused when stale)
 * becomes the run's. */
static int take_template(struct run_opts *o, const char *dir, const char *name,
			 const struct kiln_template_info *t)
{
	const struct kiln_template_file *files[3] = { &t->kernel, &t->initrd, &t->image };
	static const char *const what[3] = { "kernel", "initramfs", "image" };
	int n;

	for (unsigned i = 0; i < 3; i++)
		if (!kiln_template_file_current(files[i]))
			return usage_error("template '%s' is stale: its %s %s changed since it was made (kiln template rm %s, then create it again)",
					   name, what[i], files[i]->path, name);
	n = snprintf(o->restore_dir, sizeof(o->restore_dir), "%s/%s", dir, name);
	if (n < 0 || (size_t)n >= sizeof(o->restore_dir))
		return usage_error("the template cache's path is too long");
	snprintf(o->image, sizeof(o->image), "%s", t->image.path);
	snprintf(o->kernel, sizeof(o->kernel), "%s", t->kernel.path);
	snprintf(o->initrd, sizeof(o->initrd), "%s", t->initrd.path);
	o->cpus = t->cpus;
	o->mem_mib = t->mem_mib;
	o->disk_mib = t->disk_mib;
	return 0;
}

/*
 * Without --template or --cold: the machine's automatic template (kiln
 * template create --auto), when there is one and it is current, is restored
 * instead of a boot. Anything amiss (none, damaged, stale): a boot, silently.
 */
static void pick_auto(struct run_opts *o)
{
	struct kiln_template_info t;
	char dir[PATH_MAX], why[512];
	struct stat vmm;

	if (kiln_template_dir(dir, sizeof(dir)) ||
	    kiln_template_auto_name(o->kernel, o->initrd, o->image, o->cpus, o->mem_mib,
				    o->disk_mib, o->auto_name, sizeof(o->auto_name)) ||
	    kiln_template_info_load(dir, o->auto_name, &t, why, sizeof(why)) ||
	    t.cpus != o->cpus || t.mem_mib != o->mem_mib || t.disk_mib != o->disk_mib ||
	    !kiln_template_file_current(&t.kernel) || !kiln_template_file_current(&t.initrd) ||
	    !kiln_template_file_current(&t.image))
		return;
	/* A kiln-vmm built since may not read its state (format, devices):
	 * the automatic template is skipped, never a failed run. */
	if (stat(o->vmm, &vmm) < 0 || (int64_t)vmm.st_mtim.tv_sec > t.created)
		return;
	if (take_template(o, dir, o->auto_name, &t) == 0)
		o->from_template = o->auto_name;
}

static int parse_opts(struct run_opts *o, int argc, char **argv, const char *self)
{
	enum { O_IMAGE = 256, O_CPUS, O_MEM, O_DISK, O_TIMEOUT, O_USER, O_PUT, O_GET, O_JSON,
	       O_CONSOLE, O_KERNEL, O_INITRD, O_VMM, O_CPU_QUOTA, O_NO_CGROUP, O_NO_JAIL,
	       O_NO_SECCOMP, O_TEST_HOOKS, O_ALLOW, O_AUDIT, O_NET_RATE, O_DNS_RATE, O_NETBIN,
	       O_TEMPLATE, O_COLD };
	enum { O_GET_MAX = 512 };
	static const struct option opts[] = {
		{ "image", required_argument, NULL, O_IMAGE },
		{ "cpus", required_argument, NULL, O_CPUS },
		{ "mem", required_argument, NULL, O_MEM },
		{ "disk", required_argument, NULL, O_DISK },
		{ "timeout", required_argument, NULL, O_TIMEOUT },
		{ "env", required_argument, NULL, 'e' },
		{ "workdir", required_argument, NULL, 'w' },
		{ "tty", no_argument, NULL, 't' },
		{ "interactive", no_argument, NULL, 'i' },
		{ "user", required_argument, NULL, O_USER },
		{ "put", required_argument, NULL, O_PUT },
		{ "get", required_argument, NULL, O_GET },
		{ "get-max", required_argument, NULL, O_GET_MAX },
		{ "json", no_argument, NULL, O_JSON },
		{ "console", required_argument, NULL, O_CONSOLE },
		{ "kernel", required_argument, NULL, O_KERNEL },
		{ "initrd", required_argument, NULL, O_INITRD },
		{ "vmm", required_argument, NULL, O_VMM },
		{ "cpu-quota", required_argument, NULL, O_CPU_QUOTA },
		{ "no-cgroup", no_argument, NULL, O_NO_CGROUP },
		{ "no-jail", no_argument, NULL, O_NO_JAIL },
		{ "no-seccomp", no_argument, NULL, O_NO_SECCOMP },
		{ "test-hooks", no_argument, NULL, O_TEST_HOOKS },
		{ "allow", required_argument, NULL, O_ALLOW },
		{ "audit", required_argument, NULL, O_AUDIT },
		{ "net-rate", required_argument, NULL, O_NET_RATE },
		{ "dns-rate", required_argument, NULL, O_DNS_RATE },
		{ "kiln-net", required_argument, NULL, O_NETBIN },
		{ "template", required_argument, NULL, O_TEMPLATE },
		{ "cold", no_argument, NULL, O_COLD },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *image = getenv("KILN_IMAGE") ? getenv("KILN_IMAGE") : "debian";
	char dir[PATH_MAX];
	uint64_t v;
	int opt, r;

	g_self = self;
	exe_dir(self, dir, sizeof(dir));
	o->cpus = 1;
	o->mem_mib = 512;
	o->disk_mib = 1024;
	o->get_max = DEFAULT_GET_MAX;
	o->cwd = "/root";
	snprintf(o->kernel, sizeof(o->kernel), "%s/guest/vmlinux", dir);
	snprintf(o->initrd, sizeof(o->initrd), "%s/guest/kiln-initrd.cpio", dir);
	snprintf(o->vmm, sizeof(o->vmm), "%s/kiln-vmm", dir);
	snprintf(o->netbin, sizeof(o->netbin), "%s/kiln-net", dir);
	o->env[o->nenv++] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

	optind = 1;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "+:e:w:hti", opts, NULL)) != -1) {
		switch (opt) {
		case 't':
			o->tty = true;
			break;
		case 'i':
			break; /* stdin always goes to CMD */
		case O_IMAGE:
			image = optarg;
			o->machine_set |= MACHINE_IMAGE;
			break;
		case O_CPUS:
			if (parse_u64(optarg, 1, 32, &v))
				return usage_error("--cpus must be from 1 to 32, not '%s'", optarg);
			o->cpus = (unsigned)v;
			o->machine_set |= MACHINE_CPUS;
			break;
		case O_MEM:
			if (parse_u64(optarg, 0, MAX_MEM_MIB, &v))
				return usage_error("--mem must be a size in MiB (64..65536), not '%s'", optarg);
			if (v < MIN_MEM_MIB) {
				fprintf(stderr, "kiln run: --mem %llu MiB is less than the %d MiB a kiln guest needs to boot\n",
					(unsigned long long)v, MIN_MEM_MIB);
				return EXIT_USAGE;
			}
			o->mem_mib = v;
			o->machine_set |= MACHINE_MEM;
			break;
		case O_DISK:
			if (parse_u64(optarg, 0, MAX_DISK_MIB, &v) || (v && v < 16))
				return usage_error("--disk must be 0 or a size in MiB from 16 to 1048576, not '%s'", optarg);
			o->disk_mib = v;
			o->machine_set |= MACHINE_DISK;
			break;
		case O_TIMEOUT:
			if (parse_u64(optarg, 1, 7 * 24 * 3600, &v))
				return usage_error("--timeout must be a whole number of seconds (1..604800), not '%s'",
						   optarg);
			o->timeout_s = v;
			break;
		case 'e':
			if (!strchr(optarg, '=') || optarg[0] == '=' || strlen(optarg) > 65536)
				return usage_error("-e wants K=V, not '%s'", optarg);
			if (o->nenv >= MAX_ENV)
				return usage_error("too many -e variables (at most %d)", MAX_ENV - 2);
			o->env[o->nenv++] = optarg;
			break;
		case 'w':
			if (optarg[0] != '/' || strlen(optarg) >= 4096)
				return usage_error("-w wants an absolute directory, not '%s'", optarg);
			o->cwd = optarg;
			o->cwd_set = true;
			break;
		case O_USER:
			if (userdb_spec_ok(optarg))
				return usage_error("--user wants USER[:GROUP] (names or numbers, at most %u bytes), not '%s'",
						   USERDB_SPEC_MAX, optarg);
			o->user_set = true;
			o->user = optarg;
			break;
		case O_PUT:
		case O_GET:
			if ((opt == O_PUT ? o->nput : o->nget) >= MAX_XFER)
				return usage_error("at most 64 %s", opt == O_PUT ? "--put" : "--get");
			r = parse_xfer(opt == O_PUT ? &o->put[o->nput] : &o->get[o->nget], optarg,
				       opt == O_PUT);
			if (r)
				return r;
			if (opt == O_PUT)
				o->nput++;
			else
				o->nget++;
			break;
		case O_GET_MAX:
			if (parse_get_max(optarg, &o->get_max))
				return usage_error("--get-max must be bytes from 1 to 1T (suffix K, M, G or T: x1024), not '%s'",
						   optarg);
			break;
		case O_JSON:
			o->json = true;
			break;
		case O_CONSOLE:
			o->console = optarg;
			break;
		case O_KERNEL:
		case O_INITRD:
		case O_VMM:
			snprintf(opt == O_KERNEL ? o->kernel : opt == O_INITRD ? o->initrd : o->vmm,
				 PATH_MAX, "%s", optarg);
			o->machine_set |= opt == O_KERNEL ? MACHINE_KERNEL
					: opt == O_INITRD ? MACHINE_INITRD : 0;
			break;
		case O_TEMPLATE:
			if (!kiln_template_name_ok(optarg))
				return usage_error("bad template name '%s' (1 to %d of [a-z0-9_-])", optarg,
						   KILN_TEMPLATE_NAME_MAX);
			o->from_template = optarg;
			break;
		case O_COLD:
			o->cold = true;
			break;
		case O_CPU_QUOTA:
			if (parse_u64(optarg, 1, 100ULL * 1024, &v))
				return usage_error("--cpu-quota must be a percentage of one CPU from 1 to 102400, not '%s'",
						   optarg);
			o->cpu_pct = (unsigned)v;
			break;
		case O_NO_CGROUP:
			o->no_cgroup = true;
			break;
		case O_NO_JAIL:
			o->no_jail = true;
			break;
		case O_NO_SECCOMP:
			o->no_seccomp = true;
			break;
		case O_TEST_HOOKS:
			o->test_hooks = true;
			break;
		case O_ALLOW:
			r = add_allow(o, optarg);
			if (r)
				return r;
			break;
		case O_AUDIT:
			if (!optarg[0])
				return usage_error("--audit wants a file name");
			o->audit = optarg;
			break;
		case O_NET_RATE:
			if (parse_rate(optarg, &o->net_rate))
				return usage_error("--net-rate must be bytes per second from 4K to 1024G (suffix K, M or G: x1024), not '%s'",
						   optarg);
			break;
		case O_DNS_RATE:
			if (parse_u64(optarg, 1, NET_DNS_RATE_MAX, &o->dns_rate))
				return usage_error("--dns-rate must be questions per second from 1 to %d, not '%s'",
						   NET_DNS_RATE_MAX, optarg);
			break;
		case O_NETBIN:
			snprintf(o->netbin, sizeof(o->netbin), "%s", optarg);
			break;
		case 'h':
			print_help();
			return -1;
		case ':':
			return usage_error("option %s needs a value", argv[optind - 1]);
		default:
			return usage_error("unknown option '%s' (see kiln run --help)", argv[optind - 1]);
		}
	}
	o->env[o->nenv] = NULL;
	r = o->from_template ? use_template(o) : resolve_image(o, image, dir);
	if (r)
		return r;
	r = apply_image_config(o, argc, argv, optind);
	if (r)
		return r;
	if (access(o->kernel, R_OK) < 0)
		return usage_error("guest kernel %s is missing (make kernel)", o->kernel);
	if (access(o->initrd, R_OK) < 0)
		return usage_error("guest initramfs %s is missing (make)", o->initrd);
	if (access(o->vmm, X_OK) < 0)
		return usage_error("kiln-vmm %s is missing (make)", o->vmm);
	if (o->from_template && o->template_name)
		return usage_error("kiln template create makes a template from a boot: no --template");
	if (o->template_name && !strcmp(o->template_name, KILN_TEMPLATE_AUTO)) {
		/* What every later plain run of this machine starts from: a clean boot. */
		if (o->nput)
			return usage_error("kiln template create --auto takes no --put (every run of this machine would get the files)");
		/* A bare CMD (no "--" before it) is a warm-up too. */
		if (!o->argv || !o->argv[0] || strcmp(o->argv[0], "true") || o->argv[1])
			return usage_error("kiln template create --auto: an automatic template has no warm-up command");
		if (kiln_template_auto_name(o->kernel, o->initrd, o->image, o->cpus, o->mem_mib,
					    o->disk_mib, o->auto_name, sizeof(o->auto_name)))
			return usage_error("cannot name the automatic template (kernel, initramfs or image unreadable)");
		o->template_name = o->auto_name;
	} else if (!o->template_name && !o->from_template && !o->cold && !o->nallow) {
		pick_auto(o);
	}
	if (o->from_template && o->nallow)
		return usage_error("--allow cannot be used with --template: a template has no network device");
	/* A template holds no open connections: no network, no terminal. */
	if (o->template_name && (o->nallow || o->tty))
		return usage_error("kiln template create takes no %s (a template has %s)",
				   o->nallow ? "--allow" : "--tty",
				   o->nallow ? "no network device" : "no terminal");
	return check_net_opts(o);
}

/* The audit file, appended to; a regular file only (kiln-net must never
 * block on it). -1 and a usage error on failure. */
static int open_audit(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0600);
	struct stat st;

	if (fd < 0) {
		usage_error("cannot open --audit file %s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		usage_error("--audit file %s is not a regular file", path);
		close(fd);
		return -1;
	}
	fcntl(fd, F_SETFL, O_APPEND);
	return fd;
}

static bool timed_out(void)
{
	return g_deadline && now_ns() >= g_deadline;
}

/* Signals and --timeout win over everything: a step that fails because of
 * them says nothing of its own. */
static bool stopping(void)
{
	return g_signal || timed_out();
}

static int on_output(void *ctx, uint32_t id, int stream, const void *buf, size_t len)
{
	struct run_state *st = ctx;
	int fd = stream == 2 ? STDERR_FILENO : STDOUT_FILENO;
	const char *p = buf;

	st->out_bytes[stream == 2 ? 2 : 1] += len;
	/* Blocking write: a slow reader slows the guest process down (back-pressure).
	 * A signal or the --timeout alarm interrupts it (no SA_RESTART). */
	while (len && !st->write_error) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR && !stopping())
			continue;
		if (n < 0) {
			st->write_error = errno == EINTR ? -EINTR : -errno;
			break;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static void on_exit_cb(void *ctx, uint32_t id, const struct kiln_exit *e)
{
	struct run_state *st = ctx;

	st->exited = true;
	st->code = e->code;
	st->signal = e->signal;
	st->oom_kills = e->oom_kills;
}

/* The guest kernel's OOM kill counter, from /proc/vmstat, read into a small
 * buffer (more than VMSTAT_MAX bytes is -EFBIG). 0, or -errno. */
static int guest_oom_kills(struct kiln_agent *a, long long *kills)
{
	char buf[VMSTAT_MAX + 1];
	const char *p;
	size_t len = 0;
	char *end;
	int ret;

	*kills = -1;
	snprintf(g_step, sizeof(g_step), "reading /proc/vmstat");
	ret = kiln_agent_get_buf(a, "/proc/vmstat", buf, VMSTAT_MAX, &len);
	if (ret)
		return ret;
	buf[len] = 0;
	p = strstr(buf, "\noom_kill ");
	if (p) {
		long long v = strtoll(p + 10, &end, 10);

		if (end != p + 10 && v >= 0 && (*end == '\n' || !*end))
			*kills = v;
	}
	return 0;
}

/* An agent error that ends the connection (the rest of the steps are moot). */
static bool agent_broken(const struct kiln_agent *a)
{
	return kiln_agent_status(a) != 0;
}

static const char *agent_why(const struct kiln_agent *a, int err)
{
	return kiln_agent_error(a)[0] ? kiln_agent_error(a) : strerror(-err);
}

/*
 * The owner of --put files when --user (or the image's User) names one: the
 * same lookup kiln-init makes for CMD (src/common/userdb.c), over the
 * image's /etc/passwd and /etc/group read from the guest (bounded, untrusted).
 * -ESRCH with the reason on stderr when the image has no such user.
 */
static int put_owner(struct kiln_agent *a, const struct run_opts *o, uint32_t *uid, uint32_t *gid)
{
	static const char *const files[2] = { "/etc/passwd", "/etc/group" };
	char *buf[2] = { NULL, NULL }, why[512];
	size_t len[2] = { 0, 0 };
	struct userdb_ids *ids = NULL;
	int ret = -ENOMEM;

	*uid = *gid = 0;
	if (!o->user)
		return 0;
	ids = malloc(sizeof(*ids));
	if (!ids)
		goto out;
	for (int i = 0; i < 2; i++) {
		buf[i] = malloc(USERDB_FILE_MAX + 1);
		if (!buf[i])
			goto out;
		snprintf(g_step, sizeof(g_step), "reading %s", files[i]);
		ret = kiln_agent_get_buf(a, files[i], buf[i], USERDB_FILE_MAX, &len[i]);
		if (ret == -ENOENT) {
			free(buf[i]);
			buf[i] = NULL;
			len[i] = 0;
		} else if (ret) {
			if (!stopping() && !agent_broken(a))
				fprintf(stderr, "kiln run: cannot read the image's %s: %s\n", files[i],
					agent_why(a, ret));
			ret = agent_broken(a) ? ret : -ESRCH;
			goto out;
		}
	}
	ret = userdb_resolve(o->user, buf[0], len[0], buf[1], len[1], ids, why, sizeof(why));
	if (ret) {
		fprintf(stderr, "kiln run: cannot run %s: %s\n", o->argv[0], why);
		ret = -ESRCH;
		goto out;
	}
	*uid = ids->uid;
	*gid = ids->gid;
out:
	free(buf[0]);
	free(buf[1]);
	free(ids);
	return ret;
}

static int do_puts(struct kiln_agent *a, const struct run_opts *o, uint32_t uid, uint32_t gid,
		   uint64_t *bytes)
{
	for (unsigned i = 0; i < o->nput; i++) {
		struct kiln_put_opts po = { .mode = 0644, .uid = uid, .gid = gid, .parents = true };
		struct stat st;
		uint64_t n = 0;
		int fd = open(o->put[i].local, O_RDONLY | O_CLOEXEC), ret;

		if (fd < 0) {
			fprintf(stderr, "kiln run: cannot read --put file %s: %s\n", o->put[i].local,
				strerror(errno));
			return -errno;
		}
		if (fstat(fd, &st) == 0)
			po.mode = st.st_mode & 0777;
		snprintf(g_step, sizeof(g_step), "uploading %s", o->put[i].remote);
		ret = kiln_agent_put(a, fd, o->put[i].remote, &po, &n);
		close(fd);
		if (ret) {
			if (!stopping() && !agent_broken(a))
				fprintf(stderr, "kiln run: cannot upload %s to %s: %s\n", o->put[i].local,
					o->put[i].remote, agent_why(a, ret));
			return ret;
		}
		*bytes += n;
	}
	return 0;
}

/* One --get: written beside the target, renamed when complete; on any
 * failure (the guest's error, more than --get-max, the deadline, a signal)
 * the partial file is removed. */
static int do_get(struct kiln_agent *a, const struct run_opts *o, const struct xfer *x,
		  uint64_t *bytes)
{
	char tmp[PATH_MAX];
	uint64_t n = 0;
	int fd, ret;

	if (snprintf(tmp, sizeof(tmp), "%s.kiln-XXXXXX", x->local) >= (int)sizeof(tmp)) {
		fprintf(stderr, "kiln run: cannot write %s: %s\n", x->local, strerror(ENAMETOOLONG));
		return -ENAMETOOLONG;
	}
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		fprintf(stderr, "kiln run: cannot write %s: %s\n", x->local, strerror(errno));
		return ret;
	}
	snprintf(g_step, sizeof(g_step), "downloading %s", x->remote);
	ret = kiln_agent_get(a, x->remote, fd, o->get_max, &n);
	if (ret == 0 && fchmod(fd, 0644) < 0)
		ret = -errno;
	if (close(fd) < 0 && !ret)
		ret = -errno;
	if (!ret && rename(tmp, x->local) < 0) {
		ret = -errno;
		fprintf(stderr, "kiln run: cannot write %s: %s\n", x->local, strerror(errno));
	} else if (ret == -EFBIG) {
		fprintf(stderr, "kiln run: cannot download %s: the guest sent more than --get-max %llu bytes; nothing was written\n",
			x->remote, (unsigned long long)o->get_max);
		g_reported = true;
	} else if (ret && !stopping() && !agent_broken(a)) {
		fprintf(stderr, "kiln run: cannot download %s: %s\n", x->remote, agent_why(a, ret));
	}
	if (ret)
		unlink(tmp);
	else
		*bytes += n;
	return ret;
}

static int do_gets(struct kiln_agent *a, const struct run_opts *o, uint64_t *bytes)
{
	int failed = 0;

	for (unsigned i = 0; i < o->nget && !agent_broken(a); i++) {
		int ret = do_get(a, o, &o->get[i], bytes);

		if (ret && !failed)
			failed = ret;
	}
	return failed;
}

/* "net": kiln-net's counters, or null when it reported none. */
static json_t *net_json(const struct kiln_net_stats *ns)
{
	if (!ns)
		return json_null();
	return json_pack("{s:I, s:I, s:I, s:I, s:I}", "allowed", (json_int_t)ns->allowed,
			 "blocked", (json_int_t)ns->blocked, "dns_queries", (json_int_t)ns->dns_queries,
			 "bytes_up", (json_int_t)ns->bytes_up, "bytes_down", (json_int_t)ns->bytes_down);
}

static void print_json(const struct run_opts *o, const struct run_state *st, int status,
		       const char *limit, const struct kiln_sandbox_times *t, uint64_t exec_ns,
		       uint64_t teardown_ns, uint64_t total_ns, uint64_t put_bytes, uint64_t get_bytes,
		       long long oom, const struct kiln_net_stats *ns)
{
	json_t *j = json_pack("{s:i, s:o, s:o, s:o, s:{s:f, s:f, s:f, s:f, s:f, s:f, s:f}, s:{s:I, s:I, s:I, s:I, s:I}, s:{s:i, s:I, s:I, s:s}}",
			      "exit_status", status,
			      "exit_code", st->exited && st->signal == 0 ? json_integer(st->code) : json_null(),
			      "signal", st->exited && st->signal ? json_integer(st->signal) : json_null(),
			      "limit_hit", limit ? json_string(limit) : json_null(),
			      "durations_ms",
			      "boot", t->boot_ns / 1e6, "guest_boot", t->guest_boot_ns / 1e6,
			      "spawn", t->spawn_ns / 1e6, "ready", t->ready_ns / 1e6,
			      "exec", exec_ns / 1e6, "teardown", teardown_ns / 1e6, "total", total_ns / 1e6,
			      "bytes",
			      "stdin", (json_int_t)st->in_bytes, "stdout", (json_int_t)st->out_bytes[1],
			      "stderr", (json_int_t)st->out_bytes[2], "put", (json_int_t)put_bytes,
			      "get", (json_int_t)get_bytes,
			      "vm", "cpus", (int)o->cpus, "mem_mib", (json_int_t)o->mem_mib,
			      "disk_mib", (json_int_t)o->disk_mib, "image", o->image);
	/* Restored from a template (which one), or booted (null). */
	if (j)
		json_object_set_new(json_object_get(j, "vm"), "template",
				    o->from_template ? json_string(o->from_template) : json_null());
	char *s;

	if (!j)
		return;
	if (oom >= 0)
		json_object_set_new(j, "guest_oom_kills", json_integer(oom));
	if (o->nallow)
		json_object_set_new(j, "net", net_json(ns));
	json_object_set_new(j, "sandbox_id", json_string(st->sandbox_id));
	json_object_set_new(j, "hostname", json_string(st->hostname));
	json_object_set_new(json_object_get(j, "durations_ms"), "vmm_walls",
			    json_real(t->walls_ns / 1e6));
	s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(6));
	if (s)
		fprintf(stderr, "%s\n", s);
	free(s);
	json_decref(j);
}

/* At the end: kiln-net's counters, and its failure if not reported yet. */
static void net_finish(struct kiln_sandbox *sb, bool reported, int *status,
		       struct kiln_net_stats *ns, bool *have_ns)
{
	char why[512];

	*have_ns = kiln_sandbox_net_stats(sb, ns) == 0;
	if (reported || !kiln_sandbox_net_exit(sb, why, sizeof(why)))
		return;
	fprintf(stderr, "kiln run: the network process (kiln-net) failed: %s\n", why);
	if (*status == 0)
		*status = EXIT_KILN;
}

static void on_alarm(int sig)
{
	/* Only to interrupt a blocking write to stdout at the --timeout deadline. */
}

static int setup_signals(void)
{
	struct sigaction sa;

	if (pipe2(g_sigpipe, O_CLOEXEC | O_NONBLOCK) < 0)
		return -errno;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal; /* no SA_RESTART: waits wake up */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sa.sa_handler = on_alarm;
	sigaction(SIGALRM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

/* SIGALRM at the deadline (and every 100 ms after it, in case the first one
 * came between a check and a blocking write). */
static void arm_alarm(uint64_t deadline)
{
	struct itimerval it = { .it_interval = { 0, 100000 } };
	uint64_t now = now_ns(), left = deadline > now ? deadline - now : 1000;

	it.it_value.tv_sec = (time_t)(left / 1000000000ULL);
	it.it_value.tv_usec = (suseconds_t)(left % 1000000000ULL / 1000) + 1;
	setitimer(ITIMER_REAL, &it, NULL);
}

/* The deadline of a step: --timeout's, or without it DEFAULT_STEP_TIMEOUT_S from now. */
static uint64_t step_deadline(void)
{
	return g_deadline ? g_deadline : now_ns() + DEFAULT_STEP_TIMEOUT_S * 1000000000ULL;
}

/* Why the agent connection broke, once (signals and --timeout are told by
 * the caller). */
static void report_agent(struct kiln_agent *a)
{
	int err = kiln_agent_status(a);

	if (g_reported)
		return;
	if (err == -ETIMEDOUT)
		fprintf(stderr, "kiln run: the guest agent did not finish %s within %d s; the microVM was destroyed\n",
			g_step, DEFAULT_STEP_TIMEOUT_S);
	else if (err == -EFBIG)
		fprintf(stderr, "kiln run: the guest agent sent more than kiln accepts while %s; the microVM was destroyed\n",
			g_step);
	else
		fprintf(stderr, "kiln run: lost the guest agent while %s: %s; the microVM was destroyed\n",
			g_step, agent_why(a, err));
}

/* No SIGALRM during the teardown: it would cut short waits and messages. */
static void disarm_alarm(void)
{
	struct itimerval it = { 0 };

	setitimer(ITIMER_REAL, &it, NULL);
}

/*
 * kiln template create: the VM CMD ran in, saved as a template
 * (kiln_template_save), then killed (it is paused). The status to exit with.
 */
static int save_template(struct kiln_sandbox *sb, const struct run_opts *o,
			 const struct kiln_sandbox_times *times)
{
	struct kiln_template_info info;
	char dir[PATH_MAX], err[512];
	uint64_t disk_bytes = 0;
	int ret;

	memset(&info, 0, sizeof(info));
	if (kiln_template_dir(dir, sizeof(dir))) {
		kiln_sandbox_kill(sb);
		fprintf(stderr, "kiln template create: no template cache (set KILN_CACHE, XDG_CACHE_HOME or HOME)\n");
		return EXIT_KILN;
	}
	snprintf(info.name, sizeof(info.name), "%s", o->template_name);
	snprintf(info.kernel.path, sizeof(info.kernel.path), "%s", o->kernel);
	snprintf(info.initrd.path, sizeof(info.initrd.path), "%s", o->initrd);
	snprintf(info.image.path, sizeof(info.image.path), "%s", o->image);
	info.cpus = o->cpus;
	info.mem_mib = o->mem_mib;
	info.disk_mib = o->disk_mib;
	info.boot_ms = times->boot_ns / 1000000ULL;
	for (char **a = o->argv; *a; a++) {
		size_t n = strlen(info.warmup);

		snprintf(info.warmup + n, sizeof(info.warmup) - n, "%s%s", n ? " " : "", *a);
	}
	ret = kiln_template_save(sb, dir, &info, SNAPSHOT_TIMEOUT_MS, &disk_bytes, err, sizeof(err));
	kiln_sandbox_kill(sb);
	if (g_signal)
		return EXIT_KILN; /* the caller reports it */
	if (ret) {
		fprintf(stderr, "kiln template create: %s\n", err);
		return EXIT_KILN;
	}
	fprintf(stderr, "kiln template create: saved '%s' in %s/%s: state %llu bytes, RAM %llu MiB (%.1f MiB not zero), %.1f MiB on disk; booted in %llu ms, saved in %llu ms\n",
		info.name, dir, info.name, (unsigned long long)info.state_bytes,
		(unsigned long long)info.mem_mib, (double)info.ram_bytes / 1048576.0,
		(double)disk_bytes / 1048576.0, (unsigned long long)info.boot_ms,
		(unsigned long long)info.snapshot_ms);
	return 0;
}

static int run_main(int argc, char **argv, const char *self, const char *template_name)
{
	static struct run_opts o;
	struct run_state st = { 0 };
	struct kiln_sandbox *sb = NULL;
	struct kiln_sandbox_config cfg;
	struct kiln_sandbox_times times = { 0 };
	struct kiln_exec_spec spec;
	struct kiln_exec_ops ops = { on_output, on_exit_cb };
	struct kiln_net_config net;
	struct kiln_net_stats ns = { 0 };
	struct kiln_agent *a;
	uint64_t t_start = now_ns(), t_exec = 0, t_exec_end = 0, t_down = 0;
	uint64_t put_bytes = 0, get_bytes = 0;
	long long oom_before = -1, oom_after = -1, oom = -1;
	const char *limit = NULL;
	bool stdin_open = true, net_down = false, have_ns = false, oom_told = false;
	int conn_err = 0, audit_fd = -1, winch_fd = -1;
	uint32_t id = 0;
	char err[512];
	int status = EXIT_KILN, ret;

	o.template_name = template_name;
	ret = parse_opts(&o, argc, argv, self);
	if (ret)
		return ret < 0 ? 0 : ret;
	if (setup_signals()) {
		fprintf(stderr, "kiln run: cannot set up signal handling\n");
		return EXIT_KILN;
	}
	kiln_sandbox_sweep();
	/* Orphaned VMMs (their jail's waiter killed first) come back to us. */
	prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
	if (o.no_cgroup)
		fprintf(stderr, "kiln run: warning: --no-cgroup: the VM's CPU, memory and task limits are off\n");
	if (o.no_jail)
		fprintf(stderr, "kiln run: warning: --no-jail: %s unjailed (diagnosis only)\n",
			o.nallow ? "the VMM and kiln-net run" : "the VMM runs");
	if (o.no_seccomp)
		fprintf(stderr, "kiln run: warning: --no-seccomp: %s without seccomp filters (diagnosis only)\n",
			o.nallow ? "the VMM and kiln-net run" : "the VMM runs");
	if (o.audit && (audit_fd = open_audit(o.audit)) < 0)
		return EXIT_USAGE;
	if (o.timeout_s) {
		g_deadline = t_start + o.timeout_s * 1000000000ULL;
		arm_alarm(g_deadline);
	}

	memset(&cfg, 0, sizeof(cfg));
	cfg.vmm = o.vmm;
	cfg.kernel = o.kernel;
	cfg.initrd = o.initrd;
	cfg.image = o.image;
	cfg.cpus = o.cpus;
	cfg.mem_mib = o.mem_mib;
	cfg.disk_mib = o.disk_mib;
	cfg.console = o.console;
	cfg.boot_timeout_ms = DEFAULT_BOOT_TIMEOUT_MS;
	if (o.timeout_s && o.timeout_s * 1000 < (uint64_t)cfg.boot_timeout_ms)
		cfg.boot_timeout_ms = (int)(o.timeout_s * 1000);
	cfg.cancel_fd = g_sigpipe[0];
	cfg.cpu_pct = o.cpu_pct;
	cfg.no_cgroup = o.no_cgroup;
	cfg.no_jail = o.no_jail;
	cfg.no_seccomp = o.no_seccomp;
	cfg.test_hooks = o.test_hooks;
	cfg.restore_dir = o.from_template ? o.restore_dir : NULL;
	if (o.nallow) {
		net = (struct kiln_net_config){ .bin = o.netbin, .rules = o.allow, .nrules = o.nallow,
						.audit_fd = audit_fd, .rate = o.net_rate,
						.dns_rate = o.dns_rate };
		cfg.net = &net;
	}
	ret = kiln_sandbox_create(&sb, &cfg, err, sizeof(err));
	/* The machine's automatic template is a shortcut, never a reason to
	 * fail: a restore it refuses (another host CPU sharing the cache, a
	 * damaged file) is said once, then the run boots. */
	if (ret && o.from_template && o.from_template == o.auto_name && !g_signal &&
	    !(ret == -ETIMEDOUT && timed_out())) {
		fprintf(stderr, "kiln run: automatic template %s not restored (%s); booting\n",
			o.auto_name, err);
		o.from_template = NULL;
		cfg.restore_dir = NULL;
		ret = kiln_sandbox_create(&sb, &cfg, err, sizeof(err));
	}
	if (audit_fd >= 0)
		close(audit_fd); /* kiln-net has its own */
	if (ret) {
		if (g_signal) {
			fprintf(stderr, "kiln run: interrupted by %s while booting; the microVM was destroyed\n",
				strsignal(g_signal));
			return 128 + g_signal;
		}
		if (ret == -ETIMEDOUT && timed_out()) {
			fprintf(stderr, "kiln run: timed out after %llu s while booting; the microVM was destroyed\n",
				(unsigned long long)o.timeout_s);
			return EXIT_TIMEOUT;
		}
		fprintf(stderr, "kiln run: %s\n", err);
		return EXIT_KILN;
	}
	kiln_sandbox_times(sb, &times);
	snprintf(st.sandbox_id, sizeof(st.sandbox_id), "%s", kiln_sandbox_id(sb));
	snprintf(st.hostname, sizeof(st.hostname), "%s", kiln_sandbox_hostname(sb));
	a = kiln_sandbox_agent(sb);

	/* Before CMD: uploads, the OOM counter, the EXEC request. */
	kiln_sandbox_set_deadline(sb, step_deadline());
	if (o.nput) {
		uint32_t uid, gid;

		ret = put_owner(a, &o, &uid, &gid);
		if (ret == -ESRCH) {
			status = 126; /* as when the guest refuses the user for CMD */
			goto out;
		}
		if (ret || do_puts(a, &o, uid, gid, &put_bytes))
			goto stop;
	}
	/* An agent that tells the OOM kills with the exit costs no round trip. */
	oom_told = kiln_agent_caps(a) & PROTO_CAP_OOM;
	if (!oom_told && guest_oom_kills(a, &oom_before) && agent_broken(a))
		goto stop;

	memset(&spec, 0, sizeof(spec));
	spec.argv = (const char *const *)o.argv;
	spec.envp = o.env;
	spec.cwd = o.cwd;
	spec.user = o.user;
	spec.stdin = true;
	spec.pty = o.tty;
	if (o.tty)
		tty_size(&spec.rows, &spec.cols);
	t_exec = now_ns();
	snprintf(g_step, sizeof(g_step), "starting %s", o.argv[0]);
	ret = kiln_agent_exec(a, &spec, &ops, &st, &id);
	if (ret) {
		if (agent_broken(a))
			goto stop;
		fprintf(stderr, "kiln run: cannot run %s: %s\n", o.argv[0], agent_why(a, ret));
		/* A shell's 127 and 126; a user the image does not have cannot run it either. */
		status = ret == -ENOENT ? 127 : ret == -EACCES || ret == -ESRCH ? 126 : EXIT_KILN;
		goto out;
	}
	/* CMD runs as long as it likes unless --timeout says otherwise. No
	 * periodic wake-up: stdin room is recomputed after every agent frame. */
	kiln_sandbox_set_deadline(sb, g_deadline);
	snprintf(g_step, sizeof(g_step), "running %s", o.argv[0]);
	if (o.tty) {
		winch_fd = tty_winch_fd();
		ret = tty_raw();
		if (ret)
			fprintf(stderr, "kiln run: warning: cannot put the terminal in raw mode: %s\n",
				strerror(-ret));
	}
	while (!st.exited && !stopping()) {
		size_t room = stdin_open ? kiln_agent_stdin_room(a, id) : 0;
		struct pollfd p[5] = {
			{ .fd = kiln_agent_fd(a), .events = POLLIN },
			{ .fd = room ? STDIN_FILENO : -1, .events = POLLIN },
			{ .fd = g_sigpipe[0], .events = POLLIN },
			{ .fd = kiln_sandbox_net_fd(sb), .events = POLLIN },
			{ .fd = winch_fd, .events = POLLIN },
		};
		int wait_ms = -1;

		if (g_deadline) {
			uint64_t now = now_ns();

			wait_ms = now >= g_deadline ? 0 : (int)((g_deadline - now) / 1000000ULL) + 1;
		}
		if (poll(p, 5, wait_ms) < 0 && errno != EINTR)
			break;
		if (g_signal || p[3].revents || timed_out())
			break;
		/* Before this round's stdin: keys typed after a resize see the new size. */
		if (winch_fd >= 0 && tty_winch_take()) {
			unsigned rows, cols;

			tty_size(&rows, &cols);
			ret = kiln_agent_resize(a, id, rows, cols);
			if (ret < 0 && agent_broken(a)) {
				conn_err = ret;
				break;
			}
		}
		if (p[0].revents) {
			ret = kiln_agent_poll(a, 0);
			if (ret < 0 && agent_broken(a)) {
				conn_err = ret;
				break;
			}
		}
		if (p[1].revents) {
			char buf[65536];
			ssize_t n = read(STDIN_FILENO, buf, room < sizeof(buf) ? room : sizeof(buf));

			if (n > 0) {
				ssize_t w = kiln_agent_stdin_write(a, id, buf, (size_t)n);

				if (w == -EPIPE) {
					stdin_open = false;
				} else if (w != n) {
					conn_err = w < 0 ? (int)w : -EIO;
					break;
				}
				st.in_bytes += (uint64_t)n;
			} else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
				/* A terminal stays open: its end-of-file is a ^D typed into it. */
				if (o.tty)
					kiln_agent_stdin_write(a, id, "\x04", 1);
				kiln_agent_stdin_close(a, id);
				stdin_open = false;
			}
		}
	}
	tty_restore();
	t_exec_end = now_ns();

	if (stopping()) {
		goto stop;
	} else if ((net_down = kiln_sandbox_net_failed(sb, err, sizeof(err)))) {
		fprintf(stderr, "kiln run: the network process (kiln-net) died: %s; the microVM was destroyed\n",
			err);
		kiln_sandbox_kill(sb);
		status = EXIT_KILN;
	} else if (!st.exited) {
		int vst = -1;
		char why[256] = "";

		struct kiln_cgroup_stat cs;

		/* The connection went first: give the VMM a moment to end on its
		 * own, so its own reason (a seccomp kill, say) is what we report. */
		if (!kiln_sandbox_vmm_wait(sb, 2000, &vst))
			kiln_sandbox_kill(sb);
		if (g_signal)
			goto stop;
		if (kiln_sandbox_vmm_exited(sb, &vst) && vst == 128 + SIGSYS) {
			char reason[256];

			kiln_sandbox_vmm_reason(sb, reason, sizeof(reason));
			fprintf(stderr, "kiln run: sandbox monitor violated its seccomp policy; the microVM was destroyed (%s)\n",
				reason);
			limit = "seccomp";
			status = EXIT_KILN;
			goto out;
		}
		if (kiln_sandbox_cgroup_stat(sb, &cs) == 0 && cs.oom_kills) {
			fprintf(stderr, "kiln run: the microVM exceeded its host memory limit (cgroup memory.max) and was killed\n");
			limit = "host-memory";
			status = EXIT_KILN;
			goto out;
		}
		if (kiln_sandbox_vmm_exited(sb, &vst)) {
			char report[2048];

			snprintf(why, sizeof(why), " (kiln-vmm exit %d)", vst);
			kiln_sandbox_vmm_report(sb, report, sizeof(report));
			fputs(report, stderr);
		}
		else if (conn_err)
			snprintf(why, sizeof(why), " (agent connection: %s%s%s)", strerror(-conn_err),
				 kiln_agent_error(a)[0] ? ": " : "", kiln_agent_error(a));
		fprintf(stderr, "kiln run: lost the microVM while %s ran%s\n", o.argv[0], why);
		status = EXIT_KILN;
	} else {
		/* After CMD: everything the guest says from here is bounded in time
		 * (--timeout, or DEFAULT_STEP_TIMEOUT_S) and in bytes. */
		status = st.signal ? 128 + st.signal : st.code;
		kiln_sandbox_set_deadline(sb, step_deadline());
		if (oom_told)
			oom = st.oom_kills;
		else if (guest_oom_kills(a, &oom_after) == 0 && oom_before >= 0 &&
			 oom_after >= oom_before)
			oom = oom_after - oom_before;
		if (oom > 0) {
			limit = "memory";
			fprintf(stderr, "kiln run: the guest ran out of memory (%llu MiB); its OOM killer stopped %lld process(es)\n",
				(unsigned long long)o.mem_mib, oom);
		}
		if (!agent_broken(a) && do_gets(a, &o, &get_bytes) && status == 0)
			status = EXIT_KILN;
		if (st.write_error && status == 0)
			status = EXIT_KILN;
		if (agent_broken(a))
			goto stop;
		if (o.template_name && !stopping()) {
			if (status) {
				fprintf(stderr, "kiln template create: %s ended with status %d; no template was saved\n",
					o.argv[0], status);
			} else {
				disarm_alarm();
				status = save_template(sb, &o, &times);
				if (g_signal)
					goto stop;
			}
		}
	}
	goto out;

stop:
	/* A step was cut short: by a signal, the --timeout, or a guest agent
	 * that broke its side of the protocol (too slow, too much, malformed). */
	tty_restore();
	disarm_alarm();
	kiln_sandbox_kill(sb);
	if (g_signal) {
		fprintf(stderr, "kiln run: interrupted by %s; the microVM was destroyed\n",
			strsignal(g_signal));
		status = 128 + g_signal;
	} else if (timed_out()) {
		fprintf(stderr, "kiln run: timed out after %llu s%s; the microVM was destroyed\n",
			(unsigned long long)o.timeout_s, st.exited ? " (after the command had exited)" : "");
		limit = "timeout";
		status = EXIT_TIMEOUT;
	} else {
		char report[2048];

		report_agent(a);
		kiln_sandbox_vmm_report(sb, report, sizeof(report));
		fputs(report, stderr);
		if (!st.exited || status == 0)
			status = EXIT_KILN;
	}
out:
	tty_restore();
	disarm_alarm();
	t_down = now_ns();
	/* A clone has nothing to flush: its scratch disk, like its RAM, goes
	 * with it. Killed, not asked to shut down. */
	if (o.from_template)
		kiln_sandbox_kill(sb);
	kiln_sandbox_shutdown(sb);
	if (o.nallow)
		net_finish(sb, net_down, &status, &ns, &have_ns);
	kiln_sandbox_destroy(sb);
	t_down = now_ns() - t_down;
	/* A signal during the teardown still decides the status. */
	if (g_signal && status != 128 + g_signal) {
		fprintf(stderr, "kiln run: interrupted by %s; the microVM was destroyed\n",
			strsignal(g_signal));
		status = 128 + g_signal;
	}
	if (o.json)
		print_json(&o, &st, status, limit, &times, t_exec_end > t_exec ? t_exec_end - t_exec : 0,
			   t_down, now_ns() - t_start, put_bytes, get_bytes,
			   oom,
			   have_ns ? &ns : NULL);
	return status;
}

int cli_run(int argc, char **argv, const char *self)
{
	return run_main(argc, argv, self, NULL);
}

int cli_run_template(int argc, char **argv, const char *self, const char *name)
{
	return run_main(argc, argv, self, name);
}
