/*
 * The guest's DNS server (10.0.2.3 / fd00::3, UDP port 53). Each question
 * is judged by the policy: names no rule allows get REFUSED; allowed A/AAAA
 * questions are asked of the host's resolver on kiln-net's own socket, and
 * the addresses it returns are pinned to the name for their TTL (the only
 * way a name rule opens an address). Addresses that are always denied are
 * kept out of the guest's answer (DNS rebinding) and logged.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/dnsmsg.h"
#include "net/proc/knet.h"

#define PENDING_MAX	   64
#define RESOLVER_TIMEOUT_MS 5000
#define ANSWERS_MAX	   32
#define ADDR_LIST_MAX	   (ANSWERS_MAX * (INET6_ADDRSTRLEN + 1))

struct pending {
	bool used;
	uint16_t id;		 /* ours, towards the resolver */
	struct dns_query guest;	 /* the guest's question (its id, its case) */
	struct dns_query asked;	 /* what we asked */
	int family;
	uint8_t gaddr[16], server[16];
	uint16_t gport;
	int rule;		 /* the rule that allowed the name */
	uint64_t deadline;
};

static struct pending pend[PENDING_MAX];
static int resolver_fd = -1;
static int resolver_idx = -1;
static uint16_t next_id;

int dns_init(struct knet *k)
{
	if (getrandom(&next_id, sizeof(next_id), 0) != sizeof(next_id))
		next_id = (uint16_t)knet_now_ms();
	if (!k->resolver_len)
		return 0;
	/* Not connected: a route that appears later still works; answers are
	 * matched by source address instead. */
	resolver_fd = socket(k->resolver.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	return resolver_fd < 0 ? -errno : 0;
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
		      const char *reason, int rule, const char *answers, const char *dropped)
{
	char t[16];
	struct audit_event e = { .proto = "dns", .verdict = verdict, .reason = reason,
				 .rule = rule, .name = q->name[0] ? q->name : NULL,
				 .qtype = qtype_str(q->qtype, t, sizeof(t)), .answers = answers,
				 .dropped = dropped };

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

static int forward(struct knet *k, const struct frame_ip *ip, const struct dns_query *q, int rule)
{
	struct pending *p = NULL;
	uint8_t msg[DNS_UDP_MAX];
	int n;

	if (resolver_fd < 0)
		return -ENOENT;
	for (unsigned i = 0; i < PENDING_MAX && !p; i++)
		if (!pend[i].used)
			p = &pend[i];
	if (!p)
		return -EBUSY;
	memset(p, 0, sizeof(*p));
	p->id = next_id++;
	if (dns_query_init(&p->asked, p->id, q->name, q->qtype))
		return -EINVAL;
	p->asked.rd = true;
	n = dns_build_query(&p->asked, msg, sizeof(msg));
	if (n < 0)
		return n;
	if (sendto(resolver_fd, msg, (size_t)n, MSG_DONTWAIT, (struct sockaddr *)&k->resolver,
		   k->resolver_len) < 0)
		return -errno;
	p->used = true;
	p->guest = *q;
	p->family = ip->family;
	memcpy(p->gaddr, ip->src, 16);
	memcpy(p->server, ip->dst, 16);
	p->gport = get16(ip->l4);
	p->rule = rule;
	p->deadline = knet_now_ms() + RESOLVER_TIMEOUT_MS;
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
			audit_dns(k, &q, "deny", net_reason_str(NET_R_BAD_NAME), -1, NULL, NULL);
		return;
	}
	d = net_decide_dns(k->pol, q.name, q.qtype, q.qclass);
	if (d.verdict == NET_DENY) {
		answer_error(k, ip, &q, DNS_RCODE_REFUSED);
		audit_dns(k, &q, "deny", net_reason_str(d.reason), d.rule, NULL, NULL);
		return;
	}
	if (d.verdict == NET_ANSWER_EMPTY) {
		uint8_t out[DNS_UDP_MAX];
		int n = dns_build_answer(&q, NULL, 0, out, sizeof(out));

		if (n > 0)
			reply(k, ip->family, ip->dst, ip->src, get16(ip->l4), out, (size_t)n);
		audit_dns(k, &q, "allow", net_reason_str(d.reason), d.rule, "", NULL);
		return;
	}
	ret = forward(k, ip, &q, d.rule);
	if (ret) {
		answer_error(k, ip, &q, DNS_RCODE_SERVFAIL);
		audit_dns(k, &q, "error", ret == -ENOENT ? "no-resolver"
			  : ret == -EBUSY ? "resolver-busy" : "resolver-unreachable",
			  d.rule, NULL, NULL);
	}
}

static void list_add(char *list, size_t cap, const struct dns_addr *a)
{
	char text[INET6_ADDRSTRLEN];
	size_t used = strlen(list);

	if (!inet_ntop(a->family, a->addr, text, sizeof(text)))
		return;
	snprintf(list + used, cap - used, "%s%s", used ? " " : "", text);
}

/* The resolver's answer to p: pin, filter, answer the guest. */
static void resolved(struct knet *k, struct pending *p, const uint8_t *msg, size_t len)
{
	struct dns_addr got[ANSWERS_MAX], keep[ANSWERS_MAX];
	char answers[ADDR_LIST_MAX] = "", dropped[ADDR_LIST_MAX] = "";
	uint8_t out[DNS_UDP_MAX];
	size_t n = 0, nkeep = 0;
	int rcode = 0, ret, olen;

	ret = dns_parse_response(msg, len, &p->asked, got, ANSWERS_MAX, &n, &rcode);
	if (ret == -EBADMSG) /* not the answer to this question: keep waiting */
		return;
	if (ret) {
		olen = dns_build_error(&p->guest, DNS_RCODE_SERVFAIL, out, sizeof(out));
		audit_dns(k, &p->guest, "error", "resolver-answer", p->rule, NULL, NULL);
	} else if (rcode) {
		olen = dns_build_error(&p->guest, rcode, out, sizeof(out));
		audit_dns(k, &p->guest, "allow", rcode == DNS_RCODE_NXDOMAIN ? "nxdomain" : "rcode",
			  p->rule, "", NULL);
	} else {
		for (size_t i = 0; i < n; i++) {
			struct net_ip ip = { .family = got[i].family };

			memcpy(ip.b, got[i].addr, 16);
			if (net_pin_add(k->pol, p->guest.name, &ip, got[i].ttl, knet_now_ms()) == 0) {
				keep[nkeep++] = got[i];
				list_add(answers, sizeof(answers), &got[i]);
			} else {
				list_add(dropped, sizeof(dropped), &got[i]);
			}
		}
		olen = dns_build_answer(&p->guest, keep, nkeep, out, sizeof(out));
		audit_dns(k, &p->guest, "allow", dropped[0] ? "rebinding" : "rule", p->rule, answers,
			  dropped[0] ? dropped : NULL);
	}
	if (olen > 0)
		reply(k, p->family, p->server, p->gaddr, p->gport, out, (size_t)olen);
	p->used = false;
}

void dns_poll_fill(struct knet *k, struct pollset *ps)
{
	uint64_t now = knet_now_ms();
	bool waiting = false;

	for (unsigned i = 0; i < PENDING_MAX; i++) {
		struct pending *p = &pend[i];

		if (!p->used)
			continue;
		if (now >= p->deadline) {
			uint8_t out[DNS_UDP_MAX];
			int n = dns_build_error(&p->guest, DNS_RCODE_SERVFAIL, out, sizeof(out));

			if (n > 0)
				reply(k, p->family, p->server, p->gaddr, p->gport, out, (size_t)n);
			audit_dns(k, &p->guest, "error", "resolver-timeout", p->rule, NULL, NULL);
			p->used = false;
			continue;
		}
		waiting = true;
	}
	resolver_idx = resolver_fd >= 0 ? pollset_add(ps, resolver_fd, POLLIN) : -1;
	if (waiting)
		pollset_timeout(ps, 1000);
}

static bool from_resolver(const struct knet *k, const struct sockaddr_storage *from,
			  socklen_t len)
{
	if (len != k->resolver_len || from->ss_family != k->resolver.ss_family)
		return false;
	if (from->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const void *)from, *b = (const void *)&k->resolver;

		return a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr;
	}
	const struct sockaddr_in6 *a = (const void *)from, *b = (const void *)&k->resolver;

	return a->sin6_port == b->sin6_port && !memcmp(&a->sin6_addr, &b->sin6_addr, 16);
}

void dns_poll_handle(struct knet *k, const struct pollset *ps)
{
	uint8_t msg[4096];
	struct sockaddr_storage from;
	socklen_t flen;
	ssize_t n;

	if (resolver_idx < 0 || !(pollset_revents(ps, resolver_idx) & POLLIN))
		return;
	for (int budget = 64; budget--;) {
		flen = sizeof(from);
		n = recvfrom(resolver_fd, msg, sizeof(msg), MSG_DONTWAIT, (struct sockaddr *)&from,
			     &flen);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return;
		if (n < DNS_HDR_SIZE || !from_resolver(k, &from, flen))
			continue;
		for (unsigned i = 0; i < PENDING_MAX; i++)
			if (pend[i].used && pend[i].id == get16(msg)) {
				resolved(k, &pend[i], msg, (size_t)n);
				break;
			}
	}
}
