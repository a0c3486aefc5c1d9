/* Frame parsing and building for kiln-net (see frame.h). */
#include "net/frame.h"

#include <string.h>
#include <sys/socket.h>

static uint32_t sum16(const uint8_t *p, size_t n, uint32_t s)
{
	for (; n > 1; p += 2, n -= 2)
		s += (uint32_t)(p[0] << 8 | p[1]);
	if (n)
		s += (uint32_t)p[0] << 8;
	return s;
}

static uint16_t fold(uint32_t s)
{
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

/* Checks the transport header fits; trims UDP to its own length. */
static enum frame_kind l4_check(struct frame_ip *ip)
{
	if (ip->proto == (ip->family == AF_INET ? IPPROTO_ICMP6_ : IPPROTO_ICMP_))
		return FRAME_PROTO; /* the other family's ICMP */
	switch (ip->proto) {
	case IPPROTO_TCP_: {
		size_t hl;

		if (ip->l4len < TCP_HDR)
			return FRAME_BAD;
		hl = tcp_hdr_len(ip->l4);
		return hl < TCP_HDR || hl > ip->l4len ? FRAME_BAD : FRAME_IP;
	}
	case IPPROTO_UDP_: {
		size_t ul;

		if (ip->l4len < UDP_HDR)
			return FRAME_BAD;
		ul = get16(ip->l4 + 4);
		if (ul < UDP_HDR || ul > ip->l4len)
			return FRAME_BAD;
		ip->l4len = ul;
		return FRAME_IP;
	}
	case IPPROTO_ICMP_:
	case IPPROTO_ICMP6_:
		return ip->l4len < 4 ? FRAME_BAD : FRAME_IP;
	default:
		return FRAME_PROTO;
	}
}

/* IPv6 next headers that are extension headers (RFC 8200 4, IANA's list):
 * hop-by-hop, routing, destination options, ESP, AH, no next header,
 * mobility, HIP, shim6, experimental. The fragment header is apart. */
static bool ip6_exthdr(uint8_t nh)
{
	switch (nh) {
	case 0: case 43: case 50: case 51: case 59: case 60: case 135: case 139: case 140:
	case 253: case 254:
		return true;
	default:
		return false;
	}
}

static enum frame_kind parse4(uint8_t *p, size_t rem, struct frame_ip *ip)
{
	size_t ihl, tot;

	if (rem < IP4_HDR || (p[0] >> 4) != 4)
		return FRAME_BAD;
	ihl = (size_t)(p[0] & 15) * 4;
	tot = get16(p + 2);
	if (ihl < IP4_HDR || tot < ihl || tot > rem)
		return FRAME_BAD;
	if (fold(sum16(p, ihl, 0)) != 0)
		return FRAME_BAD_CSUM;
	memset(ip, 0, sizeof(*ip));
	ip->family = AF_INET;
	ip->proto = p[9];
	memcpy(ip->src, p + 12, 4);
	memcpy(ip->dst, p + 16, 4);
	if (get16(p + 6) & 0x3fff) /* MF or a fragment offset */
		return FRAME_FRAGMENT;
	ip->l4 = p + ihl;
	ip->l4len = tot - ihl;
	return l4_check(ip);
}

static enum frame_kind parse6(uint8_t *p, size_t rem, struct frame_ip *ip)
{
	size_t pl;

	if (rem < IP6_HDR || (p[0] >> 4) != 6)
		return FRAME_BAD;
	pl = get16(p + 4);
	if (pl > rem - IP6_HDR)
		return FRAME_BAD;
	memset(ip, 0, sizeof(*ip));
	ip->family = AF_INET6;
	ip->proto = p[6];
	memcpy(ip->src, p + 8, 16);
	memcpy(ip->dst, p + 24, 16);
	if (ip->proto == 44)
		return FRAME_FRAGMENT;
	if (ip6_exthdr(ip->proto))
		return FRAME_EXTHDR;
	ip->l4 = p + IP6_HDR;
	ip->l4len = pl;
	return l4_check(ip);
}

enum frame_kind frame_parse(uint8_t *frame, size_t len, struct frame_ip *ip)
{
	if (len < ETH_HDR)
		return FRAME_BAD;
	switch (get16(frame + 12)) {
	case ETHERTYPE_IP4:
		return parse4(frame + ETH_HDR, len - ETH_HDR, ip);
	case ETHERTYPE_IP6:
		return parse6(frame + ETH_HDR, len - ETH_HDR, ip);
	case ETHERTYPE_ARP:
		return FRAME_ARP;
	default:
		return FRAME_OTHER;
	}
}

static void l4_checksum(int family, const uint8_t *src, const uint8_t *dst, uint8_t proto,
			uint8_t *l4, size_t len)
{
	size_t alen = family == AF_INET ? 4 : 16, off;
	uint32_t s = 0;
	uint16_t c;

	switch (proto) {
	case IPPROTO_TCP_: off = 16; break;
	case IPPROTO_UDP_: off = 6; break;
	default: off = 2; break; /* ICMP, ICMPv6 */
	}
	l4[off] = l4[off + 1] = 0;
	if (proto != IPPROTO_ICMP_) { /* ICMPv4 has no pseudo header */
		s = sum16(src, alen, s);
		s = sum16(dst, alen, s);
		s += proto;
		s += (uint32_t)len;
	}
	s = sum16(l4, len, s);
	c = fold(s);
	if (proto == IPPROTO_UDP_ && c == 0)
		c = 0xffff;
	put16(l4 + off, c);
}

bool frame_l4_csum_ok(const struct frame_ip *ip)
{
	size_t alen = ip->family == AF_INET ? 4 : 16;
	uint32_t s = 0;

	if (ip->proto == IPPROTO_UDP_ && ip->family == AF_INET && get16(ip->l4 + 6) == 0)
		return true;
	if (ip->proto != IPPROTO_ICMP_) { /* ICMPv4 has no pseudo header */
		s = sum16(ip->src, alen, s);
		s = sum16(ip->dst, alen, s);
		s += ip->proto;
		s += (uint32_t)ip->l4len;
	}
	s = sum16(ip->l4, ip->l4len, s);
	return fold(s) == 0;
}

size_t frame_wrap(uint8_t *out, size_t cap, const uint8_t dmac[6], const uint8_t smac[6],
		  int family, const uint8_t *src, const uint8_t *dst, uint8_t proto,
		  const uint8_t *l4, size_t l4len)
{
	size_t iph = family == AF_INET ? IP4_HDR : IP6_HDR;
	uint8_t *ip = out + ETH_HDR, *payload = ip + iph;

	if ((family != AF_INET && family != AF_INET6) || l4len > 0xffff - IP4_HDR ||
	    cap < ETH_HDR + iph || l4len > cap - ETH_HDR - iph ||
	    l4len < (proto == IPPROTO_TCP_ ? TCP_HDR : proto == IPPROTO_UDP_ ? UDP_HDR : 4))
		return 0;
	if (proto != IPPROTO_TCP_ && proto != IPPROTO_UDP_ &&
	    proto != (family == AF_INET ? IPPROTO_ICMP_ : IPPROTO_ICMP6_))
		return 0;
	memmove(payload, l4, l4len);
	memcpy(out, dmac, 6);
	memcpy(out + 6, smac, 6);
	if (family == AF_INET) {
		put16(out + 12, ETHERTYPE_IP4);
		memset(ip, 0, IP4_HDR);
		ip[0] = 0x45;
		put16(ip + 2, (uint16_t)(IP4_HDR + l4len));
		ip[6] = 0x40; /* DF */
		ip[8] = 64;
		ip[9] = proto;
		memcpy(ip + 12, src, 4);
		memcpy(ip + 16, dst, 4);
		put16(ip + 10, fold(sum16(ip, IP4_HDR, 0)));
	} else {
		put16(out + 12, ETHERTYPE_IP6);
		memset(ip, 0, IP6_HDR);
		ip[0] = 0x60;
		put16(ip + 4, (uint16_t)l4len);
		ip[6] = proto;
		ip[7] = proto == IPPROTO_ICMP6_ ? 255 : 64;
		memcpy(ip + 8, src, 16);
		memcpy(ip + 24, dst, 16);
	}
	return ETH_HDR + iph + l4len;
}

size_t frame_build(uint8_t *out, size_t cap, const uint8_t dmac[6], const uint8_t smac[6],
		   int family, const uint8_t *src, const uint8_t *dst, uint8_t proto,
		   const uint8_t *l4, size_t l4len)
{
	size_t n = frame_wrap(out, cap, dmac, smac, family, src, dst, proto, l4, l4len);

	if (n)
		l4_checksum(family, src, dst, proto, out + n - l4len, l4len);
	return n;
}

uint16_t csum_adjust(uint16_t csum, const uint8_t *old, size_t oldlen, const uint8_t *new,
		     size_t newlen)
{
	uint32_t s = (uint16_t)~csum;

	/* RFC 1624: HC' = ~(~HC + ~m + m'), word by word; lengths are even. */
	for (size_t i = 0; i + 1 < oldlen; i += 2)
		s += (uint16_t)~get16(old + i);
	for (size_t i = 0; i + 1 < newlen; i += 2)
		s += get16(new + i);
	return fold(s);
}

void tcp_header(uint8_t *l4, uint16_t sport, uint16_t dport, uint32_t seq, uint32_t ack,
		uint8_t flags, uint16_t window)
{
	memset(l4, 0, TCP_HDR);
	put16(l4, sport);
	put16(l4 + 2, dport);
	put32(l4 + 4, seq);
	put32(l4 + 8, ack);
	l4[12] = (TCP_HDR / 4) << 4;
	l4[13] = flags;
	put16(l4 + 14, window);
}

void tcp_reset_for(const uint8_t *seg, size_t seglen, uint8_t *l4)
{
	uint8_t f = seg[13];
	size_t dlen = seglen - tcp_hdr_len(seg);

	if (f & TCP_ACK)
		tcp_header(l4, get16(seg + 2), get16(seg), get32(seg + 8), 0, TCP_RST, 0);
	else
		tcp_header(l4, get16(seg + 2), get16(seg), 0,
			   get32(seg + 4) + (uint32_t)dlen + !!(f & TCP_SYN) + !!(f & TCP_FIN),
			   TCP_RST | TCP_ACK, 0);
}

void tcp_clamp_mss(uint8_t *seg, size_t hdrlen, uint16_t mss)
{
	size_t o = TCP_HDR;

	while (o < hdrlen) {
		uint8_t kind = seg[o];

		if (kind == 0)
			return;
		if (kind == 1) {
			o++;
			continue;
		}
		if (o + 1 >= hdrlen || seg[o + 1] < 2 || seg[o + 1] > hdrlen - o)
			return;
		if (kind == 2 && seg[o + 1] == 4 && get16(seg + o + 2) > mss)
			put16(seg + o + 2, mss);
		o += seg[o + 1];
	}
}

