/*
 * kilnd: the per-host daemon (docs/daemon.md). Wires the pieces together:
 * tokens, records, the registry's lifecycle thread, one HTTP server per
 * --listen, and an orderly stop on SIGTERM, SIGINT or SIGHUP.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "daemon/api.h"
#include "daemon/idem.h"
#include "daemon/procs.h"
#include "daemon/records.h"
#include "daemon/registry.h"
#include "daemon/tokens.h"
#include "lib/image.h"
#include "lib/sandbox.h"
#include "fleetid.h"
#include "daemon/listen.h"
#include "util.h"

#define MAX_LISTEN 8
#define DEFAULT_LISTEN "unix:/run/kiln/kilnd.sock"

struct opts {
	const char *listen[MAX_LISTEN];
	unsigned nlisten;
	const char *tokens, *state_dir;
	char image_dir[PATH_MAX], vmm[PATH_MAX], kernel[PATH_MAX], initrd[PATH_MAX],
		netbin[PATH_MAX];
	uint64_t max_sandboxes, max_upload, max_connections, max_cpus, max_memory_mib;
	char host_id[FLEET_HOST_MAX + 1];
	bool log_json, no_cgroup;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kilnd --tokens FILE --state-dir DIR [--listen unix:PATH|tcp:HOST:PORT]...\n"
		"             [--max-sandboxes N] [--max-upload BYTES] [--max-connections N]\n"
		"             [--host-id ID] [--max-cpus N] [--max-memory-mib MIB]\n"
		"             [--image-dir DIR] [--log-json] [--no-cgroup]\n"
		"  --listen         where the API listens (repeatable; default " DEFAULT_LISTEN ")\n"
		"  --tokens         tenants and their token hashes (docs/daemon.md)\n"
		"  --state-dir      kilnd.db (records), audit logs, consoles, spooled files\n"
		"  --max-sandboxes  sandboxes on this host, all tenants (default 16)\n"
		"  --host-id        this host's id in a fleet, [a-z0-9][a-z0-9-]{0,39}; in every\n"
		"                   sandbox id (sb-ID-<32 hex>) and X-Kiln-Host (default: env\n"
		"                   KILN_HOST_ID, else the host name lowercased, other characters '-')\n"
		"  --max-cpus       vCPUs booked on this host, all tenants (default: online CPUs x 4)\n"
		"  --max-memory-mib guest memory booked on this host, all tenants (default: 80%% of\n"
		"                   MemTotal)\n"
		"  --max-upload     largest file through the API (default 1 GiB)\n"
		"  --max-connections  open HTTP connections per listener (default 1024)\n"
		"  --image-dir      where NAME.img images live (default: $KILN_IMAGE_DIR, else images/ beside kilnd)\n"
		"  --log-json       one JSON line per request on stderr\n"
		"  --no-cgroup      no CPU, memory or task limits per VM (diagnosis only)\n");
}

static int __attribute__((format(printf, 1, 2))) bad(const char *fmt, ...)
{
	va_list ap;


	fprintf(stderr, "kilnd: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (kilnd --help)\n");
	return 2;
}

static void self_dir(char *buf, size_t len)
{
	ssize_t n = readlink("/proc/self/exe", buf, len - 1);
	char *slash;

	if (n <= 0) {
		snprintf(buf, len, ".");
		return;
	}
	buf[n] = 0;
	slash = strrchr(buf, '/');
	if (slash)
		*slash = 0;
}

/* MemTotal in MiB (0 if /proc/meminfo says nothing). */
static uint64_t mem_total_mib(void)
{
	char line[256];
	unsigned long long kib = 0;
	FILE *f = fopen("/proc/meminfo", "re");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "MemTotal: %llu kB", &kib) == 1)
			break;
	fclose(f);
	return kib / 1024;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
	enum { O_TOKENS = 256, O_STATE, O_MAX, O_LOG, O_NOCG, O_IMG, O_UPLOAD, O_CONNS, O_HOST,
	       O_CPUS, O_MEM };
	static const struct option lo[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "tokens", required_argument, NULL, O_TOKENS },
		{ "state-dir", required_argument, NULL, O_STATE },
		{ "max-sandboxes", required_argument, NULL, O_MAX },
		{ "max-upload", required_argument, NULL, O_UPLOAD },
		{ "max-connections", required_argument, NULL, O_CONNS },
		{ "image-dir", required_argument, NULL, O_IMG },
		{ "host-id", required_argument, NULL, O_HOST },
		{ "max-cpus", required_argument, NULL, O_CPUS },
		{ "max-memory-mib", required_argument, NULL, O_MEM },
		{ "log-json", no_argument, NULL, O_LOG },
		{ "no-cgroup", no_argument, NULL, O_NOCG },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *host = getenv("KILN_HOST_ID");
	char dir[PATH_MAX];
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	int c;

	self_dir(dir, sizeof(dir));
	o->max_cpus = ncpu > 0 ? (uint64_t)ncpu * 4 : 4;
	o->max_memory_mib = mem_total_mib() * 8 / 10;
	if (o->max_memory_mib < 64)
		o->max_memory_mib = 64;
	o->max_sandboxes = 16;
	o->max_upload = 1ULL << 30;
	o->max_connections = 1024;
	kiln_image_dir(argv[0], o->image_dir, sizeof(o->image_dir)); /* as kiln's */
	snprintf(o->vmm, sizeof(o->vmm), "%s/kiln-vmm", dir);
	snprintf(o->netbin, sizeof(o->netbin), "%s/kiln-net", dir);
	snprintf(o->kernel, sizeof(o->kernel), "%s/guest/vmlinux", dir);
	snprintf(o->initrd, sizeof(o->initrd), "%s/guest/kiln-initrd.cpio", dir);
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'l':
			if (o->nlisten == MAX_LISTEN)
				return bad("at most 8 --listen%s", "");
			o->listen[o->nlisten++] = optarg;
			break;
		case O_TOKENS:
			o->tokens = optarg;
			break;
		case O_STATE:
			o->state_dir = optarg;
			break;
		case O_MAX:
			if (parse_u64(optarg, 1, 4096, &o->max_sandboxes))
				return bad("--max-sandboxes must be from 1 to 4096, not '%s'", optarg);
			break;
		case O_UPLOAD:
			if (parse_u64(optarg, 1, 1ULL << 40, &o->max_upload))
				return bad("--max-upload must be from 1 to 2^40 bytes, not '%s'", optarg);
			break;
		case O_CONNS:
			if (parse_u64(optarg, 16, 65536, &o->max_connections))
				return bad("--max-connections must be from 16 to 65536, not '%s'",
					   optarg);
			break;
		case O_IMG:
			if (strlen(optarg) >= sizeof(o->image_dir))
				return bad("--image-dir too long: %s", optarg);
			snprintf(o->image_dir, sizeof(o->image_dir), "%s", optarg);
			break;
		case O_HOST:
			host = optarg;
			break;
		case O_CPUS:
			if (parse_u64(optarg, 1, 1 << 20, &o->max_cpus))
				return bad("--max-cpus must be from 1 to 2^20, not '%s'", optarg);
			break;
		case O_MEM:
			if (parse_u64(optarg, 64, 1ULL << 40, &o->max_memory_mib))
				return bad("--max-memory-mib must be from 64 to 2^40, not '%s'", optarg);
			break;
		case O_LOG:
			o->log_json = true;
			break;
		case O_NOCG:
			o->no_cgroup = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			return 2;
		}
	}
	if (optind < argc)
		return bad("unexpected argument '%s'", argv[optind]);
	if (host) {
		if (!fleet_host_id_ok(host) || strlen(host) > FLEET_HOST_MAX)
			return bad("host id '%.64s' must match [a-z0-9][a-z0-9-]{0,39}", host);
		snprintf(o->host_id, sizeof(o->host_id), "%s", host);
	} else {
		fleet_host_id_default(o->host_id, sizeof(o->host_id));
	}
	if (!o->tokens)
		return bad("--tokens FILE is required%s", "");
	if (!o->state_dir)
		return bad("--state-dir DIR is required%s", "");
	if (!o->nlisten)
		o->listen[o->nlisten++] = DEFAULT_LISTEN;
	return 0;
}

/* Every HTTP connection is a descriptor: the default soft limit (1024) would
 * let --max-connections idle clients starve everything else, so raise it to
 * the hard limit, and say so when even that is short of what we may need
 * (connections, plus per sandbox its VMM's and kiln-net's pipes and sockets). */
static void raise_fd_limit(const struct opts *o)
{
	struct rlimit rl;
	uint64_t need = (uint64_t)o->nlisten * o->max_connections + o->max_sandboxes * 16 + 64;

	if (getrlimit(RLIMIT_NOFILE, &rl))
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need)
		fprintf(stderr, "kilnd: warning: %llu file descriptors allowed (RLIMIT_NOFILE), "
			"about %llu needed for --max-connections %llu and --max-sandboxes %llu\n",
			(unsigned long long)rl.rlim_max, (unsigned long long)need,
			(unsigned long long)o->max_connections, (unsigned long long)o->max_sandboxes);
}

/* A sandbox is gone: so are its processes. */
static void procs_gone(void *ctx, const char *tenant, const char *id)
{
	procs_drop_sandbox(ctx, tenant, id);
}

int main(int argc, char **argv)
{
	struct opts o = { 0 };
	struct tokens *tokens = NULL;
	struct records *rec = NULL;
	struct registry *reg = NULL;
	struct procs *procs = NULL;
	struct idem *idem = NULL;
	struct api *apis[MAX_LISTEN] = { 0 };
	struct registry_config rc;
	struct api_config ac;
	char err[512], db[PATH_MAX];
	int stop[2] = { -1, -1 }, ret = 1, sig = 0, r;
	unsigned marked = 0;
	struct stat st;
	sigset_t set;

	r = parse_opts(argc, argv, &o);
	if (r)
		return r;
	signal(SIGPIPE, SIG_IGN);
	/* Signals go to sigwait() below, never to a random thread. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	/* Orphaned VMMs (their jail's waiter killed first) come back to us. */
	prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);

	if (stat(o.state_dir, &st) < 0 && (errno != ENOENT || mkdir(o.state_dir, 0700) < 0)) {
		fprintf(stderr, "kilnd: cannot create --state-dir %s: %s\n", o.state_dir,
			strerror(errno));
		goto out;
	}
	if (access(o.vmm, X_OK) < 0 || access(o.kernel, R_OK) < 0 || access(o.initrd, R_OK) < 0) {
		fprintf(stderr, "kilnd: missing %s, %s or %s (make; make kernel)\n", o.vmm, o.kernel,
			o.initrd);
		goto out;
	}
	raise_fd_limit(&o);
	if (tokens_load(o.tokens, &tokens, err, sizeof(err))) {
		fprintf(stderr, "kilnd: %s\n", err);
		goto out;
	}
	snprintf(db, sizeof(db), "%s/kilnd.db", o.state_dir);
	if (records_open(db, &rec, err, sizeof(err))) {
		fprintf(stderr, "kilnd: %s\n", err);
		goto out;
	}
	/* What an earlier kilnd left: its records and its VMs' leftovers. */
	records_mark_stopped(rec, (int64_t)time(NULL) * 1000, &marked);
	kiln_sandbox_sweep();
	if (pipe2(stop, O_CLOEXEC) < 0) {
		fprintf(stderr, "kilnd: pipe: %s\n", strerror(errno));
		goto out;
	}
	if (procs_create(rec, stop[0], &procs) || idem_create(&idem)) {
		fprintf(stderr, "kilnd: out of memory\n");
		goto out;
	}
	rc = (struct registry_config){ .vmm = o.vmm, .kernel = o.kernel, .initrd = o.initrd,
				       .netbin = o.netbin, .image_dir = o.image_dir,
				       .state_dir = o.state_dir,
				       .max_sandboxes = (unsigned)o.max_sandboxes,
				       .max_cpus = (unsigned)o.max_cpus,
				       .max_memory_mib = o.max_memory_mib, .host_id = o.host_id,
				       .no_cgroup = o.no_cgroup, .stop_fd = stop[0],
				       .records = rec, .on_gone = procs_gone,
				       .on_gone_ctx = procs };
	if (registry_start(&rc, &reg, err, sizeof(err))) {
		fprintf(stderr, "kilnd: %s\n", err);
		goto out;
	}
	ac = (struct api_config){ .reg = reg, .rec = rec, .procs = procs, .idem = idem,
				  .tokens = tokens, .image_dir = o.image_dir, .host_id = o.host_id,
				  .state_dir = o.state_dir, .max_upload = o.max_upload,
				  .max_connections = (unsigned)o.max_connections,
				  .stop_fd = stop[0], .log_json = o.log_json };
	for (unsigned i = 0; i < o.nlisten; i++) {
		int fd = listen_open("kilnd", o.listen[i]);

		if (fd < 0)
			goto out;
		if (api_start(&ac, fd, &apis[i], err, sizeof(err))) {
			fprintf(stderr, "kilnd: --listen %s: %s\n", o.listen[i], err);
			goto out;
		}
	}
	fprintf(stderr, "kilnd: ready: host %s, %zu tenants, at most %u sandboxes, %llu vCPUs, "
		"%llu MiB, %u earlier records marked daemon-stopped\n",
		o.host_id, tokens_count(tokens), (unsigned)o.max_sandboxes,
		(unsigned long long)o.max_cpus, (unsigned long long)o.max_memory_mib, marked);
	for (unsigned i = 0; i < o.nlisten; i++)
		fprintf(stderr, "kilnd: listening on %s\n", o.listen[i]);
	if (o.no_cgroup)
		fprintf(stderr, "kilnd: warning: --no-cgroup: the VMs' CPU, memory and task limits are off\n");
	while (sigwait(&set, &sig) != 0)
		;
	fprintf(stderr, "kilnd: %s: stopping\n", strsignal(sig));
	ret = 0;
out:
	/* Every wait on a guest gives up, the servers stop, then the VMs go. */
	if (stop[1] >= 0 && write(stop[1], "x", 1) < 0)
		ret = 1;
	for (unsigned i = 0; i < MAX_LISTEN; i++)
		api_stop(apis[i]);
	registry_stop(reg);
	procs_free(procs);
	idem_free(idem);
	records_close(rec);
	tokens_free(tokens);
	for (unsigned i = 0; i < o.nlisten; i++)
		if (!strncmp(o.listen[i], "unix:", 5))
			unlink(o.listen[i] + 5);
	if (stop[0] >= 0) {
		close(stop[0]);
		close(stop[1]);
	}
	if (!ret)
		fprintf(stderr, "kilnd: stopped\n");
	return ret;
}
