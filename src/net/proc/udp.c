/*
 * UDP other than DNS: only what a udp: IP/CIDR rule allows, relayed by
 * kiln-net on one connected socket per guest flow (restricted slirp never
 * relays UDP). Replies come back only from the address and port the guest
 * sent to. Idle flows close after UDP_IDLE_MS with an audit line carrying
 * the bytes each way; denied datagrams are dropped and audited.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"
#include "net/proc/knet.h"

#define UFLOWS_MAX  64
#define UDP_IDLE_MS 30000
#define UDP_PAYLOAD_MAX (1500 - IP6_HDR - UDP_HDR) /* fits the guest's MTU either way */

struct uflow {
	bool used;
	int family, fd, idx;
	uint8_t gsrc[16], gdst[16];
	uint16_t gsport, gdport;
	int rule;
	uint64_t up, down, t_start, last;
};

static struct uflow uf[UFLOWS_MAX];

static void uflow_close(struct knet *k, struct uflow *u, const char *why)
{
	struct audit_event e = { .proto = "udp", .verdict = "allow", .reason = why,
				 .rule = u->rule, .family = u->family, .dst = u->gdst,
				 .port = u->gdport, .bytes_up = u->up, .bytes_down = u->down,
				 .duration_ms = knet_now_ms() - u->t_start };

	audit_event(k, &e);
	close(u->fd);
	u->used = false;
}

static struct uflow *uflow_find(const struct frame_ip *ip)
{
	for (unsigned i = 0; i < UFLOWS_MAX; i++) {
		struct uflow *u = &uf[i];

		if (u->used && u->family == ip->family && u->gsport == get16(ip->l4) &&
		    u->gdport == get16(ip->l4 + 2) && !memcmp(u->gdst, ip->dst, knet_alen(ip->family)))
			return u;
	}
	return NULL;
}

static struct uflow *uflow_open(struct knet *k, const struct frame_ip *ip, int rule)
{
	struct sockaddr_storage ss;
	socklen_t len;
	struct uflow *u = NULL;

	for (unsigned i = 0; i < UFLOWS_MAX && !u; i++)
		if (!uf[i].used)
			u = &uf[i];
	if (!u) { /* full: the flow idle longest makes room (with its audit line) */
		u = &uf[0];
		for (unsigned i = 1; i < UFLOWS_MAX; i++)
			if (uf[i].last < u->last)
				u = &uf[i];
		uflow_close(k, u, "evicted");
	}
	len = knet_sockaddr(ip->family, ip->dst, get16(ip->l4 + 2), &ss);
	memset(u, 0, sizeof(*u));
	u->idx = -1;
	u->fd = socket(ip->family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (u->fd < 0)
		return NULL;
	if (connect(u->fd, (struct sockaddr *)&ss, len) < 0) {
		close(u->fd);
		return NULL;
	}
	u->used = true;
	u->family = ip->family;
	memcpy(u->gsrc, ip->src, knet_alen(ip->family));
	memcpy(u->gdst, ip->dst, knet_alen(ip->family));
	u->gsport = get16(ip->l4);
	u->gdport = get16(ip->l4 + 2);
	u->rule = rule;
	u->t_start = u->last = knet_now_ms();
	return u;
}

void udp_guest_datagram(struct knet *k, const struct frame_ip *ip)
{
	size_t len = ip->l4len - UDP_HDR;
	struct uflow *u = uflow_find(ip);

	if (!u) {
		struct net_ip dst = { .family = ip->family };
		struct net_decision d;

		memcpy(dst.b, ip->dst, knet_alen(ip->family));
		d = net_decide_connect(k->pol, NET_UDP, &dst, get16(ip->l4 + 2), knet_now_ms());
		if (d.verdict != NET_ALLOW) {
			struct audit_event e = { .proto = "udp", .verdict = "deny",
						 .reason = net_reason_str(d.reason), .rule = d.rule,
						 .family = ip->family, .dst = ip->dst,
						 .port = get16(ip->l4 + 2) };

			audit_event(k, &e);
			return;
		}
		u = uflow_open(k, ip, d.rule);
		if (!u) {
			struct audit_event e = { .proto = "udp", .verdict = "error",
						 .reason = "socket-failed", .rule = d.rule,
						 .family = ip->family, .dst = ip->dst,
						 .port = get16(ip->l4 + 2) };

			audit_event(k, &e);
			return;
		}
	}
	if (bucket_avail(&k->up, now_ns()) < len) { /* policed: dropped, counted */
		struct audit_drop_info info = { .family = ip->family, .dst = ip->dst,
						.port = get16(ip->l4 + 2), .detail = -1 };

		audit_drop(k, DROP_UDP_RATE, &info);
		u->last = knet_now_ms();
		return;
	}
	bucket_take(&k->up, len);
	if (send(u->fd, ip->l4 + UDP_HDR, len, MSG_DONTWAIT) >= 0)
		u->up += len;
	u->last = knet_now_ms();
}

void udp_poll_fill(struct knet *k, struct pollset *ps)
{
	uint64_t now = knet_now_ms();

	for (unsigned i = 0; i < UFLOWS_MAX; i++) {
		struct uflow *u = &uf[i];

		u->idx = -1;
		if (!u->used)
			continue;
		if (now - u->last >= UDP_IDLE_MS) {
			uflow_close(k, u, "rule");
			continue;
		}
		if (!guest_congested(k))
			u->idx = pollset_add(ps, u->fd, POLLIN);
		pollset_timeout(ps, 1000);
	}
}

void udp_poll_handle(struct knet *k, const struct pollset *ps)
{
	uint8_t l4[UDP_HDR + UDP_PAYLOAD_MAX + 1];

	for (unsigned i = 0; i < UFLOWS_MAX; i++) {
		struct uflow *u = &uf[i];
		ssize_t n;

		if (!u->used || u->idx < 0 || !(pollset_revents(ps, u->idx) & POLLIN))
			continue;
		n = recv(u->fd, l4 + UDP_HDR, UDP_PAYLOAD_MAX + 1, MSG_DONTWAIT);
		if (n < 0)
			continue;
		if (n > UDP_PAYLOAD_MAX) { /* too big for the guest's MTU (no fragments) */
			struct audit_drop_info info = { .family = u->family, .dst = u->gdst,
							.port = u->gdport, .detail = -1 };

			audit_drop(k, DROP_UDP_TOO_BIG, &info);
			continue;
		}
		if (bucket_avail(&k->down, now_ns()) < (uint64_t)n) {
			struct audit_drop_info info = { .family = u->family, .dst = u->gdst,
							.port = u->gdport, .detail = -1 };

			audit_drop(k, DROP_UDP_DOWN, &info);
			continue;
		}
		bucket_take(&k->down, (uint64_t)n);
		put16(l4, u->gdport);
		put16(l4 + 2, u->gsport);
		put16(l4 + 4, (uint16_t)(UDP_HDR + n));
		put16(l4 + 6, 0);
		if (guest_send_ip(k, u->family, u->gdst, u->gsrc, IPPROTO_UDP_, l4, UDP_HDR + (size_t)n))
			u->down += (uint64_t)n;
		u->last = knet_now_ms();
	}
}

void udp_shutdown(struct knet *k)
{
	for (unsigned i = 0; i < UFLOWS_MAX; i++)
		if (uf[i].used)
			uflow_close(k, &uf[i], "rule");
}
