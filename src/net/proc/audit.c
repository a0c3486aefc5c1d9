/*
 * The audit log: one JSON object per line for every DNS answer and every
 * connection attempt (docs/net.md has the fields). A hostile guest can make
 * attempts faster than any disk wants lines, so lines beyond AUDIT_BURST,
 * refilled at AUDIT_RATE per second, are counted instead and reported in one
 * "suppressed" line once lines flow again. Counters are never suppressed.
 */
#include <arpa/inet.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util.h"
#include "net/proc/knet.h"

#define AUDIT_RATE  200	 /* lines per second, sustained */
#define AUDIT_BURST 2000

static struct bucket lines;
static bool lines_init;
static uint64_t suppressed;

static void put_time(json_t *o)
{
	struct timespec ts;
	struct tm tm;
	char buf[40];

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
	json_object_set_new(o, "time", json_string(buf));
}

static void emit(struct knet *k, json_t *o)
{
	char *text = json_dumps(o, JSON_COMPACT);
	size_t n;

	if (!text)
		return;
	n = strlen(text);
	text[n] = '\n'; /* json_dumps leaves one NUL: replace it, write n + 1 */
	if (write_full(k->audit_fd, text, n + 1))
		k->audit_fd = -1; /* a broken log is not a reason to stop the VM's network */
	free(text);
}

/* The lines left out since the last one written, as one line. */
static void emit_suppressed(struct knet *k)
{
	json_t *o;

	if (!suppressed || !(o = json_object()))
		return;
	put_time(o);
	json_object_set_new(o, "event", json_string("suppressed"));
	json_object_set_new(o, "count", json_integer((json_int_t)suppressed));
	emit(k, o);
	json_decref(o);
	suppressed = 0;
}

static bool may_write(struct knet *k)
{
	if (k->audit_fd < 0)
		return false;
	if (!lines_init) {
		bucket_init(&lines, AUDIT_RATE, now_ns());
		lines.burst = lines.tokens = AUDIT_BURST;
		lines_init = true;
	}
	if (bucket_avail(&lines, now_ns()) < 2) {
		suppressed++;
		return false;
	}
	bucket_take(&lines, 1);
	emit_suppressed(k);
	return true;
}

static void count(struct knet *k, const struct audit_event *e)
{
	if (!strcmp(e->verdict, "deny"))
		k->count.blocked++;
	else
		k->count.allowed++;
	k->count.bytes_up += e->bytes_up;
	k->count.bytes_down += e->bytes_down;
}

void audit_event(struct knet *k, const struct audit_event *e)
{
	char addr[INET6_ADDRSTRLEN];
	json_t *o;

	count(k, e);
	if (!may_write(k))
		return;
	o = json_object();
	if (!o)
		return;
	put_time(o);
	json_object_set_new(o, "proto", json_string(e->proto));
	if (e->dst && inet_ntop(e->family, e->dst, addr, sizeof(addr))) {
		json_object_set_new(o, "dst", json_string(addr));
		json_object_set_new(o, "port", json_integer(e->port));
	}
	if (e->name)
		json_object_set_new(o, "name", json_string(e->name));
	if (e->qtype)
		json_object_set_new(o, "qtype", json_string(e->qtype));
	json_object_set_new(o, "verdict", json_string(e->verdict));
	json_object_set_new(o, "reason", json_string(e->reason));
	if (e->rule >= 0 && (unsigned)e->rule < net_policy_nrules(k->pol)) {
		json_object_set_new(o, "rule", json_integer(e->rule));
		json_object_set_new(o, "rule_text", json_string(k->rule_text[e->rule]));
	}
	if (e->answers)
		json_object_set_new(o, "answers", json_string(e->answers));
	if (e->dropped)
		json_object_set_new(o, "dropped", json_string(e->dropped));
	if (strcmp(e->proto, "dns") && strcmp(e->proto, "icmp")) {
		json_object_set_new(o, "bytes_up", json_integer((json_int_t)e->bytes_up));
		json_object_set_new(o, "bytes_down", json_integer((json_int_t)e->bytes_down));
		if (e->duration_ms)
			json_object_set_new(o, "duration_ms", json_integer((json_int_t)e->duration_ms));
	}
	emit(k, o);
	json_decref(o);
}

void audit_status(struct knet *k)
{
	char line[256];
	int n;

	/* A count still pending gets its line now, past the rate limit. */
	if (k->audit_fd >= 0)
		emit_suppressed(k);
	if (k->status_fd < 0)
		return;
	n = snprintf(line, sizeof(line),
		     "{\"allowed\":%llu,\"blocked\":%llu,\"dns_queries\":%llu,\"bytes_up\":%llu,"
		     "\"bytes_down\":%llu}\n",
		     (unsigned long long)k->count.allowed, (unsigned long long)k->count.blocked,
		     (unsigned long long)k->count.dns_queries,
		     (unsigned long long)k->count.bytes_up, (unsigned long long)k->count.bytes_down);
	if (n > 0 && (size_t)n < sizeof(line))
		(void)write_full(k->status_fd, line, (size_t)n);
}
