/*
 * kiln-net's side of the VMM socket: every frame the guest sends is checked
 * here first (source addresses, ethertype, fragments, extension headers) and
 * handed to the module for its protocol; ARP goes to slirp, IPv6 neighbour
 * discovery for the gateway and DNS addresses is answered here. Frames for
 * the guest are queued when the socket is full, and dropped past the queue
 * (TCP retransmits).
 */
#include <errno.h>
#include <slirp/libslirp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "net/proc/knet.h"

#define ARP_LEN	      28
#define ND_SOLICIT    135
#define ND_ADVERT     136
#define ND_OPT_TARGET 2

int guest_init(struct knet *k)
{
	k->outq.frame = calloc(KNET_OUTQ_FRAMES, FRAME_MAX);
	k->outq.len = calloc(KNET_OUTQ_FRAMES, sizeof(*k->outq.len));
	return k->outq.frame && k->outq.len ? 0 : -ENOMEM;
}

#define SEND_BATCH 64

/* Frames for the guest are queued and sent in batches (sendmmsg): one
 * system call per loop turn rather than one per frame. guest_flush runs at
 * the end of every turn, and whenever a batch is full. */
bool guest_send(struct knet *k, const uint8_t *frame, size_t len)
{
	struct outq *q = &k->outq;
	unsigned slot;

	if (len > FRAME_MAX || k->vmm_gone)
		return false;
	if (q->count >= SEND_BATCH && q->count % SEND_BATCH == 0)
		guest_flush(k);
	if (q->count == KNET_OUTQ_FRAMES)
		return false; /* dropped: TCP retransmits */
	slot = (q->head + q->count) % KNET_OUTQ_FRAMES;
	memcpy(q->frame[slot], frame, len);
	q->len[slot] = (uint16_t)len;
	q->count++;
	return true;
}

void guest_flush(struct knet *k)
{
	struct outq *q = &k->outq;
	struct mmsghdr msg[SEND_BATCH];
	struct iovec iov[SEND_BATCH];

	while (q->count && !k->vmm_gone) {
		unsigned n = 0;
		int sent;

		/* Up to the ring's end: slots are contiguous there. */
		while (n < SEND_BATCH && n < q->count && q->head + n < KNET_OUTQ_FRAMES) {
			iov[n] = (struct iovec){ q->frame[q->head + n], q->len[q->head + n] };
			msg[n] = (struct mmsghdr){ .msg_hdr = { .msg_iov = &iov[n], .msg_iovlen = 1 } };
			n++;
		}
		sent = sendmmsg(k->vmm_fd, msg, n, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (sent < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS &&
			    errno != EINTR)
				k->vmm_gone = true;
			return;
		}
		q->head = (q->head + (unsigned)sent) % KNET_OUTQ_FRAMES;
		q->count -= (unsigned)sent;
		if ((unsigned)sent < n)
			return; /* the socket is full: POLLOUT brings us back */
	}
}

bool guest_congested(const struct knet *k)
{
	return k->outq.count >= KNET_OUTQ_FRAMES / 4;
}

bool guest_send_ip(struct knet *k, int family, const uint8_t *src, const uint8_t *dst,
		   uint8_t proto, const uint8_t *l4, size_t l4len)
{
	uint8_t out[FRAME_MAX];
	size_t n = frame_build(out, sizeof(out), k->guest_mac, k->gw_mac, family, src, dst, proto,
			       l4, l4len);

	return n ? guest_send(k, out, n) : false;
}

/* ARP from the guest: only about its own address, then slirp answers
 * for the gateway and the DNS address. */
static void arp_input(struct knet *k, uint8_t *frame, size_t len)
{
	const uint8_t *a = frame + ETH_HDR;

	if (len < ETH_HDR + ARP_LEN || get16(a) != 1 || get16(a + 2) != ETHERTYPE_IP4 || a[4] != 6 ||
	    a[5] != 4 || memcmp(a + 14, k->guest4, 4))
		return;
	slirp_input(k->slirp, frame, (int)len);
}

/* A Neighbor Solicitation for the gateway or the DNS address: advertise the
 * gateway's MAC. Everything else of ICMPv6 is dropped. */
static void icmp6_input(struct knet *k, const struct frame_ip *ip)
{
	static const uint8_t all_nodes[16] = { 0xff, 2, [15] = 1 };
	static const uint8_t unspecified[16];
	const uint8_t *target = ip->l4 + 8;
	uint8_t na[32];

	if (ip->l4[0] != ND_SOLICIT) {
		struct audit_event e = { .proto = "icmp", .verdict = "deny", .reason = "icmp",
					 .rule = -1, .family = AF_INET6, .dst = ip->dst };

		if (ip->l4[0] < 128) /* errors */
			return;
		if (ip->l4[0] == 128) /* only echo requests are attempts worth a line */
			audit_event(k, &e);
		return;
	}
	/* From the guest's address, its link-local one, or unspecified (DAD). */
	if (memcmp(ip->src, k->guest6, 16) && memcmp(ip->src, unspecified, 16) &&
	    !(ip->src[0] == 0xfe && (ip->src[1] & 0xc0) == 0x80))
		return;
	if (ip->l4len < 24 || ip->l4[1] != 0 ||
	    (memcmp(target, k->gw6, 16) && memcmp(target, k->dns6, 16)))
		return;
	memset(na, 0, sizeof(na));
	na[0] = ND_ADVERT;
	na[4] = 0xe0; /* router, solicited, override */
	memcpy(na + 8, target, 16);
	na[24] = ND_OPT_TARGET;
	na[25] = 1;
	memcpy(na + 26, k->gw_mac, 6);
	guest_send_ip(k, AF_INET6, target, memcmp(ip->src, unspecified, 16) ? ip->src : all_nodes,
		      IPPROTO_ICMP6_, na, sizeof(na));
}

static bool is_dns(const struct knet *k, const struct frame_ip *ip)
{
	if (get16(ip->l4 + 2) != 53)
		return false;
	return ip->family == AF_INET ? !memcmp(ip->dst, k->dns4, 4) : !memcmp(ip->dst, k->dns6, 16);
}

void guest_input(struct knet *k, uint8_t *frame, size_t len)
{
	struct frame_ip ip;

	/* Only the NIC's own MAC: kiln-net answers nothing else. */
	if (len < ETH_HDR || memcmp(frame + 6, k->guest_mac, 6))
		return;
	switch (frame_parse(frame, len, &ip)) {
	case FRAME_IP:
		break;
	case FRAME_ARP:
		arp_input(k, frame, len);
		return;
	default:
		return;
	}
	if (ip.family == AF_INET6 && ip.proto == IPPROTO_ICMP6_) {
		icmp6_input(k, &ip);
		return;
	}
	/* The guest's own configured address only: no spoofing into the NAT. */
	if (ip.family == AF_INET ? memcmp(ip.src, k->guest4, 4) : memcmp(ip.src, k->guest6, 16))
		return;
	switch (ip.proto) {
	case IPPROTO_TCP_:
		tcp_guest_segment(k, &ip);
		break;
	case IPPROTO_UDP_:
		if (is_dns(k, &ip))
			dns_guest_query(k, &ip);
		else
			udp_guest_datagram(k, &ip);
		break;
	case IPPROTO_ICMP_:
		if (ip.l4[0] == 8) { /* echo request */
			struct audit_event e = { .proto = "icmp", .verdict = "deny", .reason = "icmp",
						 .rule = -1, .family = AF_INET, .dst = ip.dst };
			audit_event(k, &e);
		}
		break;
	}
}

void guest_from_slirp(struct knet *k, const uint8_t *frame, size_t len)
{
	uint8_t copy[FRAME_MAX];
	struct frame_ip ip;

	if (len > sizeof(copy))
		return;
	memcpy(copy, frame, len);
	switch (frame_parse(copy, len, &ip)) {
	case FRAME_ARP:
		guest_send(k, copy, len);
		return;
	case FRAME_IP:
		if (ip.family == AF_INET && ip.proto == IPPROTO_TCP_ && !memcmp(ip.src, k->fwd4, 4) &&
		    get16(ip.l4) == KNET_FWD_PORT && !memcmp(ip.dst, k->guest4, 4))
			tcp_from_slirp(k, &ip);
		return;
	default:
		return;
	}
}
