/*
 * The audit log: one JSON object per line for every DNS answer and every
 * connection attempt (docs/net.md has the fields). Frames and datagrams that
 * are dropped without a decision of their own (spoofed, fragmented, other
 * protocols, bad checksums, ICMP, rate-limited, ...) are counted per kind
 * and written as one line per kind per second with the count. A hostile
 * guest can make attempts faster than any disk wants lines, so lines beyond
 * AUDIT_BURST, refilled at AUDIT_RATE per second, are counted instead and
 * reported in one "suppressed" line once lines flow again. Counters are
 * never suppressed.
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
#define DROP_WINDOW_NS 1000000000ull /* one line per kind per second */

/* What each drop kind says in its line. */
static const struct {
	const char *proto, *verdict, *reason;
} drop_text[KNET_DROP_KINDS] = {
	[DROP_SPOOFED_MAC] = { "frame", "deny", "spoofed-mac" },
	[DROP_SPOOFED_SOURCE] = { "frame", "deny", "spoofed-source" },
	[DROP_FRAGMENT] = { "frame", "deny", "ip-fragment" },
	[DROP_EXTHDR] = { "frame", "deny", "ipv6-extension-header" },
	[DROP_PROTO] = { "frame", "deny", "ip-protocol" },
	[DROP_ETHERTYPE] = { "frame", "deny", "ethertype" },
	[DROP_MALFORMED] = { "frame", "deny", "malformed" },
	[DROP_BAD_CSUM] = { "frame", "deny", "bad-checksum" },
	[DROP_TCP_FLAGS] = { "frame", "deny", "tcp-flags" },
	[DROP_TCP_STRAY] = { "tcp", "deny", "no-connection" },
	[DROP_ARP] = { "frame", "deny", "arp" },
	[DROP_ICMP] = { "icmp", "deny", "icmp" },
	[DROP_UDP_RATE] = { "udp", "deny", "rate-limited" },
	[DROP_UDP_DOWN] = { "udp", "error", "rate-limited-down" },
	[DROP_UDP_TOO_BIG] = { "udp", "error", "too-big" },
	[DROP_GUEST_QUEUE] = { "frame", "error", "guest-queue-full" },
	[DROP_PIN_EVICTED] = { "dns", "error", "pin-evicted" },
	[DROP_DNS_MISMATCH] = { "dns", "error", "mismatched-reply" },
};

struct drop_count {
	uint64_t count;
	/* The first one counted in the window, as an example. */
	int family;
	uint8_t dst[16];
	uint16_t port;
	int detail; /* IP protocol or ethertype; -1 if none */
	char name[NET_NAME_MAX + 1];
};

static struct drop_count drops[KNET_DROP_KINDS];
static uint64_t drop_window_ns; /* when the open window began; 0: none open */

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
	if (e->dropped_reasons)
		json_object_set_new(o, "dropped_reasons", json_string(e->dropped_reasons));
	if (strcmp(e->proto, "dns") && strcmp(e->proto, "icmp")) {
		json_object_set_new(o, "bytes_up", json_integer((json_int_t)e->bytes_up));
		json_object_set_new(o, "bytes_down", json_integer((json_int_t)e->bytes_down));
		if (e->duration_ms)
			json_object_set_new(o, "duration_ms", json_integer((json_int_t)e->duration_ms));
	}
	emit(k, o);
	json_decref(o);
}

void audit_drop(struct knet *k, enum knet_drop kind, const struct audit_drop_info *info)
{
	struct drop_count *d;

	if ((unsigned)kind >= KNET_DROP_KINDS)
		return;
	d = &drops[kind];
	if (!strcmp(drop_text[kind].verdict, "deny"))
		k->count.blocked++;
	if (!drop_window_ns)
		drop_window_ns = now_ns();
	if (d->count++)
		return;
	d->family = 0;
	d->port = 0;
	d->detail = -1;
	d->name[0] = '\0';
	if (!info)
		return;
	if (info->dst && (info->family == AF_INET || info->family == AF_INET6)) {
		d->family = info->family;
		memcpy(d->dst, info->dst, knet_alen(info->family));
		d->port = info->port;
	}
	d->detail = info->detail;
	if (info->name)
		snprintf(d->name, sizeof(d->name), "%s", info->name);
}

static void emit_drop(struct knet *k, enum knet_drop kind)
{
	struct drop_count *d = &drops[kind];
	char addr[INET6_ADDRSTRLEN];
	json_t *o;

	if (!may_write(k) || !(o = json_object()))
		return;
	put_time(o);
	json_object_set_new(o, "proto", json_string(drop_text[kind].proto));
	if (d->family && inet_ntop(d->family, d->dst, addr, sizeof(addr))) {
		json_object_set_new(o, "dst", json_string(addr));
		if (d->port)
			json_object_set_new(o, "port", json_integer(d->port));
	}
	if (d->name[0])
		json_object_set_new(o, "name", json_string(d->name));
	json_object_set_new(o, "verdict", json_string(drop_text[kind].verdict));
	json_object_set_new(o, "reason", json_string(drop_text[kind].reason));
	json_object_set_new(o, "count", json_integer((json_int_t)d->count));
	if (d->detail >= 0)
		json_object_set_new(o, kind == DROP_ETHERTYPE	 ? "ethertype"
				       : kind == DROP_TCP_FLAGS ? "tcp_flags"
								: "ip_proto",
				    json_integer(d->detail));
	emit(k, o);
	json_decref(o);
}

int audit_drops_flush(struct knet *k, bool force)
{
	uint64_t now = now_ns(), age;

	if (!drop_window_ns)
		return -1;
	age = now - drop_window_ns;
	if (!force && age < DROP_WINDOW_NS)
		return (int)((DROP_WINDOW_NS - age) / 1000000) + 1;
	for (unsigned i = 0; i < KNET_DROP_KINDS; i++) {
		if (!drops[i].count)
			continue;
		if (k->audit_fd >= 0)
			emit_drop(k, (enum knet_drop)i);
		drops[i].count = 0;
	}
	drop_window_ns = 0;
	return -1;
}

void audit_status(struct knet *k)
{
	char line[256];
	int n;

	audit_drops_flush(k, true);
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
