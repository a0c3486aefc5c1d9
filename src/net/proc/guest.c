/*
 * kiln-net's side of the VMM socket: every frame the guest sends is checked
 * here first (source MAC and IP, ethertype, lengths, checksums, fragments,
 * extension headers, protocols, TCP flags) and handed to the module for its
 * protocol; ARP goes to slirp, IPv6 neighbour discovery for the gateway and
 * DNS addresses is answered here. Every frame dropped here is counted in the
 * audit log (audit_drop: one line per kind per second). Frames for the guest
 * are queued when the socket is full, and dropped past the queue (TCP
 * retransmits), counted the same way.
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
	if (q->count == KNET_OUTQ_FRAMES) {
		audit_drop(k, DROP_GUEST_QUEUE, NULL); /* TCP retransmits */
		return false;
	}
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

static void drop(struct knet *k, enum knet_drop kind, const struct frame_ip *ip, int detail)
{
	struct audit_drop_info info = { .detail = detail };

	if (ip) {
		info.family = ip->family;
		info.dst = ip->dst;
	}
	audit_drop(k, kind, &info);
}

/* ARP from the guest: only about its own address, then slirp answers
 * for the gateway and the DNS address. */
static void arp_input(struct knet *k, uint8_t *frame, size_t len)
{
	const uint8_t *a = frame + ETH_HDR;

	if (len < ETH_HDR + ARP_LEN || get16(a) != 1 || get16(a + 2) != ETHERTYPE_IP4 || a[4] != 6 ||
	    a[5] != 4 || memcmp(a + 8, k->guest_mac, 6) || memcmp(a + 14, k->guest4, 4)) {
		drop(k, DROP_ARP, NULL, -1);
		return;
	}
	slirp_input(k->slirp, frame, (int)len);
}

/* A Neighbor Solicitation for the gateway or the DNS address: advertise the
 * gateway's MAC. Everything else of ICMPv6 is dropped (and counted). */
static void icmp6_input(struct knet *k, const struct frame_ip *ip)
{
	static const uint8_t all_nodes[16] = { 0xff, 2, [15] = 1 };
	static const uint8_t unspecified[16];
	const uint8_t *target = ip->l4 + 8;
	uint8_t na[32];

	if (ip->l4[0] != ND_SOLICIT) {
		drop(k, DROP_ICMP, ip, -1);
		return;
	}
	/* From the guest's address, its link-local one, or unspecified (DAD). */
	if (memcmp(ip->src, k->guest6, 16) && memcmp(ip->src, unspecified, 16) &&
	    !(ip->src[0] == 0xfe && (ip->src[1] & 0xc0) == 0x80)) {
		drop(k, DROP_SPOOFED_SOURCE, ip, -1);
		return;
	}
	if (ip->l4len < 24 || ip->l4[1] != 0 ||
	    (memcmp(target, k->gw6, 16) && memcmp(target, k->dns6, 16))) {
		drop(k, DROP_ICMP, ip, -1);
		return;
	}
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

/* Flag combinations no TCP sends: SYN with FIN or RST, and anything without
 * ACK other than a bare SYN or a RST (FIN, null and Xmas scans). */
static bool tcp_flags_odd(uint8_t f)
{
	if ((f & TCP_SYN) && (f & (TCP_FIN | TCP_RST)))
		return true;
	if (!(f & TCP_ACK) && !(f & (TCP_SYN | TCP_RST)))
		return true;
	return false;
}

/* One frame from the guest, len bytes (len > FRAME_MAX: too long, only
 * counted). The frame's bytes may be rewritten. */
void guest_input(struct knet *k, uint8_t *frame, size_t len)
{
	struct frame_ip ip;
	enum frame_kind kind;

	if (len < ETH_HDR || len > FRAME_MAX) {
		drop(k, DROP_MALFORMED, NULL, -1);
		return;
	}
	/* Only the NIC's own MAC: kiln-net answers nothing else. */
	if (memcmp(frame + 6, k->guest_mac, 6)) {
		drop(k, DROP_SPOOFED_MAC, NULL, -1);
		return;
	}
	kind = frame_parse(frame, len, &ip);
	switch (kind) {
	case FRAME_IP:
		break;
	case FRAME_ARP:
		arp_input(k, frame, len);
		return;
	case FRAME_OTHER:
		drop(k, DROP_ETHERTYPE, NULL, get16(frame + 12));
		return;
	case FRAME_FRAGMENT:
		drop(k, DROP_FRAGMENT, &ip, ip.proto);
		return;
	case FRAME_EXTHDR:
		drop(k, DROP_EXTHDR, &ip, ip.proto);
		return;
	case FRAME_PROTO:
		drop(k, DROP_PROTO, &ip, ip.proto);
		return;
	case FRAME_BAD_CSUM:
		drop(k, DROP_BAD_CSUM, NULL, -1);
		return;
	default:
		drop(k, DROP_MALFORMED, NULL, -1);
		return;
	}
	if (!frame_l4_csum_ok(&ip)) {
		drop(k, DROP_BAD_CSUM, &ip, ip.proto);
		return;
	}
	if (ip.family == AF_INET6 && ip.proto == IPPROTO_ICMP6_) {
		icmp6_input(k, &ip);
		return;
	}
	/* The guest's own configured address only: no spoofing into the NAT. */
	if (ip.family == AF_INET ? memcmp(ip.src, k->guest4, 4) : memcmp(ip.src, k->guest6, 16)) {
		drop(k, DROP_SPOOFED_SOURCE, &ip, -1);
		return;
	}
	switch (ip.proto) {
	case IPPROTO_TCP_:
		if (tcp_flags_odd(ip.l4[13])) {
			drop(k, DROP_TCP_FLAGS, &ip, ip.l4[13]);
			return;
		}
		tcp_guest_segment(k, &ip);
		break;
	case IPPROTO_UDP_:
		if (is_dns(k, &ip))
			dns_guest_query(k, &ip);
		else
			udp_guest_datagram(k, &ip);
		break;
	default: /* ICMP: never forwarded */
		drop(k, DROP_ICMP, &ip, -1);
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
