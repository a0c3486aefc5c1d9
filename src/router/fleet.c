/* kiln-router's fleet: discovery, capacity reports, placement (see fleet.h). */
#include "router/fleet.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <resolv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "router/upstream.h"
#include "sanitize.h"
#include "util.h"

#define PROBE_TIMEOUT_MS 2000
#define CAP_MAX 4096		/* bytes of a capacity report */
#define SAMPLE_MAX 16

struct fhost {
	char id[FLEET_HOST_MAX + 1];	/* "" until a DNS-found host told us */
	struct up_addr addr;
	struct fleet_cap cap;
	bool have_cap, down;
	uint64_t cap_ns;
	unsigned inflight;
};

struct fleet {
	struct fleet_config c;
	pthread_mutex_t mu;
	pthread_t thread;
	bool started;
	struct fhost *h;
	size_t n;
	/* The hosts file as last read. */
	dev_t dev;
	ino_t ino;
	struct timespec mtime;
	off_t size;
	bool file_read;
	char last_err[256];
};

int fleet_cap_parse(const char *json, size_t len, struct fleet_cap *out)
{
	json_t *o = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
	const char *keys[] = { "slots", "used", "starting", "free_cpus", "free_memory_mib" };
	json_int_t v[5];
	const char *id;
	int ret = -EINVAL;

	memset(out, 0, sizeof(*out));
	if (!json_is_object(o))
		goto out;
	id = json_string_value(json_object_get(o, "host_id"));
	if (!fleet_host_id_ok(id) || !json_is_boolean(json_object_get(o, "draining")))
		goto out;
	for (size_t i = 0; i < 5; i++) {
		json_t *x = json_object_get(o, keys[i]);

		if (!json_is_integer(x) || json_integer_value(x) < 0 ||
		    json_integer_value(x) > (i == 4 ? ((json_int_t)1 << 50) : 1 << 24))
			goto out;
		v[i] = json_integer_value(x);
	}
	snprintf(out->host_id, sizeof(out->host_id), "%s", id);
	out->slots = (unsigned)v[0];
	out->used = (unsigned)v[1];
	out->starting = (unsigned)v[2];
	out->free_cpus = (unsigned)v[3];
	out->free_memory_mib = (uint64_t)v[4];
	out->draining = json_is_true(json_object_get(o, "draining"));
	ret = 0;
out:
	json_decref(o);
	return ret;
}

/* GET /v1/capacity from a: 0 with the report; -ECONNREFUSED & co when the
 * host does not answer (down); -EACCES when it answers without a report
 * (a token it refuses); the host's id, from X-Kiln-Host, in id either way. */
static int probe(const struct up_addr *a, const char *auth, struct fleet_cap *cap, char *id,
		 size_t idlen)
{
	const char *hdrs[] = { "Authorization", auth, NULL };
	unsigned status;
	char *body = NULL;
	size_t len;
	int ret;

	ret = up_exchange(a, "GET", "/v1/capacity", auth ? hdrs : NULL, NULL, 0, PROBE_TIMEOUT_MS,
			  &status, &body, &len, CAP_MAX, id, idlen);
	if (ret)
		goto out;
	ret = -EACCES;
	if (status == 200 && !fleet_cap_parse(body, len, cap)) {
		snprintf(id, idlen, "%s", cap->host_id);
		ret = 0;
	}
	if (!fleet_host_id_ok(id))
		id[0] = 0;
out:
	free(body);
	return ret;
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* ---- discovery ---- */

/* At most max bytes of fd (-EFBIG beyond), NUL-terminated. */
static int read_file_max(int fd, char **out, size_t *len, size_t max)
{
	char *b = malloc(max + 2);
	size_t n = 0;
	int ret = -ENOMEM;

	*out = NULL;
	*len = 0;
	if (!b)
		goto out;
	for (;;) {
		ssize_t r = read(fd, b + n, max + 1 - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			ret = -errno;
			goto out;
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n > max) {
			ret = -EFBIG;
			goto out;
		}
	}
	b[n] = 0;
	*out = b;
	*len = n;
	b = NULL;
	ret = 0;
out:
	free(b);
	return ret;
}

/* The hosts file if it changed: 1 with a new list, 0 unchanged, -errno. */
static int read_file(struct fleet *f, struct hosts_entry **out, size_t *n, char *err,
		     size_t errlen)
{
	struct stat st;
	char *text = NULL;
	size_t len = 0;
	int fd = -1, ret;

	*out = NULL;
	*n = 0;
	fd = open(f->c.hosts_file, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		ret = -errno;
		snprintf(err, errlen, "%s: %s", f->c.hosts_file, strerror(errno));
		goto out;
	}
	ret = 0;
	if (f->file_read && st.st_dev == f->dev && st.st_ino == f->ino && st.st_size == f->size &&
	    st.st_mtim.tv_sec == f->mtime.tv_sec && st.st_mtim.tv_nsec == f->mtime.tv_nsec)
		goto out;
	ret = -EFBIG;
	if (!S_ISREG(st.st_mode) || st.st_size > HOSTS_FILE_MAX) {
		snprintf(err, errlen, "%s: not a regular file of at most %d bytes",
			 f->c.hosts_file, HOSTS_FILE_MAX);
		goto out;
	}
	ret = read_file_max(fd, &text, &len, HOSTS_FILE_MAX);
	if (ret) {
		snprintf(err, errlen, "%s: %s", f->c.hosts_file, strerror(-ret));
		goto out;
	}
	{
		char why[200];

		ret = hosts_parse(text, len, out, n, why, sizeof(why));
		if (ret) {
			snprintf(err, errlen, "%s: %s", f->c.hosts_file, why);
			goto out;
		}
	}
	f->dev = st.st_dev;
	f->ino = st.st_ino;
	f->size = st.st_size;
	f->mtime = st.st_mtim;
	f->file_read = true;
	ret = 1;
out:
	free(text);
	if (fd >= 0)
		close(fd);
	return ret;
}

/* A and AAAA records of NAME:PORT (dns_a) as hosts without ids yet. */
static int resolve_a(const char *spec, struct hosts_entry **out, size_t *n, char *err,
		     size_t errlen)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICSERV };
	struct addrinfo *res = NULL;
	struct hosts_entry *arr = NULL;
	const char *colon = strrchr(spec, ':');
	char name[HOSTS_NAME_MAX + 1], url[HOSTS_URL_MAX + 1];
	size_t count = 0;
	int ret = -EINVAL, r;

	*out = NULL;
	*n = 0;
	if (!colon || colon == spec || (size_t)(colon - spec) > HOSTS_NAME_MAX) {
		snprintf(err, errlen, "--dns-a %s: want NAME:PORT", spec);
		goto out;
	}
	memcpy(name, spec, (size_t)(colon - spec));
	name[colon - spec] = 0;
	r = getaddrinfo(name, colon + 1, &hints, &res);
	if (r) {
		ret = -EHOSTUNREACH;
		snprintf(err, errlen, "--dns-a %s: %s", spec, gai_strerror(r));
		goto out;
	}
	ret = -ENOMEM;
	arr = calloc(HOSTS_MAX, sizeof(*arr));
	if (!arr)
		goto out;
	for (struct addrinfo *ai = res; ai && count < HOSTS_MAX; ai = ai->ai_next) {
		char ip[INET6_ADDRSTRLEN];
		const void *p = ai->ai_family == AF_INET
					? (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
					: (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
		bool dup = false;

		if (!inet_ntop(ai->ai_family, p, ip, sizeof(ip)))
			continue;
		snprintf(url, sizeof(url), ai->ai_family == AF_INET6 ? "http://[%s]:%s" : "http://%s:%s",
			 ip, colon + 1);
		for (size_t i = 0; i < count; i++)
			dup |= !strcmp(arr[i].addr.url, url);
		if (!dup && !hosts_url_parse(url, &arr[count].addr))
			count++;
	}
	*out = arr;
	*n = count;
	arr = NULL;
	ret = 0;
out:
	if (res)
		freeaddrinfo(res);
	free(arr);
	return ret;
}

/* SRV records of dns_srv (target:port each) as hosts without ids yet. */
static int resolve_srv(const char *name, struct hosts_entry **out, size_t *n, char *err,
		       size_t errlen)
{
	unsigned char ans[16384];
	struct hosts_entry *arr = NULL;
	struct __res_state rs;
	ns_msg msg;
	size_t count = 0;
	int len, ret = -EHOSTUNREACH;

	*out = NULL;
	*n = 0;
	memset(&rs, 0, sizeof(rs));
	if (res_ninit(&rs)) {
		snprintf(err, errlen, "--dns-srv: no resolver configuration");
		goto out;
	}
	len = res_nquery(&rs, name, ns_c_in, ns_t_srv, ans, sizeof(ans));
	res_nclose(&rs);
	if (len < 0 || ns_initparse(ans, len, &msg) < 0) {
		snprintf(err, errlen, "--dns-srv %s: no SRV records", name);
		goto out;
	}
	ret = -ENOMEM;
	arr = calloc(HOSTS_MAX, sizeof(*arr));
	if (!arr)
		goto out;
	for (int i = 0; i < ns_msg_count(msg, ns_s_an) && count < HOSTS_MAX; i++) {
		ns_rr rr;
		char target[NS_MAXDNAME], url[HOSTS_URL_MAX + 1];
		const unsigned char *rd;
		unsigned port;

		if (ns_parserr(&msg, ns_s_an, i, &rr) < 0 || ns_rr_type(rr) != ns_t_srv ||
		    ns_rr_rdlen(rr) < 7)
			continue;
		rd = ns_rr_rdata(rr);
		port = (unsigned)rd[4] << 8 | rd[5];
		if (dn_expand(ns_msg_base(msg), ns_msg_end(msg), rd + 6, target, sizeof(target)) < 0)
			continue;
		if (snprintf(url, sizeof(url), "http://%s:%u", target, port) >= (int)sizeof(url))
			continue;
		if (!hosts_url_parse(url, &arr[count].addr))
			count++;
	}
	*out = arr;
	*n = count;
	arr = NULL;
	ret = 0;
out:
	free(arr);
	return ret;
}

/* ---- the table ---- */

/* Under f->mu: the new list, keeping what we knew of hosts still in it. */
static void merge_locked(struct fleet *f, const struct hosts_entry *e, size_t n)
{
	struct fhost *nh = calloc(n ? n : 1, sizeof(*nh));

	if (!nh)
		return;
	for (size_t i = 0; i < n; i++) {
		nh[i].addr = e[i].addr;
		snprintf(nh[i].id, sizeof(nh[i].id), "%s", e[i].id);
		for (size_t j = 0; j < f->n; j++) {
			struct fhost *o = &f->h[j];
			bool same = e[i].id[0] ? !strcmp(o->id, e[i].id) &&
							 !strcmp(o->addr.url, e[i].addr.url)
					       : !strcmp(o->addr.url, e[i].addr.url);

			if (same) {
				nh[i] = *o;
				nh[i].addr = e[i].addr;
				break;
			}
		}
	}
	free(f->h);
	f->h = nh;
	f->n = n;
}

static void log_once(struct fleet *f, const char *msg)
{
	if (strcmp(f->last_err, msg)) {
		char safe[300];

		fprintf(stderr, "kiln-router: %s\n", text_sanitize_str(safe, sizeof(safe), msg));
		snprintf(f->last_err, sizeof(f->last_err), "%s", msg);
	}
}

/* Discovery, then every host's capacity report. */
static int refresh(struct fleet *f, char *err, size_t errlen)
{
	struct hosts_entry *e = NULL;
	struct up_addr *addrs = NULL;
	struct fleet_cap *caps = NULL;
	char (*ids)[FLEET_HOST_MAX + 1] = NULL;
	int *res = NULL;
	size_t n = 0, m;
	int ret;

	if (f->c.hosts_file)
		ret = read_file(f, &e, &n, err, errlen);
	else if (f->c.dns_srv)
		ret = resolve_srv(f->c.dns_srv, &e, &n, err, errlen) ?: 1;
	else
		ret = resolve_a(f->c.dns_a, &e, &n, err, errlen) ?: 1;
	if (ret < 0)
		goto out;
	pthread_mutex_lock(&f->mu);
	if (ret > 0) {
		if (f->c.hosts_file)
			fprintf(stderr, "kiln-router: %s: %zu hosts\n", f->c.hosts_file, n);
		merge_locked(f, e, n);
	}
	m = f->n;
	addrs = calloc(m ? m : 1, sizeof(*addrs));
	caps = calloc(m ? m : 1, sizeof(*caps));
	ids = calloc(m ? m : 1, sizeof(*ids));
	res = calloc(m ? m : 1, sizeof(*res));
	for (size_t i = 0; addrs && i < m; i++)
		addrs[i] = f->h[i].addr;
	pthread_mutex_unlock(&f->mu);
	ret = -ENOMEM;
	if (!addrs || !caps || !ids || !res)
		goto out;
	for (size_t i = 0; i < m; i++)
		res[i] = probe(&addrs[i], f->c.upstream_token, &caps[i], ids[i], sizeof(ids[i]));
	pthread_mutex_lock(&f->mu);
	for (size_t i = 0; i < m; i++) {
		for (size_t j = 0; j < f->n; j++) {
			struct fhost *h = &f->h[j];

			if (strcmp(h->addr.url, addrs[i].url))
				continue;
			/* A file names the host; DNS learns it from the host. A host
			 * answering with another id than the file says is left out. */
			if (!f->c.hosts_file && ids[i][0])
				snprintf(h->id, sizeof(h->id), "%s", ids[i]);
			h->down = res[i] != 0 && res[i] != -EACCES;
			if (ids[i][0] && strcmp(ids[i], h->id))
				h->down = true;
			h->have_cap = res[i] == 0 && !h->down;
			if (h->have_cap) {
				h->cap = caps[i];
				h->cap_ns = mono_ns();
			}
		}
	}
	pthread_mutex_unlock(&f->mu);
	ret = 0;
out:
	free(e);
	free(addrs);
	free(caps);
	free(ids);
	free(res);
	return ret;
}

static void *refresher(void *arg)
{
	struct fleet *f = arg;
	char err[256];

	for (;;) {
		struct pollfd p = { .fd = f->c.stop_fd, .events = POLLIN };

		if (poll(&p, 1, (int)f->c.refresh_s * 1000) != 0)
			break;
		if (refresh(f, err, sizeof(err)))
			log_once(f, err);
		else
			f->last_err[0] = 0;
	}
	return NULL;
}

int fleet_start(const struct fleet_config *c, struct fleet **out, char *err, size_t errlen)
{
	struct fleet *f = calloc(1, sizeof(*f));
	int ret = -ENOMEM;

	*out = NULL;
	if (!f)
		goto out;
	f->c = *c;
	if (f->c.sample < 1)
		f->c.sample = 1;
	if (f->c.sample > SAMPLE_MAX)
		f->c.sample = SAMPLE_MAX;
	pthread_mutex_init(&f->mu, NULL);
	/* A hosts file must be right from the start (a router that starts
	 * blind says so); DNS may still be empty while the hosts come up. */
	ret = refresh(f, err, errlen);
	if (ret && f->c.hosts_file)
		goto out;
	if (ret)
		log_once(f, err);
	ret = -pthread_create(&f->thread, NULL, refresher, f);
	if (ret) {
		snprintf(err, errlen, "cannot start a thread");
		goto out;
	}
	f->started = true;
	*out = f;
	f = NULL;
out:
	fleet_stop(f);
	return ret;
}

void fleet_stop(struct fleet *f)
{
	if (!f)
		return;
	if (f->started)
		pthread_join(f->thread, NULL);
	pthread_mutex_destroy(&f->mu);
	free(f->h);
	free(f);
}

static struct fhost *find_locked(struct fleet *f, const char *id)
{
	for (size_t i = 0; id && id[0] && i < f->n; i++)
		if (!strcmp(f->h[i].id, id))
			return &f->h[i];
	return NULL;
}

int fleet_addr(struct fleet *f, const char *id, struct up_addr *out)
{
	struct fhost *h;
	int ret = -ENOENT;

	pthread_mutex_lock(&f->mu);
	h = find_locked(f, id);
	if (h) {
		*out = h->addr;
		ret = 0;
	}
	pthread_mutex_unlock(&f->mu);
	return ret;
}

size_t fleet_addrs(struct fleet *f, struct up_addr *out, char (*ids)[FLEET_HOST_MAX + 1],
		   size_t max)
{
	size_t n = 0;

	pthread_mutex_lock(&f->mu);
	for (size_t i = 0; i < f->n && n < max; i++) {
		if (!f->h[i].id[0] || f->h[i].down)
			continue;
		out[n] = f->h[i].addr;
		snprintf(ids[n], sizeof(ids[n]), "%s", f->h[i].id);
		n++;
	}
	pthread_mutex_unlock(&f->mu);
	return n;
}

static long long free_slots(const struct fhost *h)
{
	return (long long)h->cap.slots - h->cap.used - h->inflight;
}

static bool excluded(const char *id, const char (*ex)[FLEET_HOST_MAX + 1], size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(ex[i], id))
			return true;
	return false;
}

int fleet_place(struct fleet *f, const char *auth, const char (*exclude)[FLEET_HOST_MAX + 1],
		size_t nexclude, char *id, struct up_addr *addr)
{
	char pick[SAMPLE_MAX][FLEET_HOST_MAX + 1];
	struct up_addr pa[SAMPLE_MAX];
	size_t npick = 0, ncand = 0;
	uint64_t stale = (uint64_t)f->c.refresh_s * 1000000000ULL, now = mono_ns();
	struct fhost *best = NULL;
	int ret = -EAGAIN;

	pthread_mutex_lock(&f->mu);
	/* Reservoir sample of K candidates. */
	for (size_t i = 0; i < f->n; i++) {
		struct fhost *h = &f->h[i];
		uint32_t r;

		if (!h->id[0] || h->down || excluded(h->id, exclude, nexclude) ||
		    (h->have_cap && (h->cap.draining || free_slots(h) <= 0) &&
		     now - h->cap_ns < stale))
			continue;
		ncand++;
		if (npick < f->c.sample) {
			snprintf(pick[npick], sizeof(pick[0]), "%s", h->id);
			pa[npick++] = h->addr;
			continue;
		}
		if (getrandom(&r, sizeof(r), 0) != sizeof(r))
			r = (uint32_t)now;
		if (r % ncand < f->c.sample) {
			snprintf(pick[r % ncand], sizeof(pick[0]), "%s", h->id);
			pa[r % ncand] = h->addr;
		}
	}
	/* Reports older than one refresh are asked again (outside the lock). */
	for (size_t i = 0; i < npick; i++) {
		struct fhost *h = find_locked(f, pick[i]);
		struct fleet_cap cap;
		char hid[FLEET_HOST_MAX + 1];
		int r;

		if (!h || (h->have_cap && now - h->cap_ns < stale))
			continue;
		pthread_mutex_unlock(&f->mu);
		r = probe(&pa[i], f->c.upstream_token ? f->c.upstream_token : auth, &cap, hid,
			  sizeof(hid));
		pthread_mutex_lock(&f->mu);
		h = find_locked(f, pick[i]);
		if (!h)
			continue;
		if (r && r != -EACCES)
			h->down = true;
		if (!r && !strcmp(hid, h->id)) {
			h->cap = cap;
			h->have_cap = true;
			h->cap_ns = mono_ns();
		}
	}
	for (size_t i = 0; i < npick; i++) {
		struct fhost *h = find_locked(f, pick[i]);

		if (!h || h->down || !h->have_cap || h->cap.draining || free_slots(h) <= 0)
			continue;
		if (!best || free_slots(h) > free_slots(best))
			best = h;
	}
	if (best) {
		best->inflight++;
		snprintf(id, FLEET_HOST_MAX + 1, "%s", best->id);
		*addr = best->addr;
		ret = 0;
	}
	pthread_mutex_unlock(&f->mu);
	return ret;
}

void fleet_placed(struct fleet *f, const char *id, bool created, bool failed, bool down)
{
	struct fhost *h;

	pthread_mutex_lock(&f->mu);
	h = find_locked(f, id);
	if (h) {
		if (h->inflight)
			h->inflight--;
		if (created && h->have_cap)
			h->cap.used++;
		if (failed)
			h->have_cap = false;
		if (down)
			h->down = true;
	}
	pthread_mutex_unlock(&f->mu);
}

void fleet_released(struct fleet *f, const char *id)
{
	struct fhost *h;

	pthread_mutex_lock(&f->mu);
	h = find_locked(f, id);
	if (h && h->have_cap && h->cap.used)
		h->cap.used--;
	pthread_mutex_unlock(&f->mu);
}

void fleet_sum(struct fleet *f, struct fleet_sum *s)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_lock(&f->mu);
	s->hosts = (unsigned)f->n;
	for (size_t i = 0; i < f->n; i++) {
		const struct fhost *h = &f->h[i];

		if (h->down || !h->have_cap)
			continue;
		s->live++;
		s->slots += h->cap.slots;
		s->used += h->cap.used;
		s->starting += h->cap.starting;
		s->free_cpus += h->cap.free_cpus;
		s->free_memory_mib += h->cap.free_memory_mib;
		s->draining += h->cap.draining;
	}
	pthread_mutex_unlock(&f->mu);
}
