/*
 * Ethernet, IPv4/IPv6, TCP and UDP framing for kiln-net: parse a frame the
 * guest sent (hostile: every length is checked against what was received)
 * and build frames for the guest or for libslirp, checksums included.
 * Pure code, no sockets.
 */
#ifndef KILN_NET_FRAME_H
#define KILN_NET_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ETH_HDR	      14
#define ETHERTYPE_IP4 0x0800
#define ETHERTYPE_ARP 0x0806
#define ETHERTYPE_IP6 0x86dd
#define IP4_HDR	      20
#define IP6_HDR	      40
#define TCP_HDR	      20
#define UDP_HDR	      8
#define IPPROTO_TCP_  6
#define IPPROTO_UDP_  17
#define IPPROTO_ICMP_ 1
#define IPPROTO_ICMP6_ 58
/* Largest frame kiln-net builds or accepts (MTU 1500 + Ethernet header). */
#define FRAME_MAX     1514

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_PSH 0x08
#define TCP_ACK 0x10

/* A parsed IP packet inside a frame. Pointers point into the frame. */
struct frame_ip {
	int family;	   /* AF_INET or AF_INET6 */
	uint8_t proto;	   /* TCP, UDP, ICMP or ICMPv6 */
	uint8_t src[16];   /* IPv4 in the first 4 bytes */
	uint8_t dst[16];
	uint8_t *l4;	   /* transport header + payload */
	size_t l4len;
};

enum frame_kind {
	FRAME_IP = 0,	  /* an unfragmented IPv4/IPv6 packet; ip is filled */
	FRAME_ARP,	  /* ARP (left to the caller) */
	FRAME_OTHER,	  /* another ethertype: drop */
	FRAME_BAD,	  /* malformed, truncated or inconsistent lengths: drop */
	FRAME_FRAGMENT,	  /* an IPv4 fragment or an IPv6 fragment header: drop (never reassembled) */
	FRAME_EXTHDR,	  /* IPv6 with an extension header (hop-by-hop, routing, ...): drop */
	FRAME_PROTO,	  /* another IP protocol (GRE, SCTP, ESP over IPv4, ICMP in IPv6, ...) */
	FRAME_BAD_CSUM,	  /* an IPv4 header checksum that does not add up */
};
#define FRAME_KIND_MAX FRAME_BAD_CSUM

/* Classify and parse frame[0..len). For FRAME_IP, the transport header has
 * been checked to fit: TCP's data offset, UDP's length. For FRAME_FRAGMENT,
 * FRAME_EXTHDR and FRAME_PROTO, ip->family, proto, src and dst are filled
 * (l4 is not). */
enum frame_kind frame_parse(uint8_t *frame, size_t len, struct frame_ip *ip);

/* Does the transport checksum of a FRAME_IP packet add up? (UDP over IPv4
 * may leave it 0: no checksum; over IPv6 it is mandatory.) */
bool frame_l4_csum_ok(const struct frame_ip *ip);

static inline uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

/* TCP header fields of ip->l4 (frame_parse checked the header fits). */
static inline size_t tcp_hdr_len(const uint8_t *l4) { return (size_t)(l4[12] >> 4) * 4; }

/*
 * Build dmac/smac + an IP header (TTL/hop limit 64, 255 for ICMPv6) around
 * l4[0..l4len) into out (cap bytes), and compute the transport checksum.
 * l4 may alias out's payload area. Returns the frame length, or 0 when it
 * does not fit or family/proto is not supported.
 */
size_t frame_build(uint8_t *out, size_t cap, const uint8_t dmac[6], const uint8_t smac[6],
		   int family, const uint8_t *src, const uint8_t *dst, uint8_t proto,
		   const uint8_t *l4, size_t l4len);

/* frame_build without the transport checksum: l4's own is kept. */
size_t frame_wrap(uint8_t *out, size_t cap, const uint8_t dmac[6], const uint8_t smac[6],
		  int family, const uint8_t *src, const uint8_t *dst, uint8_t proto,
		  const uint8_t *l4, size_t l4len);

/* A checksum after the 16-bit words old[0..oldlen) were replaced by
 * new[0..newlen) in what it covers (RFC 1624; even lengths; the two sets may
 * differ in size, as IPv4 and IPv6 pseudo-header addresses do). */
uint16_t csum_adjust(uint16_t csum, const uint8_t *old, size_t oldlen, const uint8_t *new,
		     size_t newlen);

/* A bare TCP header (no options) with these fields, into l4[TCP_HDR]. */
void tcp_header(uint8_t *l4, uint16_t sport, uint16_t dport, uint32_t seq, uint32_t ack,
		uint8_t flags, uint16_t window);

/*
 * The RST answering a TCP segment that has no connection (RFC 793): with
 * ACK set in seg, seq = its ack; otherwise ack = its seq + its length.
 * seg/seglen is the segment (header + payload). Writes TCP_HDR bytes to l4.
 */
void tcp_reset_for(const uint8_t *seg, size_t seglen, uint8_t *l4);

/* Lower the MSS option of a SYN segment to at most mss (options are walked
 * bounded; a malformed option list is left alone). */
void tcp_clamp_mss(uint8_t *seg, size_t hdrlen, uint16_t mss);

#endif
