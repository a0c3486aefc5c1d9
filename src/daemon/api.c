/*
 * kilnd's HTTP API (see api.h). A request goes through three steps: the
 * first call authenticates it and picks its route, body chunks land in a
 * capped buffer (JSON) or a temporary file (uploads), and the last call runs
 * the route's handler. Handlers validate everything into a registry or agent
 * call; only they build answers.
 */
#include "daemon/api.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "daemon/idem.h"
#include "daemon/procs.h"
#include "daemon/records.h"
#include "daemon/registry.h"
#include "daemon/tokens.h"
#include "lib/agent.h"
#include "lib/image.h"
#include "lib/template.h"
#include "net/rules.h"
#include "fleetid.h"
#include "proto.h"
#include "userdb.h"
#include "util.h"

#define JSON_BODY_MAX (64 * 1024)
#define META_MAX 16384		/* metadata, serialized */
#define FORK_MAX 16		/* clones in one POST .../fork */
#define LIST_MAX 100000		/* entries in one fs/list */
#define STREAM_BUF_MAX (4u << 20) /* one exec event, encoded */
#define THREAD_STACK (512 * 1024)
/* A connection that moves no byte either way for this long is closed: idle
 * and half-sent requests cannot hold --max-connections for long, and a
 * client that stops reading its stream loses it (its process lives on). Event
 * streams send a keepalive well within it (PROC_KEEPALIVE_MS). */
#define IDLE_TIMEOUT_S 60

struct api {
	struct api_config c;
	struct MHD_Daemon *mhd;
};

enum body_kind { BODY_NONE, BODY_JSON, BODY_FILE, BODY_RAW /* in memory, PROC_STDIN_MAX */ };

struct route;

/* One request. */
struct req {
	struct api *api;
	const struct route *route;
	const struct tokens_tenant *tenant;
	char id[FLEET_ID_MAX + 1]; /* the {id} of the path, when it has one */
	uint32_t pid;		/* the {pid} of /processes/{pid}..., when it has one */
	enum body_kind kind;
	char *body;
	size_t len;
	int fd;			/* BODY_FILE: the upload on its way */
	uint64_t bytes;
	bool too_large, io_error;
};

typedef enum MHD_Result (*handler_fn)(struct req *q, struct MHD_Connection *conn);

struct route {
	const char *method;
	const char *path;	/* after /v1/sandboxes/{id}, or a whole path */
	bool per_sandbox;
	enum body_kind body;
	handler_fn fn;
};

/* ---- answers ---- */

/* This host's id, the same for every listener (set by api_start). */
static const char *api_host_id = "";

/* Every answer names the host that gave it (X-Kiln-Host). */
static enum MHD_Result queue(struct MHD_Connection *conn, unsigned status,
			     struct MHD_Response *r)
{
	MHD_add_response_header(r, "X-Kiln-Host", api_host_id);
	return MHD_queue_response(conn, status, r);
}

static enum MHD_Result send_text(struct MHD_Connection *conn, unsigned status, const char *type,
				 char *text, size_t len)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
	enum MHD_Result ret;

	if (!r) {
		free(text);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", type);
	ret = queue(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

/* Takes the reference. */
static enum MHD_Result send_json(struct MHD_Connection *conn, unsigned status, json_t *j)
{
	char *text = j ? json_dumps(j, JSON_COMPACT) : NULL, *p;
	size_t len;

	json_decref(j);
	if (!text)
		return MHD_NO;
	len = strlen(text);
	/* A newline makes curl output readable; clients ignore it. */
	p = realloc(text, len + 2);
	if (!p) {
		free(text);
		return MHD_NO;
	}
	p[len++] = '\n';
	p[len] = 0;
	return send_text(conn, status, "application/json", p, len);
}

static json_t *__attribute__((format(printf, 2, 0))) error_va(const char *code, const char *fmt,
								    va_list ap)
{
	char msg[512];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	return json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg);
}

/* {"error":{"code":...,"message":...}} */
static json_t *__attribute__((format(printf, 2, 3))) error_json(const char *code, const char *fmt,
								 ...)
{
	va_list ap;
	json_t *j;

	va_start(ap, fmt);
	j = error_va(code, fmt, ap);
	va_end(ap);
	return j;
}

static enum MHD_Result __attribute__((format(printf, 4, 5)))
send_error(struct MHD_Connection *conn, unsigned status, const char *code, const char *fmt, ...)
{
	va_list ap;
	json_t *j;

	va_start(ap, fmt);
	j = error_va(code, fmt, ap);
	va_end(ap);
	return send_json(conn, status, j);
}

static enum MHD_Result send_empty(struct MHD_Connection *conn, unsigned status)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
	enum MHD_Result ret;

	if (!r)
		return MHD_NO;
	ret = queue(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

/* An agent call's failure as an answer: what the guest said is the client's
 * problem (4xx), a broken connection is the sandbox's (502/503). */
static enum MHD_Result send_agent_error(struct MHD_Connection *conn, struct kiln_agent *a, int err,
					const char *what)
{
	const char *msg = a ? kiln_agent_error(a) : "";
	unsigned status = 500;
	const char *code = "internal";

	switch (err) {
	case -ENOENT:
		status = 404, code = "not_found";
		break;
	case -EEXIST:
		status = 409, code = "conflict";
		break;
	case -EISDIR: case -ENOTDIR: case -EINVAL: case -ENAMETOOLONG: case -ENOTEMPTY:
	case -ELOOP:
		status = 400, code = "bad_request";
		break;
	case -EACCES: case -EPERM: case -EROFS:
		status = 403, code = "forbidden";
		break;
	case -EFBIG:
		status = 413, code = "too_large";
		break;
	case -ECANCELED:
		status = 503, code = "unavailable";
		break;
	case -EBUSY:
		return send_error(conn, 409, "sandbox_paused",
				  "the sandbox is paused (POST .../resume it first)");
	case -ETIMEDOUT: case -ECONNRESET: case -EPROTO: case -EPIPE: case -ECONNREFUSED:
		status = 502, code = "sandbox_unreachable";
		break;
	default:
		break;
	}
	return send_error(conn, status, code, "%s: %s", what, msg && msg[0] ? msg : strerror(-err));
}

/* A process that could not start: the code says why, as a shell's 127 and
 * 126 do, so clients need not read the message. */
static enum MHD_Result send_exec_error(struct MHD_Connection *conn, int err, const char *why)
{
	if (err == -ENOENT)
		return send_error(conn, 404, "command_not_found", "%s", why);
	if (err == -EACCES)
		return send_error(conn, 403, "command_not_runnable", "%s", why);
	if (err == -ESRCH)
		return send_error(conn, 404, "user_not_found", "%s", why);
	return send_error(conn, 400, "bad_request", "%s", why);
}

/* ---- small parsers ---- */

/* A query value of at most max bytes without NUL; NULL if absent or bad. */
static const char *query(struct MHD_Connection *conn, const char *key, size_t max, bool *bad)
{
	const char *v = NULL;
	size_t len = 0;

	if (MHD_lookup_connection_value_n(conn, MHD_GET_ARGUMENT_KIND, key, strlen(key), &v,
					  &len) != MHD_YES || !v)
		return NULL;
	if (len > max || strlen(v) != len) {
		*bad = true;
		return NULL;
	}
	return v;
}

/* The path= of a files or fs request: absolute, without NUL, bounded. */
static const char *guest_path(struct MHD_Connection *conn, char *why, size_t whylen)
{
	bool bad = false;
	const char *p = query(conn, "path", PROTO_PATH_MAX - 1, &bad);

	if (bad)
		snprintf(why, whylen, "path must be at most %u bytes without NUL", PROTO_PATH_MAX - 1);
	else if (!p)
		snprintf(why, whylen, "path= is required");
	else if (p[0] != '/')
		snprintf(why, whylen, "path must be absolute");
	else
		return p;
	return NULL;
}

/* The JSON body as an object; its keys checked against allowed (NULL-ended). */
static json_t *body_object(struct req *q, const char *const *allowed, char *why, size_t whylen)
{
	json_error_t je;
	json_t *o;
	const char *key;
	json_t *v;

	if (!q->len) {
		o = json_object();
		return o;
	}
	o = json_loadb(q->body, q->len, JSON_REJECT_DUPLICATES, &je);
	if (!o) {
		snprintf(why, whylen, "malformed JSON at line %d column %d: %s", je.line, je.column,
			 je.text);
		return NULL;
	}
	if (!json_is_object(o)) {
		snprintf(why, whylen, "the body must be a JSON object");
		json_decref(o);
		return NULL;
	}
	json_object_foreach(o, key, v) {
		const char *const *k;

		for (k = allowed; *k && strcmp(*k, key); k++)
			;
		if (!*k) {
			snprintf(why, whylen, "unknown field '%.64s'", key);
			json_decref(o);
			return NULL;
		}
	}
	return o;
}

/* An optional integer field in [min, max]; false (why set) if present and bad. */
static bool field_uint(json_t *o, const char *key, uint64_t min, uint64_t max, uint64_t *out,
		       char *why, size_t whylen)
{
	json_t *v = json_object_get(o, key);

	if (!v)
		return true;
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    (uint64_t)json_integer_value(v) < min || (uint64_t)json_integer_value(v) > max) {
		snprintf(why, whylen, "%s must be an integer from %" PRIu64 " to %" PRIu64, key, min,
			 max);
		return false;
	}
	*out = (uint64_t)json_integer_value(v);
	return true;
}

/* ---- routes: sandboxes ---- */

/* registry_create's refusals and failures as an answer: status and *out. */
static unsigned create_error(int r, const char *err, json_t **out)
{
	if (r == -EDQUOT || r == -ENOSPC) {
		/* scope: the tenant's quota, or this host's room (a router places
		 * elsewhere on either, and passes a tenant's refusal on). */
		*out = error_json("quota", "%s", err);
		json_object_set_new(json_object_get(*out, "error"), "scope",
				    json_string(r == -EDQUOT ? "tenant" : "host"));
		return 429;
	}
	if (r == -ECANCELED) {
		*out = error_json("unavailable", "%s", err);
		return 503;
	}
	if (r == -EAGAIN) {
		*out = error_json("draining", "%s", err);
		return 503;
	}
	if (r == -EINVAL) {
		*out = error_json("bad_request", "%s", err);
		return 400;
	}
	if (r == -ENOENT) {
		*out = error_json("template_not_found", "%s", err);
		return 404;
	}
	*out = error_json("boot_failed", "the sandbox did not boot: %s", err);
	return 500;
}

/* The create itself: its status, and its answer in *out. */
static unsigned do_create(struct req *q, json_t **out)
{
	static const char *const keys[] = { "image", "cpus", "memory_mib", "disk_mib", "timeout_s",
					    "allow", "net_rate", "metadata", "env", "template", NULL };
	static const char *const fixed[] = { "image", "cpus", "memory_mib", "disk_mib", "allow",
					     "net_rate", NULL };
	const struct tokens_tenant *t = q->tenant;
	struct registry_create c = { .tenant = t, .cpus = 1, .memory_mib = 512, .disk_mib = 1024 };
	uint64_t cpus = 1, tmax = t->max_timeout_s;
	struct reg_sandbox *sb = NULL;
	char why[512] = "", err[512] = "";
	json_t *o, *v, *allow, *meta;
	char *meta_text = NULL;
	size_t i;
	int r;

	c.timeout_s = tmax < 600 ? tmax : 600;
	o = body_object(q, keys, why, sizeof(why));
	if (!o) {
		*out = error_json("bad_request", "%s", why);
		return 400;
	}
	/* A template fixes the machine (and has no network device). */
	v = json_object_get(o, "template");
	if (v) {
		if (!json_is_string(v) || !kiln_template_name_ok(json_string_value(v))) {
			snprintf(why, sizeof(why), "template must be a name of 1 to %d [a-z0-9_-]",
				 KILN_TEMPLATE_NAME_MAX);
			goto bad;
		}
		for (i = 0; fixed[i]; i++)
			if (json_object_get(o, fixed[i])) {
				snprintf(why, sizeof(why), "%s cannot be given with template (the template fixes the image, vCPUs, memory and disk, and has no network)",
					 fixed[i]);
				goto bad;
			}
		snprintf(c.template_name, sizeof(c.template_name), "%s", json_string_value(v));
	}
	v = json_object_get(o, "image");
	snprintf(c.image, sizeof(c.image), "debian");
	if (v) {
		const char *s = json_string_value(v);

		if (!kiln_image_name_ok(s) || strlen(s) > REG_IMAGE_MAX) {
			snprintf(why, sizeof(why), "image must be a name of 1 to %d [a-z0-9_-]",
				 REG_IMAGE_MAX);
			goto bad;
		}
		snprintf(c.image, sizeof(c.image), "%s", s);
	}
	/* An imported image's defaults must be usable before it boots. */
	if (q->api->c.image_dir) {
		struct kiln_image_config img;
		char path[PATH_MAX];

		snprintf(path, sizeof(path), "%s/%s.img", q->api->c.image_dir, c.image);
		if (kiln_image_config_load(path, &img, why, sizeof(why)))
			goto bad;
		if (img.user && userdb_spec_ok(img.user)) {
			snprintf(why, sizeof(why), "image %s: its user '%.64s' is not USER[:GROUP]", c.image,
				 img.user);
			kiln_image_config_free(&img);
			goto bad;
		}
		kiln_image_config_free(&img);
	}
	if (!field_uint(o, "cpus", 1, 32, &cpus, why, sizeof(why)) ||
	    !field_uint(o, "memory_mib", 64, 1 << 20, &c.memory_mib, why, sizeof(why)) ||
	    !field_uint(o, "disk_mib", 0, 1 << 20, &c.disk_mib, why, sizeof(why)) ||
	    !field_uint(o, "timeout_s", 1, tmax, &c.timeout_s, why, sizeof(why)) ||
	    !field_uint(o, "net_rate", 0, UINT64_C(1) << 40, &c.net_rate, why, sizeof(why)))
		goto bad;
	c.cpus = (unsigned)cpus;
	allow = json_object_get(o, "allow");
	if (allow && (!json_is_array(allow) || json_array_size(allow) > REG_MAX_ALLOW)) {
		snprintf(why, sizeof(why), "allow must be an array of at most %d rules",
			 REG_MAX_ALLOW);
		goto bad;
	}
	json_array_foreach(allow, i, v) {
		struct net_rule rule;
		char rerr[256];

		if (!json_is_string(v) || net_rule_parse(json_string_value(v), &rule, rerr,
							 sizeof(rerr))) {
			snprintf(why, sizeof(why), "allow[%zu]: %s", i,
				 json_is_string(v) ? rerr : "must be a string");
			goto bad;
		}
		c.allow[c.nallow++] = json_string_value(v);
	}
	v = json_object_get(o, "env");
	if (v && (!json_is_object(v) || json_object_size(v))) {
		snprintf(why, sizeof(why), "env is set per exec; here it must be absent or {}");
		goto bad;
	}
	meta = json_object_get(o, "metadata");
	if (meta) {
		const char *k;

		if (!json_is_object(meta)) {
			snprintf(why, sizeof(why), "metadata must be an object of strings");
			goto bad;
		}
		json_object_foreach(meta, k, v) {
			if (!json_is_string(v)) {
				snprintf(why, sizeof(why), "metadata.%.64s must be a string", k);
				goto bad;
			}
		}
		meta_text = json_dumps(meta, JSON_COMPACT | JSON_SORT_KEYS);
		if (!meta_text || strlen(meta_text) > META_MAX) {
			snprintf(why, sizeof(why), "metadata must be at most %d bytes of JSON",
				 META_MAX);
			goto bad;
		}
	}
	c.metadata_json = meta_text ? meta_text : "{}";
	r = registry_create(q->api->c.reg, &c, &sb, err, sizeof(err));
	json_decref(o);
	free(meta_text);
	if (r)
		return create_error(r, err, out);
	*out = registry_sandbox_json(q->api->c.reg, sb);
	registry_put(q->api->c.reg, sb);
	return 201;
bad:
	json_decref(o);
	free(meta_text);
	*out = error_json("bad_request", "%s", why);
	return 400;
}

/* With an Idempotency-Key, a retry gets the first answer (docs/daemon.md). */
static enum MHD_Result h_create(struct req *q, struct MHD_Connection *conn)
{
	const char *key = NULL;
	size_t klen = 0;
	unsigned status;
	char *answer = NULL;
	json_t *j = NULL;
	struct MHD_Response *resp;
	enum MHD_Result ret;

	if (MHD_lookup_connection_value_n(conn, MHD_HEADER_KIND, "Idempotency-Key", 15, &key,
					  &klen) != MHD_YES)
		key = NULL;
	if (key) {
		bool ok = klen >= 1 && klen <= IDEM_KEY_MAX && strlen(key) == klen;

		for (size_t i = 0; ok && i < klen; i++)
			ok = key[i] > 0x20 && key[i] < 0x7f;
		if (!ok)
			return send_error(conn, 400, "bad_request",
					  "Idempotency-Key must be 1 to %d printable ASCII characters",
					  IDEM_KEY_MAX);
		switch (idem_begin(q->api->c.idem, q->tenant->name, key, q->body ? q->body : "",
				   q->len, (int64_t)time(NULL), &status, &answer)) {
		case IDEM_NEW:
			break;
		case IDEM_DONE:
			resp = MHD_create_response_from_buffer(strlen(answer), answer,
							       MHD_RESPMEM_MUST_FREE);
			if (!resp) {
				free(answer);
				return MHD_NO;
			}
			MHD_add_response_header(resp, "Content-Type", "application/json");
			MHD_add_response_header(resp, "Idempotent-Replayed", "true");
			ret = queue(conn, status, resp);
			MHD_destroy_response(resp);
			return ret;
		case IDEM_BUSY:
			return send_error(conn, 409, "conflict",
					  "a request with this Idempotency-Key is still in progress");
		case IDEM_MISMATCH:
			return send_error(conn, 422, "idempotency_mismatch",
					  "this Idempotency-Key came with a different body before");
		case IDEM_FULL:
			return send_error(conn, 503, "unavailable",
					  "too many Idempotency-Keys in progress; retry later");
		}
	}
	status = do_create(q, &j);
	if (key) {
		char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
		/* Answers that a retry could change (quota, capacity, boot) are not kept. */
		bool keep = text && (status == 201 || (status >= 400 && status < 500 && status != 429));

		idem_finish(q->api->c.idem, q->tenant->name, key, keep ? status : 0, text,
			    (int64_t)time(NULL));
		free(text);
	}
	return send_json(conn, status, j);
}

static enum MHD_Result h_list(struct req *q, struct MHD_Connection *conn)
{
	bool bad = false;
	const char *state = query(conn, "state", 16, &bad);

	if (bad || (state && strcmp(state, "running") && strcmp(state, "booting") &&
		    strcmp(state, "ending") && strcmp(state, "paused")))
		return send_error(conn, 400, "bad_request",
				  "state must be running, paused, booting or ending");
	return send_json(conn, 200, json_pack("{s:o}", "sandboxes",
					      registry_list_json(q->api->c.reg, q->tenant->name,
								 state)));
}

/* Handlers of /v1/sandboxes/{id}/... get the sandbox from here. */
static struct reg_sandbox *lookup(struct req *q)
{
	return registry_get(q->api->c.reg, q->tenant->name, q->id);
}

#define WITH_SANDBOX(q, conn, sb)                                                               \
	struct reg_sandbox *sb = lookup(q);                                                     \
	if (!sb)                                                                                \
		return send_error(conn, 404, "not_found", "no sandbox %s", q->id);

static enum MHD_Result h_get(struct req *q, struct MHD_Connection *conn)
{
	WITH_SANDBOX(q, conn, sb);
	enum MHD_Result ret = send_json(conn, 200, registry_sandbox_json(q->api->c.reg, sb));

	registry_put(q->api->c.reg, sb);
	return ret;
}

static enum MHD_Result h_delete(struct req *q, struct MHD_Connection *conn)
{
	WITH_SANDBOX(q, conn, sb);
	registry_delete(q->api->c.reg, sb);
	registry_put(q->api->c.reg, sb);
	return send_empty(conn, 204);
}

static enum MHD_Result h_timeout(struct req *q, struct MHD_Connection *conn)
{
	static const char *const keys[] = { "timeout_s", NULL };
	uint64_t t = 0;
	char why[256] = "";
	json_t *o = body_object(q, keys, why, sizeof(why));
	enum MHD_Result ret;

	if (o && !json_object_get(o, "timeout_s"))
		snprintf(why, sizeof(why), "timeout_s is required");
	if (!o || why[0] ||
	    !field_uint(o, "timeout_s", 1, q->tenant->max_timeout_s, &t, why, sizeof(why))) {
		json_decref(o);
		return send_error(conn, 400, "bad_request", "%s", why);
	}
	json_decref(o);
	WITH_SANDBOX(q, conn, sb);
	if (registry_set_timeout(q->api->c.reg, sb, t))
		ret = send_error(conn, 404, "not_found", "no sandbox %s", q->id);
	else
		ret = send_json(conn, 200, registry_sandbox_json(q->api->c.reg, sb));
	registry_put(q->api->c.reg, sb);
	return ret;
}

/* POST .../pause and .../resume: the VM's vCPUs stop or run again. */
static enum MHD_Result pause_resume(struct req *q, struct MHD_Connection *conn, bool pause)
{
	enum MHD_Result ret;
	int r;

	WITH_SANDBOX(q, conn, sb);
	r = registry_pause(q->api->c.reg, sb, pause);
	if (r == -ENOENT)
		ret = send_error(conn, 409, "conflict", "sandbox %s is not running", q->id);
	else if (r)
		ret = send_agent_error(conn, NULL, r, pause ? "cannot pause the sandbox"
							    : "cannot resume the sandbox");
	else
		ret = send_json(conn, 200, registry_sandbox_json(q->api->c.reg, sb));
	registry_put(q->api->c.reg, sb);
	return ret;
}

static enum MHD_Result h_pause(struct req *q, struct MHD_Connection *conn)
{
	return pause_resume(q, conn, true);
}

static enum MHD_Result h_resume(struct req *q, struct MHD_Connection *conn)
{
	return pause_resume(q, conn, false);
}

/* ---- templates (issue 14, docs/snapshot.md): per tenant, on this host ---- */

/* POST .../template {"name"}: the running sandbox saved as a template. */
static enum MHD_Result h_template_save(struct req *q, struct MHD_Connection *conn)
{
	static const char *const keys[] = { "name", NULL };
	char why[512] = "", name[KILN_TEMPLATE_NAME_MAX + 1] = "";
	json_t *o = body_object(q, keys, why, sizeof(why)), *n, *j = NULL;
	enum MHD_Result ret;
	int r;

	n = o ? json_object_get(o, "name") : NULL;
	if (o && !why[0] && (!json_is_string(n) || !kiln_template_name_ok(json_string_value(n))))
		snprintf(why, sizeof(why), "name must be 1 to %d of [a-z0-9_-], not starting with '-'",
			 KILN_TEMPLATE_NAME_MAX);
	if (!o || why[0]) {
		json_decref(o);
		return send_error(conn, 400, "bad_request", "%s", why);
	}
	snprintf(name, sizeof(name), "%s", json_string_value(n));
	json_decref(o);
	WITH_SANDBOX(q, conn, sb);
	r = registry_template_save(q->api->c.reg, sb, name, &j, why, sizeof(why));
	if (!r)
		ret = send_json(conn, 201, j);
	else if (r == -EEXIST)
		ret = send_error(conn, 409, "template_exists", "%s", why);
	else if (r == -ENOENT || r == -EINVAL)
		ret = send_error(conn, 409, "conflict", "%s", why);
	else
		ret = send_error(conn, 500, "template_failed", "cannot save the sandbox: %s", why);
	registry_put(q->api->c.reg, sb);
	return ret;
}

/* POST .../fork {"count": N}: N clones of a running sandbox, all or none. */
static enum MHD_Result h_fork(struct req *q, struct MHD_Connection *conn)
{
	static const char *const keys[] = { "count", NULL };
	struct reg_sandbox *clones[FORK_MAX];
	char why[512] = "";
	json_t *o = body_object(q, keys, why, sizeof(why)), *arr = NULL, *j = NULL;
	uint64_t count = 1;
	unsigned status;
	int r;

	if (!o || !field_uint(o, "count", 1, FORK_MAX, &count, why, sizeof(why))) {
		json_decref(o);
		return send_error(conn, 400, "bad_request", "%s", why);
	}
	json_decref(o);
	WITH_SANDBOX(q, conn, sb);
	r = registry_fork(q->api->c.reg, q->tenant, sb, (unsigned)count, clones, why, sizeof(why));
	registry_put(q->api->c.reg, sb);
	if (r == -ENOENT || r == -EINVAL)
		return send_error(conn, 409, "conflict", "%s", why);
	if (r == -EDQUOT || r == -ENOSPC || r == -EAGAIN || r == -ECANCELED) {
		status = create_error(r, why, &j);
		return send_json(conn, status, j);
	}
	if (r)
		return send_error(conn, 500, "fork_failed", "cannot fork the sandbox: %s", why);
	arr = json_array();
	for (unsigned i = 0; i < count; i++) {
		if (arr)
			json_array_append_new(arr, registry_sandbox_json(q->api->c.reg, clones[i]));
		registry_put(q->api->c.reg, clones[i]);
	}
	return send_json(conn, 201, arr ? json_pack("{s:o}", "sandboxes", arr) : NULL);
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(json_string_value(json_object_get(*(json_t *const *)a, "name")),
		      json_string_value(json_object_get(*(json_t *const *)b, "name")));
}

/* GET /v1/templates: the tenant's templates, by name. */
static enum MHD_Result h_templates(struct req *q, struct MHD_Connection *conn)
{
	json_t *arr = json_array(), *items[1024];
	size_t count = 0;
	char dir[PATH_MAX];
	struct dirent *e;
	DIR *d;

	if (!arr || registry_template_dir(q->api->c.reg, q->tenant->name, dir, sizeof(dir))) {
		json_decref(arr);
		return send_error(conn, 500, "internal", "cannot list templates");
	}
	kiln_template_sweep(dir);
	d = opendir(dir);
	while (d && (e = readdir(d)) && count < sizeof(items) / sizeof(items[0])) {
		struct kiln_template_info t;
		char why[256];

		if (e->d_name[0] == '.' || !kiln_template_name_ok(e->d_name) ||
		    kiln_template_info_load(dir, e->d_name, &t, why, sizeof(why)))
			continue;
		if ((items[count] = kiln_template_info_json(&t))) {
			json_object_set_new(items[count], "stale",
					    json_boolean(!kiln_template_file_current(&t.kernel) ||
							 !kiln_template_file_current(&t.initrd) ||
							 !kiln_template_file_current(&t.image)));
			count++;
		}
	}
	if (d)
		closedir(d);
	qsort(items, count, sizeof(items[0]), cmp_name);
	for (size_t i = 0; i < count; i++)
		json_array_append_new(arr, items[i]);
	return send_json(conn, 200, json_pack("{s:o}", "templates", arr));
}

/* DELETE /v1/templates/{name}. */
static enum MHD_Result h_template_delete(struct req *q, struct MHD_Connection *conn)
{
	char dir[PATH_MAX], path[PATH_MAX];
	int r;

	if (!kiln_template_name_ok(q->id))
		return send_error(conn, 404, "not_found", "no template %s", q->id);
	if (registry_template_dir(q->api->c.reg, q->tenant->name, dir, sizeof(dir)) ||
	    snprintf(path, sizeof(path), "%s/%s", dir, q->id) >= (int)sizeof(path))
		return send_error(conn, 500, "internal", "the template directory's path is too long");
	r = kiln_template_remove_dir(path);
	if (r == -ENOENT)
		return send_error(conn, 404, "not_found", "no template %s", q->id);
	if (r)
		return send_error(conn, 500, "internal", "cannot remove template %s: %s", q->id,
				  strerror(-r));
	return send_empty(conn, 204);
}

/* ---- exec: a stream of JSON lines ---- */

struct stream {
	struct api *api;
	struct reg_sandbox *sb;
	struct kiln_agent *a;
	uint32_t id;
	int client_fd;
	char *buf;		/* encoded events not yet sent */
	size_t len, off;
	bool exited, done, overflow;
	int code, sig;
	uint64_t bytes_out, timeout_s;
	uint64_t deadline_ns;	/* timeout_s's, absolute; 0: none */
	int64_t row;
	char *stdin_data;
	size_t stdin_len, stdin_off;
};

static void stream_event(struct stream *s, json_t *ev)
{
	char *text = ev ? json_dumps(ev, JSON_COMPACT) : NULL;
	size_t n = text ? strlen(text) : 0;
	char *p;

	json_decref(ev);
	if (!text)
		return;
	if (s->len - s->off + n + 1 > STREAM_BUF_MAX) {
		s->overflow = true;	/* cannot happen: one frame is at most 1 MiB */
		free(text);
		return;
	}
	if (s->off) {
		memmove(s->buf, s->buf + s->off, s->len - s->off);
		s->len -= s->off;
		s->off = 0;
	}
	p = realloc(s->buf, s->len + n + 1);
	if (!p) {
		s->overflow = true;
		free(text);
		return;
	}
	s->buf = p;
	memcpy(s->buf + s->len, text, n);
	s->buf[s->len + n] = '\n';
	s->len += n + 1;
	free(text);
}

static int stream_output(void *ctx, uint32_t exec_id, int stream, const void *data, size_t len)
{
	struct stream *s = ctx;
	const char *type = stream == 2 ? "stderr" : "stdout";
	json_t *str = json_stringn(data, len);
	json_t *ev;

	s->bytes_out += len;
	if (str) {
		ev = json_pack("{s:s,s:o}", "type", type, "data", str);
	} else {
		/* Not UTF-8: base64. */
		char *b = base64_encode(data, len);

		if (!b)
			return -ENOMEM;
		ev = json_pack("{s:s,s:s}", "type", type, "data_b64", b);
		free(b);
	}
	stream_event(s, ev);
	return 0;
}

static void stream_exit(void *ctx, uint32_t exec_id, const struct kiln_exit *e)
{
	struct stream *s = ctx;

	s->exited = true;
	s->code = e->code;
	s->sig = e->signal;
}

static const struct kiln_exec_ops stream_ops = { .output = stream_output, .exit = stream_exit };

static void stream_end(struct stream *s)
{
	if (s->row)
		records_process_end(s->api->c.rec, s->row, s->exited ? s->code : -1,
				    s->exited ? s->sig : 0, s->bytes_out, 0);
	s->row = 0;
	kiln_agent_free(s->a);
	s->a = NULL;
	if (s->sb)
		registry_put(s->api->c.reg, s->sb);
	s->sb = NULL;
}

static void stream_free(void *cls)
{
	struct stream *s = cls;

	stream_end(s);
	free(s->buf);
	free(s->stdin_data);
	free(s);
}

static void stream_fail(struct stream *s, const char *msg)
{
	stream_event(s, json_pack("{s:s,s:s}", "type", "error", "message", msg));
	s->done = true;
	stream_end(s);
}

/* One step: feed stdin, wait for the agent or the client's hang-up. */
static void stream_step(struct stream *s)
{
	struct pollfd p[2] = { { .fd = kiln_agent_fd(s->a), .events = POLLIN },
			       { .fd = s->client_fd, .events = POLLRDHUP } };
	char msg[512];
	int r, woke, ms;

	if (s->stdin_data) {
		size_t room = kiln_agent_stdin_room(s->a, s->id);

		if (room && s->stdin_off < s->stdin_len) {
			size_t n = s->stdin_len - s->stdin_off;
			ssize_t w = kiln_agent_stdin_write(s->a, s->id, s->stdin_data + s->stdin_off,
							   n < room ? n : room);

			if (w > 0)
				s->stdin_off += (size_t)w;
		}
		if (s->stdin_off == s->stdin_len) {
			kiln_agent_stdin_close(s->a, s->id);
			free(s->stdin_data);
			s->stdin_data = NULL;
		}
	}
	/* Writing stdin reads the agent too: the exit may be in already. */
	if (s->exited)
		return;
	/* Woken by the agent, the client's hang-up, the deadline (a silent
	 * process still times out), stdin to feed, or a keepalive due. */
	ms = s->stdin_data ? 100 : PROC_KEEPALIVE_MS;
	if (s->deadline_ns) {
		uint64_t now = now_ns();
		uint64_t left = now >= s->deadline_ns ? 0 : (s->deadline_ns - now) / 1000000 + 1;

		if (left < (uint64_t)ms)
			ms = (int)left;
	}
	woke = poll(p, 2, ms);
	if (woke < 0 && errno != EINTR)
		return;
	if (woke == 0 && !s->stdin_data && (!s->deadline_ns || now_ns() < s->deadline_ns))
		stream_event(s, json_pack("{s:s}", "type", "keepalive"));
	if (p[1].revents & (POLLRDHUP | POLLHUP | POLLERR)) {
		/* The client went away: closing the agent connection kills the process. */
		s->done = true;
		stream_end(s);
		return;
	}
	r = kiln_agent_poll(s->a, 0);
	if (r == -ETIMEDOUT && s->timeout_s) {
		registry_count(s->api->c.reg, REG_EXEC_TIMEOUTS, 1);
		snprintf(msg, sizeof(msg), "the process timed out after %" PRIu64 " s and was killed",
			 s->timeout_s);
		stream_fail(s, msg);
	} else if (r < 0 && kiln_agent_status(s->a)) {
		snprintf(msg, sizeof(msg), "the sandbox stopped answering: %s",
			 kiln_agent_error(s->a)[0] ? kiln_agent_error(s->a) : strerror(-r));
		stream_fail(s, msg);
	}
}

static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
	struct stream *s = cls;
	size_t n;

	while (s->off == s->len) {
		if (s->done || s->overflow)
			return MHD_CONTENT_READER_END_OF_STREAM;
		if (s->exited) {
			stream_event(s, s->sig ? json_pack("{s:s,s:i,s:i}", "type", "exit", "code", -1,
							   "signal", s->sig)
					       : json_pack("{s:s,s:i}", "type", "exit", "code",
							   s->code));
			s->done = true;
			stream_end(s);
			continue;
		}
		stream_step(s);
	}
	n = s->len - s->off < max ? s->len - s->off : max;
	memcpy(out, s->buf + s->off, n);
	s->off += n;
	return (ssize_t)n;
}

/* Environment entries of a request, and all of them with an image's Env. */
#define EXEC_ENV_MAX 64
#define EXEC_ENV_CAP (EXEC_ENV_MAX + 256 + 2)

/*
 * The defaults of the sandbox's image (NAME.json beside NAME.img in the
 * image dir, docs/images.md): all NULL for a built image or an unknown
 * sandbox (the caller's lookup answers that). -1 with why for a config
 * that went bad since the create checked it.
 */
static int image_defaults(struct req *q, struct kiln_image_config *c, char *why, size_t whylen)
{
	struct reg_sandbox *sb = lookup(q);
	json_t *j = sb ? registry_sandbox_json(q->api->c.reg, sb) : NULL;
	const char *name = json_string_value(json_object_get(j, "image"));
	char path[PATH_MAX];
	int ret = 0;

	memset(c, 0, sizeof(*c));
	if (name && kiln_image_name_ok(name) && q->api->c.image_dir) {
		snprintf(path, sizeof(path), "%s/%s.img", q->api->c.image_dir, name);
		ret = kiln_image_config_load(path, c, why, whylen);
		if (!ret && c->user && userdb_spec_ok(c->user)) {
			snprintf(why, whylen, "the image's user '%.64s' is not USER[:GROUP]", c->user);
			kiln_image_config_free(c);
			ret = -1;
		}
	}
	json_decref(j);
	if (sb)
		registry_put(q->api->c.reg, sb);
	return ret;
}

/* argv, env, cwd and user from the body into spec, over the image's
 * defaults (img: Env under env, WorkingDir under cwd, User under user);
 * strings stay owned by o and img. env: EXEC_ENV_CAP entries. */
static bool exec_spec(json_t *o, const struct kiln_image_config *img, struct kiln_exec_spec *spec,
		      const char **argv, size_t argv_cap, char **env, char *why, size_t whylen)
{
	json_t *cmd = json_object_get(o, "cmd"), *envo = json_object_get(o, "env"), *v;
	json_t *cwd = json_object_get(o, "cwd"), *user = json_object_get(o, "user");
	const char *k;
	size_t i, n = 0;
	bool have_path;

	if (!json_is_array(cmd) || !json_array_size(cmd) || json_array_size(cmd) >= argv_cap) {
		snprintf(why, whylen, "cmd must be an array of 1 to %zu strings", argv_cap - 1);
		return false;
	}
	json_array_foreach(cmd, i, v) {
		if (!json_is_string(v) || !json_string_value(v)[0] ||
		    strlen(json_string_value(v)) != json_string_length(v)) {
			snprintf(why, whylen, "cmd[%zu] must be a string without NUL%s", i,
				 i ? "" : ", not empty");
			return false;
		}
		argv[i] = json_string_value(v);
	}
	argv[json_array_size(cmd)] = NULL;
	if (envo && (!json_is_object(envo) || json_object_size(envo) > EXEC_ENV_MAX)) {
		snprintf(why, whylen, "env must be an object of at most %d strings", EXEC_ENV_MAX);
		return false;
	}
	json_object_foreach(envo, k, v) {
		const char *s = json_string_value(v);

		if (!s || !*k || strchr(k, '=') || strlen(s) != json_string_length(v) ||
		    asprintf(&env[n], "%s=%s", k, s) < 0) {
			snprintf(why, whylen, "env.%.64s must be a string without NUL, its name without '='",
				 k);
			return false;
		}
		n++;
	}
	have_path = json_object_get(envo, "PATH") != NULL;
	/* The image's Env under the request's (one entry per name). */
	for (i = 0; img->env && img->env[i] && n < EXEC_ENV_CAP - 2; i++) {
		const char *kv = img->env[i];
		size_t kl = strcspn(kv, "=");
		bool dup = false;

		for (size_t j = 0; j < n && !dup; j++)
			dup = !strncmp(env[j], kv, kl) && env[j][kl] == '=';
		if (dup)
			continue;
		if (!(env[n] = strdup(kv)))
			return false;
		n++;
		have_path |= kl == 4 && !strncmp(kv, "PATH", 4);
	}
	/* kiln's PATH unless given; HOME is the user's, set by kiln-init. */
	if (!have_path &&
	    !(env[n++] = strdup("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")))
		return false;
	env[n] = NULL;
	if (cwd && (!json_is_string(cwd) || json_string_value(cwd)[0] != '/' ||
		    json_string_length(cwd) >= PROTO_PATH_MAX)) {
		snprintf(why, whylen, "cwd must be an absolute path");
		return false;
	}
	if (user && (!json_is_string(user) || strlen(json_string_value(user)) != json_string_length(user) ||
		     userdb_spec_ok(json_string_value(user)))) {
		snprintf(why, whylen, "user must be \"USER\" or \"USER:GROUP\" (names or numbers, at most %u bytes)",
			 USERDB_SPEC_MAX);
		return false;
	}
	spec->argv = argv;
	spec->envp = (const char *const *)env;
	spec->user = user ? json_string_value(user) : img->user;
	/* Without one: the image's, else root's /root, else the user's home (kiln-init). */
	spec->cwd = cwd ? json_string_value(cwd) : img->workdir ? img->workdir : spec->user ? NULL : "/root";
	spec->uid = spec->gid = 0;
	return true;
}

static enum MHD_Result h_exec(struct req *q, struct MHD_Connection *conn)
{
	static const char *const keys[] = { "cmd", "env", "cwd", "stdin", "timeout_s", NULL };
	const union MHD_ConnectionInfo *ci;
	struct kiln_exec_spec spec = { 0 };
	const char *argv[257];
	char *env[EXEC_ENV_CAP] = { 0 };
	struct kiln_image_config img = { 0 };
	struct stream *s = NULL;
	struct MHD_Response *resp;
	enum MHD_Result ret = MHD_NO;
	char why[512] = "", *argv_text = NULL;
	json_t *o, *in;
	int r;

	o = body_object(q, keys, why, sizeof(why));
	if (!o)
		return send_error(conn, 400, "bad_request", "%s", why);
	s = calloc(1, sizeof(*s));
	if (!s)
		goto out;
	s->api = q->api;
	s->client_fd = -1;
	if (image_defaults(q, &img, why, sizeof(why))) {
		ret = send_error(conn, 500, "internal", "%s", why);
		goto out;
	}
	if (!exec_spec(o, &img, &spec, argv, sizeof(argv) / sizeof(argv[0]), env, why,
		       sizeof(why)) ||
	    !field_uint(o, "timeout_s", 1, q->tenant->max_timeout_s, &s->timeout_s, why,
			sizeof(why))) {
		ret = send_error(conn, 400, "bad_request", "%s", why);
		goto out;
	}
	in = json_object_get(o, "stdin");
	if (in && !json_is_string(in)) {
		ret = send_error(conn, 400, "bad_request", "stdin must be a string");
		goto out;
	}
	spec.stdin = in != NULL;
	if (in) {
		s->stdin_len = json_string_length(in);
		s->stdin_data = malloc(s->stdin_len + 1);
		if (!s->stdin_data)
			goto out;
		memcpy(s->stdin_data, json_string_value(in), s->stdin_len);
	}
	s->sb = lookup(q);
	if (!s->sb) {
		ret = send_error(conn, 404, "not_found", "no sandbox %s", q->id);
		goto out;
	}
	r = registry_connect(q->api->c.reg, s->sb, &s->a);
	if (r) {
		ret = send_agent_error(conn, NULL, r, "cannot reach the sandbox's agent");
		goto out;
	}
	if (s->timeout_s) {
		s->deadline_ns = now_ns() + s->timeout_s * 1000000000ULL;
		kiln_agent_set_deadline(s->a, s->deadline_ns);
	}
	r = kiln_agent_exec(s->a, &spec, &stream_ops, s, &s->id);
	if (r) {
		char msg[512];

		snprintf(msg, sizeof(msg), "cannot run %s: %s", argv[0],
			 kiln_agent_error(s->a)[0] ? kiln_agent_error(s->a) : strerror(-r));
		ret = send_exec_error(conn, r, msg);
		goto out;
	}
	registry_count(q->api->c.reg, REG_EXECS, 1);
	argv_text = json_dumps(json_object_get(o, "cmd"), JSON_COMPACT);
	records_process_start(q->api->c.rec, q->id, argv_text ? argv_text : "[]", 0, &s->row);
	ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
	s->client_fd = ci ? ci->connect_fd : -1;
	stream_event(s, json_pack("{s:s,s:I}", "type", "start", "pid", (json_int_t)s->id));
	resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, stream_read, s,
						 stream_free);
	if (!resp)
		goto out;
	s = NULL;
	MHD_add_response_header(resp, "Content-Type", "application/x-ndjson");
	ret = queue(conn, 200, resp);
	MHD_destroy_response(resp);
out:
	if (s)
		stream_free(s);
	kiln_image_config_free(&img);
	for (size_t i = 0; i < sizeof(env) / sizeof(env[0]) && env[i]; i++)
		free(env[i]);
	free(argv_text);
	json_decref(o);
	return ret;
}

/* ---- processes: kilnd's own, they outlive the client that started them ---- */

static int client_fd_of(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);

	return ci ? ci->connect_fd : -1;
}

struct follow {
	struct proc_follower *f;
	int client_fd;
};

static ssize_t follow_read(void *cls, uint64_t pos, char *out, size_t max)
{
	struct follow *c = cls;
	ssize_t n = proc_follower_read(c->f, out, max, c->client_fd);

	(void)pos;
	if (n == 0)
		return MHD_CONTENT_READER_END_OF_STREAM;
	return n < 0 ? MHD_CONTENT_READER_END_WITH_ERROR : n;
}

static void follow_free(void *cls)
{
	struct follow *c = cls;

	proc_follower_free(c->f);
	free(c);
}

/* The process's events after after_seq, as a stream that follows it live. */
static enum MHD_Result send_events(struct MHD_Connection *conn, struct proc *p, uint64_t after)
{
	struct follow *c = calloc(1, sizeof(*c));
	struct MHD_Response *resp;
	enum MHD_Result ret;
	int r;

	if (!c)
		return MHD_NO;
	r = proc_follow(p, after, &c->f);
	if (r) {
		free(c);
		return r == -EBUSY ? send_error(conn, 429, "busy",
						"process %u has %d streams open, the most it may",
						proc_pid(p), PROC_FOLLOWERS_MAX)
				   : send_error(conn, 500, "internal", "%s", strerror(-r));
	}
	c->client_fd = client_fd_of(conn);
	resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, follow_read, c,
						 follow_free);
	if (!resp) {
		follow_free(c);
		return MHD_NO;
	}
	MHD_add_response_header(resp, "Content-Type", "application/x-ndjson");
	ret = queue(conn, 200, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* The tenant's sandbox's process {pid}, or NULL (both unknown look alike). */
static struct proc *lookup_proc(struct req *q)
{
	struct reg_sandbox *sb = lookup(q);
	struct proc *p;

	if (!sb)
		return NULL;
	p = procs_get(q->api->c.procs, q->tenant->name, q->id, q->pid);
	registry_put(q->api->c.reg, sb);
	return p;
}

#define WITH_PROC(q, conn, p)                                                                   \
	struct proc *p = lookup_proc(q);                                                        \
	if (!p)                                                                                 \
		return send_error(conn, 404, "not_found", "no process %u in sandbox %s", q->pid, \
				  q->id);

/* A terminal size {"rows": R, "cols": C}, each 1..PROC_PTY_DIM_MAX; what names
 * the object in messages ("pty" or "the body"). */
static bool parse_winsize(json_t *o, const char *what, const char *prefix, unsigned *rows,
			  unsigned *cols, char *why, size_t whylen)
{
	static const char *const names[] = { "rows", "cols" };
	unsigned *dst[] = { rows, cols };
	const char *key;
	json_t *v;

	if (!json_is_object(o)) {
		snprintf(why, whylen, "%s must be an object {\"rows\": R, \"cols\": C}", what);
		return false;
	}
	json_object_foreach(o, key, v) {
		if (strcmp(key, "rows") && strcmp(key, "cols")) {
			snprintf(why, whylen, "unknown field '%s%.64s'", prefix, key);
			return false;
		}
	}
	for (int i = 0; i < 2; i++) {
		v = json_object_get(o, names[i]);
		if (!json_is_integer(v) || json_integer_value(v) < 1 ||
		    json_integer_value(v) > PROC_PTY_DIM_MAX) {
			snprintf(why, whylen, "%s%s must be an integer from 1 to %u", prefix, names[i],
				 PROC_PTY_DIM_MAX);
			return false;
		}
		*dst[i] = (unsigned)json_integer_value(v);
	}
	return true;
}

static enum MHD_Result h_proc_start(struct req *q, struct MHD_Connection *conn)
{
	static const char *const keys[] = { "cmd", "env", "cwd", "user", "stdin", "pty",
					    "timeout_s", "tag", NULL };
	struct kiln_exec_spec spec = { 0 };
	const char *argv[257], *tag = NULL, *d;
	char *env[EXEC_ENV_CAP] = { 0 };
	struct kiln_image_config img;
	char why[512] = "", err[512] = "", *cmd_text = NULL;
	enum MHD_Result ret;
	struct reg_sandbox *sb = NULL;
	struct kiln_agent *a = NULL;
	struct proc *p = NULL;
	uint64_t timeout_s = 0;
	bool detach = false, bad = false;
	json_t *o, *v;
	int r;

	d = query(conn, "detach", 8, &bad);
	if (bad || (d && strcmp(d, "1") && strcmp(d, "0") && strcmp(d, "true") && strcmp(d, "false")))
		return send_error(conn, 400, "bad_request", "detach must be 1 or 0");
	detach = d && (!strcmp(d, "1") || !strcmp(d, "true"));
	o = body_object(q, keys, why, sizeof(why));
	if (!o)
		return send_error(conn, 400, "bad_request", "%s", why);
	if (image_defaults(q, &img, why, sizeof(why))) {
		json_decref(o);
		return send_error(conn, 500, "internal", "%s", why);
	}
	if (!exec_spec(o, &img, &spec, argv, sizeof(argv) / sizeof(argv[0]), env, why,
		       sizeof(why)) ||
	    !field_uint(o, "timeout_s", 1, q->tenant->max_timeout_s, &timeout_s, why, sizeof(why)))
		goto bad;
	v = json_object_get(o, "stdin");
	if (v && !json_is_boolean(v)) {
		snprintf(why, sizeof(why), "stdin must be true or false (send it to .../stdin)");
		goto bad;
	}
	spec.stdin = json_is_true(v);
	v = json_object_get(o, "pty");
	if (v && !json_is_null(v)) {
		if (!parse_winsize(v, "pty", "pty.", &spec.rows, &spec.cols, why, sizeof(why)))
			goto bad;
		spec.pty = true;
		/* A terminal takes input unless told otherwise. */
		spec.stdin = !json_is_false(json_object_get(o, "stdin"));
	}
	v = json_object_get(o, "tag");
	if (v && (!json_is_string(v) || json_string_length(v) > 128 ||
		  strlen(json_string_value(v)) != json_string_length(v))) {
		snprintf(why, sizeof(why), "tag must be a string of at most 128 bytes");
		goto bad;
	}
	tag = json_string_value(v);
	cmd_text = json_dumps(json_object_get(o, "cmd"), JSON_COMPACT);
	sb = lookup(q);
	if (!sb) {
		ret = send_error(conn, 404, "not_found", "no sandbox %s", q->id);
		goto out;
	}
	r = registry_connect(q->api->c.reg, sb, &a);
	registry_put(q->api->c.reg, sb);
	if (r) {
		ret = send_agent_error(conn, NULL, r, "cannot reach the sandbox's agent");
		goto out;
	}
	r = procs_start(q->api->c.procs, a,
			&(struct proc_start){ .tenant = q->tenant->name, .sandbox = q->id,
					      .spec = &spec, .cmd_json = cmd_text, .tag = tag,
					      .timeout_s = timeout_s },
			&p, err, sizeof(err));
	if (r == -EAGAIN)
		ret = send_error(conn, 429, "quota", "%s", err);
	else if (r)
		ret = send_exec_error(conn, r, err);
	else if (detach)
		ret = send_json(conn, 201, json_pack("{s:I}", "pid", (json_int_t)proc_pid(p)));
	else
		ret = send_events(conn, p, 0);
	if (!r)
		registry_count(q->api->c.reg, REG_EXECS, 1);
	proc_put(p);
	goto out;
bad:
	ret = send_error(conn, 400, "bad_request", "%s", why);
out:
	kiln_image_config_free(&img);
	for (size_t i = 0; i < sizeof(env) / sizeof(env[0]) && env[i]; i++)
		free(env[i]);
	free(cmd_text);
	json_decref(o);
	return ret;
}

static enum MHD_Result h_proc_list(struct req *q, struct MHD_Connection *conn)
{
	WITH_SANDBOX(q, conn, sb);
	registry_put(q->api->c.reg, sb);
	return send_json(conn, 200, procs_list_json(q->api->c.procs, q->tenant->name, q->id));
}

static enum MHD_Result h_proc_get(struct req *q, struct MHD_Connection *conn)
{
	WITH_PROC(q, conn, p);
	enum MHD_Result ret = send_json(conn, 200, proc_json(p));

	proc_put(p);
	return ret;
}

static enum MHD_Result h_proc_events(struct req *q, struct MHD_Connection *conn)
{
	bool bad = false;
	const char *a = query(conn, "after_seq", 20, &bad);
	uint64_t after = 0;
	enum MHD_Result ret;

	if (bad || (a && parse_u64(a, 0, INT64_MAX, &after)))
		return send_error(conn, 400, "bad_request", "after_seq must be a whole number");
	WITH_PROC(q, conn, p);
	ret = send_events(conn, p, after);
	proc_put(p);
	return ret;
}

static enum MHD_Result h_proc_stdin(struct req *q, struct MHD_Connection *conn)
{
	bool bad = false;
	const char *e = query(conn, "eof", 8, &bad);
	enum MHD_Result ret;
	int r;

	if (bad || (e && strcmp(e, "1") && strcmp(e, "0") && strcmp(e, "true") && strcmp(e, "false")))
		return send_error(conn, 400, "bad_request", "eof must be 1 or 0");
	WITH_PROC(q, conn, p);
	r = proc_stdin(p, q->body ? q->body : "", q->len, e && (!strcmp(e, "1") || !strcmp(e, "true")));
	if (r == -ESRCH)
		ret = send_error(conn, 409, "conflict", "process %u has ended", q->pid);
	else if (r == -EPIPE)
		ret = send_error(conn, 409, "conflict",
				 "process %u's stdin is closed (or was not asked for: \"stdin\": true)",
				 q->pid);
	else if (r == -EAGAIN)
		ret = send_error(conn, 429, "busy",
				 "process %u has not taken its earlier stdin yet (at most %u bytes wait)",
				 q->pid, PROC_STDIN_MAX);
	else
		ret = send_empty(conn, 204);
	proc_put(p);
	return ret;
}

/* "TERM", "SIGTERM" or a number from 1 to 64. */
static int parse_signal(json_t *v)
{
	static const struct { const char *name; int no; } names[] = {
		{ "HUP", SIGHUP }, { "INT", SIGINT }, { "QUIT", SIGQUIT }, { "KILL", SIGKILL },
		{ "USR1", SIGUSR1 }, { "USR2", SIGUSR2 }, { "PIPE", SIGPIPE }, { "ALRM", SIGALRM },
		{ "TERM", SIGTERM }, { "CONT", SIGCONT }, { "STOP", SIGSTOP }, { "TSTP", SIGTSTP },
		{ "WINCH", SIGWINCH },
	};
	const char *s = json_string_value(v);

	if (json_is_integer(v))
		return json_integer_value(v) >= 1 && json_integer_value(v) <= 64
			       ? (int)json_integer_value(v)
			       : -1;
	if (!s)
		return -1;
	if (!strncmp(s, "SIG", 3))
		s += 3;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcmp(s, names[i].name))
			return names[i].no;
	return -1;
}

static enum MHD_Result h_proc_signal(struct req *q, struct MHD_Connection *conn)
{
	static const char *const keys[] = { "signal", "group", NULL };
	char why[256] = "";
	json_t *o = body_object(q, keys, why, sizeof(why)), *g;
	enum MHD_Result ret;
	int signo, r;
	bool group;

	if (!o)
		return send_error(conn, 400, "bad_request", "%s", why);
	signo = json_object_get(o, "signal") ? parse_signal(json_object_get(o, "signal")) : SIGTERM;
	g = json_object_get(o, "group");
	group = !g || json_is_true(g);
	if (signo < 0 || (g && !json_is_boolean(g))) {
		json_decref(o);
		return send_error(conn, 400, "bad_request",
				  signo < 0 ? "signal must be a name like \"TERM\" or a number from 1 to 64"
					    : "group must be true or false");
	}
	json_decref(o);
	WITH_PROC(q, conn, p);
	r = proc_signal(p, signo, group);
	if (r == -ESRCH)
		ret = send_error(conn, 409, "conflict", "process %u has ended", q->pid);
	else if (r)
		ret = send_error(conn, 429, "busy", "process %u has signals waiting to be sent",
				 q->pid);
	else
		ret = send_empty(conn, 204);
	proc_put(p);
	return ret;
}

static enum MHD_Result h_proc_resize(struct req *q, struct MHD_Connection *conn)
{
	static const char *const keys[] = { "rows", "cols", NULL };
	char why[256] = "";
	json_t *o = body_object(q, keys, why, sizeof(why));
	enum MHD_Result ret;
	unsigned rows = 0, cols = 0;
	bool ok;
	int r;

	if (!o)
		return send_error(conn, 400, "bad_request", "%s", why);
	ok = parse_winsize(o, "the body", "", &rows, &cols, why, sizeof(why));
	json_decref(o);
	if (!ok)
		return send_error(conn, 400, "bad_request", "%s", why);
	WITH_PROC(q, conn, p);
	r = proc_resize(p, rows, cols);
	if (r == -ENOTTY)
		ret = send_error(conn, 409, "conflict", "process %u has no terminal (start it with \"pty\")",
				 q->pid);
	else if (r == -ESRCH)
		ret = send_error(conn, 409, "conflict", "process %u has ended", q->pid);
	else
		ret = send_empty(conn, 204);
	proc_put(p);
	return ret;
}

/* ---- files ---- */

/* An agent connection for a one-shot call; a sent answer when NULL. */
static struct kiln_agent *one_shot(struct req *q, struct MHD_Connection *conn,
				   enum MHD_Result *ret)
{
	struct reg_sandbox *sb = lookup(q);
	struct kiln_agent *a = NULL;
	int r;

	if (!sb) {
		*ret = send_error(conn, 404, "not_found", "no sandbox %s", q->id);
		return NULL;
	}
	r = registry_connect(q->api->c.reg, sb, &a);
	registry_put(q->api->c.reg, sb);
	if (r)
		*ret = send_agent_error(conn, NULL, r, "cannot reach the sandbox's agent");
	return a;
}

static enum MHD_Result h_put_file(struct req *q, struct MHD_Connection *conn)
{
	struct kiln_put_opts opts = { .mode = 0644, .uid = KILN_ID_KEEP, .gid = KILN_ID_KEEP,
				      .parents = true };
	char why[256] = "";
	const char *path = guest_path(conn, why, sizeof(why)), *mode;
	enum MHD_Result ret = MHD_NO;
	struct kiln_agent *a;
	uint64_t m, bytes = 0;
	bool bad = false;
	int r;

	if (!path)
		return send_error(conn, 400, "bad_request", "%s", why);
	mode = query(conn, "mode", 8, &bad);
	if (mode) {
		char *end;

		errno = 0;
		m = strtoull(mode, &end, 8);
		if (errno || *end || !*mode || m > 07777)
			bad = true;
		opts.mode = (uint32_t)m;
	}
	if (bad)
		return send_error(conn, 400, "bad_request", "mode must be octal, at most 7777");
	if (q->too_large)
		return send_error(conn, 413, "too_large", "the upload is over %" PRIu64 " bytes",
				  q->api->c.max_upload);
	if (q->io_error || lseek(q->fd, 0, SEEK_SET) < 0)
		return send_error(conn, 500, "internal", "cannot spool the upload");
	if (!(a = one_shot(q, conn, &ret)))
		return ret;
	r = kiln_agent_put(a, q->fd, path, &opts, &bytes);
	if (r)
		ret = send_agent_error(conn, a, r, "cannot write the file");
	else
		ret = send_empty(conn, 204);
	registry_count(q->api->c.reg, REG_FILES_IN, bytes);
	kiln_agent_free(a);
	return ret;
}

/* An unnamed spool file in STATE/tmp: gone with its last descriptor, even after a
 * crash. File systems without O_TMPFILE (overlayfs before Linux 6.6) get a named
 * file that is unlinked at once. */
static int tmp_file(const char *state_dir)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/tmp", state_dir);
	fd = open(path, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL))
		return fd;
	if (snprintf(path, sizeof(path), "%s/tmp/spool.XXXXXX", state_dir) >= (int)sizeof(path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	fd = mkostemp(path, O_CLOEXEC);
	if (fd >= 0)
		unlink(path);
	return fd;
}

static enum MHD_Result h_get_file(struct req *q, struct MHD_Connection *conn)
{
	char why[256] = "";
	const char *path = guest_path(conn, why, sizeof(why));
	enum MHD_Result ret = MHD_NO;
	struct MHD_Response *resp;
	struct kiln_agent *a;
	uint64_t bytes = 0;
	int fd, r;

	if (!path)
		return send_error(conn, 400, "bad_request", "%s", why);
	fd = tmp_file(q->api->c.state_dir);
	if (fd < 0)
		return send_error(conn, 500, "internal", "cannot spool the download: %s",
				  strerror(errno));
	if (!(a = one_shot(q, conn, &ret))) {
		close(fd);
		return ret;
	}
	r = kiln_agent_get(a, path, fd, q->api->c.max_upload, &bytes);
	if (r == -EFBIG) {
		ret = send_error(conn, 413, "too_large", "%s is over %" PRIu64 " bytes", path,
				 q->api->c.max_upload);
	} else if (r) {
		ret = send_agent_error(conn, a, r, "cannot read the file");
	} else if (!(resp = MHD_create_response_from_fd_at_offset64(bytes, fd, 0))) {
		ret = MHD_NO;
	} else {
		fd = -1; /* the response's now */
		MHD_add_response_header(resp, "Content-Type", "application/octet-stream");
		ret = queue(conn, 200, resp);
		MHD_destroy_response(resp);
		registry_count(q->api->c.reg, REG_FILES_OUT, bytes);
	}
	if (fd >= 0)
		close(fd);
	kiln_agent_free(a);
	return ret;
}

static const char *type_name(uint32_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG: return "file";
	case S_IFDIR: return "dir";
	case S_IFLNK: return "symlink";
	default: return "other";
	}
}

static json_t *stat_json(const char *name, uint32_t mode, uint64_t size, int64_t mtime)
{
	char m[8];

	snprintf(m, sizeof(m), "%04o", mode & 07777);
	return json_pack("{s:s,s:s,s:s,s:I,s:I}", "name", name, "type", type_name(mode), "mode", m,
			 "size", (json_int_t)size, "mtime", (json_int_t)mtime);
}

static enum MHD_Result h_stat(struct req *q, struct MHD_Connection *conn)
{
	char why[256] = "";
	const char *path = guest_path(conn, why, sizeof(why)), *base;
	enum MHD_Result ret = MHD_NO;
	struct kiln_agent *a;
	struct kiln_stat st;
	int r;

	if (!path)
		return send_error(conn, 400, "bad_request", "%s", why);
	if (!(a = one_shot(q, conn, &ret)))
		return ret;
	r = kiln_agent_stat(a, path, true, &st);
	base = strrchr(path, '/') + 1;
	if (r)
		ret = send_agent_error(conn, a, r, "cannot stat");
	else
		ret = send_json(conn, 200, stat_json(*base ? base : "/", st.mode, st.size,
						     st.mtime_sec));
	kiln_agent_free(a);
	return ret;
}

struct listing {
	json_t *arr;
	size_t n;
};

static int list_cb(void *ctx, const struct kiln_dirent *e)
{
	struct listing *l = ctx;

	if (++l->n > LIST_MAX)
		return -EFBIG;
	return json_array_append_new(l->arr, stat_json(e->name, e->mode, e->size, e->mtime_sec))
		       ? -ENOMEM : 0;
}

static enum MHD_Result h_list_dir(struct req *q, struct MHD_Connection *conn)
{
	char why[256] = "";
	const char *path = guest_path(conn, why, sizeof(why));
	struct listing l = { .arr = json_array() };
	enum MHD_Result ret = MHD_NO;
	struct kiln_agent *a;
	int r;

	if (!path || !l.arr) {
		json_decref(l.arr);
		return send_error(conn, 400, "bad_request", "%s", why);
	}
	if (!(a = one_shot(q, conn, &ret))) {
		json_decref(l.arr);
		return ret;
	}
	r = kiln_agent_list(a, path, list_cb, &l);
	if (r == -EFBIG)
		ret = send_error(conn, 413, "too_large", "%s has more than %d entries", path,
				 LIST_MAX);
	else if (r)
		ret = send_agent_error(conn, a, r, "cannot list");
	else
		ret = send_json(conn, 200, json_pack("{s:O}", "entries", l.arr));
	json_decref(l.arr);
	kiln_agent_free(a);
	return ret;
}

static enum MHD_Result h_mkdir(struct req *q, struct MHD_Connection *conn)
{
	static const char *const keys[] = { "path", "parents", "mode", NULL };
	char why[256] = "";
	json_t *o = body_object(q, keys, why, sizeof(why)), *p, *par;
	enum MHD_Result ret = MHD_NO;
	uint64_t mode = 0755;
	struct kiln_agent *a;
	int r;

	if (!o)
		return send_error(conn, 400, "bad_request", "%s", why);
	p = json_object_get(o, "path");
	par = json_object_get(o, "parents");
	if (!json_is_string(p) || json_string_value(p)[0] != '/' ||
	    strlen(json_string_value(p)) != json_string_length(p) ||
	    json_string_length(p) >= PROTO_PATH_MAX)
		snprintf(why, sizeof(why), "path must be an absolute path without NUL");
	else if (par && !json_is_boolean(par))
		snprintf(why, sizeof(why), "parents must be true or false");
	else
		field_uint(o, "mode", 0, 07777, &mode, why, sizeof(why));
	if (why[0]) {
		json_decref(o);
		return send_error(conn, 400, "bad_request", "%s", why);
	}
	if ((a = one_shot(q, conn, &ret))) {
		r = kiln_agent_mkdir(a, json_string_value(p), (uint32_t)mode, json_is_true(par));
		ret = r ? send_agent_error(conn, a, r, "cannot create the directory")
			: send_empty(conn, 204);
		kiln_agent_free(a);
	}
	json_decref(o);
	return ret;
}

static enum MHD_Result h_remove(struct req *q, struct MHD_Connection *conn)
{
	char why[256] = "";
	const char *path = guest_path(conn, why, sizeof(why)), *rec;
	enum MHD_Result ret = MHD_NO;
	struct kiln_agent *a;
	bool bad = false;
	int r;

	if (!path)
		return send_error(conn, 400, "bad_request", "%s", why);
	rec = query(conn, "recursive", 1, &bad);
	if (bad || (rec && strcmp(rec, "0") && strcmp(rec, "1")))
		return send_error(conn, 400, "bad_request", "recursive must be 0 or 1");
	if (!strcmp(path, "/"))
		return send_error(conn, 400, "bad_request", "will not remove /");
	if (!(a = one_shot(q, conn, &ret)))
		return ret;
	r = kiln_agent_remove(a, path, rec && !strcmp(rec, "1"));
	ret = r ? send_agent_error(conn, a, r, "cannot remove") : send_empty(conn, 204);
	kiln_agent_free(a);
	return ret;
}

/* ---- records, metrics, health ---- */

static enum MHD_Result h_runs(struct req *q, struct MHD_Connection *conn)
{
	bool bad = false;
	const char *lim = query(conn, "limit", 8, &bad);
	uint64_t limit = 100;
	json_t *arr = NULL;

	if (bad || (lim && parse_u64(lim, 1, 1000, &limit)) || !limit)
		return send_error(conn, 400, "bad_request", "limit must be from 1 to 1000");
	if (records_list(q->api->c.rec, q->tenant->name, (unsigned)limit, &arr))
		return send_error(conn, 500, "internal", "cannot read the records");
	return send_json(conn, 200, json_pack("{s:o}", "runs", arr));
}

static enum MHD_Result h_run(struct req *q, struct MHD_Connection *conn)
{
	json_t *o = NULL;
	int r = records_get(q->api->c.rec, q->tenant->name, q->id, &o);

	if (r == -ENOENT)
		return send_error(conn, 404, "not_found", "no run record %s", q->id);
	if (r)
		return send_error(conn, 500, "internal", "cannot read the records");
	return send_json(conn, 200, o);
}

static enum MHD_Result h_metrics(struct req *q, struct MHD_Connection *conn)
{
	char *text = registry_metrics(q->api->c.reg);

	if (!text)
		return send_error(conn, 500, "internal", "out of memory");
	return send_text(conn, 200, "text/plain; version=0.0.4", text, strlen(text));
}

static enum MHD_Result h_health(struct req *q, struct MHD_Connection *conn)
{
	unsigned used, max;

	registry_capacity(q->api->c.reg, &used, &max);
	return send_json(conn, 200, json_pack("{s:s,s:I,s:I}", "status", "ok", "sandboxes",
					      (json_int_t)used, "capacity", (json_int_t)max));
}

/* Fleet: what a router places by (docs/daemon.md, "Fleet"). */
static enum MHD_Result h_capacity(struct req *q, struct MHD_Connection *conn)
{
	struct registry_cap c;

	registry_capacity_full(q->api->c.reg, &c);
	return send_json(conn, 200, json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:b}", "host_id",
					      api_host_id, "slots", (json_int_t)c.slots, "used",
					      (json_int_t)c.used, "starting", (json_int_t)c.starting,
					      "free_cpus", (json_int_t)c.free_cpus,
					      "free_memory_mib", (json_int_t)c.free_memory_mib,
					      "draining", c.draining));
}

/* POST drains, DELETE undoes it; admin tenants only. */
static enum MHD_Result h_drain(struct req *q, struct MHD_Connection *conn, bool on)
{
	if (!q->tenant->admin)
		return send_error(conn, 403, "forbidden",
				  "only an admin tenant may drain this host (tokens file: \"admin\": true)");
	registry_set_draining(q->api->c.reg, on);
	fprintf(stderr, "kilnd: %s by tenant %s\n", on ? "draining" : "no longer draining",
		q->tenant->name);
	return send_json(conn, 200, json_pack("{s:b}", "draining", on));
}

static enum MHD_Result h_drain_on(struct req *q, struct MHD_Connection *conn)
{
	return h_drain(q, conn, true);
}

static enum MHD_Result h_drain_off(struct req *q, struct MHD_Connection *conn)
{
	return h_drain(q, conn, false);
}

static const struct route routes[] = {
	{ "GET", "/v1/health", false, BODY_NONE, h_health },
	{ "GET", "/v1/capacity", false, BODY_NONE, h_capacity },
	{ "POST", "/v1/drain", false, BODY_NONE, h_drain_on },
	{ "DELETE", "/v1/drain", false, BODY_NONE, h_drain_off },
	{ "GET", "/metrics", false, BODY_NONE, h_metrics },
	{ "POST", "/v1/sandboxes", false, BODY_JSON, h_create },
	{ "GET", "/v1/sandboxes", false, BODY_NONE, h_list },
	{ "GET", "/v1/runs", false, BODY_NONE, h_runs },
	{ "GET", "/v1/templates", false, BODY_NONE, h_templates },
	{ "GET", "", true, BODY_NONE, h_get },
	{ "DELETE", "", true, BODY_NONE, h_delete },
	{ "POST", "/timeout", true, BODY_JSON, h_timeout },
	{ "POST", "/pause", true, BODY_NONE, h_pause },
	{ "POST", "/resume", true, BODY_NONE, h_resume },
	{ "POST", "/template", true, BODY_JSON, h_template_save },
	{ "POST", "/fork", true, BODY_JSON, h_fork },
	{ "POST", "/exec", true, BODY_JSON, h_exec },
	{ "PUT", "/files", true, BODY_FILE, h_put_file },
	{ "GET", "/files", true, BODY_NONE, h_get_file },
	{ "GET", "/fs/stat", true, BODY_NONE, h_stat },
	{ "GET", "/fs/list", true, BODY_NONE, h_list_dir },
	{ "POST", "/fs/mkdir", true, BODY_JSON, h_mkdir },
	{ "DELETE", "/fs", true, BODY_NONE, h_remove },
	{ "POST", "/processes", true, BODY_JSON, h_proc_start },
	{ "GET", "/processes", true, BODY_NONE, h_proc_list },
	{ "GET", "/processes/#", true, BODY_NONE, h_proc_get },
	{ "GET", "/processes/#/events", true, BODY_NONE, h_proc_events },
	{ "POST", "/processes/#/stdin", true, BODY_RAW, h_proc_stdin },
	{ "POST", "/processes/#/signal", true, BODY_JSON, h_proc_signal },
	{ "POST", "/processes/#/resize", true, BODY_JSON, h_proc_resize },
	{ "GET", "@runs", true, BODY_NONE, h_run },
	{ "DELETE", "@templates", true, BODY_NONE, h_template_delete },
};

/* /processes/{pid}REST as "/processes/#REST" in norm, the number in *pid; other
 * paths as they are. False if it does not fit (no route is that long). */
static bool normalize(const char *rest, char *norm, size_t len, uint32_t *pid)
{
	static const char pre[] = "/processes/";
	const char *d = rest + sizeof(pre) - 1, *e = d;
	uint64_t v = 0;

	if (strncmp(rest, pre, sizeof(pre) - 1)) {
		if (strlen(rest) >= len)
			return false;
		memcpy(norm, rest, strlen(rest) + 1);
		return true;
	}
	while (*e >= '0' && *e <= '9' && e - d < 10)
		v = v * 10 + (uint64_t)(*e++ - '0');
	if (e == d || (*e && *e != '/') || v == 0 || v > UINT32_MAX)
		return false;
	*pid = (uint32_t)v;
	return snprintf(norm, len, "%s#%s", pre, e) < (int)len;
}

/*
 * Which route: an exact path, or /v1/sandboxes/{id}REST, or /v1/runs/{id}
 * ("@runs"), or /v1/templates/{name} ("@templates"). *path_known tells a wrong method (405) from an unknown path.
 */
static const struct route *route_find(const char *method, const char *url, char *id, size_t idlen,
				      uint32_t *pid, bool *path_known)
{
	const char *rest = NULL, *slash;
	char norm[64];
	bool runs = false, templates = false;
	size_t n;

	*path_known = false;
	if (!strncmp(url, "/v1/sandboxes/", 14))
		rest = url + 14;
	else if (!strncmp(url, "/v1/runs/", 9))
		rest = url + 9, runs = true;
	else if (!strncmp(url, "/v1/templates/", 14))
		rest = url + 14, templates = true;
	if (rest) {
		slash = strchr(rest, '/');
		n = slash ? (size_t)(slash - rest) : strlen(rest);
		if (!n || n >= idlen || ((runs || templates) && slash))
			return NULL;
		memcpy(id, rest, n);
		id[n] = 0;
		rest += n;
		if (!runs && !templates) {
			if (!normalize(rest, norm, sizeof(norm), pid))
				return NULL;
			rest = norm;
		}
	}
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		const struct route *r = &routes[i];

		if (r->per_sandbox != (rest != NULL))
			continue;
		if (rest ? strcmp(r->path, runs ? "@runs" : templates ? "@templates" : rest)
			 : strcmp(r->path, url))
			continue;
		*path_known = true;
		if (!strcmp(r->method, method))
			return r;
	}
	return NULL;
}

/* The tenant of the request's bearer token, or NULL. */
static const struct tokens_tenant *authenticate(struct api *a, struct MHD_Connection *conn)
{
	const char *h = NULL;
	size_t len = 0;

	if (MHD_lookup_connection_value_n(conn, MHD_HEADER_KIND, "Authorization", 13, &h, &len) !=
		    MHD_YES || !h || len < 8 || strncasecmp(h, "Bearer ", 7))
		return NULL;
	return tokens_find(a->c.tokens, h + 7, len - 7);
}

static void log_request(struct api *a, const char *method, const char *url, const char *tenant)
{
	if (a->c.log_json) {
		json_t *j = json_pack("{s:s,s:s,s:s}", "method", method, "path", url, "tenant",
				      tenant ? tenant : "");
		char *t = j ? json_dumps(j, JSON_COMPACT) : NULL;

		if (t)
			fprintf(stderr, "%s\n", t);
		free(t);
		json_decref(j);
	}
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version, const char *upload,
				  size_t *upload_size, void **con_cls)
{
	struct api *a = cls;
	struct req *q = *con_cls;
	bool path_known;

	if (!q) {
		q = calloc(1, sizeof(*q));
		if (!q)
			return MHD_NO;
		q->api = a;
		q->fd = -1;
		*con_cls = q;
		q->route = route_find(method, url, q->id, sizeof(q->id), &q->pid, &path_known);
		if (!q->route)
			return path_known ? send_error(conn, 405, "method_not_allowed",
						       "%s is not allowed on %s", method, url)
					  : send_error(conn, 404, "not_found", "no such endpoint: %s",
						       url);
		if (q->route->fn != h_health) {
			q->tenant = authenticate(a, conn);
			if (!q->tenant)
				return send_error(conn, 401, "unauthorized",
						  "a valid 'Authorization: Bearer TOKEN' is required");
		}
		log_request(a, method, url, q->tenant ? q->tenant->name : NULL);
		q->kind = q->route->body;
		if (q->kind == BODY_FILE) {
			q->fd = tmp_file(a->c.state_dir);
			if (q->fd < 0)
				return send_error(conn, 500, "internal", "cannot spool the upload: %s",
						  strerror(errno));
		}
		return MHD_YES;
	}
	if (*upload_size) {
		size_t n = *upload_size;

		*upload_size = 0;
		if (q->kind == BODY_NONE || q->too_large) {
			q->too_large = true;
		} else if (q->kind == BODY_JSON || q->kind == BODY_RAW) {
			char *p;

			if (q->len + n > (q->kind == BODY_JSON ? JSON_BODY_MAX : PROC_STDIN_MAX)) {
				q->too_large = true;
				return MHD_YES;
			}
			p = realloc(q->body, q->len + n + 1);
			if (!p)
				return MHD_NO;
			q->body = p;
			memcpy(q->body + q->len, upload, n);
			q->len += n;
		} else if (q->bytes + n > a->c.max_upload) {
			q->too_large = true;
		} else {
			for (size_t off = 0; off < n;) {
				ssize_t w = write(q->fd, upload + off, n - off);

				if (w <= 0) {
					q->io_error = true;
					break;
				}
				off += (size_t)w;
			}
			q->bytes += n;
		}
		return MHD_YES;
	}
	if (q->too_large && q->kind == BODY_NONE)
		return send_error(conn, 400, "bad_request", "%s %s takes no body", method, url);
	if (q->too_large && q->kind == BODY_JSON)
		return send_error(conn, 413, "too_large", "the JSON body is over %d bytes",
				  JSON_BODY_MAX);
	if (q->too_large && q->kind == BODY_RAW)
		return send_error(conn, 413, "too_large", "the body is over %u bytes", PROC_STDIN_MAX);
	return q->route->fn(q, conn);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct req *q = *con_cls;

	if (!q)
		return;
	if (q->fd >= 0)
		close(q->fd);
	free(q->body);
	free(q);
	*con_cls = NULL;
}

int api_start(const struct api_config *c, int listen_fd, struct api **out, char *err,
	      size_t errlen)
{
	struct api *a = calloc(1, sizeof(*a));
	char dir[PATH_MAX];
	int ret = -ENOMEM;

	*out = NULL;
	if (!a) {
		close(listen_fd);
		goto out;
	}
	a->c = *c;
	api_host_id = c->host_id;
	snprintf(dir, sizeof(dir), "%s/tmp", c->state_dir);
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		ret = -errno;
		snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
		close(listen_fd);
		goto out;
	}
	a->mhd = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
					  MHD_USE_POLL | MHD_USE_ERROR_LOG,
				  0, NULL, NULL, on_request, a,
				  MHD_OPTION_LISTEN_SOCKET, listen_fd,
				  MHD_OPTION_CONNECTION_LIMIT, c->max_connections,
				  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)IDLE_TIMEOUT_S,
				  MHD_OPTION_THREAD_STACK_SIZE, (size_t)THREAD_STACK,
				  MHD_OPTION_NOTIFY_COMPLETED, on_completed, a,
				  MHD_OPTION_END);
	if (!a->mhd) {
		ret = -EIO;
		snprintf(err, errlen, "cannot start the HTTP server");
		close(listen_fd);
		goto out;
	}
	*out = a;
	a = NULL;
	ret = 0;
out:
	free(a);
	return ret;
}

void api_stop(struct api *a)
{
	if (!a)
		return;
	MHD_stop_daemon(a->mhd);
	free(a);
}
