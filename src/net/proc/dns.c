/*
 * The guest's DNS server (10.0.2.3 / fd00::3, UDP port 53). Each question
 * is judged by the policy: names no rule allows get REFUSED; allowed A/AAAA
 * questions are asked of the host's resolver and the addresses it returns
 * are pinned to the name for their TTL (the only way a name rule opens an
 * address). Addresses the policy denies (net_ip_judge: reserved, the host's,
 * non-public without ;private, unroutable) are kept out of the guest's
 * answer and logged.
 *
 * Upstream, every question is bounded and paid for (docs/net.md):
 *   - at most KNET_DNS_PENDING questions are queued or asked at once; a full
 *     table answers SERVFAIL with an audit line;
 *   - a question leaves only when the query-rate bucket (--dns-rate) has a
 *     token and the --net-rate bucket has the query's bytes; until then it
 *     waits in the queue, and after RESOLVER_TIMEOUT_MS it gets SERVFAIL;
 *   - each question goes out on its own fresh socket, connected to the
 *     resolver (the kernel drops datagrams from anywhere else and picks a
 *     random source port), with a random ID; a reply counts only if its ID,
 *     question (name, type, class) match. Anything else is ignored, counted
 *     in the audit log, and the question keeps waiting for the real answer.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"
#include "net/dnsmsg.h"
#include "net/proc/knet.h"

#define PENDING_MAX	    KNET_DNS_PENDING
#define RESOLVER_TIMEOUT_MS 5000
#define ANSWERS_MAX	    32
#define ADDR_LIST_MAX	    (ANSWERS_MAX * (INET6_ADDRSTRLEN + 1))
#define REASON_LIST_MAX	    (ANSWERS_MAX * 20)
#define REPLIES_PER_TURN    8 /* datagrams read per socket per loop turn */

enum pstate { P_FREE = 0, P_QUEUED, P_ASKED };

struct pending {
	enum pstate st;
	int fd;			 /* P_ASKED: connected to the resolver */
	int idx;		 /* its poll index, -1 if none */
	struct dns_query guest;	 /* the guest's question (its id, its case) */
	struct dns_query asked;	 /* what we ask: our random id */
	int family;
	uint8_t gaddr[16], server[16];
	uint16_t gport;
	int rule;		 /* the rule that allowed the name */
	uint64_t seq;		 /* arrival order: the queue is first come, first served */
	uint64_t deadline;
};

static struct pending pend[PENDING_MAX];
static uint64_t arrivals;

int dns_init(struct knet *k)
{
	for (unsigned i = 0; i < PENDING_MAX; i++) {
		pend[i].fd = -1;
		pend[i].idx = -1;
	}
	(void)k;
	return 0;
}

static const char *qtype_str(uint16_t t, char *buf, size_t len)
{
	if (t == DNS_TYPE_A)
		return "A";
	if (t == DNS_TYPE_AAAA)
		return "AAAA";
	snprintf(buf, len, "TYPE%u", t);
	return buf;
}

/* A UDP reply from the DNS address the guest asked to the guest's port. */
static void reply(struct knet *k, int family, const uint8_t *server, const uint8_t *gaddr,
		  uint16_t gport, const uint8_t *msg, size_t len)
{
	uint8_t l4[UDP_HDR + 1472];

	if (len > sizeof(l4) - UDP_HDR)
		return;
	put16(l4, 53);
	put16(l4 + 2, gport);
	put16(l4 + 4, (uint16_t)(UDP_HDR + len));
	put16(l4 + 6, 0);
	memcpy(l4 + UDP_HDR, msg, len);
	guest_send_ip(k, family, server, gaddr, IPPROTO_UDP_, l4, UDP_HDR + len);
}

static void audit_dns(struct knet *k, const struct dns_query *q, const char *verdict,
		      const char *reason, int rule, const char *answers, const char *dropped,
		      const char *dropped_reasons)
{
	char t[16];
	struct audit_event e = { .proto = "dns", .verdict = verdict, .reason = reason,
				 .rule = rule, .name = q->name[0] ? q->name : NULL,
				 .qtype = qtype_str(q->qtype, t, sizeof(t)), .answers = answers,
				 .dropped = dropped, .dropped_reasons = dropped_reasons };

	audit_event(k, &e);
}

static void answer_error(struct knet *k, const struct frame_ip *ip, const struct dns_query *q,
			 int rcode)
{
	uint8_t msg[DNS_UDP_MAX];
	int n = dns_build_error(q, rcode, msg, sizeof(msg));

	if (n > 0)
		reply(k, ip->family, ip->dst, ip->src, get16(ip->l4), msg, (size_t)n);
}

static void pending_free(struct pending *p)
{
	if (p->fd >= 0)
		close(p->fd);
	p->fd = -1;
	p->idx = -1;
	p->st = P_FREE;
}

/* SERVFAIL to the guest for p, an audit line, and p is free again. */
static void pending_fail(struct knet *k, struct pending *p, const char *reason)
{
	uint8_t out[DNS_UDP_MAX];
	int n = dns_build_error(&p->guest, DNS_RCODE_SERVFAIL, out, sizeof(out));

	if (n > 0)
		reply(k, p->family, p->server, p->gaddr, p->gport, out, (size_t)n);
	audit_dns(k, &p->guest, "error", reason, p->rule, NULL, NULL, NULL);
	pending_free(p);
}

/* Ask the resolver on a fresh connected socket. 0, or -errno. */
static int ask(struct knet *k, struct pending *p, const uint8_t *msg, size_t len)
{
	int fd = socket(k->resolver.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int ret = 0;

	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&k->resolver, k->resolver_len) < 0 ||
	    send(fd, msg, len, MSG_DONTWAIT) != (ssize_t)len)
		ret = errno ? -errno : -EIO;
	if (ret) {
		close(fd);
		return ret;
	}
	p->fd = fd;
	return 0;
}

/* Send queued questions, oldest first, while both buckets allow. Returns
 * the bytes the first question left waiting needs, 0 if none waits. */
static size_t release(struct knet *k)
{
	for (;;) {
		struct pending *p = NULL;
		uint8_t msg[DNS_UDP_MAX];
		uint64_t now = now_ns();
		int n, ret;

		for (unsigned i = 0; i < PENDING_MAX; i++)
			if (pend[i].st == P_QUEUED && (!p || pend[i].seq < p->seq))
				p = &pend[i];
		if (!p)
			return 0;
		n = dns_build_query(&p->asked, msg, sizeof(msg));
		if (n < 0) {
			pending_fail(k, p, "bad-question");
			continue;
		}
		if (bucket_avail(&k->dnsq, now) < 1 || bucket_avail(&k->up, now) < (uint64_t)n)
			return (size_t)n;
		ret = ask(k, p, msg, (size_t)n);
		if (ret) {
			pending_fail(k, p, "resolver-unreachable");
			continue;
		}
		bucket_take(&k->dnsq, 1);
		bucket_take(&k->up, (uint64_t)n);
		k->count.bytes_up += (uint64_t)n;
		p->st = P_ASKED;
	}
}

/* Queue an allowed question for the resolver. 0, or -errno. */
static int enqueue(struct knet *k, const struct frame_ip *ip, const struct dns_query *q, int rule)
{
	struct pending *p = NULL;
	uint16_t id;

	if (!k->resolver_len)
		return -ENOENT;
	for (unsigned i = 0; i < PENDING_MAX && !p; i++)
		if (pend[i].st == P_FREE)
			p = &pend[i];
	if (!p)
		return -EBUSY;
	if (getrandom(&id, sizeof(id), GRND_NONBLOCK) != sizeof(id))
		return -EAGAIN; /* no unpredictable ID, no question */
	memset(p, 0, sizeof(*p));
	p->fd = p->idx = -1;
	if (dns_query_init(&p->asked, id, q->name, q->qtype))
		return -EINVAL;
	p->asked.rd = true;
	p->guest = *q;
	p->family = ip->family;
	memcpy(p->gaddr, ip->src, 16);
	memcpy(p->server, ip->dst, 16);
	p->gport = get16(ip->l4);
	p->rule = rule;
	p->seq = ++arrivals;
	p->deadline = knet_now_ms() + RESOLVER_TIMEOUT_MS;
	p->st = P_QUEUED;
	(void)release(k);
	return 0;
}

void dns_guest_query(struct knet *k, const struct frame_ip *ip)
{
	const uint8_t *msg = ip->l4 + UDP_HDR;
	size_t len = ip->l4len - UDP_HDR;
	struct net_decision d;
	struct dns_query q;
	bool answerable = false;
	int ret;

	k->count.dns_queries++;
	ret = dns_parse_query(msg, len, &q, &answerable);
	if (ret) {
		if (answerable)
			answer_error(k, ip, &q, ret == -ENOTSUP ? DNS_RCODE_NOTIMP
					   : ret == -EILSEQ ? DNS_RCODE_REFUSED : DNS_RCODE_FORMERR);
		if (ret == -EILSEQ)
			audit_dns(k, &q, "deny", net_reason_str(NET_R_BAD_NAME), -1, NULL, NULL, NULL);
		else
			audit_drop(k, DROP_MALFORMED, NULL);
		return;
	}
	d = net_decide_dns(k->pol, q.name, q.qtype, q.qclass);
	if (d.verdict == NET_DENY) {
		answer_error(k, ip, &q, DNS_RCODE_REFUSED);
		audit_dns(k, &q, "deny", net_reason_str(d.reason), d.rule, NULL, NULL, NULL);
		return;
	}
	if (d.verdict == NET_ANSWER_EMPTY) {
		uint8_t out[DNS_UDP_MAX];
		int n = dns_build_answer(&q, NULL, 0, out, sizeof(out));

		if (n > 0)
			reply(k, ip->family, ip->dst, ip->src, get16(ip->l4), out, (size_t)n);
		audit_dns(k, &q, "allow", net_reason_str(d.reason), d.rule, "", NULL, NULL);
		return;
	}
	ret = enqueue(k, ip, &q, d.rule);
	if (ret) {
		answer_error(k, ip, &q, DNS_RCODE_SERVFAIL);
		audit_dns(k, &q, "error", ret == -ENOENT ? "no-resolver"
			  : ret == -EBUSY ? "dns-busy" : ret == -EAGAIN ? "no-random-id" : "bad-question",
			  d.rule, NULL, NULL, NULL);
	}
}

static void list_add(char *list, size_t cap, const char *text)
{
	size_t used = strlen(list);

	snprintf(list + used, cap - used, "%s%s", used ? " " : "", text);
}

/* The resolver's answer to p: pin, filter, answer the guest. */
static void resolved(struct knet *k, struct pending *p, const struct dns_addr *got, size_t n,
		     int rcode)
{
	struct dns_addr keep[ANSWERS_MAX];
	char answers[ADDR_LIST_MAX] = "", dropped[ADDR_LIST_MAX] = "";
	char reasons[REASON_LIST_MAX] = "";
	uint8_t out[DNS_UDP_MAX];
	size_t nkeep = 0;
	int olen;

	if (rcode) {
		olen = dns_build_error(&p->guest, rcode, out, sizeof(out));
		audit_dns(k, &p->guest, "allow", rcode == DNS_RCODE_NXDOMAIN ? "nxdomain" : "rcode",
			  p->rule, "", NULL, NULL);
	} else {
		for (size_t i = 0; i < n && i < ANSWERS_MAX; i++) {
			struct net_ip ip = { .family = got[i].family };
			enum net_reason why = NET_R_BAD_ARG;
			uint64_t evicted = net_pin_evictions(k->pol);
			char text[INET6_ADDRSTRLEN];
			int r;

			memcpy(ip.b, got[i].addr, 16);
			r = net_pin_add(k->pol, p->guest.name, &ip, got[i].ttl, knet_now_ms(), &why);
			if (net_pin_evictions(k->pol) != evicted) {
				struct audit_drop_info info = { .detail = -1, .name = p->guest.name };

				audit_drop(k, DROP_PIN_EVICTED, &info);
			}
			if (!inet_ntop(got[i].family, got[i].addr, text, sizeof(text)))
				snprintf(text, sizeof(text), "?");
			if (r == 0) {
				keep[nkeep++] = got[i];
				list_add(answers, sizeof(answers), text);
			} else {
				list_add(dropped, sizeof(dropped), text);
				list_add(reasons, sizeof(reasons),
					 r == 1 ? net_reason_str(why) : "bad-answer");
			}
		}
		olen = dns_build_answer(&p->guest, keep, nkeep, out, sizeof(out));
		audit_dns(k, &p->guest, "allow", dropped[0] ? "rebinding" : "rule", p->rule, answers,
			  dropped[0] ? dropped : NULL, dropped[0] ? reasons : NULL);
	}
	if (olen > 0)
		reply(k, p->family, p->server, p->gaddr, p->gport, out, (size_t)olen);
	pending_free(p);
}

/* Datagrams on p's socket: the kernel let through only the resolver's. */
static void receive(struct knet *k, struct pending *p)
{
	uint8_t msg[4096];
	struct dns_addr got[ANSWERS_MAX];

	for (int turn = 0; turn < REPLIES_PER_TURN && p->st == P_ASKED; turn++) {
		ssize_t n = recv(p->fd, msg, sizeof(msg), MSG_DONTWAIT);
		size_t nget = 0;
		int rcode = 0, ret;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n < 0) { /* ICMP unreachable from the resolver's address */
			pending_fail(k, p, "resolver-unreachable");
			return;
		}
		ret = dns_parse_response(msg, (size_t)n, &p->asked, got, ANSWERS_MAX, &nget, &rcode);
		if (ret == -EBADMSG) {
			/* Not the answer to this question (ID, question, or garbage):
			 * ignored; the real one may still come. */
			audit_drop(k, DROP_DNS_MISMATCH, NULL);
			continue;
		}
		if (ret) {
			pending_fail(k, p, "resolver-answer");
			return;
		}
		resolved(k, p, got, nget, rcode);
	}
}

void dns_poll_fill(struct knet *k, struct pollset *ps)
{
	uint64_t now = knet_now_ms();
	size_t waiting;

	for (unsigned i = 0; i < PENDING_MAX; i++) {
		struct pending *p = &pend[i];

		p->idx = -1;
		if (p->st != P_FREE && now >= p->deadline)
			pending_fail(k, p, p->st == P_QUEUED ? "rate-limited" : "resolver-timeout");
	}
	waiting = release(k);
	for (unsigned i = 0; i < PENDING_MAX; i++) {
		struct pending *p = &pend[i];

		if (p->st == P_FREE)
			continue;
		if (p->st == P_ASKED)
			p->idx = pollset_add(ps, p->fd, POLLIN);
		pollset_timeout(ps, p->deadline > now ? (int)(p->deadline - now) : 0);
	}
	if (waiting) { /* release() stopped: one bucket is short */
		uint64_t t = now_ns();
		int a = bucket_wait_for_ms(&k->dnsq, 1, t);
		int b = bucket_wait_for_ms(&k->up, waiting, t);

		pollset_timeout(ps, a > b ? a : b > 0 ? b : 1);
	}
}

void dns_poll_handle(struct knet *k, const struct pollset *ps)
{
	for (unsigned i = 0; i < PENDING_MAX; i++) {
		struct pending *p = &pend[i];

		if (p->st == P_ASKED && p->idx >= 0 &&
		    (pollset_revents(ps, p->idx) & (POLLIN | POLLERR | POLLHUP)))
			receive(k, p);
	}
}

void dns_shutdown(struct knet *k)
{
	for (unsigned i = 0; i < PENDING_MAX; i++)
		if (pend[i].st != P_FREE)
			pending_fail(k, &pend[i], "shutdown");
}
