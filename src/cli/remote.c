/*
 * kiln's client verbs: create, exec, ps, rm, cp, attach and timeout drive
 * kilnd over its HTTP API (docs/daemon.md) with libcurl. kilnd is found
 * through KILN_HOST (unix:PATH, tcp:HOST:PORT or http(s)://HOST:PORT) and
 * KILN_TOKEN. kilnd is trusted no more than a guest: what it answers is
 * capped (JSON bodies, event lines) and its messages are sanitized before
 * they reach the terminal. A process's own output goes out as it is, as
 * `kiln run` does.
 *
 * Exit status: the process's for exec and attach (128+N on signal N); 2 for
 * bad usage and for what kilnd refused because of the request (4xx but 429);
 * 125 when kiln or kilnd failed or kilnd cannot be reached.
 */
#include "cli/remote.h"
#include "cli/tty.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "sanitize.h"
#include "fleetid.h"
#include "util.h"

#define EXIT_USAGE 2
#define EXIT_TIMEOUT 124
#define EXIT_KILN 125
#define DEFAULT_HOST "unix:/run/kiln/kilnd.sock"
#define BODY_MAX (16u << 20)	   /* a JSON answer (or an error body) */
#define LINE_MAX_BYTES (8u << 20)  /* one event line */
#define STDIN_CHUNK (64 * 1024)	   /* one POST .../stdin */
#define STDIN_RETRY_MS 50	   /* after 429: the process has not read earlier stdin yet */
#define CONNECT_TIMEOUT_S 10L
#define STALL_S 120L		   /* no byte for this long: kilnd is gone (keepalives are 15 s) */
#define MSG_MAX 1024
#define ID_MAX FLEET_ID_MAX	/* sb-<host>-<32 hex> (src/common/fleetid.h) */

struct client {
	const char *host;	/* KILN_HOST as given, for messages */
	bool host_default;
	char sock[PATH_MAX];	/* unix: the socket; "" for TCP */
	char base[512];		/* the URL that /v1/... follows */
	char auth[4096 + 32];	/* "Authorization: Bearer ..." or "" */
};

struct buf {
	char *p;
	size_t len, max;
};

enum sink { SINK_BUF, SINK_FD, SINK_LINES };

/* One HTTP request and its answer. */
struct call {
	struct client *c;
	CURL *h;
	struct curl_slist *hdrs;
	char *url, *req_body;
	enum sink sink;
	struct buf body;	/* SINK_BUF: the answer; any sink: an error answer */
	int out_fd;		/* SINK_FD: where a 2xx answer goes */
	struct buf line;	/* SINK_LINES: the line so far */
	int (*on_line)(void *ctx, char *line, size_t len);
	void *ctx;
	int in_fd;		/* PUT: the upload's source */
	bool abort_on_signal;
	const char *fail;	/* why a callback stopped the transfer */
	int fail_errno;		/* and its errno, if any */
	int fail_status;	/* its exit status */
	char errbuf[CURL_ERROR_SIZE];
};

static volatile sig_atomic_t g_signals, g_last_signal;
static int g_sigpipe[2] = { -1, -1 };

/* ---- small helpers ---- */

static __attribute__((format(printf, 2, 3))) int usage_error(const char *verb, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "kiln %s: ", verb);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return EXIT_USAGE;
}

static int bad_option(const char *verb, int opt, char **argv)
{
	char o[3] = { '-', (char)optopt, 0 };
	const char *name = optopt > ' ' && optopt < 127 ? o : argv[optind - 1];

	if (opt == ':')
		return usage_error(verb, "option '%s' needs a value", name);
	return usage_error(verb, "unknown option '%s' (see kiln %s --help)", name, verb);
}

/* kilnd's text, safe for a terminal, in one line. */
static const char *clean(char *dst, size_t len, const char *s)
{
	return text_sanitize_str(dst, len, s ? s : "");
}

/* A sandbox id as kilnd makes them (a router may prefix a host id). */
static bool valid_id(const char *s)
{
	size_t n = strlen(s);

	if (!n || n > ID_MAX || s[0] == '.' || s[0] == '-')
		return false;
	for (const char *p = s; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.'))
			return false;
	return true;
}

static int check_id(const char *verb, const char *id)
{
	char c[128];

	if (valid_id(id))
		return 0;
	return usage_error(verb, "'%s' is not a sandbox id (sb-... as kiln create prints)",
			   clean(c, sizeof(c), id));
}

static bool buf_add(struct buf *b, const void *p, size_t n)
{
	char *q;

	if (b->len + n > b->max)
		return false;
	q = realloc(b->p, b->len + n + 1);
	if (!q)
		return false;
	b->p = q;
	memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = 0;
	return true;
}

static int b64_val(unsigned char ch)
{
	if (ch >= 'A' && ch <= 'Z')
		return ch - 'A';
	if (ch >= 'a' && ch <= 'z')
		return ch - 'a' + 26;
	if (ch >= '0' && ch <= '9')
		return ch - '0' + 52;
	if (ch == '+')
		return 62;
	if (ch == '/')
		return 63;
	return -1;
}

/* Padded base64 into out (room for len / 4 * 3 bytes): the length, or -1. */
static ssize_t b64_decode(const char *in, size_t len, unsigned char *out)
{
	unsigned acc = 0;
	size_t n = 0;
	int bits = 0, pad = 0;

	if (len % 4)
		return -1;
	for (size_t i = 0; i < len; i++) {
		int v;

		if (in[i] == '=') {
			if (i + 2 < len || ++pad > 2)
				return -1;
			continue;
		}
		v = b64_val((unsigned char)in[i]);
		if (pad || v < 0)
			return -1;
		acc = ((acc << 6) | (unsigned)v) & 0xffffff;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[n++] = (unsigned char)(acc >> bits);
		}
	}
	return (ssize_t)n;
}

static void on_signal(int sig)
{
	int saved = errno;
	char c = 1;

	g_last_signal = sig;
	g_signals = g_signals + 1;
	if (g_sigpipe[1] >= 0 && write(g_sigpipe[1], &c, 1) < 0) {
		/* full: a wake-up is pending already */
	}
	errno = saved;
}

/* Catch these signals (a zero-ended list) from here on; a pipe wakes polls. */
static int catch_signals(const int *sigs)
{
	struct sigaction sa = { .sa_handler = on_signal };

	if (g_sigpipe[0] < 0 && pipe2(g_sigpipe, O_CLOEXEC | O_NONBLOCK) < 0)
		return -1;
	sigemptyset(&sa.sa_mask);
	for (; *sigs; sigs++)
		if (sigaction(*sigs, &sa, NULL) < 0)
			return -1;
	return 0;
}

/* ---- the connection to kilnd ---- */

static int client_init(struct client *c, const char *verb)
{
	const char *h = getenv("KILN_HOST"), *tok = getenv("KILN_TOKEN"), *p;

	memset(c, 0, sizeof(*c));
	c->host_default = !h || !*h;
	c->host = c->host_default ? DEFAULT_HOST : h;
	for (p = c->host; *p; p++)
		if ((unsigned char)*p <= ' ' || *p == 0x7f)
			return usage_error(verb, "KILN_HOST holds a space or a control character");
	if (!strncmp(c->host, "unix:", 5)) {
		if (c->host[5] != '/' || strlen(c->host + 5) >= sizeof(c->sock) ||
		    strlen(c->host + 5) >= 108)
			return usage_error(verb, "KILN_HOST unix: wants an absolute socket path (at most 107 bytes)");
		snprintf(c->sock, sizeof(c->sock), "%s", c->host + 5);
		snprintf(c->base, sizeof(c->base), "http://localhost");
	} else if (!strncmp(c->host, "tcp:", 4) && c->host[4] && strlen(c->host) < 256) {
		snprintf(c->base, sizeof(c->base), "http://%s", c->host + 4);
	} else if ((!strncmp(c->host, "http://", 7) && c->host[7]) ||
		   (!strncmp(c->host, "https://", 8) && c->host[8])) {
		size_t n = strlen(c->host);

		if (n >= sizeof(c->base) - 128)
			return usage_error(verb, "KILN_HOST is too long");
		while (n > 8 && c->host[n - 1] == '/')
			n--;
		snprintf(c->base, sizeof(c->base), "%.*s", (int)n, c->host);
	} else {
		char s[128];

		return usage_error(verb, "KILN_HOST must be unix:/PATH, tcp:HOST:PORT or http://HOST:PORT, not '%s'",
				   clean(s, sizeof(s), c->host));
	}
	if (tok && *tok) {
		for (p = tok; *p; p++)
			if ((unsigned char)*p < ' ' || *p == 0x7f)
				return usage_error(verb, "KILN_TOKEN holds a control character");
		if (strlen(tok) > 4096)
			return usage_error(verb, "KILN_TOKEN is over 4096 bytes");
		snprintf(c->auth, sizeof(c->auth), "Authorization: Bearer %s", tok);
	}
	return 0;
}

static size_t on_data(char *p, size_t size, size_t n, void *ctx)
{
	struct call *k = ctx;
	size_t len = size * n;
	long st = 0;

	curl_easy_getinfo(k->h, CURLINFO_RESPONSE_CODE, &st);
	if (st < 200 || st > 299 || k->sink == SINK_BUF) {
		if (buf_add(&k->body, p, len))
			return len;
		k->fail = "kilnd's answer is over 16 MiB";
		return 0;
	}
	if (k->sink == SINK_FD) {
		int r = write_full(k->out_fd, p, len);

		if (!r)
			return len;
		k->fail_errno = -r;
		k->fail = "cannot write the file";
		k->fail_status = EXIT_KILN;
		return 0;
	}
	while (len) {
		char *nl = memchr(p, '\n', len);
		size_t m = nl ? (size_t)(nl - p) : len;

		if (!buf_add(&k->line, p, m)) {
			k->fail = "an event line from kilnd is over 8 MiB";
			return 0;
		}
		if (!nl)
			break;
		if (k->line.len && k->on_line(k->ctx, k->line.p, k->line.len))
			return 0; /* on_line set k->fail */
		k->line.len = 0;
		p = nl + 1;
		len -= m + 1;
	}
	return size * n;
}

static size_t on_upload(char *p, size_t size, size_t n, void *ctx)
{
	struct call *k = ctx;
	ssize_t r;

	do
		r = read(k->in_fd, p, size * n);
	while (r < 0 && errno == EINTR && !(k->abort_on_signal && g_signals));
	if (r >= 0)
		return (size_t)r;
	k->fail_errno = errno;
	k->fail = "cannot read the file";
	k->fail_status = EXIT_KILN;
	return CURL_READFUNC_ABORT;
}

static int on_progress(void *ctx, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	struct call *k = ctx;

	return k->abort_on_signal && g_signals;
}

static void call_free(struct call *k)
{
	if (k->h)
		curl_easy_cleanup(k->h);
	curl_slist_free_all(k->hdrs);
	free(k->url);
	free(k->req_body);
	free(k->body.p);
	free(k->line.p);
	memset(k, 0, sizeof(*k));
}

static bool add_header(struct call *k, const char *h)
{
	struct curl_slist *l = curl_slist_append(k->hdrs, h);

	if (l)
		k->hdrs = l;
	return l != NULL;
}

/*
 * A request to kilnd: method, path (after the base URL, already escaped),
 * what becomes of its answer. Bodies are set by the caller. 0 or -1.
 */
static int call_init(struct call *k, struct client *c, const char *method, const char *path,
		     enum sink sink)
{
	memset(k, 0, sizeof(*k));
	k->c = c;
	k->sink = sink;
	k->out_fd = k->in_fd = -1;
	k->fail_status = EXIT_KILN;
	k->body.max = BODY_MAX;
	k->line.max = LINE_MAX_BYTES;
	k->h = curl_easy_init();
	if (!k->h || asprintf(&k->url, "%s%s", c->base, path) < 0) {
		k->url = NULL;
		return -1;
	}
	if ((c->auth[0] && !add_header(k, c->auth)) || !add_header(k, "Expect:"))
		return -1;
	curl_easy_setopt(k->h, CURLOPT_URL, k->url);
	if (c->sock[0])
		curl_easy_setopt(k->h, CURLOPT_UNIX_SOCKET_PATH, c->sock);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(k->h, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
	curl_easy_setopt(k->h, CURLOPT_HTTPHEADER, k->hdrs);
	curl_easy_setopt(k->h, CURLOPT_ERRORBUFFER, k->errbuf);
	curl_easy_setopt(k->h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(k->h, CURLOPT_WRITEDATA, k);
	curl_easy_setopt(k->h, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(k->h, CURLOPT_XFERINFODATA, k);
	curl_easy_setopt(k->h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(k->h, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
	curl_easy_setopt(k->h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(k->h, CURLOPT_LOW_SPEED_TIME, STALL_S);
	curl_easy_setopt(k->h, CURLOPT_NOSIGNAL, 1L);
	if (strcmp(method, "GET") && strcmp(method, "POST") && strcmp(method, "PUT"))
		curl_easy_setopt(k->h, CURLOPT_CUSTOMREQUEST, method);
	if (!strcmp(method, "POST")) {
		/* An empty body until the caller sets one (never curl's default: stdin). */
		curl_easy_setopt(k->h, CURLOPT_POSTFIELDSIZE, 0L);
		curl_easy_setopt(k->h, CURLOPT_POSTFIELDS, "");
	}
	return 0;
}

/* A JSON body (taken); POST unless the call says otherwise. */
static int call_json(struct call *k, json_t *j)
{
	k->req_body = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (!k->req_body || !add_header(k, "Content-Type: application/json"))
		return -1;
	curl_easy_setopt(k->h, CURLOPT_HTTPHEADER, k->hdrs);
	curl_easy_setopt(k->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(k->req_body));
	curl_easy_setopt(k->h, CURLOPT_POSTFIELDS, k->req_body);
	return 0;
}

static long call_http_status(struct call *k)
{
	long st = 0;

	curl_easy_getinfo(k->h, CURLINFO_RESPONSE_CODE, &st);
	return st;
}

/* kilnd's {"error":{"message"}} as one line; the exit status for it. */
static int api_error(struct call *k, long st)
{
	json_t *j = k->body.len ? json_loadb(k->body.p, k->body.len, 0, NULL) : NULL;
	json_t *e = json_object_get(j, "error");
	const char *m = json_string_value(json_object_get(e, "message"));
	const char *code = json_string_value(json_object_get(e, "code"));
	char msg[MSG_MAX];
	int ret;

	if (m)
		fprintf(stderr, "kiln: %s%s\n", clean(msg, sizeof(msg), m),
			st == 401 && !k->c->auth[0] ? " (KILN_TOKEN is not set)" : "");
	else
		fprintf(stderr, "kiln: kilnd at %s answered HTTP %ld\n",
			clean(msg, sizeof(msg), k->c->host), st);
	/* A command that could not start: 127 and 126, as a shell says (and kiln run). */
	if (code && !strcmp(code, "command_not_found"))
		ret = 127;
	else if (code && (!strcmp(code, "command_not_runnable") || !strcmp(code, "user_not_found")))
		ret = 126;
	else
		ret = st >= 400 && st <= 499 && st != 429 ? EXIT_USAGE : EXIT_KILN;
	json_decref(j);
	return ret;
}

/* A transfer's outcome: 0 for a 2xx answer, or (told on stderr) an exit status. */
static int call_result(struct call *k, CURLcode cc)
{
	char host[256], why[MSG_MAX];
	long os_errno = 0, st;

	clean(host, sizeof(host), k->c->host);
	if (k->fail) {
		if (cc == CURLE_WRITE_ERROR || cc == CURLE_READ_ERROR || cc == CURLE_ABORTED_BY_CALLBACK ||
		    cc == CURLE_OK) {
			if (k->fail_errno)
				fprintf(stderr, "kiln: %s: %s\n", k->fail, strerror(k->fail_errno));
			else if (k->fail[0])
				fprintf(stderr, "kiln: %s\n", k->fail);
			return k->fail_status;
		}
	}
	if (cc == CURLE_ABORTED_BY_CALLBACK && g_signals)
		return 128 + g_last_signal;
	if (cc != CURLE_OK) {
		curl_easy_getinfo(k->h, CURLINFO_OS_ERRNO, &os_errno);
		if (os_errno)
			snprintf(why, sizeof(why), "%s", strerror((int)os_errno));
		else
			clean(why, sizeof(why), k->errbuf[0] ? k->errbuf : curl_easy_strerror(cc));
		if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST ||
		    cc == CURLE_COULDNT_RESOLVE_PROXY ||
		    (cc == CURLE_OPERATION_TIMEDOUT && !call_http_status(k)))
			fprintf(stderr, "kiln: cannot reach kilnd at %s%s: %s\n", host,
				k->c->host_default ? " (the default; set KILN_HOST)" : "", why);
		else
			fprintf(stderr, "kiln: lost kilnd at %s: %s\n", host, why);
		return EXIT_KILN;
	}
	st = call_http_status(k);
	if (st >= 200 && st <= 299)
		return 0;
	return api_error(k, st);
}

static int call_run(struct call *k)
{
	return call_result(k, curl_easy_perform(k->h));
}

/* A JSON answer as an object, or NULL (told). */
static json_t *answer_object(struct call *k)
{
	json_t *j = json_loadb(k->body.p ? k->body.p : "", k->body.len, 0, NULL);

	if (json_is_object(j))
		return j;
	json_decref(j);
	fprintf(stderr, "kiln: kilnd answered something that is not a JSON object\n");
	return NULL;
}

/* A string field of an answer, sanitized; "-" when absent. */
static const char *field(json_t *o, const char *key, char *buf, size_t len)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? clean(buf, len, s) : "-";
}

/* ---- create ---- */

static const char create_usage[] =
	"usage: kiln create [--image NAME] [--cpus N] [--mem MiB] [--disk MiB] [--timeout SEC]\n"
	"                   [--allow RULE]... [--meta K=V]...\n"
	"Creates a sandbox in kilnd and prints its id.\n";

static int set_uint(json_t *o, const char *key, const char *verb, const char *opt, const char *arg,
		    uint64_t min, uint64_t max)
{
	uint64_t v;

	if (parse_u64(arg, min, max, &v))
		return usage_error(verb, "%s must be a whole number from %" PRIu64 " to %" PRIu64 ", not '%s'",
				   opt, min, max, arg);
	return json_object_set_new(o, key, json_integer((json_int_t)v)) ? EXIT_KILN : 0;
}

static int cmd_create(struct client *c, int argc, char **argv)
{
	enum { O_IMAGE = 256, O_CPUS, O_MEM, O_DISK, O_TIMEOUT, O_ALLOW, O_META };
	static const struct option opts[] = {
		{ "image", required_argument, NULL, O_IMAGE },
		{ "cpus", required_argument, NULL, O_CPUS },
		{ "mem", required_argument, NULL, O_MEM },
		{ "disk", required_argument, NULL, O_DISK },
		{ "timeout", required_argument, NULL, O_TIMEOUT },
		{ "allow", required_argument, NULL, O_ALLOW },
		{ "meta", required_argument, NULL, O_META },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	json_t *o = json_object(), *allow = json_array(), *meta = json_object(), *ans = NULL;
	struct call k = { 0 };
	char id[128];
	int opt, ret = EXIT_KILN;

	if (!o || !allow || !meta)
		goto out;
	optind = 0;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		ret = 0;
		switch (opt) {
		case O_IMAGE:
			ret = json_object_set_new(o, "image", json_string(optarg)) ? EXIT_KILN : 0;
			break;
		case O_CPUS:
			ret = set_uint(o, "cpus", "create", "--cpus", optarg, 1, 32);
			break;
		case O_MEM:
			ret = set_uint(o, "memory_mib", "create", "--mem", optarg, 64, 1 << 20);
			break;
		case O_DISK:
			ret = set_uint(o, "disk_mib", "create", "--disk", optarg, 0, 1 << 20);
			break;
		case O_TIMEOUT:
			ret = set_uint(o, "timeout_s", "create", "--timeout", optarg, 1, INT32_MAX);
			break;
		case O_ALLOW:
			ret = json_array_append_new(allow, json_string(optarg)) ? EXIT_KILN : 0;
			break;
		case O_META: {
			char *eq = strchr(optarg, '=');

			if (!eq || eq == optarg) {
				ret = usage_error("create", "--meta wants K=V, not '%s'", optarg);
				break;
			}
			*eq = 0;
			ret = json_object_set_new(meta, optarg, json_string(eq + 1)) ? EXIT_KILN : 0;
			*eq = '=';
			break;
		}
		case 'h':
			fputs(create_usage, stdout);
			goto out;
		default:
			ret = bad_option("create", opt, argv);
			break;
		}
		if (ret == EXIT_KILN) {
			fprintf(stderr, "kiln create: an option is not valid UTF-8 or memory ran out\n");
			ret = EXIT_USAGE;
		}
		if (ret)
			goto out;
	}
	ret = EXIT_USAGE;
	if (optind < argc) {
		usage_error("create", "unexpected argument '%s'", argv[optind]);
		goto out;
	}
	ret = EXIT_KILN;
	if ((json_array_size(allow) && json_object_set(o, "allow", allow)) ||
	    (json_object_size(meta) && json_object_set(o, "metadata", meta)))
		goto out;
	if (call_init(&k, c, "POST", "/v1/sandboxes", SINK_BUF) || call_json(&k, json_incref(o)))
		goto out;
	/* Booting sends nothing for a while: no stall limit. */
	curl_easy_setopt(k.h, CURLOPT_LOW_SPEED_TIME, 0L);
	ret = call_run(&k);
	if (ret)
		goto out;
	ret = EXIT_KILN;
	if (!(ans = answer_object(&k)))
		goto out;
	if (!json_string_value(json_object_get(ans, "id"))) {
		fprintf(stderr, "kiln: kilnd's answer has no id\n");
		goto out;
	}
	printf("%s\n", field(ans, "id", id, sizeof(id)));
	ret = 0;
out:
	json_decref(o);
	json_decref(allow);
	json_decref(meta);
	json_decref(ans);
	call_free(&k);
	return ret;
}

/* ---- following a process: exec and attach ---- */

enum in_state { IN_OFF, IN_IDLE, IN_BUSY, IN_RETRY, IN_DONE };

struct follow {
	struct client *c;
	const char *id;
	uint32_t pid;		/* 0 until the start event */
	uint64_t seq;		/* the last event's */
	bool ended;		/* an exit or error event came */
	int status;
	struct call *ev;	/* the event stream */
	/* exec -i: local stdin, a chunk at a time, to .../stdin */
	enum in_state in;
	struct call in_call;
	char *in_buf;
	size_t in_len;
	bool in_eof;
	uint64_t retry_at;
	bool sig_pending, sig_sent;
	bool tty;		/* exec -t: a guest terminal (raw local one with -i) */
	int winch_fd;		/* -t: SIGWINCH, or -1 */
};

static int out_event(struct follow *f, json_t *e, int fd)
{
	const char *d = json_string_value(json_object_get(e, "data"));
	size_t len = d ? strlen(d) : 0;
	unsigned char *raw = malloc(len / 4 * 3 + 1);
	ssize_t n = raw && d ? b64_decode(d, len, raw) : -1;
	int r;

	if (n < 0) {
		free(raw);
		f->ev->fail = raw ? "kilnd sent output that is not base64" : "out of memory";
		return -1;
	}
	r = write_full(fd, raw, (size_t)n);
	free(raw);
	if (r == -EPIPE) {
		/* Our reader went away: end as a writer killed by SIGPIPE would. */
		f->ev->fail = "";
		f->ev->fail_status = 128 + SIGPIPE;
		return -1;
	}
	if (r) {
		f->ev->fail_errno = -r;
		f->ev->fail = fd == 1 ? "cannot write to stdout" : "cannot write to stderr";
		return -1;
	}
	return 0;
}

static int exit_event(struct follow *f, json_t *e)
{
	json_t *c = json_object_get(e, "exit_code"), *s = json_object_get(e, "signal");
	json_int_t code = json_integer_value(c), sig = json_integer_value(s);

	if (!json_is_integer(c) || (s && !json_is_integer(s)) || sig < 0 || sig > 64 ||
	    (!sig && (code < 0 || code > 255))) {
		f->ev->fail = "kilnd sent a malformed exit event";
		return -1;
	}
	f->status = sig ? 128 + (int)sig : (int)code;
	f->ended = true;
	return 0;
}

static int on_event(void *ctx, char *line, size_t len)
{
	struct follow *f = ctx;
	json_t *e = json_loadb(line, len, 0, NULL), *v;
	const char *type = json_string_value(json_object_get(e, "type"));
	char msg[MSG_MAX];
	int r = 0;

	if (!type) {
		f->ev->fail = "kilnd sent a malformed event";
		json_decref(e);
		return -1;
	}
	v = json_object_get(e, "seq");
	if (json_is_integer(v) && json_integer_value(v) > 0 && strcmp(type, "keepalive"))
		f->seq = (uint64_t)json_integer_value(v);
	if (!strcmp(type, "start")) {
		v = json_object_get(e, "pid");
		if (!f->pid && json_is_integer(v) && json_integer_value(v) > 0 &&
		    json_integer_value(v) <= UINT32_MAX)
			f->pid = (uint32_t)json_integer_value(v);
	} else if (!strcmp(type, "stdout") || !strcmp(type, "stderr")) {
		r = out_event(f, e, type[3] == 'o' ? STDOUT_FILENO : STDERR_FILENO);
	} else if (!strcmp(type, "exit")) {
		r = exit_event(f, e);
	} else if (!strcmp(type, "error")) {
		const char *m = json_string_value(json_object_get(e, "message"));

		tty_restore(); /* the last event: a line of kiln's own follows */
		fprintf(stderr, "kiln: %s\n", clean(msg, sizeof(msg), m ? m : "the process failed"));
		f->status = m && !strncmp(m, "the process timed out", 21) ? EXIT_TIMEOUT : EXIT_KILN;
		f->ended = true;
	} else if (!strcmp(type, "lost")) {
		fprintf(stderr, "kiln: warning: %" JSON_INTEGER_FORMAT " earlier events (%" JSON_INTEGER_FORMAT
			" bytes of output) were dropped before this client read them\n",
			json_integer_value(json_object_get(e, "events")),
			json_integer_value(json_object_get(e, "bytes")));
	}
	/* keepalive, and types this kiln does not know: nothing to do */
	json_decref(e);
	return r;
}

static int send_signal(struct follow *f)
{
	char path[160];
	struct call k;
	int r;

	snprintf(path, sizeof(path), "/v1/sandboxes/%s/processes/%u/signal", f->id, f->pid);
	if (call_init(&k, f->c, "POST", path, SINK_BUF) ||
	    call_json(&k, json_pack("{s:s}", "signal", "INT"))) {
		call_free(&k);
		return -1;
	}
	curl_easy_setopt(k.h, CURLOPT_TIMEOUT, 30L);
	r = curl_easy_perform(k.h);
	/* 409: it has ended already; its exit event is on its way. */
	if (r != CURLE_OK || call_http_status(&k) != 409)
		r = call_result(&k, (CURLcode)r);
	else
		r = 0;
	call_free(&k);
	return r;
}

/* The local terminal's size to the process's (-t); a failure is not fatal. */
static void send_resize(struct follow *f)
{
	char path[160];
	unsigned rows, cols;
	struct call k;

	tty_size(&rows, &cols);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/processes/%u/resize", f->id, f->pid);
	if (call_init(&k, f->c, "POST", path, SINK_BUF) ||
	    call_json(&k, json_pack("{s:i,s:i}", "rows", (json_int_t)rows, "cols", (json_int_t)cols))) {
		call_free(&k);
		return;
	}
	curl_easy_setopt(k.h, CURLOPT_TIMEOUT, 30L);
	/* Whatever the answer (409: it has ended, its exit event is on its way). */
	(void)curl_easy_perform(k.h);
	call_free(&k);
}

/* Starts the POST of the chunk in f->in_buf (with ?eof=1 when it is the last). */
static int stdin_send(struct follow *f, CURLM *m)
{
	char path[192];

	snprintf(path, sizeof(path), "/v1/sandboxes/%s/processes/%u/stdin%s", f->id, f->pid,
		 f->in_eof ? "?eof=1" : "");
	call_free(&f->in_call);
	if (call_init(&f->in_call, f->c, "POST", path, SINK_BUF) ||
	    !add_header(&f->in_call, "Content-Type: application/octet-stream"))
		return -1;
	curl_easy_setopt(f->in_call.h, CURLOPT_HTTPHEADER, f->in_call.hdrs);
	curl_easy_setopt(f->in_call.h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)f->in_len);
	curl_easy_setopt(f->in_call.h, CURLOPT_POSTFIELDS, f->in_buf);
	if (curl_multi_add_handle(m, f->in_call.h) != CURLM_OK)
		return -1;
	f->in = IN_BUSY;
	return 0;
}

/* Local stdin is readable: its next chunk, or its end, to the process. */
static int stdin_read(struct follow *f, CURLM *m)
{
	ssize_t n = read(STDIN_FILENO, f->in_buf, STDIN_CHUNK);

	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return 0;
	f->in_len = n > 0 ? (size_t)n : 0;
	f->in_eof = n <= 0;
	if (f->in_eof && f->tty) {
		/* A terminal stays open: its end-of-file is a ^D typed into it. */
		f->in_buf[0] = 0x04;
		f->in_len = 1;
	}
	return stdin_send(f, m);
}

/* A stdin POST finished. */
static void stdin_done(struct follow *f, CURLM *m, CURLcode cc)
{
	long st = call_http_status(&f->in_call);

	curl_multi_remove_handle(m, f->in_call.h);
	if (cc == CURLE_OK && st >= 200 && st <= 299) {
		f->in = f->in_eof ? IN_DONE : IN_IDLE;
	} else if (cc == CURLE_OK && st == 429) {
		f->in = IN_RETRY;	/* the process has not read the earlier chunks yet */
		f->retry_at = now_ns() + STDIN_RETRY_MS * 1000000ULL;
	} else if (cc == CURLE_OK && (st == 409 || st == 404)) {
		f->in = IN_DONE;	/* it closed its stdin or ended: the events tell */
	} else {
		fputs("kiln: cannot pass stdin on: ", stderr);
		call_result(&f->in_call, cc);
		f->in = IN_DONE;
	}
	if (f->in != IN_RETRY)
		call_free(&f->in_call);
}

/* Interrupts since the last look: the first sends INT to the process's group. */
static int handle_sigint(struct follow *f)
{
	char c[64];

	while (read(g_sigpipe[0], c, sizeof(c)) > 0)
		;
	if (g_signals >= 2 || g_last_signal != SIGINT) {
		tty_restore();
		if (f->pid && !f->ended)
			fprintf(stderr, "kiln: interrupted; process %u may still run in %s (kiln attach %s %u --after %" PRIu64 ")\n",
				f->pid, f->id, f->id, f->pid, f->seq);
		return 128 + (g_last_signal != SIGINT ? g_last_signal : SIGINT);
	}
	if (g_signals == 1 && !f->sig_sent)
		f->sig_pending = true;
	if (f->sig_pending && f->pid) {
		f->sig_pending = false;
		f->sig_sent = true;
		send_signal(f);
	}
	return 0;
}

/*
 * Runs f->ev (a POST .../processes or a GET .../events) to its end, writing
 * the process's output as it comes and, with -i, sending local stdin. The
 * exit status.
 */
static int follow_run(struct follow *f)
{
	/* In raw mode nothing else may end kiln without giving the terminal back. */
	static const int sigs[] = { SIGINT, 0 }, raw_sigs[] = { SIGINT, SIGTERM, SIGHUP, 0 };
	bool raw = f->tty && f->in != IN_OFF;
	CURLM *m = curl_multi_init();
	CURLcode ev_cc = CURLE_OK;
	bool ev_done = false;
	int ret = EXIT_KILN;

	f->winch_fd = f->tty ? tty_winch_fd() : -1;
	if (!m || catch_signals(raw ? raw_sigs : sigs) ||
	    curl_multi_add_handle(m, f->ev->h) != CURLM_OK) {
		fprintf(stderr, "kiln: cannot set up the event stream\n");
		goto out;
	}
	if (f->in != IN_OFF && !(f->in_buf = malloc(STDIN_CHUNK))) {
		fprintf(stderr, "kiln: out of memory\n");
		goto out;
	}
	if (raw && (ret = tty_raw()))
		fprintf(stderr, "kiln: warning: cannot put the terminal in raw mode: %s\n",
			strerror(-ret));
	ret = EXIT_KILN;
	while (!ev_done) {
		struct curl_waitfd w[3];
		unsigned nw = 0;
		int running, timeout = 1000;
		CURLMsg *msg;
		CURLMcode mc;

		curl_multi_perform(m, &running);
		while ((msg = curl_multi_info_read(m, &running))) {
			if (msg->msg != CURLMSG_DONE)
				continue;
			if (msg->easy_handle == f->ev->h) {
				ev_done = true;
				ev_cc = msg->data.result;
			} else if (f->in_call.h && msg->easy_handle == f->in_call.h) {
				stdin_done(f, m, msg->data.result);
			}
		}
		if (ev_done)
			break;
		if (g_signals && (ret = handle_sigint(f)))
			goto out;
		ret = EXIT_KILN;
		if (f->in == IN_RETRY && now_ns() >= f->retry_at && stdin_send(f, m))
			goto nomem;
		if (f->in == IN_RETRY)
			timeout = STDIN_RETRY_MS;
		w[nw++] = (struct curl_waitfd){ .fd = g_sigpipe[0], .events = CURL_WAIT_POLLIN };
		if (f->winch_fd >= 0)
			w[nw++] = (struct curl_waitfd){ .fd = f->winch_fd, .events = CURL_WAIT_POLLIN };
		if (f->in == IN_IDLE && f->pid)
			w[nw++] = (struct curl_waitfd){ .fd = STDIN_FILENO, .events = CURL_WAIT_POLLIN };
		mc = curl_multi_poll(m, w, nw, timeout, NULL);
		if (mc != CURLM_OK && !(mc == CURLM_UNRECOVERABLE_POLL && errno == EINTR)) {
			tty_restore();
			fprintf(stderr, "kiln: %s\n", curl_multi_strerror(mc));
			goto out;
		}
		/* Before this round's stdin: keys typed after a resize see the new size. */
		if (f->winch_fd >= 0 && tty_winch_take() && f->pid && !f->ended)
			send_resize(f);
		if (w[nw - 1].fd == STDIN_FILENO && w[nw - 1].revents && stdin_read(f, m))
			goto nomem;
	}
	tty_restore();
	/* A last line without its newline. */
	if (ev_cc == CURLE_OK && f->ev->line.len && !f->ended &&
	    f->ev->on_line(f, f->ev->line.p, f->ev->line.len))
		ev_cc = CURLE_WRITE_ERROR;
	ret = call_result(f->ev, ev_cc);
	if (ret == 0 && !f->ended) {
		fprintf(stderr, "kiln: the event stream ended before the process did (kiln attach %s %u --after %" PRIu64 " to follow it again)\n",
			f->id, f->pid, f->seq);
		ret = EXIT_KILN;
	} else if (ret == 0) {
		ret = f->status;
	}
	goto out;
nomem:
	tty_restore();
	fprintf(stderr, "kiln: cannot pass stdin on: out of memory\n");
out:
	tty_restore();
	if (f->in_call.h)
		curl_multi_remove_handle(m, f->in_call.h);
	call_free(&f->in_call);
	if (m && f->ev->h)
		curl_multi_remove_handle(m, f->ev->h);
	if (m)
		curl_multi_cleanup(m);
	free(f->in_buf);
	f->in_buf = NULL;
	return ret;
}

/* ---- exec ---- */

static const char exec_usage[] =
	"usage: kiln exec [-i] [-t] [-e K=V]... [-w DIR] [--user USER[:GROUP]] [--timeout SEC] [--tag TAG]\n"
	"                 ID -- CMD [ARGS...]\n"
	"Runs CMD in sandbox ID, its output streamed here, and exits with its status\n"
	"(128+N on signal N). -i passes this process's stdin on. -t runs CMD on a guest\n"
	"terminal of this terminal's size (window changes follow); with -i a terminal\n"
	"stdin goes raw, so Ctrl-C is typed into CMD's terminal, and is put back on exit.\n"
	"Otherwise Ctrl-C sends INT to CMD's process group; a second one leaves (130)\n"
	"with CMD still running.\n";

/* Options before "--" (or before ID when there is none) into o; *first: ID's index. */
static int exec_opts(int argc, char **argv, json_t *o, json_t *env, bool *in, bool *tty,
		     int *first)
{
	enum { O_TIMEOUT = 256, O_USER, O_TAG };
	static const struct option opts[] = {
		{ "interactive", no_argument, NULL, 'i' },
		{ "tty", no_argument, NULL, 't' },
		{ "env", required_argument, NULL, 'e' },
		{ "cwd", required_argument, NULL, 'w' },
		{ "workdir", required_argument, NULL, 'w' },
		{ "timeout", required_argument, NULL, O_TIMEOUT },
		{ "user", required_argument, NULL, O_USER },
		{ "tag", required_argument, NULL, O_TAG },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int dd, opt, ret;

	for (dd = 1; dd < argc && strcmp(argv[dd], "--"); dd++)
		;
	optind = 0;
	opterr = 0;
	/* With "--", options may come after ID; without, ID ends them. */
	while ((opt = getopt_long(dd, argv, dd < argc ? ":ite:w:h" : "+:ite:w:h", opts, NULL)) != -1) {
		char *eq;

		ret = 0;
		switch (opt) {
		case 'i':
			*in = true;
			break;
		case 't':
			*tty = true;
			break;
		case 'e':
			eq = strchr(optarg, '=');
			if (!eq || eq == optarg)
				return usage_error("exec", "--env wants K=V, not '%s'", optarg);
			*eq = 0;
			ret = json_object_set_new(env, optarg, json_string(eq + 1));
			*eq = '=';
			break;
		case 'w':
			if (optarg[0] != '/')
				return usage_error("exec", "--cwd wants an absolute directory, not '%s'", optarg);
			ret = json_object_set_new(o, "cwd", json_string(optarg));
			break;
		case O_TIMEOUT:
			ret = set_uint(o, "timeout_s", "exec", "--timeout", optarg, 1, INT32_MAX);
			if (ret)
				return ret;
			break;
		case O_USER:
			ret = json_object_set_new(o, "user", json_string(optarg));
			break;
		case O_TAG:
			ret = json_object_set_new(o, "tag", json_string(optarg));
			break;
		case 'h':
			fputs(exec_usage, stdout);
			return -1;
		default:
			return bad_option("exec", opt, argv);
		}
		if (ret) {
			fprintf(stderr, "kiln exec: an option is not valid UTF-8 or memory ran out\n");
			return EXIT_USAGE;
		}
	}
	if (optind >= dd)
		return usage_error("exec", "no sandbox id (kiln exec [-i] ID -- CMD [ARGS...])");
	if (dd < argc && optind + 1 < dd)
		return usage_error("exec", "unexpected argument '%s' before '--'", argv[optind + 1]);
	*first = optind;
	if ((dd < argc ? dd + 1 : optind + 1) >= argc)
		return usage_error("exec", "no command (kiln exec [-i] ID -- CMD [ARGS...])");
	return 0;
}

static int cmd_exec(struct client *c, int argc, char **argv)
{
	json_t *o = json_object(), *env = json_object(), *cmd = json_array();
	struct follow f = { .c = c, .winch_fd = -1 };
	struct call k = { 0 };
	bool in = false, tty = false;
	char path[128];
	int first = 0, ret = EXIT_KILN, i;

	if (!o || !env || !cmd)
		goto out;
	ret = exec_opts(argc, argv, o, env, &in, &tty, &first);
	if (ret)
		goto out;
	ret = check_id("exec", argv[first]);
	if (ret)
		goto out;
	f.id = argv[first];
	i = first + 1;
	if (i < argc && !strcmp(argv[i], "--"))
		i++;
	for (ret = 0; i < argc && !ret; i++)
		ret = json_array_append_new(cmd, json_string(argv[i]));
	if (ret || json_object_set(o, "cmd", cmd) ||
	    (json_object_size(env) && json_object_set(o, "env", env)) ||
	    json_object_set_new(o, "stdin", json_boolean(in))) {
		fprintf(stderr, "kiln exec: the command is not valid UTF-8 or memory ran out\n");
		ret = EXIT_USAGE;
		goto out;
	}
	ret = EXIT_KILN;
	if (tty) {
		unsigned rows, cols;

		tty_size(&rows, &cols);
		if (json_object_set_new(o, "pty", json_pack("{s:i,s:i}", "rows", (json_int_t)rows,
							     "cols", (json_int_t)cols)))
			goto out;
	}
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/processes", f.id);
	if (call_init(&k, c, "POST", path, SINK_LINES) || call_json(&k, json_incref(o)))
		goto out;
	k.on_line = on_event;
	k.ctx = &f;
	f.ev = &k;
	f.in = in ? IN_IDLE : IN_OFF;
	f.tty = tty;
	ret = follow_run(&f);
out:
	json_decref(o);
	json_decref(env);
	json_decref(cmd);
	call_free(&k);
	return ret;
}

/* ---- attach ---- */

static const char attach_usage[] =
	"usage: kiln attach ID PID [--after SEQ]\n"
	"Follows process PID of sandbox ID from the event after SEQ (default: its\n"
	"first kept one), its output streamed here; exits with its status.\n";

static int cmd_attach(struct client *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "after", required_argument, NULL, 'a' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct follow f = { .c = c, .in = IN_OFF, .winch_fd = -1 };
	struct call k = { 0 };
	uint64_t after = 0, pid;
	char path[192];
	int opt, ret;

	optind = 0;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (opt == 'h') {
			fputs(attach_usage, stdout);
			return 0;
		}
		if (opt != 'a')
			return bad_option("attach", opt, argv);
		if (parse_u64(optarg, 0, INT64_MAX, &after))
			return usage_error("attach", "--after wants an event number, not '%s'", optarg);
	}
	if (argc - optind != 2)
		return usage_error("attach", "wants ID and PID (kiln attach ID PID [--after SEQ])");
	ret = check_id("attach", argv[optind]);
	if (ret)
		return ret;
	if (parse_u64(argv[optind + 1], 1, UINT32_MAX, &pid))
		return usage_error("attach", "'%s' is not a process id (kiln ps %s lists them)",
				   argv[optind + 1], argv[optind]);
	f.id = argv[optind];
	f.pid = (uint32_t)pid;
	f.seq = after;
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/processes/%u/events?after_seq=%" PRIu64, f.id,
		 f.pid, after);
	ret = EXIT_KILN;
	if (!call_init(&k, c, "GET", path, SINK_LINES)) {
		k.on_line = on_event;
		k.ctx = &f;
		f.ev = &k;
		ret = follow_run(&f);
	}
	call_free(&k);
	return ret;
}

/* ---- ps ---- */

static const char ps_usage[] =
	"usage: kiln ps [ID]\n"
	"Lists your sandboxes, or the processes of sandbox ID.\n";

static void print_sandboxes(json_t *arr)
{
	char id[128], st[32], img[64], exp[64];
	int w = 2;
	size_t i;
	json_t *s;

	/* As wide as the longest id (sb-HOST-HEX: up to 76 characters). */
	json_array_foreach(arr, i, s) {
		int n = (int)strlen(field(s, "id", id, sizeof(id)));

		w = n > w ? n : w;
	}
	printf("%-*s %-8s %-10s %s\n", w, "ID", "STATE", "IMAGE", "EXPIRES");
	json_array_foreach(arr, i, s)
		printf("%-*s %-8s %-10s %s\n", w, field(s, "id", id, sizeof(id)),
		       field(s, "state", st, sizeof(st)), field(s, "image", img, sizeof(img)),
		       field(s, "expires_at", exp, sizeof(exp)));
}

static void print_processes(json_t *arr)
{
	char st[32], tag[160], ex[32], cmd[2048], w[512];
	size_t i, j, n;
	json_t *p, *a;

	printf("%-6s %-8s %-6s %-12s %s\n", "PID", "STATE", "EXIT", "TAG", "CMD");
	json_array_foreach(arr, i, p) {
		json_t *code = json_object_get(p, "exit_code");
		json_int_t sig = json_integer_value(json_object_get(p, "signal"));

		if (!json_is_integer(code))
			snprintf(ex, sizeof(ex), "-");
		else if (sig)
			snprintf(ex, sizeof(ex), "sig%" JSON_INTEGER_FORMAT, sig);
		else
			snprintf(ex, sizeof(ex), "%" JSON_INTEGER_FORMAT, json_integer_value(code));
		n = 0;
		cmd[0] = 0;
		json_array_foreach(json_object_get(p, "cmd"), j, a) {
			clean(w, sizeof(w), json_string_value(a));
			n += (size_t)snprintf(cmd + n, sizeof(cmd) - n, "%s%s", j ? " " : "", w);
			if (n >= sizeof(cmd))
				break;
		}
		printf("%-6" JSON_INTEGER_FORMAT " %-8s %-6s %-12s %s\n",
		       json_integer_value(json_object_get(p, "pid")), field(p, "state", st, sizeof(st)),
		       ex, field(p, "tag", tag, sizeof(tag)), cmd);
	}
}

static int cmd_ps(struct client *c, int argc, char **argv)
{
	static const struct option opts[] = { { "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 } };
	struct call k = { 0 };
	json_t *ans = NULL, *arr;
	char path[128];
	int opt, ret;

	optind = 0;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (opt != 'h')
			return bad_option("ps", opt, argv);
		fputs(ps_usage, stdout);
		return 0;
	}
	if (argc - optind > 1)
		return usage_error("ps", "wants at most one sandbox id");
	if (optind < argc && (ret = check_id("ps", argv[optind])))
		return ret;
	if (optind < argc)
		snprintf(path, sizeof(path), "/v1/sandboxes/%s/processes", argv[optind]);
	else
		snprintf(path, sizeof(path), "/v1/sandboxes");
	ret = EXIT_KILN;
	if (call_init(&k, c, "GET", path, SINK_BUF))
		goto out;
	ret = call_run(&k);
	if (ret)
		goto out;
	ret = EXIT_KILN;
	if (!(ans = answer_object(&k)))
		goto out;
	arr = json_object_get(ans, optind < argc ? "processes" : "sandboxes");
	if (!json_is_array(arr)) {
		fprintf(stderr, "kiln: kilnd's answer has no list\n");
		goto out;
	}
	if (optind < argc)
		print_processes(arr);
	else
		print_sandboxes(arr);
	ret = 0;
out:
	json_decref(ans);
	call_free(&k);
	return ret;
}

/* ---- rm, pause, resume, timeout ---- */

static const char rm_usage[] =
	"usage: kiln rm ID...\n"
	"Destroys each sandbox; prints the ids destroyed.\n";
static const char pause_usage[] =
	"usage: kiln pause ID...\n"
	"Stops each sandbox's vCPUs (its processes wait; exec and files answer 'paused'\n"
	"until kiln resume); prints the ids paused.\n";
static const char resume_usage[] =
	"usage: kiln resume ID...\n"
	"Lets each paused sandbox run again; prints the ids resumed.\n";

/* One call per ID (METHOD /v1/sandboxes/ID + suffix); every id is checked
 * before the first call. The worst status wins. */
static int each_id(struct client *c, int argc, char **argv, const char *verb, const char *usage,
		   const char *method, const char *suffix)
{
	static const struct option opts[] = { { "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 } };
	char path[128];
	int opt, ret = 0;

	optind = 0;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (opt != 'h')
			return bad_option(verb, opt, argv);
		fputs(usage, stdout);
		return 0;
	}
	if (optind >= argc)
		return usage_error(verb, "no sandbox id (kiln %s ID...)", verb);
	for (int i = optind; i < argc; i++)
		if (check_id(verb, argv[i]))
			return EXIT_USAGE;
	for (int i = optind; i < argc; i++) {
		struct call k;
		int r = EXIT_KILN;

		snprintf(path, sizeof(path), "/v1/sandboxes/%s%s", argv[i], suffix);
		if (!call_init(&k, c, method, path, SINK_BUF))
			r = call_run(&k);
		else
			fprintf(stderr, "kiln: out of memory\n");
		call_free(&k);
		if (!r)
			printf("%s\n", argv[i]);
		if (r > ret)
			ret = r;
	}
	return ret;
}

static int cmd_rm(struct client *c, int argc, char **argv)
{
	return each_id(c, argc, argv, "rm", rm_usage, "DELETE", "");
}

static int cmd_pause(struct client *c, int argc, char **argv)
{
	return each_id(c, argc, argv, "pause", pause_usage, "POST", "/pause");
}

static int cmd_resume(struct client *c, int argc, char **argv)
{
	return each_id(c, argc, argv, "resume", resume_usage, "POST", "/resume");
}

static const char timeout_usage[] =
	"usage: kiln timeout ID SECONDS\n"
	"Sets sandbox ID's deadline to SECONDS from now; prints the new expiry.\n";

static int cmd_timeout(struct client *c, int argc, char **argv)
{
	static const struct option opts[] = { { "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 } };
	struct call k = { 0 };
	json_t *ans = NULL;
	char path[128], exp[64];
	uint64_t secs;
	int opt, ret;

	optind = 0;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (opt != 'h')
			return bad_option("timeout", opt, argv);
		fputs(timeout_usage, stdout);
		return 0;
	}
	if (argc - optind != 2)
		return usage_error("timeout", "wants ID and SECONDS (kiln timeout ID SECONDS)");
	ret = check_id("timeout", argv[optind]);
	if (ret)
		return ret;
	if (parse_u64(argv[optind + 1], 1, INT32_MAX, &secs))
		return usage_error("timeout", "SECONDS must be a whole number from 1, not '%s'",
				   argv[optind + 1]);
	snprintf(path, sizeof(path), "/v1/sandboxes/%s/timeout", argv[optind]);
	ret = EXIT_KILN;
	if (call_init(&k, c, "POST", path, SINK_BUF) ||
	    call_json(&k, json_pack("{s:I}", "timeout_s", (json_int_t)secs)))
		goto out;
	ret = call_run(&k);
	if (ret)
		goto out;
	ret = EXIT_KILN;
	if (!(ans = answer_object(&k)))
		goto out;
	printf("%s\n", field(ans, "expires_at", exp, sizeof(exp)));
	ret = 0;
out:
	json_decref(ans);
	call_free(&k);
	return ret;
}

/* ---- cp ---- */

static const char cp_usage[] =
	"usage: kiln cp LOCAL ID:/PATH     upload (parents are created; LOCAL's mode is kept)\n"
	"       kiln cp ID:/PATH LOCAL     download (written beside LOCAL, renamed when complete)\n"
	"A PATH ending in '/' or a LOCAL directory takes the other side's file name.\n";

/* "ID:/path" as its id (in id) and path; NULL if arg is not one. */
static const char *remote_arg(const char *arg, char *id, size_t len)
{
	const char *colon = strchr(arg, ':');
	size_t n = colon ? (size_t)(colon - arg) : 0;

	if (!colon || colon[1] != '/' || n >= len)
		return NULL;
	memcpy(id, arg, n);
	id[n] = 0;
	return valid_id(id) ? colon + 1 : NULL;
}

static const char *base_name(const char *p)
{
	const char *s = strrchr(p, '/');

	return s ? s + 1 : p;
}

static int cp_up(struct client *c, const char *local, const char *id, const char *rpath)
{
	struct call k = { 0 };
	char *path = NULL, *esc = NULL, *full = NULL;
	struct stat st;
	int fd = open(local, O_RDONLY | O_CLOEXEC), ret = EXIT_KILN;

	if (fd < 0 || fstat(fd, &st) < 0) {
		fprintf(stderr, "kiln cp: cannot open %s: %s\n", local, strerror(errno));
		ret = EXIT_USAGE;
		goto out;
	}
	if (S_ISDIR(st.st_mode)) {
		ret = usage_error("cp", "%s is a directory (kiln cp copies one file)", local);
		goto out;
	}
	if (rpath[strlen(rpath) - 1] == '/') {
		if (asprintf(&full, "%s%s", rpath, base_name(local)) < 0) {
			full = NULL;
			goto out;
		}
		rpath = full;
	}
	if (call_init(&k, c, "PUT", "", SINK_BUF) || !(esc = curl_easy_escape(k.h, rpath, 0)) ||
	    asprintf(&path, "%s/v1/sandboxes/%s/files?path=%s&mode=%04o", c->base, id, esc,
		     (unsigned)(st.st_mode & 0777)) < 0) {
		path = NULL;
		fprintf(stderr, "kiln: out of memory\n");
		goto out;
	}
	curl_easy_setopt(k.h, CURLOPT_URL, path);
	/* kilnd passes the whole file on to the guest before it answers. */
	curl_easy_setopt(k.h, CURLOPT_LOW_SPEED_TIME, 0L);
	k.in_fd = fd;
	curl_easy_setopt(k.h, CURLOPT_UPLOAD, 1L);
	curl_easy_setopt(k.h, CURLOPT_READFUNCTION, on_upload);
	curl_easy_setopt(k.h, CURLOPT_READDATA, &k);
	/* Not a regular file (a pipe): its size is unknown, it goes chunked. */
	curl_easy_setopt(k.h, CURLOPT_INFILESIZE_LARGE,
			 S_ISREG(st.st_mode) ? (curl_off_t)st.st_size : (curl_off_t)-1);
	ret = call_run(&k);
out:
	if (fd >= 0)
		close(fd);
	curl_free(esc);
	free(path);
	free(full);
	call_free(&k);
	return ret;
}

/* The download into a temporary file beside local, renamed to it when whole. */
static int cp_down(struct client *c, const char *id, const char *rpath, const char *local)
{
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP, 0 };
	struct call k = { 0 };
	char *path = NULL, *esc = NULL, *full = NULL, *tmp = NULL;
	const char *slash;
	struct stat st;
	mode_t um;
	int fd = -1, ret = EXIT_KILN;

	if (!stat(local, &st) && S_ISDIR(st.st_mode)) {
		if (!*base_name(rpath)) {
			ret = usage_error("cp", "%s names no file to put in %s", rpath, local);
			goto out;
		}
		if (asprintf(&full, "%s/%s", local, base_name(rpath)) < 0) {
			full = NULL;
			goto out;
		}
		local = full;
	}
	slash = strrchr(local, '/');
	if (!*base_name(local) ||
	    asprintf(&tmp, "%.*s.%s.kiln-XXXXXX", slash ? (int)(slash - local + 1) : 0, local,
		     base_name(local)) < 0) {
		tmp = NULL;
		ret = usage_error("cp", "'%s' names no file", local);
		goto out;
	}
	if (catch_signals(sigs)) {
		fprintf(stderr, "kiln cp: cannot set up signal handling\n");
		goto out;
	}
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "kiln cp: cannot create a file beside %s: %s\n", local, strerror(errno));
		free(tmp);
		tmp = NULL;
		ret = EXIT_USAGE;
		goto out;
	}
	if (call_init(&k, c, "GET", "", SINK_FD) || !(esc = curl_easy_escape(k.h, rpath, 0)) ||
	    asprintf(&path, "%s/v1/sandboxes/%s/files?path=%s", c->base, id, esc) < 0) {
		path = NULL;
		fprintf(stderr, "kiln: out of memory\n");
		goto out;
	}
	curl_easy_setopt(k.h, CURLOPT_URL, path);
	/* kilnd has the whole file from the guest before it answers. */
	curl_easy_setopt(k.h, CURLOPT_LOW_SPEED_TIME, 0L);
	k.out_fd = fd;
	k.abort_on_signal = true;
	ret = call_run(&k);
	if (ret)
		goto out;
	ret = EXIT_KILN;
	um = umask(0);
	umask(um);
	if (fchmod(fd, 0666 & ~um) < 0 || close(fd) < 0) {
		fd = -1;
		fprintf(stderr, "kiln cp: cannot write %s: %s\n", tmp, strerror(errno));
		goto out;
	}
	fd = -1;
	if (rename(tmp, local) < 0) {
		fprintf(stderr, "kiln cp: cannot rename %s to %s: %s\n", tmp, local, strerror(errno));
		goto out;
	}
	free(tmp);
	tmp = NULL;
	ret = 0;
out:
	if (fd >= 0)
		close(fd);
	if (tmp)
		unlink(tmp);
	if (g_signals && ret) {
		fprintf(stderr, "kiln cp: interrupted by %s; nothing was written\n",
			strsignal(g_last_signal));
		ret = 128 + g_last_signal;
	}
	curl_free(esc);
	free(path);
	free(full);
	free(tmp);
	call_free(&k);
	return ret;
}

static int cmd_cp(struct client *c, int argc, char **argv)
{
	static const struct option opts[] = { { "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 } };
	const char *from, *to;
	char id_from[ID_MAX + 1], id_to[ID_MAX + 1];
	int opt;

	optind = 0;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (opt != 'h')
			return bad_option("cp", opt, argv);
		fputs(cp_usage, stdout);
		return 0;
	}
	if (argc - optind != 2)
		return usage_error("cp", "wants two arguments (kiln cp LOCAL ID:/PATH or kiln cp ID:/PATH LOCAL)");
	from = remote_arg(argv[optind], id_from, sizeof(id_from));
	to = remote_arg(argv[optind + 1], id_to, sizeof(id_to));
	if (from && to)
		return usage_error("cp", "copies between this host and a sandbox, not between sandboxes");
	if (!from && !to)
		return usage_error("cp", "one side must be ID:/ABSOLUTE/PATH in a sandbox");
	if (to)
		return cp_up(c, argv[optind], id_to, to);
	if (from[strlen(from) - 1] == '/')
		return usage_error("cp", "%s is a directory path (kiln cp copies one file)", from);
	return cp_down(c, id_from, from, argv[optind + 1]);
}

/* ---- dispatch ---- */

const char cli_remote_usage[] =
	"       kiln create [--image NAME] [--cpus N] [--mem MiB] [--disk MiB] [--timeout SEC]\n"
	"                   [--allow RULE]... [--meta K=V]...   a sandbox in kilnd; prints its id\n"
	"       kiln exec [-i] [-e K=V]... [-w DIR] [--timeout SEC] ID -- CMD [ARGS...]\n"
	"       kiln ps [ID]                    sandboxes, or the processes of ID\n"
	"       kiln rm ID...                   destroy sandboxes\n"
	"       kiln cp LOCAL ID:/PATH | ID:/PATH LOCAL\n"
	"       kiln attach ID PID [--after SEQ]\n"
	"       kiln timeout ID SECONDS\n"
	"       kiln pause ID... | kiln resume ID...   stop or restart sandboxes' vCPUs\n"
	"  The verbs above talk to kilnd at KILN_HOST (unix:/PATH or http://HOST:PORT;\n"
	"  default " DEFAULT_HOST ") with KILN_TOKEN; see docs/daemon.md.\n";

static const struct {
	const char *verb;
	int (*fn)(struct client *c, int argc, char **argv);
	const char *usage;
} verbs[] = {
	{ "create", cmd_create, create_usage },
	{ "exec", cmd_exec, exec_usage },
	{ "ps", cmd_ps, ps_usage },
	{ "rm", cmd_rm, rm_usage },
	{ "cp", cmd_cp, cp_usage },
	{ "attach", cmd_attach, attach_usage },
	{ "timeout", cmd_timeout, timeout_usage },
	{ "pause", cmd_pause, pause_usage },
	{ "resume", cmd_resume, resume_usage },
};

bool cli_remote_verb(const char *verb)
{
	for (size_t i = 0; i < ARRAY_SIZE(verbs); i++)
		if (!strcmp(verbs[i].verb, verb))
			return true;
	return false;
}

int cli_remote(int argc, char **argv)
{
	struct client c;
	size_t i;
	int ret;

	for (i = 0; i < ARRAY_SIZE(verbs) && strcmp(verbs[i].verb, argv[0]); i++)
		;
	if (i == ARRAY_SIZE(verbs))
		return EXIT_USAGE;
	/* `kiln VERB --help` needs no kilnd. */
	if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		fputs(verbs[i].usage, stdout);
		return 0;
	}
	ret = client_init(&c, verbs[i].verb);
	if (ret)
		return ret;
	/* A reader that goes away is a write error, not a death. */
	signal(SIGPIPE, SIG_IGN);
	if (curl_global_init(CURL_GLOBAL_DEFAULT)) {
		fprintf(stderr, "kiln: cannot initialise libcurl\n");
		return EXIT_KILN;
	}
	ret = verbs[i].fn(&c, argc, argv);
	curl_global_cleanup();
	return ret;
}
