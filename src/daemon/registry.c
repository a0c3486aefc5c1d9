/*
 * kilnd's sandboxes (see registry.h).
 *
 * Locking: r->mu guards the list, every entry's state, refs and deadline,
 * the create queue and the counters; r->cond announces every state change.
 * sb->vm_mu guards sb->vm: registry_connect holds it while it connects
 * (bounded), the lifecycle thread while it destroys the VM.
 *
 * The lifecycle thread is the only one that creates, kills and destroys VMs:
 * a VMM dies with the thread that started it (PR_SET_PDEATHSIG), so that
 * thread must live as long as kilnd.
 */
#include "daemon/registry.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon/records.h"
#include "daemon/tokens.h"
#include "lib/agent.h"
#include "lib/sandbox.h"
#include "lib/template.h"
#include "fleetid.h"
#include "util.h"

#define REG_ID_LEN FLEET_ID_MAX	  /* sb-<host>-<32 hex digits> */
#define BOOT_TIMEOUT_MS 120000	  /* spawn to the agent's hello */
#define CONNECT_TIMEOUT_MS 10000  /* one more agent connection */
/* A request to the guest agent (a reply to a signal, a stat, a chunk of a
 * file) fails if nothing moves for this long: a guest that stops answering
 * ends that one request or process, it never holds a kilnd thread. Waits
 * for a process's output are not requests and are not bounded by it. */
#define AGENT_STALL_MS 120000
#define PAUSE_TIMEOUT_MS 10000 /* the VMM's answer to a pause or resume */
#define SNAPSHOT_TIMEOUT_MS 120000 /* pause + save of a whole VM */

enum reg_state { REG_BOOTING, REG_RUNNING, REG_ENDING, REG_GONE };

static const char *const state_names[] = { "booting", "running", "ending", "gone" };

struct reg_sandbox {
	char id[REG_ID_LEN + 1];
	char tenant[TOKENS_NAME_MAX + 1];
	char image[REG_IMAGE_MAX + 1];
	char template_name[KILN_TEMPLATE_NAME_MAX + 1]; /* the tenant's template restored; "": none */
	char forked_from[REG_ID_LEN + 1]; /* the sandbox it is a fork of; "": none */
	char restore_dir[PATH_MAX];	  /* the template restored, whole path; "": booted */
	unsigned cpus;
	uint64_t memory_mib, disk_mib, timeout_s, net_rate;
	char **allow;
	unsigned nallow;
	char *metadata_json;
	enum reg_state state;
	int paused;		/* vCPUs stopped (registry_pause): set under vm_mu, read atomically */
	const char *end_reason;	/* set with REG_ENDING */
	unsigned refs;		/* the list's own reference counts as one */
	uint64_t created_ms, deadline_ns, boot_ms;
	int create_ret;
	char create_err[256];
	struct reg_sandbox *next, *qnext;
	pthread_mutex_t vm_mu;
	struct kiln_sandbox *vm; /* NULL before boot and once destroyed */
	struct kiln_sandbox *booting; /* the lifecycle thread's alone, while it boots */
};

static const char *const counter_names[REG_NCOUNTERS] = {
	"kiln_execs_total", "kiln_exec_timeouts_total", "kiln_file_bytes_in_total",
	"kiln_file_bytes_out_total",
};
static const char *const counter_help[REG_NCOUNTERS] = {
	"Processes started through the API.", "Execs ended by their timeout_s.",
	"Bytes uploaded into sandboxes.", "Bytes downloaded from sandboxes.",
};

/* Boot time histogram buckets, in seconds. */
static const double boot_buckets[] = { 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64 };
#define NBUCKETS (sizeof(boot_buckets) / sizeof(boot_buckets[0]))

struct registry {
	struct registry_config c;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	pthread_t thread;
	bool thread_started, stopping;
	int evfd;
	struct reg_sandbox *list;
	struct reg_sandbox *queue; /* waiting to boot, in order */
	unsigned nlive;		   /* booting + running + ending */
	bool draining;		   /* no new sandboxes (POST /v1/drain) */
	/* Metrics. */
	uint64_t counters[REG_NCOUNTERS];
	uint64_t creates, create_failures, deletes, timeouts, vmm_lost, quota_refusals;
	uint64_t boot_count, boot_hist[NBUCKETS];
	double boot_sum;
	uint64_t net_allowed, net_blocked, net_bytes_up, net_bytes_down;
};

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void rfc3339(int64_t ms, char *buf, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	char base[32];

	gmtime_r(&t, &tm);
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf, len, "%s.%03dZ", base, (int)(ms % 1000));
}

static void kick(struct registry *r)
{
	uint64_t one = 1;
	ssize_t n = write(r->evfd, &one, sizeof(one));

	(void)n;
}

static void sb_free(struct reg_sandbox *sb)
{
	if (!sb)
		return;
	for (unsigned i = 0; i < sb->nallow; i++)
		free(sb->allow[i]);
	free(sb->allow);
	free(sb->metadata_json);
	pthread_mutex_destroy(&sb->vm_mu);
	free(sb);
}

/* Under r->mu. */
static void unref_locked(struct reg_sandbox *sb)
{
	if (--sb->refs == 0)
		sb_free(sb);
}

/* Under r->mu: what every tenant has booked (booting, running, ending). */
static void host_usage(struct registry *r, unsigned *booting, unsigned *cpus, uint64_t *mib)
{
	*booting = *cpus = 0;
	*mib = 0;
	for (struct reg_sandbox *sb = r->list; sb; sb = sb->next) {
		if (sb->state == REG_GONE)
			continue;
		*booting += sb->state == REG_BOOTING;
		*cpus += sb->cpus;
		*mib += sb->memory_mib;
	}
}

/* Under r->mu: what the tenant has running or booting. */
static void tenant_usage(struct registry *r, const char *tenant, unsigned *n, unsigned *cpus,
			 uint64_t *mib)
{
	*n = *cpus = 0;
	*mib = 0;
	for (struct reg_sandbox *sb = r->list; sb; sb = sb->next) {
		if (sb->state == REG_GONE || strcmp(sb->tenant, tenant))
			continue;
		(*n)++;
		*cpus += sb->cpus;
		*mib += sb->memory_mib;
	}
}

/* ---- the lifecycle thread ---- */

static void boot_end(struct registry *r, struct reg_sandbox *sb, int ret, const char *err);

/* Lifecycle thread: the host's part of a boot (run directory, scratch disk,
 * cgroup, kiln-net, the VMM's spawn); the guest boots on while the thread
 * waits on every booting VM's fds at once (boot_poll). */
static void boot_begin(struct registry *r, struct reg_sandbox *sb)
{
	char image[PATH_MAX], console[PATH_MAX], audit[PATH_MAX];
	struct kiln_sandbox_config cfg = { 0 };
	struct kiln_net_config net;
	struct kiln_sandbox *vm = NULL;
	struct records_sandbox rec;
	char err[256] = "";
	int audit_fd = -1, ret;

	snprintf(image, sizeof(image), "%s/%s.img", r->c.image_dir, sb->image);
	snprintf(console, sizeof(console), "%s/consoles/%s.log", r->c.state_dir, sb->id);
	audit[0] = 0;
	if (sb->nallow) {
		snprintf(audit, sizeof(audit), "%s/audit/%s.jsonl", r->c.state_dir, sb->id);
		audit_fd = open(audit, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
	}
	rec = (struct records_sandbox){
		.id = sb->id, .tenant = sb->tenant, .image = sb->image, .cpus = sb->cpus,
		.memory_mib = sb->memory_mib, .disk_mib = sb->disk_mib,
		.timeout_s = sb->timeout_s, .allow_json = "[]",
		.metadata_json = sb->metadata_json, .audit_path = audit[0] ? audit : NULL,
		.created_ms = (int64_t)sb->created_ms,
	};
	{
		json_t *a = json_array();
		char *text;

		for (unsigned i = 0; a && i < sb->nallow; i++)
			json_array_append_new(a, json_string(sb->allow[i]));
		text = a ? json_dumps(a, JSON_COMPACT) : NULL;
		rec.allow_json = text ? text : "[]";
		records_sandbox_start(r->c.records, &rec);
		free(text);
		json_decref(a);
	}
	cfg.vmm = r->c.vmm;
	cfg.kernel = r->c.kernel;
	cfg.initrd = r->c.initrd;
	cfg.image = image;
	cfg.cpus = sb->cpus;
	cfg.mem_mib = sb->memory_mib;
	cfg.disk_mib = sb->disk_mib;
	cfg.console = console;
	cfg.boot_timeout_ms = BOOT_TIMEOUT_MS;
	cfg.cancel_fd = r->c.stop_fd;
	cfg.no_cgroup = r->c.no_cgroup;
	cfg.id = sb->id; /* the guest's /run/kiln/sandbox-id; its hostname from it */
	/* Checked by registry_create; a template removed since fails the
	 * restore with the VMM's one line. */
	if (sb->restore_dir[0])
		cfg.restore_dir = sb->restore_dir;
	if (sb->nallow) {
		net = (struct kiln_net_config){ .bin = r->c.netbin,
						.rules = (const char *const *)sb->allow,
						.nrules = sb->nallow, .audit_fd = audit_fd,
						.rate = sb->net_rate };
		cfg.net = &net;
	}
	ret = kiln_sandbox_start(&vm, &cfg, err, sizeof(err));
	if (audit_fd >= 0)
		close(audit_fd); /* kiln-net has its own */
	if (ret)
		boot_end(r, sb, ret, err);
	else
		sb->booting = vm;
}

/* Lifecycle thread: a boot step for each booting VM with news (or past its
 * deadline); each that is done, either way, is ended. */
static void boot_steps(struct registry *r, const struct pollfd *pfd, struct reg_sandbox *const *who,
		       size_t n)
{
	uint64_t now = now_ns();

	for (size_t i = 1; i < n; i++) {
		struct reg_sandbox *sb = who[i];
		char err[256] = "";
		int ret;

		/* A VM with news, or late, or without a pidfd to tell its end. */
		if (!sb->booting || (!pfd[i].revents && now < kiln_sandbox_boot_deadline(sb->booting) &&
				     kiln_sandbox_pidfd(sb->booting) >= 0))
			continue;
		ret = kiln_sandbox_boot_step(sb->booting, err, sizeof(err));
		if (ret != -EINPROGRESS)
			boot_end(r, sb, ret, err);
	}
}

/* Lifecycle thread: a boot is over (ret 0: the guest agent greeted us). */
static void boot_end(struct registry *r, struct reg_sandbox *sb, int ret, const char *err)
{
	struct kiln_sandbox *vm = sb->booting;
	struct kiln_sandbox_times t;
	double secs;

	sb->booting = NULL;
	if (ret && vm) {
		kiln_sandbox_kill(vm);
		kiln_sandbox_destroy(vm);
		vm = NULL;
	}
	if (!ret)
		kiln_sandbox_times(vm, &t);

	pthread_mutex_lock(&r->mu);
	sb->create_ret = ret;
	if (ret) {
		snprintf(sb->create_err, sizeof(sb->create_err), "%s", err);
		sb->state = REG_GONE;
		r->nlive--;
		r->create_failures++;
	} else {
		pthread_mutex_lock(&sb->vm_mu);
		sb->vm = vm;
		pthread_mutex_unlock(&sb->vm_mu);
		sb->state = REG_RUNNING;
		sb->boot_ms = t.boot_ns / 1000000;
		sb->deadline_ns = now_ns() + sb->timeout_s * 1000000000ULL;
		r->creates++;
		secs = (double)t.boot_ns / 1e9;
		r->boot_count++;
		r->boot_sum += secs;
		for (unsigned i = 0; i < NBUCKETS; i++)
			if (secs <= boot_buckets[i])
				r->boot_hist[i]++;
	}
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->mu);
	if (ret)
		records_sandbox_end(r->c.records, sb->id, "boot-failed", wall_ms());
	else
		records_sandbox_booted(r->c.records, sb->id, sb->boot_ms);
}

/* Under r->mu: start ending a running sandbox. The VM is killed at once. */
static void end_locked(struct registry *r, struct reg_sandbox *sb, const char *reason)
{
	if (sb->state != REG_RUNNING)
		return;
	sb->state = REG_ENDING;
	sb->end_reason = reason;
	kick(r);
}

/* Lifecycle thread: kill, reap, clean up and record one ending sandbox. */
static void destroy_one(struct registry *r, struct reg_sandbox *sb)
{
	struct kiln_net_stats ns;
	struct kiln_sandbox *vm;
	bool have_net = false;

	/* Only this thread sets sb->vm. Kill first, so a request connecting
	 * under vm_mu gives up at once and lets go. */
	vm = sb->vm;
	if (vm)
		kiln_sandbox_kill(vm);
	pthread_mutex_lock(&sb->vm_mu);
	sb->vm = NULL;
	pthread_mutex_unlock(&sb->vm_mu);
	if (vm) {
		kiln_sandbox_shutdown(vm);
		have_net = kiln_sandbox_net_stats(vm, &ns) == 0;
		kiln_sandbox_destroy(vm);
	}
	records_sandbox_end(r->c.records, sb->id, sb->end_reason, wall_ms());
	if (r->c.on_gone)
		r->c.on_gone(r->c.on_gone_ctx, sb->tenant, sb->id);
	pthread_mutex_lock(&r->mu);
	if (have_net) {
		r->net_allowed += ns.allowed;
		r->net_blocked += ns.blocked;
		r->net_bytes_up += ns.bytes_up;
		r->net_bytes_down += ns.bytes_down;
	}
	if (!strcmp(sb->end_reason, "deleted"))
		r->deletes++;
	else if (!strcmp(sb->end_reason, "timeout"))
		r->timeouts++;
	else if (!strcmp(sb->end_reason, "vmm-lost"))
		r->vmm_lost++;
	sb->state = REG_GONE;
	r->nlive--;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->mu);
}

/* Under r->mu: drop entries that are gone, with the list's reference. */
static void prune_locked(struct registry *r)
{
	struct reg_sandbox **pp = &r->list, *sb;

	while ((sb = *pp)) {
		if (sb->state == REG_GONE) {
			*pp = sb->next;
			unref_locked(sb);
		} else {
			pp = &sb->next;
		}
	}
}

static void *lifecycle(void *arg)
{
	struct registry *r = arg;
	struct pollfd *pfd = NULL;
	struct reg_sandbox **who = NULL;
	size_t cap = 0;

	pthread_mutex_lock(&r->mu);
	for (;;) {
		struct reg_sandbox *sb;
		uint64_t now = now_ns(), next = 0, count;
		size_t n = 1, need = (size_t)r->nlive * KILN_BOOT_FDS + 1;
		int ms, blind_ms = -1;

		/* Deadlines first, then boots, then VMs that ended by themselves. */
		for (sb = r->list; sb; sb = sb->next) {
			if (sb->state == REG_RUNNING && r->stopping)
				end_locked(r, sb, "daemon-stopped");
			if (sb->state == REG_RUNNING && now >= sb->deadline_ns)
				end_locked(r, sb, "timeout");
		}
		if ((sb = r->queue) && !r->stopping) {
			r->queue = sb->qnext;
			pthread_mutex_unlock(&r->mu);
			boot_begin(r, sb);
			pthread_mutex_lock(&r->mu);
			continue;
		}
		for (sb = r->list; sb; sb = sb->next) {
			if (sb->state != REG_ENDING)
				continue;
			sb->refs++;
			pthread_mutex_unlock(&r->mu);
			destroy_one(r, sb);
			pthread_mutex_lock(&r->mu);
			unref_locked(sb);
			break;
		}
		if (sb)
			continue;
		prune_locked(r);
		if (r->stopping && !r->nlive)
			break;
		if (need > cap) {
			struct pollfd *p2 = realloc(pfd, need * 2 * sizeof(*pfd));
			struct reg_sandbox **w2 = p2 ? realloc(who, need * 2 * sizeof(*who)) : NULL;

			if (p2)
				pfd = p2;
			if (w2) {
				who = w2;
				cap = need * 2;
			}
		}
		pfd[0] = (struct pollfd){ .fd = r->evfd, .events = POLLIN };
		for (sb = r->list; sb && n + KILN_BOOT_FDS <= cap; sb = sb->next) {
			if (sb->state == REG_BOOTING && sb->booting) {
				int fds[KILN_BOOT_FDS], k = kiln_sandbox_boot_fds(sb->booting, fds);
				uint64_t d = kiln_sandbox_boot_deadline(sb->booting);

				if (!next || d < next)
					next = d;
				for (int i = 0; i < k; i++) {
					pfd[n] = (struct pollfd){ .fd = fds[i], .events = POLLIN };
					who[n++] = sb;
				}
				if (kiln_sandbox_pidfd(sb->booting) < 0)
					blind_ms = 100;
				continue;
			}
			if (sb->state != REG_RUNNING)
				continue;
			if (!next || sb->deadline_ns < next)
				next = sb->deadline_ns;
			if (sb->vm && kiln_sandbox_pidfd(sb->vm) >= 0) {
				pfd[n] = (struct pollfd){ .fd = kiln_sandbox_pidfd(sb->vm),
							  .events = POLLIN };
				who[n++] = sb;
			} else if (blind_ms < 0) {
				blind_ms = 1000;
			}
		}
		ms = -1;
		if (next)
			ms = next <= now ? 0 : (int)((next - now) / 1000000ULL) + 1;
		/* Without pidfds (old kernels) a VM's own end is noticed by looking. */
		if (blind_ms >= 0 && (ms < 0 || ms > blind_ms))
			ms = blind_ms;
		pthread_mutex_unlock(&r->mu);
		poll(pfd, n, ms);
		if (pfd[0].revents && read(r->evfd, &count, sizeof(count)) < 0)
			count = 0;
		boot_steps(r, pfd, who, n);
		pthread_mutex_lock(&r->mu);
		for (size_t i = 1; i < n; i++) {
			int status;

			if (!pfd[i].revents || who[i]->state != REG_RUNNING)
				continue;
			if (kiln_sandbox_vmm_exited(who[i]->vm, &status))
				end_locked(r, who[i], "vmm-lost");
		}
	}
	pthread_mutex_unlock(&r->mu);
	free(pfd);
	free(who);
	return NULL;
}

/* ---- the API's side ---- */

/* state_dir/forks: the templates of forks in progress (none at start). */
static int forks_dir(struct registry *r, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/forks", r->c.state_dir);

	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	if (mkdir(buf, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* Removes the fork templates in dir (those of a kilnd that ended mid-fork). */
static void forks_clear(const char *dir)
{
	char path[PATH_MAX];
	struct dirent *e;
	DIR *d = opendir(dir);

	if (!d)
		return;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.' &&
		    snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) < (int)sizeof(path))
			kiln_template_remove_dir(path);
	closedir(d);
}

int registry_start(const struct registry_config *c, struct registry **out, char *err,
		   size_t errlen)
{
	struct registry *r = calloc(1, sizeof(*r));
	char dir[PATH_MAX];
	int ret = -ENOMEM;

	*out = NULL;
	if (!r)
		goto out;
	r->c = *c;
	r->evfd = -1;
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cond, NULL);
	for (unsigned i = 0; i < 2; i++) {
		snprintf(dir, sizeof(dir), "%s/%s", c->state_dir, i ? "audit" : "consoles");
		if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
			ret = -errno;
			snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
			goto out;
		}
	}
	/* Forks a kilnd that ended mid-fork left behind. */
	if (forks_dir(r, dir, sizeof(dir)) == 0)
		forks_clear(dir);
	r->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (r->evfd < 0) {
		ret = -errno;
		snprintf(err, errlen, "eventfd: %s", strerror(errno));
		goto out;
	}
	ret = -pthread_create(&r->thread, NULL, lifecycle, r);
	if (ret) {
		snprintf(err, errlen, "cannot start the lifecycle thread: %s", strerror(-ret));
		goto out;
	}
	r->thread_started = true;
	*out = r;
	r = NULL;
out:
	if (r) {
		if (r->evfd >= 0)
			close(r->evfd);
		free(r);
	}
	return ret;
}

void registry_stop(struct registry *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->mu);
	r->stopping = true;
	/* Boots that never started fail now. */
	while (r->queue) {
		struct reg_sandbox *sb = r->queue;

		r->queue = sb->qnext;
		sb->create_ret = -ECANCELED;
		snprintf(sb->create_err, sizeof(sb->create_err), "kilnd is stopping");
		sb->state = REG_GONE;
		r->nlive--;
	}
	pthread_cond_broadcast(&r->cond);
	kick(r);
	pthread_mutex_unlock(&r->mu);
	if (r->thread_started)
		pthread_join(r->thread, NULL);
	pthread_mutex_lock(&r->mu);
	prune_locked(r);
	pthread_mutex_unlock(&r->mu);
	close(r->evfd);
	/* Entries still referenced by request threads are theirs to free;
	 * kilnd stops its HTTP side before this. */
	pthread_mutex_destroy(&r->mu);
	pthread_cond_destroy(&r->cond);
	free(r);
}

/*
 * A create from template name in dir (the tenant's, or a fork's): its image
 * (one of this host's, by name), vCPUs, memory and disk become the
 * sandbox's. -ENOENT when there is no such template, -EINVAL with err when
 * it is damaged, or its kernel, initramfs or image changed since it was made.
 */
static int use_template(struct registry *r, struct reg_sandbox *sb, const char *dir,
			const char *name, char *err, size_t errlen)
{
	struct kiln_template_info t;
	char why[512];
	const char *base, *dot;
	size_t len;
	int ret;

	if (!dir[0] || snprintf(sb->restore_dir, sizeof(sb->restore_dir), "%s/%s", dir, name) >=
			       (int)sizeof(sb->restore_dir)) {
		snprintf(err, errlen, "the template directory's path is too long");
		return -EINVAL;
	}
	ret = kiln_template_info_load(dir, name, &t, why, sizeof(why));
	if (ret) {
		snprintf(err, errlen, "%s", why);
		return ret == -ENOENT ? -ENOENT : -EINVAL;
	}
	/* Made with another kernel or initramfs than this kilnd boots: its
	 * guest (kiln-init, the agent) is not the one this host runs. */
	if (strcmp(t.kernel.path, r->c.kernel) || strcmp(t.initrd.path, r->c.initrd) ||
	    !kiln_template_file_current(&t.kernel) || !kiln_template_file_current(&t.initrd) ||
	    !kiln_template_file_current(&t.image)) {
		snprintf(err, errlen, "template '%s' is stale: its kernel, initramfs or image changed since it was made", name);
		return -EINVAL;
	}
	len = strlen(r->c.image_dir);
	base = dot = NULL;
	if (!strncmp(t.image.path, r->c.image_dir, len) && t.image.path[len] == '/') {
		base = t.image.path + len + 1;
		dot = strrchr(base, '.');
	}
	if (!dot || strcmp(dot, ".img") || dot == base || (size_t)(dot - base) > REG_IMAGE_MAX ||
	    strchr(base, '/')) {
		snprintf(err, errlen, "template '%s' was made from an image this host does not have", name);
		return -EINVAL;
	}
	snprintf(sb->image, sizeof(sb->image), "%.*s", (int)(dot - base), base);
	sb->cpus = t.cpus;
	sb->memory_mib = t.mem_mib;
	sb->disk_mib = t.disk_mib;
	return 0;
}

/*
 * Under r->mu: room for count more sandboxes of cpus vCPUs and mib MiB
 * each, in the tenant's quota and this host's capacity. 0, or -EDQUOT,
 * -ENOSPC, -EAGAIN (draining), -ECANCELED (stopping) with err.
 */
static int room_locked(struct registry *r, const struct tokens_tenant *t, unsigned cpus_each,
		       uint64_t mib_each, unsigned count, char *err, size_t errlen)
{
	unsigned n, cpus, booting, hcpus;
	uint64_t mib, hmib, want_cpus = (uint64_t)cpus_each * count, want_mib = mib_each * count;

	host_usage(r, &booting, &hcpus, &hmib);
	tenant_usage(r, t->name, &n, &cpus, &mib);
	if (r->stopping) {
		snprintf(err, errlen, "kilnd is stopping");
		return -ECANCELED;
	}
	if (r->draining) {
		snprintf(err, errlen, "host %s is draining: no new sandboxes", r->c.host_id);
		return -EAGAIN;
	}
	if ((uint64_t)n + count > t->max_sandboxes) {
		snprintf(err, errlen, "tenant %s may run at most %u sandboxes", t->name,
			 t->max_sandboxes);
		return -EDQUOT;
	}
	if (cpus + want_cpus > t->max_vcpus) {
		snprintf(err, errlen, "tenant %s may use at most %u vCPUs (%u in use)", t->name,
			 t->max_vcpus, cpus);
		return -EDQUOT;
	}
	if (mib + want_mib > t->max_memory_mib) {
		snprintf(err, errlen, "tenant %s may use at most %" PRIu64 " MiB (%" PRIu64 " in use)",
			 t->name, t->max_memory_mib, mib);
		return -EDQUOT;
	}
	if ((uint64_t)r->nlive + count > r->c.max_sandboxes) {
		snprintf(err, errlen, "this host runs its maximum of %u sandboxes", r->c.max_sandboxes);
		return -ENOSPC;
	}
	if ((uint64_t)hcpus + want_cpus > r->c.max_cpus) {
		snprintf(err, errlen, "this host has %u of its %u vCPUs booked", hcpus, r->c.max_cpus);
		return -ENOSPC;
	}
	if (hmib + want_mib > r->c.max_memory_mib) {
		snprintf(err, errlen, "this host has %" PRIu64 " of its %" PRIu64 " MiB booked", hmib,
			 r->c.max_memory_mib);
		return -ENOSPC;
	}
	return 0;
}

int registry_create(struct registry *r, const struct registry_create *q,
		    struct reg_sandbox **out, char *err, size_t errlen)
{
	struct reg_sandbox *sb = calloc(1, sizeof(*sb)), **tail;
	int ret = -ENOMEM;

	*out = NULL;
	if (!sb)
		goto out;
	pthread_mutex_init(&sb->vm_mu, NULL);
	snprintf(sb->tenant, sizeof(sb->tenant), "%s", q->tenant->name);
	snprintf(sb->image, sizeof(sb->image), "%s", q->image);
	sb->cpus = q->cpus;
	sb->memory_mib = q->memory_mib;
	sb->disk_mib = q->disk_mib;
	sb->timeout_s = q->timeout_s;
	sb->net_rate = q->net_rate;
	sb->metadata_json = strdup(q->metadata_json ? q->metadata_json : "{}");
	sb->allow = calloc(q->nallow + 1, sizeof(char *));
	if (!sb->metadata_json || !sb->allow)
		goto out;
	for (; sb->nallow < q->nallow; sb->nallow++)
		if (!(sb->allow[sb->nallow] = strdup(q->allow[sb->nallow])))
			goto out;
	if (q->template_name[0]) {
		char tdir[PATH_MAX] = "";

		if (q->forked_from)
			snprintf(tdir, sizeof(tdir), "%s", q->template_dir);
		else if (registry_template_dir(r, sb->tenant, tdir, sizeof(tdir)))
			tdir[0] = 0;
		ret = use_template(r, sb, tdir, q->template_name, err, errlen);
		if (ret)
			goto out;
		/* A fork's template is its own, gone once it runs: not named. */
		if (q->forked_from)
			snprintf(sb->forked_from, sizeof(sb->forked_from), "%s", q->forked_from);
		else
			snprintf(sb->template_name, sizeof(sb->template_name), "%s", q->template_name);
	}
	ret = fleet_sandbox_id_new(r->c.host_id, sb->id, sizeof(sb->id));
	if (ret) {
		snprintf(err, errlen, "no random bytes for an id");
		goto out;
	}
	sb->created_ms = (uint64_t)wall_ms();
	sb->state = REG_BOOTING;

	pthread_mutex_lock(&r->mu);
	ret = room_locked(r, q->tenant, sb->cpus, sb->memory_mib, 1, err, errlen);
	if (ret) {
		if (ret == -EDQUOT || ret == -ENOSPC)
			r->quota_refusals++;
		pthread_mutex_unlock(&r->mu);
		goto out;
	}
	/* The list's reference and ours. */
	sb->refs = 2;
	sb->next = r->list;
	r->list = sb;
	r->nlive++;
	for (tail = &r->queue; *tail; tail = &(*tail)->qnext)
		;
	*tail = sb;
	kick(r);
	while (sb->state == REG_BOOTING)
		pthread_cond_wait(&r->cond, &r->mu);
	ret = sb->create_ret;
	if (ret) {
		snprintf(err, errlen, "%s", sb->create_err);
		unref_locked(sb);
		sb = NULL;
	}
	pthread_mutex_unlock(&r->mu);
	*out = sb;
	sb = NULL;
out:
	if (sb && sb->refs == 0)
		sb_free(sb);
	return ret;
}

struct reg_sandbox *registry_get(struct registry *r, const char *tenant, const char *id)
{
	struct reg_sandbox *sb;

	pthread_mutex_lock(&r->mu);
	for (sb = r->list; sb; sb = sb->next)
		if (sb->state == REG_RUNNING && !strcmp(sb->id, id) && !strcmp(sb->tenant, tenant))
			break;
	if (sb)
		sb->refs++;
	pthread_mutex_unlock(&r->mu);
	return sb;
}

void registry_put(struct registry *r, struct reg_sandbox *sb)
{
	if (!sb)
		return;
	pthread_mutex_lock(&r->mu);
	unref_locked(sb);
	pthread_mutex_unlock(&r->mu);
}

void registry_delete(struct registry *r, struct reg_sandbox *sb)
{
	pthread_mutex_lock(&r->mu);
	end_locked(r, sb, "deleted");
	while (sb->state != REG_GONE)
		pthread_cond_wait(&r->cond, &r->mu);
	pthread_mutex_unlock(&r->mu);
}

int registry_set_timeout(struct registry *r, struct reg_sandbox *sb, uint64_t timeout_s)
{
	int ret = -ENOENT;

	pthread_mutex_lock(&r->mu);
	if (sb->state == REG_RUNNING) {
		sb->timeout_s = timeout_s;
		sb->deadline_ns = now_ns() + timeout_s * 1000000000ULL;
		kick(r);
		ret = 0;
	}
	pthread_mutex_unlock(&r->mu);
	return ret;
}

int registry_connect(struct registry *r, struct reg_sandbox *sb, struct kiln_agent **out)
{
	int ret = -ENOENT;

	*out = NULL;
	pthread_mutex_lock(&sb->vm_mu); /* never r->mu inside: the lifecycle takes r->mu, then vm_mu */
	if (sb->vm && sb->paused)
		ret = -EBUSY;
	else if (sb->vm)
		ret = kiln_sandbox_connect(sb->vm, CONNECT_TIMEOUT_MS, r->c.stop_fd, out);
	if (!ret)
		kiln_agent_set_timeout(*out, AGENT_STALL_MS);
	pthread_mutex_unlock(&sb->vm_mu);
	return ret;
}

int registry_pause(struct registry *r, struct reg_sandbox *sb, bool pause)
{
	int ret = -ENOENT;

	bool running;

	pthread_mutex_lock(&r->mu);
	running = sb->state == REG_RUNNING;
	pthread_mutex_unlock(&r->mu);
	if (!running)
		return ret;
	/* vm_mu alone (see registry_connect): one control request at a time,
	 * no connect in between, and sb->vm stays until we let go. */
	pthread_mutex_lock(&sb->vm_mu);
	if (sb->vm) {
		ret = pause ? kiln_sandbox_pause(sb->vm, PAUSE_TIMEOUT_MS)
			    : kiln_sandbox_resume(sb->vm, PAUSE_TIMEOUT_MS);
		if (!ret)
			__atomic_store_n(&sb->paused, pause, __ATOMIC_RELAXED);
	}
	pthread_mutex_unlock(&sb->vm_mu);
	return ret;
}

int registry_template_dir(struct registry *r, const char *tenant, char *buf, size_t len)
{
	/* "t-" keeps tenant names like ".." a plain directory name. */
	int n = snprintf(buf, len, "%s/templates/t-%s", r->c.state_dir, tenant);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* Saves a running sandbox (no network rules) as template name in dir; it
 * runs on as it was (or stays paused). t is filled. */
static int save_template(struct registry *r, struct reg_sandbox *sb, const char *dir,
			 const char *name, struct kiln_template_info *t, char *err, size_t errlen)
{
	bool running, was_paused;
	int ret, rr;

	memset(t, 0, sizeof(*t));
	pthread_mutex_lock(&r->mu);
	running = sb->state == REG_RUNNING;
	pthread_mutex_unlock(&r->mu);
	if (!running) {
		snprintf(err, errlen, "the sandbox is not running");
		return -ENOENT;
	}
	if (sb->nallow) {
		snprintf(err, errlen, "a sandbox with network rules cannot be saved (its connections cannot be carried into a clone)");
		return -EINVAL;
	}
	if (snprintf(t->image.path, sizeof(t->image.path), "%s/%s.img", r->c.image_dir,
		     sb->image) >= (int)sizeof(t->image.path)) {
		snprintf(err, errlen, "the image's path is too long");
		return -ENAMETOOLONG;
	}
	snprintf(t->name, sizeof(t->name), "%s", name);
	snprintf(t->kernel.path, sizeof(t->kernel.path), "%s", r->c.kernel);
	snprintf(t->initrd.path, sizeof(t->initrd.path), "%s", r->c.initrd);
	t->cpus = sb->cpus;
	t->mem_mib = sb->memory_mib;
	t->disk_mib = sb->disk_mib;
	t->boot_ms = sb->boot_ms;
	snprintf(t->warmup, sizeof(t->warmup), "(sandbox %s)", sb->id);
	ret = -ENOENT;
	snprintf(err, errlen, "the sandbox is ending");
	/* vm_mu (see registry_pause): no connect and no pause in between. */
	pthread_mutex_lock(&sb->vm_mu);
	if (sb->vm) {
		was_paused = __atomic_load_n(&sb->paused, __ATOMIC_RELAXED);
		ret = kiln_template_save(sb->vm, dir, t, SNAPSHOT_TIMEOUT_MS, NULL, err, errlen);
		/* Saving paused it: it runs on as it was. */
		if (!was_paused && (rr = kiln_sandbox_resume(sb->vm, PAUSE_TIMEOUT_MS))) {
			__atomic_store_n(&sb->paused, 1, __ATOMIC_RELAXED);
			if (!ret) {
				snprintf(err, errlen, "saved, but the sandbox did not resume: %s",
					 strerror(-rr));
				ret = rr;
			}
		}
	}
	pthread_mutex_unlock(&sb->vm_mu);
	return ret;
}

int registry_template_save(struct registry *r, struct reg_sandbox *sb, const char *name,
			   json_t **out, char *err, size_t errlen)
{
	struct kiln_template_info t;
	char dir[PATH_MAX];
	int ret;

	*out = NULL;
	if (registry_template_dir(r, sb->tenant, dir, sizeof(dir))) {
		snprintf(err, errlen, "the template directory's path is too long");
		return -ENAMETOOLONG;
	}
	ret = save_template(r, sb, dir, name, &t, err, errlen);
	if (!ret)
		*out = kiln_template_info_json(&t);
	return ret;
}

int registry_fork(struct registry *r, const struct tokens_tenant *tenant, struct reg_sandbox *sb,
		  unsigned count, struct reg_sandbox **out, char *err, size_t errlen)
{
	struct kiln_template_info t;
	struct registry_create c = { .tenant = tenant };
	char dir[PATH_MAX], tdir[PATH_MAX], name[24];
	uint8_t rnd[8];
	unsigned made = 0;
	int ret;

	memset(out, 0, count * sizeof(*out));
	/* Refused before any work when the clones cannot all run (each create
	 * checks again). */
	pthread_mutex_lock(&r->mu);
	ret = room_locked(r, tenant, sb->cpus, sb->memory_mib, count, err, errlen);
	if (ret == -EDQUOT || ret == -ENOSPC)
		r->quota_refusals++;
	pthread_mutex_unlock(&r->mu);
	if (ret)
		return ret;
	ret = forks_dir(r, dir, sizeof(dir));
	if (ret) {
		snprintf(err, errlen, "cannot create %s/forks: %s", r->c.state_dir, strerror(-ret));
		return ret;
	}
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
		snprintf(err, errlen, "no random bytes for a name");
		return -EIO;
	}
	snprintf(name, sizeof(name), "f-");
	for (unsigned i = 0; i < sizeof(rnd); i++)
		snprintf(name + 2 + 2 * i, sizeof(name) - 2 - 2 * i, "%02x", rnd[i]);
	ret = save_template(r, sb, dir, name, &t, err, errlen);
	if (ret)
		return ret;
	/* Each clone: the source's image, machine, timeout and metadata, no
	 * network (a sandbox with rules is not saved), its own identity. */
	snprintf(c.image, sizeof(c.image), "%s", sb->image);
	snprintf(c.template_name, sizeof(c.template_name), "%s", name);
	c.template_dir = dir;
	c.forked_from = sb->id;
	c.timeout_s = sb->timeout_s;
	c.metadata_json = sb->metadata_json;
	for (; made < count; made++) {
		ret = registry_create(r, &c, &out[made], err, errlen);
		/* The fork's own template missing or refused: ours to answer for. */
		if (ret == -ENOENT || ret == -EINVAL)
			ret = -EIO;
		if (ret)
			break;
	}
	/* All or none. */
	if (ret)
		for (unsigned i = 0; i < made; i++) {
			registry_delete(r, out[i]);
			registry_put(r, out[i]);
			out[i] = NULL;
		}
	/* The clones run from their own copies of the disk and their mapping of
	 * the memory file: the template is not needed any more. */
	if (snprintf(tdir, sizeof(tdir), "%s/%s", dir, name) < (int)sizeof(tdir))
		kiln_template_remove_dir(tdir);
	return ret;
}

const char *registry_id(const struct reg_sandbox *sb)
{
	return sb->id;
}

/* Under r->mu: "paused" is a running sandbox whose vCPUs are stopped. */
static const char *state_name(const struct reg_sandbox *sb)
{
	return sb->state == REG_RUNNING && __atomic_load_n(&sb->paused, __ATOMIC_RELAXED)
		       ? "paused"
		       : state_names[sb->state];
}

/* Under r->mu. */
static json_t *sb_json_locked(const struct reg_sandbox *sb)
{
	json_t *o = json_object(), *allow = json_array(), *meta;
	char created[40], expires[40];
	uint64_t now = now_ns();
	int64_t exp_ms;

	if (!o || !allow) {
		json_decref(o);
		json_decref(allow);
		return NULL;
	}
	for (unsigned i = 0; i < sb->nallow; i++)
		json_array_append_new(allow, json_string(sb->allow[i]));
	meta = json_loads(sb->metadata_json, 0, NULL);
	rfc3339((int64_t)sb->created_ms, created, sizeof(created));
	json_object_set_new(o, "id", json_string(sb->id));
	json_object_set_new(o, "state", json_string(state_name(sb)));
	json_object_set_new(o, "image", json_string(sb->image));
	json_object_set_new(o, "template", sb->template_name[0] ? json_string(sb->template_name)
							       : json_null());
	json_object_set_new(o, "forked_from", sb->forked_from[0] ? json_string(sb->forked_from)
							      : json_null());
	json_object_set_new(o, "cpus", json_integer(sb->cpus));
	json_object_set_new(o, "memory_mib", json_integer((json_int_t)sb->memory_mib));
	json_object_set_new(o, "disk_mib", json_integer((json_int_t)sb->disk_mib));
	json_object_set_new(o, "timeout_s", json_integer((json_int_t)sb->timeout_s));
	json_object_set_new(o, "allow", allow);
	json_object_set_new(o, "net_rate", json_integer((json_int_t)sb->net_rate));
	json_object_set_new(o, "metadata", meta ? meta : json_object());
	json_object_set_new(o, "created_at", json_string(created));
	if (sb->state == REG_RUNNING) {
		exp_ms = wall_ms() + (int64_t)((sb->deadline_ns > now ? sb->deadline_ns - now : 0) /
					       1000000ULL);
		rfc3339(exp_ms, expires, sizeof(expires));
		json_object_set_new(o, "expires_at", json_string(expires));
		json_object_set_new(o, "boot_ms", json_integer((json_int_t)sb->boot_ms));
	}
	return o;
}

json_t *registry_sandbox_json(struct registry *r, struct reg_sandbox *sb)
{
	json_t *o;

	pthread_mutex_lock(&r->mu);
	o = sb_json_locked(sb);
	pthread_mutex_unlock(&r->mu);
	return o;
}

json_t *registry_list_json(struct registry *r, const char *tenant, const char *state)
{
	json_t *arr = json_array();

	pthread_mutex_lock(&r->mu);
	for (struct reg_sandbox *sb = r->list; arr && sb; sb = sb->next) {
		if (sb->state == REG_GONE || strcmp(sb->tenant, tenant))
			continue;
		if (state && strcmp(state, state_name(sb)))
			continue;
		json_array_append_new(arr, sb_json_locked(sb));
	}
	pthread_mutex_unlock(&r->mu);
	return arr;
}

void registry_capacity(struct registry *r, unsigned *used, unsigned *max)
{
	pthread_mutex_lock(&r->mu);
	*used = r->nlive;
	*max = r->c.max_sandboxes;
	pthread_mutex_unlock(&r->mu);
}

void registry_capacity_full(struct registry *r, struct registry_cap *c)
{
	unsigned cpus;
	uint64_t mib;

	pthread_mutex_lock(&r->mu);
	host_usage(r, &c->starting, &cpus, &mib);
	c->used = r->nlive;
	c->slots = r->c.max_sandboxes;
	c->free_cpus = cpus < r->c.max_cpus ? r->c.max_cpus - cpus : 0;
	c->free_memory_mib = mib < r->c.max_memory_mib ? r->c.max_memory_mib - mib : 0;
	c->draining = r->draining;
	pthread_mutex_unlock(&r->mu);
}

void registry_set_draining(struct registry *r, bool on)
{
	pthread_mutex_lock(&r->mu);
	r->draining = on;
	pthread_mutex_unlock(&r->mu);
}

void registry_count(struct registry *r, enum registry_counter c, uint64_t n)
{
	pthread_mutex_lock(&r->mu);
	r->counters[c] += n;
	pthread_mutex_unlock(&r->mu);
}

/* An append-only text buffer that stops growing on failure (then NULL). */
struct mbuf {
	char *p;
	size_t len, cap;
	bool failed;
};

static void __attribute__((format(printf, 2, 3))) mb_printf(struct mbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->failed)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->failed = true;
			return;
		}
		if (b->p && b->len + (size_t)n < b->cap) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = (b->cap ? b->cap * 2 : 4096) + (size_t)n;
		char *p = realloc(b->p, cap);

		if (!p) {
			b->failed = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
}

static void mb_counter(struct mbuf *b, const char *name, const char *help, uint64_t v)
{
	mb_printf(b, "# HELP %s %s\n# TYPE %s counter\n%s %" PRIu64 "\n", name, help, name, name, v);
}

char *registry_metrics(struct registry *r)
{
	struct mbuf b = { 0 };
	unsigned by_state[4] = { 0 };

	pthread_mutex_lock(&r->mu);
	for (struct reg_sandbox *sb = r->list; sb; sb = sb->next)
		by_state[sb->state]++;
	mb_printf(&b, "# HELP kiln_sandboxes Sandboxes on this host by state.\n"
		      "# TYPE kiln_sandboxes gauge\n");
	for (unsigned i = 0; i < 3; i++)
		mb_printf(&b, "kiln_sandboxes{state=\"%s\"} %u\n", state_names[i], by_state[i]);
	mb_printf(&b, "# HELP kiln_sandbox_capacity Sandboxes this host may run.\n"
		      "# TYPE kiln_sandbox_capacity gauge\nkiln_sandbox_capacity %u\n",
		  r->c.max_sandboxes);
	mb_counter(&b, "kiln_sandbox_creates_total", "Sandboxes booted.", r->creates);
	mb_counter(&b, "kiln_sandbox_create_failures_total", "Sandboxes that did not boot.",
		   r->create_failures);
	mb_counter(&b, "kiln_sandbox_deletes_total", "Sandboxes deleted through the API.",
		   r->deletes);
	mb_counter(&b, "kiln_quota_refusals_total", "Creates refused over a quota.",
		   r->quota_refusals);
	mb_printf(&b, "# HELP kiln_limit_hits_total Sandboxes ended by a limit, by kind.\n"
		      "# TYPE kiln_limit_hits_total counter\n"
		      "kiln_limit_hits_total{kind=\"timeout\"} %" PRIu64 "\n"
		      "kiln_limit_hits_total{kind=\"vmm-lost\"} %" PRIu64 "\n",
		  r->timeouts, r->vmm_lost);
	mb_printf(&b, "# HELP kiln_boot_seconds Spawn to the guest agent's hello.\n"
		      "# TYPE kiln_boot_seconds histogram\n");
	for (unsigned i = 0; i < NBUCKETS; i++)
		mb_printf(&b, "kiln_boot_seconds_bucket{le=\"%g\"} %" PRIu64 "\n", boot_buckets[i],
			  r->boot_hist[i]);
	mb_printf(&b, "kiln_boot_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n"
		      "kiln_boot_seconds_sum %.6f\nkiln_boot_seconds_count %" PRIu64 "\n",
		  r->boot_count, r->boot_sum, r->boot_count);
	for (unsigned i = 0; i < REG_NCOUNTERS; i++)
		mb_counter(&b, counter_names[i], counter_help[i], r->counters[i]);
	mb_counter(&b, "kiln_net_allowed_total", "Connections and DNS queries let through.",
		   r->net_allowed);
	mb_counter(&b, "kiln_net_denied_total", "Connections and DNS queries denied.",
		   r->net_blocked);
	mb_printf(&b, "# HELP kiln_net_bytes_total Bytes through kiln-net, by direction.\n"
		      "# TYPE kiln_net_bytes_total counter\n"
		      "kiln_net_bytes_total{dir=\"up\"} %" PRIu64 "\n"
		      "kiln_net_bytes_total{dir=\"down\"} %" PRIu64 "\n",
		  r->net_bytes_up, r->net_bytes_down);
	pthread_mutex_unlock(&r->mu);
	if (b.failed) {
		free(b.p);
		return NULL;
	}
	return b.p;
}
