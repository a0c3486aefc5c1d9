/*
 * kiln-router's HTTP side (see proxy.h). Four kinds of request:
 *   - its own: GET /v1/health, GET /v1/capacity (the fleet's sums);
 *   - a create, POST /v1/sandboxes: placed on the best sampled host, retried
 *     elsewhere on 429, 503 or no answer (3 tries at most);
 *   - a list, GET /v1/sandboxes or /v1/runs: asked of every host, merged;
 *   - anything under /v1/sandboxes/{id} or /v1/runs/{id}: forwarded as it
 *     comes to the host named in the id, and its answer streamed back.
 */
#include "router/proxy.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "daemon/tokens.h"
#include "fleetid.h"
#include "router/fleet.h"
#include "router/upstream.h"
#include "util.h"

#define JSON_BODY_MAX (64 * 1024)
#define LIST_MAX (16u << 20)	   /* one host's list answer */
#define TARGET_MAX 4096		   /* path and query */
#define CONNECT_TIMEOUT_MS 3000
#define CREATE_TIMEOUT_MS 300000   /* a boot, with kilnd's queue before it */
#define LIST_TIMEOUT_MS 15000
#define IO_TIMEOUT_MS 120000	   /* an upload's write, an answer's head */
#define CREATE_TRIES 3
#define RETRY_AFTER_S "5"
#define IDLE_TIMEOUT_S 60
#define THREAD_STACK (256 * 1024)
#define MAX_FANOUT 256

struct proxy {
	struct proxy_config c;
	struct MHD_Daemon *mhd;
};

enum kind { K_ERROR, K_HEALTH, K_CAPACITY, K_CREATE, K_LIST, K_FIND, K_TDELETE, K_FORWARD };

struct req {
	struct proxy *p;
	bool started;
	enum kind kind;
	char auth[4200];
	char target[TARGET_MAX];
	char list_key[16];
	/* K_CREATE: the JSON body. */
	char *body;
	size_t len;
	bool too_large;
	/* K_FORWARD: the upstream, once opened. */
	struct up_conn *up;
	uint64_t sent, limit;
	int up_err;
	/* A DELETE of the sandbox itself: its host, whose slot a 2xx frees. */
	char release[FLEET_HOST_MAX + 1];
};

/* ---- answers ---- */

static enum MHD_Result send_buf(struct MHD_Connection *conn, unsigned status, const char *type,
				char *text, size_t len, const char *retry_after)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
	enum MHD_Result ret;

	if (!r) {
		free(text);
		return MHD_NO;
	}
	if (type)
		MHD_add_response_header(r, "Content-Type", type);
	if (retry_after)
		MHD_add_response_header(r, "Retry-After", retry_after);
	ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

/* Takes the reference. */
static enum MHD_Result send_json(struct MHD_Connection *conn, unsigned status, json_t *j,
				 const char *retry_after)
{
	char *text = j ? json_dumps(j, JSON_COMPACT) : NULL, *p;
	size_t len;

	json_decref(j);
	if (!text)
		return MHD_NO;
	len = strlen(text);
	p = realloc(text, len + 2);
	if (!p) {
		free(text);
		return MHD_NO;
	}
	p[len++] = '\n';
	p[len] = 0;
	return send_buf(conn, status, "application/json", p, len, retry_after);
}

static enum MHD_Result __attribute__((format(printf, 5, 6)))
send_error(struct MHD_Connection *conn, unsigned status, const char *retry_after,
	   const char *code, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* The message may quote the decoded path (any bytes): JSON wants UTF-8. */
	for (char *m = msg; *m; m++)
		if ((unsigned char)*m < 0x20 || (unsigned char)*m >= 0x7f)
			*m = '?';
	return send_json(conn, status,
			 json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg),
			 retry_after);
}

/* A whole upstream answer passed on (its type, its host, its replay mark). */
static enum MHD_Result send_upstream(struct MHD_Connection *conn, unsigned status, char *body,
				     size_t len, const char *host, bool replayed)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	enum MHD_Result ret;

	if (!r) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", "application/json");
	if (host && host[0])
		MHD_add_response_header(r, "X-Kiln-Host", host);
	if (replayed)
		MHD_add_response_header(r, "Idempotent-Replayed", "true");
	ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

/* ---- the request's target: as the client sent it ---- */

/* MHD hands over the raw request target (before it decodes it) here; it
 * becomes the request's state. Over TARGET_MAX, or holding a byte kilnd
 * never takes, it is left empty and the request is refused. */
static void *uri_log(void *cls, const char *uri, struct MHD_Connection *conn)
{
	struct req *q = calloc(1, sizeof(*q));
	size_t n = uri ? strnlen(uri, TARGET_MAX) : 0;
	bool ok = n && n < TARGET_MAX && uri[0] == '/';

	if (!q)
		return NULL;
	q->p = cls;
	for (size_t i = 0; ok && i < n; i++)
		ok = uri[i] > 0x20 && uri[i] < 0x7f;
	if (ok)
		memcpy(q->target, uri, n + 1);
	return q;
}

/* ---- own answers ---- */

static enum MHD_Result h_health(struct req *q, struct MHD_Connection *conn)
{
	struct fleet_sum s;

	fleet_sum(q->p->c.fleet, &s);
	return send_json(conn, 200, json_pack("{s:s,s:s,s:I,s:I}", "status", "ok", "role",
					      "router", "hosts", (json_int_t)s.hosts, "live",
					      (json_int_t)s.live), NULL);
}

static enum MHD_Result h_capacity(struct req *q, struct MHD_Connection *conn)
{
	struct fleet_sum s;

	fleet_sum(q->p->c.fleet, &s);
	return send_json(conn, 200,
			 json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:b,s:I,s:I}", "host_id", "router",
				   "slots", (json_int_t)s.slots, "used", (json_int_t)s.used,
				   "starting", (json_int_t)s.starting, "free_cpus",
				   (json_int_t)s.free_cpus, "free_memory_mib",
				   (json_int_t)s.free_memory_mib, "hosts", (json_int_t)s.hosts,
				   "draining", s.live > 0 && s.draining == s.live, "live",
				   (json_int_t)s.live, "hosts_draining", (json_int_t)s.draining),
			 NULL);
}

/* ---- placement ---- */

/* A kilnd's 404 to a create whose template it does not hold. */
static bool create_template_missing(const char *resp)
{
	json_t *j = json_loads(resp ? resp : "", 0, NULL);
	const char *code = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
	bool yes = code && !strcmp(code, "template_not_found");

	json_decref(j);
	return yes;
}

/* Hosts in discovery that a placement passed over (full, draining, down). */
static bool hosts_untried(struct fleet *f, size_t ntried)
{
	struct fleet_sum s;

	fleet_sum(f, &s);
	return s.hosts > ntried;
}

static enum MHD_Result h_create(struct req *q, struct MHD_Connection *conn)
{
	char (*tried)[FLEET_HOST_MAX + 1] = NULL;
	char id[FLEET_HOST_MAX + 1], host[FLEET_HOST_MAX + 1], last[256] = "";
	char tenant_host[FLEET_HOST_MAX + 1] = "", *tenant_refusal = NULL;
	char *missing = NULL; /* a host's 404 template_not_found, the answer if none has it */
	size_t tenant_len = 0, missing_len = 0;
	const char *idem = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Idempotency-Key");
	const char *hdrs[8];
	size_t ntried = 0, nrefused = 0, h = 0;
	struct up_addr addr;
	enum MHD_Result ret;

	if (q->too_large)
		return send_error(conn, 413, NULL, "too_large", "the JSON body is over %d bytes",
				  JSON_BODY_MAX);
	hdrs[h++] = "Content-Type";
	hdrs[h++] = "application/json";
	if (q->auth[0]) {
		hdrs[h++] = "Authorization";
		hdrs[h++] = q->auth;
	}
	if (idem && strlen(idem) <= 255) {
		hdrs[h++] = "Idempotency-Key";
		hdrs[h++] = idem;
	}
	hdrs[h] = NULL;
	tried = calloc(MAX_FANOUT, sizeof(*tried));
	if (!tried)
		return send_error(conn, 500, NULL, "internal", "out of memory");
	/* At most CREATE_TRIES hosts that refuse (full, draining, silent); a
	 * create from a template goes on to every host until one has it
	 * (templates are per host). */
	while (nrefused < CREATE_TRIES && ntried < MAX_FANOUT) {
		unsigned status = 0;
		char *resp = NULL;
		size_t rlen = 0;
		struct up_conn *c = NULL;
		int r = fleet_place(q->p->c.fleet, q->auth[0] ? q->auth : NULL,
				    (const char(*)[FLEET_HOST_MAX + 1])tried, ntried, id, &addr);

		if (r)
			break;
		snprintf(tried[ntried++], sizeof(tried[0]), "%s", id);
		r = up_open(&addr, CONNECT_TIMEOUT_MS, &c);
		if (r) {
			/* No connection, so no request: another host. Once sent, a
			 * create may be under way there whatever happens next: it is
			 * never sent twice. */
			fleet_placed(q->p->c.fleet, id, false, true, r != -ETIMEDOUT);
			snprintf(last, sizeof(last), "host %s did not answer (%s)", id, strerror(-r));
			nrefused++;
			continue;
		}
		up_set_timeout(c, q->p->c.create_timeout_ms ? q->p->c.create_timeout_ms
							    : CREATE_TIMEOUT_MS);
		up_set_abort(c, -1, q->p->c.stop_fd);
		r = up_exchange_on(c, "POST", "/v1/sandboxes", hdrs, q->body ? q->body : "", q->len,
				   &status, &resp, &rlen, JSON_BODY_MAX * 4, host, sizeof(host));
		up_close(c);
		if (r) {
			fleet_placed(q->p->c.fleet, id, false, true, false);
			free(resp);
			ret = send_error(conn, 502, NULL, "upstream_error",
					 "host %s failed during the create: %s", id, strerror(-r));
			goto out;
		}
		if (status == 404 && create_template_missing(resp)) {
			fleet_placed(q->p->c.fleet, id, false, false, false);
			free(missing);
			missing = resp;
			missing_len = rlen;
			continue;
		}
		if (status == 429 || status == 503) {
			json_t *j = json_loads(resp, 0, NULL);
			json_t *e = json_object_get(j, "error");
			const char *m = json_string_value(json_object_get(e, "message"));
			const char *scope = json_string_value(json_object_get(e, "scope"));

			bool tenant = status == 429 && scope && !strcmp(scope, "tenant");

			snprintf(last, sizeof(last), "host %s: %s", id, m ? m : "full");
			json_decref(j);
			fleet_placed(q->p->c.fleet, id, false, true, false);
			nrefused++;
			/* Over the tenant's quota there: kept, in case no host takes it. */
			if (tenant) {
				free(tenant_refusal);
				tenant_refusal = resp;
				tenant_len = rlen;
				snprintf(tenant_host, sizeof(tenant_host), "%s", host);
			} else {
				free(resp);
			}
			continue;
		}
		fleet_placed(q->p->c.fleet, id, status == 201, false, false);
		ret = send_upstream(conn, status, resp, rlen, host, false);
		goto out;
	}
	/* Every host tried refused the tenant: that is its answer (quotas are
	 * per host, docs/daemon.md). */
	if (tenant_refusal) {
		ret = send_upstream(conn, 429, tenant_refusal, tenant_len, tenant_host, false);
		tenant_refusal = NULL; /* send_upstream owns it */
	} else if (missing && !nrefused && !hosts_untried(q->p->c.fleet, ntried)) {
		/* Every host answered, none holds the template. */
		ret = send_upstream(conn, 404, missing, missing_len, NULL, false);
		missing = NULL;
	} else if (missing && !nrefused) {
		/* A host passed over (full, draining, down) may hold it. */
		ret = send_error(conn, 503, RETRY_AFTER_S, "no_capacity",
				 "no host asked holds the template; a host that was full, draining or down may: retry later");
	} else {
		ret = send_error(conn, 503, RETRY_AFTER_S, "no_capacity",
				 "no host has room for a sandbox now%s%s", last[0] ? "; last: " : "",
				 last);
	}
out:
	free(tenant_refusal);
	free(missing);
	free(tried);
	return ret;
}

/* ---- lists: every host's, merged ---- */

static enum MHD_Result h_list(struct req *q, struct MHD_Connection *conn)
{
	struct up_addr *addrs = calloc(MAX_FANOUT, sizeof(*addrs));
	char (*ids)[FLEET_HOST_MAX + 1] = calloc(MAX_FANOUT, sizeof(*ids));
	const char *hdrs[] = { "Authorization", q->auth, NULL };
	json_t *all = json_array();
	unsigned status401 = 0;
	size_t n;
	enum MHD_Result ret;

	if (!addrs || !ids || !all) {
		free(addrs);
		free(ids);
		json_decref(all);
		return send_error(conn, 500, NULL, "internal", "out of memory");
	}
	n = fleet_addrs(q->p->c.fleet, addrs, ids, MAX_FANOUT);
	for (size_t i = 0; i < n; i++) {
		unsigned status;
		char *resp = NULL;
		size_t rlen;
		json_t *j, *arr;

		if (up_exchange(&addrs[i], "GET", q->target, q->auth[0] ? hdrs : NULL, NULL, 0,
				LIST_TIMEOUT_MS, &status, &resp, &rlen, LIST_MAX, NULL, 0)) {
			free(resp);
			continue;
		}
		if (status == 401)
			status401++;
		j = status == 200 ? json_loadb(resp, rlen, 0, NULL) : NULL;
		arr = json_object_get(j, q->list_key);
		/* Templates live on one host each: say which. */
		if (json_is_array(arr) && !strcmp(q->list_key, "templates"))
			for (size_t k = 0; k < json_array_size(arr); k++)
				if (json_is_object(json_array_get(arr, k)))
					json_object_set_new(json_array_get(arr, k), "host",
							    json_string(ids[i]));
		if (json_is_array(arr))
			json_array_extend(all, arr);
		json_decref(j);
		free(resp);
	}
	free(addrs);
	free(ids);
	if (n && status401 == n) {
		json_decref(all);
		return send_error(conn, 401, NULL, "unauthorized",
				  "a valid 'Authorization: Bearer TOKEN' is required");
	}
	ret = send_json(conn, 200, json_pack("{s:o}", q->list_key, all), NULL);
	return ret;
}

/* GET /v1/runs/{id} of an id without a host: the first host that has it. */
static enum MHD_Result h_find(struct req *q, struct MHD_Connection *conn)
{
	struct up_addr *addrs = calloc(MAX_FANOUT, sizeof(*addrs));
	char (*ids)[FLEET_HOST_MAX + 1] = calloc(MAX_FANOUT, sizeof(*ids));
	const char *hdrs[] = { "Authorization", q->auth, NULL };
	char host[FLEET_HOST_MAX + 1];
	size_t n;

	if (!addrs || !ids) {
		free(addrs);
		free(ids);
		return send_error(conn, 500, NULL, "internal", "out of memory");
	}
	n = fleet_addrs(q->p->c.fleet, addrs, ids, MAX_FANOUT);
	for (size_t i = 0; i < n; i++) {
		unsigned status;
		char *resp = NULL;
		size_t rlen;

		if (!up_exchange(&addrs[i], "GET", q->target, q->auth[0] ? hdrs : NULL, NULL, 0,
				 LIST_TIMEOUT_MS, &status, &resp, &rlen, LIST_MAX, host,
				 sizeof(host)) &&
		    (status == 200 || status == 401)) {
			free(addrs);
			free(ids);
			return send_upstream(conn, status, resp, rlen, host, false);
		}
		free(resp);
	}
	free(addrs);
	free(ids);
	return send_error(conn, 404, NULL, "not_found", "no run record on any host");
}

/* DELETE /v1/templates/{name}: a tenant's templates are per host, so every
 * host is asked; 204 when one had it, else the first other answer (404). */
static enum MHD_Result h_template_delete(struct req *q, struct MHD_Connection *conn)
{
	struct up_addr *addrs = calloc(MAX_FANOUT, sizeof(*addrs));
	char (*ids)[FLEET_HOST_MAX + 1] = calloc(MAX_FANOUT, sizeof(*ids));
	const char *hdrs[] = { "Authorization", q->auth, NULL };
	unsigned deleted = 0, status401 = 0;
	size_t n;

	if (!addrs || !ids) {
		free(addrs);
		free(ids);
		return send_error(conn, 500, NULL, "internal", "out of memory");
	}
	n = fleet_addrs(q->p->c.fleet, addrs, ids, MAX_FANOUT);
	for (size_t i = 0; i < n; i++) {
		unsigned status;
		char *resp = NULL;
		size_t rlen;

		if (!up_exchange(&addrs[i], "DELETE", q->target, q->auth[0] ? hdrs : NULL, NULL, 0,
				 LIST_TIMEOUT_MS, &status, &resp, &rlen, LIST_MAX, NULL, 0)) {
			deleted += status == 204;
			status401 += status == 401;
		}
		free(resp);
	}
	free(addrs);
	free(ids);
	if (deleted)
		return send_buf(conn, 204, NULL, NULL, 0, NULL);
	if (n && status401 == n)
		return send_error(conn, 401, NULL, "unauthorized",
				  "a valid 'Authorization: Bearer TOKEN' is required");
	return send_error(conn, 404, NULL, "not_found", "no such template on any host");
}

/* ---- forwarding ---- */

struct pipe {
	struct up_conn *up;
	int client_fd, stop_fd;
};

static ssize_t pipe_read(void *cls, uint64_t pos, char *out, size_t max)
{
	struct pipe *pp = cls;
	ssize_t n;

	(void)pos;
	while (!up_pending(pp->up)) {
		struct pollfd p[3] = { { .fd = up_fd(pp->up), .events = POLLIN },
				       { .fd = pp->client_fd, .events = POLLRDHUP },
				       { .fd = pp->stop_fd, .events = POLLIN } };
		int r = poll(p, 3, 1000);

		if (r < 0 && errno != EINTR)
			return MHD_CONTENT_READER_END_WITH_ERROR;
		if (r <= 0)
			continue;
		/* The client hung up or the router stops: the upstream goes too. */
		if ((p[1].revents & (POLLRDHUP | POLLHUP | POLLERR)) || p[2].revents)
			return MHD_CONTENT_READER_END_WITH_ERROR;
		if (p[0].revents)
			break;
	}
	n = up_read_body(pp->up, out, max);
	if (n == 0)
		return MHD_CONTENT_READER_END_OF_STREAM;
	return n < 0 ? MHD_CONTENT_READER_END_WITH_ERROR : n;
}

static void pipe_free(void *cls)
{
	struct pipe *pp = cls;

	if (!pp)
		return;
	up_close(pp->up);
	free(pp);
}

static int client_fd_of(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);

	return ci ? ci->connect_fd : -1;
}

/* A save (.../template) or a fork answers after whole VMs are saved and
 * restored: it gets a create's patience, not an ordinary answer's. */
static bool slow_request(const char *method, const char *target)
{
	size_t n = strcspn(target, "?");

	return !strcmp(method, "POST") &&
	       ((n >= 5 && !strncmp(target + n - 5, "/fork", 5)) ||
		(n >= 9 && !strncmp(target + n - 9, "/template", 9)));
}

/* First call of a forwarded request: the owner's connection and the head. */
static enum MHD_Result forward_begin(struct req *q, struct MHD_Connection *conn,
				     const char *method, const char *id)
{
	char host[FLEET_HOST_MAX + 1];
	const char *hdrs[12], *v;
	struct up_addr addr;
	uint64_t len = 0;
	size_t h = 0, n;
	int r = fleet_sandbox_host(id, host, sizeof(host));

	if (r == -EINVAL)
		return send_error(conn, 404, NULL, "not_found", "no sandbox %s", id);
	if (r == -ENOENT)
		return send_error(conn, 404, NULL, "not_found",
				  "no sandbox %s (an id from before host ids)", id);
	if (fleet_addr(q->p->c.fleet, host, &addr))
		return send_error(conn, 410, NULL, "host_gone",
				  "host %s of %s is not in the fleet", host, id);
	r = up_open(&addr, CONNECT_TIMEOUT_MS, &q->up);
	if (r)
		return send_error(conn, 410, NULL, "host_gone", "host %s of %s does not answer: %s",
				  host, id, strerror(-r));
	up_set_timeout(q->up, !slow_request(method, q->target) ? IO_TIMEOUT_MS
			      : q->p->c.create_timeout_ms ? q->p->c.create_timeout_ms
							  : CREATE_TIMEOUT_MS);
	/* The client's hang-up or the router's stop ends every wait on it. */
	up_set_abort(q->up, client_fd_of(conn), q->p->c.stop_fd);
	if (q->auth[0]) {
		hdrs[h++] = "Authorization";
		hdrs[h++] = q->auth;
	}
	v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
	if (v) {
		hdrs[h++] = "Content-Type";
		hdrs[h++] = v;
	}
	hdrs[h] = NULL;
	v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
	if (v && parse_u64(v, 0, q->p->c.max_upload, &len))
		return send_error(conn, 413, NULL, "too_large", "the body is over %llu bytes",
				  (unsigned long long)q->p->c.max_upload);
	if (!v && MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Transfer-Encoding"))
		len = UP_UNKNOWN_LEN;
	q->limit = len == UP_UNKNOWN_LEN ? q->p->c.max_upload : len;
	r = up_send_head(q->up, method, q->target, hdrs, len);
	if (r)
		return send_error(conn, 502, NULL, "upstream_error", "host %s: %s", host,
				  strerror(-r));
	/* /v1/sandboxes/ID[?...] and nothing more: the sandbox goes. */
	n = strlen(id);
	if (!strcmp(method, "DELETE") && !strncmp(q->target, "/v1/sandboxes/", 14) &&
	    !strncmp(q->target + 14, id, n) && (!q->target[14 + n] || q->target[14 + n] == '?'))
		snprintf(q->release, sizeof(q->release), "%s", host);
	return MHD_YES;
}

static enum MHD_Result forward_end(struct req *q, struct MHD_Connection *conn)
{
	struct MHD_Response *resp;
	struct pipe *pp;
	unsigned status;
	uint64_t blen;
	enum MHD_Result ret;
	static const char *const copy[] = { "Content-Type", "X-Kiln-Host", "Retry-After",
					    "Idempotent-Replayed" };
	int r = q->up_err;

	if (q->too_large)
		return send_error(conn, 413, NULL, "too_large", "the body is over %llu bytes",
				  (unsigned long long)q->p->c.max_upload);
	if (!r)
		r = up_end_body(q->up);
	if (!r)
		r = up_read_head(q->up, &status);
	if (r)
		return send_error(conn, 502, NULL, "upstream_error", "the sandbox's host failed: %s",
				  strerror(-r));
	/* Placements right after it see the room (the next report confirms). */
	if (q->release[0] && status / 100 == 2)
		fleet_released(q->p->c.fleet, q->release);
	pp = calloc(1, sizeof(*pp));
	if (!pp)
		return MHD_NO;
	/* Streams wait on the guest as long as it runs: no deadline, but the
	 * client's hang-up and the router's stop end the wait. */
	up_set_timeout(q->up, 0);
	pp->up = q->up;
	pp->client_fd = client_fd_of(conn);
	pp->stop_fd = q->p->c.stop_fd;
	q->up = NULL;
	blen = up_body_len(pp->up);
	if (status == 204 || status == 304) {
		pipe_free(pp);
		resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
		pp = NULL;
	} else {
		resp = MHD_create_response_from_callback(blen == UP_UNKNOWN_LEN ? MHD_SIZE_UNKNOWN
										 : blen,
							 64 * 1024, pipe_read, pp, pipe_free);
	}
	if (!resp) {
		pipe_free(pp);
		return MHD_NO;
	}
	for (size_t i = 0; pp && i < sizeof(copy) / sizeof(copy[0]); i++)
		if (up_header(pp->up, copy[i]))
			MHD_add_response_header(resp, copy[i], up_header(pp->up, copy[i]));
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* ---- dispatch ---- */

static bool authenticate(struct proxy *p, struct MHD_Connection *conn, struct req *q)
{
	const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
	size_t len = h ? strlen(h) : 0;

	if (h && len < sizeof(q->auth))
		memcpy(q->auth, h, len + 1);
	if (!p->c.tokens)
		return true;
	if (!h || len < 8 || len >= sizeof(q->auth) || strncasecmp(h, "Bearer ", 7))
		return false;
	return tokens_find(p->c.tokens, h + 7, len - 7) != NULL;
}

static enum MHD_Result on_first(struct proxy *p, struct req *q, struct MHD_Connection *conn,
				const char *url, const char *method)
{
	char id[FLEET_ID_MAX + 2];
	const char *rest = NULL;
	size_t n;

	if (!strcmp(url, "/v1/health")) {
		q->kind = K_HEALTH;
		return MHD_YES;
	}
	if (!authenticate(p, conn, q)) {
		q->kind = K_ERROR;
		return send_error(conn, 401, NULL, "unauthorized",
				  "a valid 'Authorization: Bearer TOKEN' is required");
	}
	if (!q->target[0]) {
		q->kind = K_ERROR;
		return send_error(conn, 400, NULL, "bad_request", "the path or query is not one kilnd takes");
	}
	if (!strcmp(url, "/v1/capacity")) {
		q->kind = K_CAPACITY;
		return strcmp(method, "GET") ? send_error(conn, 405, NULL, "method_not_allowed",
							   "%s is not allowed on %s", method, url)
					     : MHD_YES;
	}
	if (!strcmp(url, "/v1/templates") || !strncmp(url, "/v1/templates/", 14)) {
		bool one = url[13] == '/';

		if (one ? strcmp(method, "DELETE") : strcmp(method, "GET")) {
			q->kind = K_ERROR;
			return send_error(conn, 405, NULL, "method_not_allowed",
					  "%s is not allowed on %s", method, url);
		}
		q->kind = one ? K_TDELETE : K_LIST;
		snprintf(q->list_key, sizeof(q->list_key), "templates");
		return MHD_YES;
	}
	if (!strcmp(url, "/v1/sandboxes") || !strcmp(url, "/v1/runs")) {
		if (!strcmp(method, "POST") && url[4] == 's') {
			q->kind = K_CREATE;
			return MHD_YES;
		}
		if (!strcmp(method, "GET")) {
			q->kind = K_LIST;
			snprintf(q->list_key, sizeof(q->list_key), "%s",
				 url[4] == 's' ? "sandboxes" : "runs");
			return MHD_YES;
		}
		q->kind = K_ERROR;
		return send_error(conn, 405, NULL, "method_not_allowed", "%s is not allowed on %s",
				  method, url);
	}
	if (!strncmp(url, "/v1/sandboxes/", 14))
		rest = url + 14;
	else if (!strncmp(url, "/v1/runs/", 9))
		rest = url + 9;
	if (!rest) {
		q->kind = K_ERROR;
		return send_error(conn, 404, NULL, "not_found", "no such endpoint: %s", url);
	}
	n = strcspn(rest, "/");
	if (!n || n > FLEET_ID_MAX) {
		q->kind = K_ERROR;
		return send_error(conn, 404, NULL, "not_found", "no such sandbox");
	}
	memcpy(id, rest, n);
	id[n] = 0;
	if (rest == url + 9 && !strcmp(method, "GET") &&
	    fleet_sandbox_host(id, NULL, 0) == -ENOENT) {
		/* A record from before host ids: whichever host has it. */
		q->kind = K_FIND;
		return MHD_YES;
	}
	q->kind = K_FORWARD;
	return forward_begin(q, conn, method, id);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version, const char *upload,
				  size_t *upload_size, void **con_cls)
{
	struct proxy *p = cls;
	struct req *q = *con_cls;

	if (!q)
		return MHD_NO;
	if (!q->started) {
		q->started = true;
		return on_first(p, q, conn, url, method);
	}
	if (*upload_size) {
		size_t n = *upload_size;

		*upload_size = 0;
		if (q->kind == K_CREATE) {
			char *b;

			if (q->too_large || q->len + n > JSON_BODY_MAX) {
				q->too_large = true;
				return MHD_YES;
			}
			b = realloc(q->body, q->len + n + 1);
			if (!b)
				return MHD_NO;
			q->body = b;
			memcpy(q->body + q->len, upload, n);
			q->len += n;
			q->body[q->len] = 0;
		} else if (q->kind == K_FORWARD && q->up && !q->up_err && !q->too_large) {
			if (q->sent + n > q->limit)
				q->too_large = true;
			else
				q->up_err = up_send_body(q->up, upload, n);
			q->sent += n;
		}
		return MHD_YES;
	}
	switch (q->kind) {
	case K_HEALTH:
		return h_health(q, conn);
	case K_CAPACITY:
		return h_capacity(q, conn);
	case K_CREATE:
		return h_create(q, conn);
	case K_LIST:
		return h_list(q, conn);
	case K_FIND:
		return h_find(q, conn);
	case K_TDELETE:
		return h_template_delete(q, conn);
	case K_FORWARD:
		if (q->up)
			return forward_end(q, conn);
		return MHD_YES; /* answered on the first call */
	case K_ERROR:
		break;
	}
	return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct req *q = *con_cls;

	if (!q)
		return;
	up_close(q->up);
	free(q->body);
	free(q);
	*con_cls = NULL;
}

int proxy_start(const struct proxy_config *c, int listen_fd, struct proxy **out, char *err,
		size_t errlen)
{
	struct proxy *p = calloc(1, sizeof(*p));
	int ret = -ENOMEM;

	*out = NULL;
	if (!p) {
		close(listen_fd);
		goto out;
	}
	p->c = *c;
	p->mhd = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
					  MHD_USE_POLL | MHD_USE_ERROR_LOG,
				  0, NULL, NULL, on_request, p,
				  MHD_OPTION_LISTEN_SOCKET, listen_fd,
				  MHD_OPTION_CONNECTION_LIMIT, c->max_connections,
				  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)IDLE_TIMEOUT_S,
				  MHD_OPTION_THREAD_STACK_SIZE, (size_t)THREAD_STACK,
				  MHD_OPTION_NOTIFY_COMPLETED, on_completed, p,
				  MHD_OPTION_URI_LOG_CALLBACK, uri_log, p,
				  MHD_OPTION_END);
	if (!p->mhd) {
		ret = -EIO;
		snprintf(err, errlen, "cannot start the HTTP server");
		close(listen_fd);
		goto out;
	}
	*out = p;
	p = NULL;
	ret = 0;
out:
	free(p);
	return ret;
}

void proxy_stop(struct proxy *p)
{
	if (!p)
		return;
	MHD_stop_daemon(p->mhd);
	free(p);
}
