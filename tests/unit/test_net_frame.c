/*
 * kiln-net's framing (src/net/frame.c) and token bucket (src/net/bucket.c).
 * Frames are built here byte by byte, independently of frame_build, and
 * checksums are recomputed here with a separate implementation. Every parse
 * of a cut or mutated frame runs on a heap copy of exactly that many bytes,
 * so an out-of-bounds read shows up under ASan (make SANITIZE=1).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "net/bucket.h"
#include "net/frame.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

static const uint8_t MAC_GUEST[6] = { 0x02, 0x6b, 0x6c, 0x6e, 0x00, 0x01 };
static const uint8_t MAC_GW[6] = { 0x52, 0x55, 0x0a, 0x00, 0x02, 0x02 };
static const uint8_t A4_GUEST[4] = { 10, 0, 2, 15 };
static const uint8_t A4_FAR[4] = { 203, 0, 113, 7 };
static const uint8_t A6_GUEST[16] = { 0xfd, 0x00, [15] = 0x15 };
static const uint8_t A6_FAR[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 0x07 };

/* ---- an independent Internet checksum ---- */

struct csum {
	uint64_t acc;
	bool odd; /* the next byte is the low half of a word */
};

static void cs_add(struct csum *c, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		c->acc += c->odd ? p[i] : (uint64_t)p[i] << 8;
		c->odd = !c->odd;
	}
}

static uint16_t cs_fold(const struct csum *c) /* ones' complement sum, not inverted */
{
	uint64_t s = c->acc;

	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)s;
}

static uint16_t cs_final(const struct csum *c) { return (uint16_t)~cs_fold(c); }

static uint16_t ip_csum(const uint8_t *p, size_t n)
{
	struct csum c = { 0 };

	cs_add(&c, p, n);
	return cs_final(&c);
}

/* The pseudo header for TCP/UDP/ICMPv6 (RFC 793/768, RFC 8200 8.1). */
static void cs_pseudo(struct csum *c, int family, const uint8_t *src, const uint8_t *dst,
		      uint8_t proto, size_t l4len)
{
	if (family == AF_INET) {
		uint8_t ph[12];

		memcpy(ph, src, 4);
		memcpy(ph + 4, dst, 4);
		ph[8] = 0;
		ph[9] = proto;
		ph[10] = (uint8_t)(l4len >> 8);
		ph[11] = (uint8_t)l4len;
		cs_add(c, ph, sizeof(ph));
	} else {
		uint8_t ph[40];

		memcpy(ph, src, 16);
		memcpy(ph + 16, dst, 16);
		ph[32] = (uint8_t)(l4len >> 24);
		ph[33] = (uint8_t)(l4len >> 16);
		ph[34] = (uint8_t)(l4len >> 8);
		ph[35] = (uint8_t)l4len;
		ph[36] = ph[37] = ph[38] = 0;
		ph[39] = proto;
		cs_add(c, ph, sizeof(ph));
	}
}

static size_t csum_off(uint8_t proto)
{
	return proto == IPPROTO_TCP_ ? 16 : proto == IPPROTO_UDP_ ? 6 : 2;
}

/* ---- frames built by hand ---- */

struct pkt {
	uint8_t b[2048];
	size_t n;
};

static void w16(uint8_t *p, unsigned v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void w32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static unsigned r16(const uint8_t *p) { return (unsigned)p[0] << 8 | p[1]; }
static uint32_t r32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void eth(struct pkt *f, unsigned type)
{
	memcpy(f->b, MAC_GW, 6);
	memcpy(f->b + 6, MAC_GUEST, 6);
	w16(f->b + 12, type);
	f->n = 14;
}

/* IPv4 around l4: `opts` bytes of IP options (NOPs), flags/fragment field `frag`. */
static void ip4(struct pkt *f, uint8_t proto, const uint8_t *l4, size_t l4len, size_t opts,
		unsigned frag)
{
	uint8_t *ip = f->b + 14;
	size_t ihl = 20 + opts;

	assert_true(opts % 4 == 0 && opts <= 40);
	eth(f, 0x0800);
	memset(ip, 0, ihl);
	ip[0] = (uint8_t)(0x40 | ihl / 4);
	w16(ip + 2, (unsigned)(ihl + l4len));
	w16(ip + 4, 0x1234);
	w16(ip + 6, frag);
	ip[8] = 64;
	ip[9] = proto;
	memcpy(ip + 12, A4_GUEST, 4);
	memcpy(ip + 16, A4_FAR, 4);
	memset(ip + 20, 1, opts); /* NOP options */
	w16(ip + 10, ip_csum(ip, ihl));
	memcpy(ip + ihl, l4, l4len);
	f->n = 14 + ihl + l4len;
}

static void ip6(struct pkt *f, uint8_t nxt, const uint8_t *l4, size_t l4len)
{
	uint8_t *ip = f->b + 14;

	eth(f, 0x86dd);
	memset(ip, 0, 40);
	ip[0] = 0x60;
	w16(ip + 4, (unsigned)l4len);
	ip[6] = nxt;
	ip[7] = 64;
	memcpy(ip + 8, A6_GUEST, 16);
	memcpy(ip + 24, A6_FAR, 16);
	memcpy(ip + 40, l4, l4len);
	f->n = 54 + l4len;
}

/* A TCP segment: `opts` option bytes (a real SYN's when 20, else NOPs). */
static size_t tcp_seg(uint8_t *s, uint16_t sport, uint16_t dport, uint32_t seq, uint32_t ack,
		      uint8_t flags, size_t opts, const void *data, size_t dlen)
{
	static const uint8_t syn_opts[20] = { 2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1,
					      0, 0, 0, 0, 1, 3, 3, 7 };

	assert_true(opts % 4 == 0 && opts <= 40);
	memset(s, 0, 20 + opts);
	w16(s, sport);
	w16(s + 2, dport);
	w32(s + 4, seq);
	w32(s + 8, ack);
	s[12] = (uint8_t)(((20 + opts) / 4) << 4);
	s[13] = flags;
	w16(s + 14, 64240);
	if (opts == 20)
		memcpy(s + 20, syn_opts, 20);
	else
		memset(s + 20, 1, opts);
	if (dlen)
		memcpy(s + 20 + opts, data, dlen);
	return 20 + opts + dlen;
}

static size_t udp_dgram(uint8_t *s, uint16_t sport, uint16_t dport, const void *data, size_t dlen)
{
	w16(s, sport);
	w16(s + 2, dport);
	w16(s + 4, (unsigned)(8 + dlen));
	w16(s + 6, 0);
	if (dlen)
		memcpy(s + 8, data, dlen);
	return 8 + dlen;
}

static size_t icmp_echo(uint8_t *s, uint8_t type, size_t dlen)
{
	s[0] = type;
	s[1] = 0;
	w16(s + 2, 0);
	w16(s + 4, 0x4242);
	w16(s + 6, 1);
	for (size_t i = 0; i < dlen; i++)
		s[8 + i] = (uint8_t)i;
	return 8 + dlen;
}

static void arp_request(struct pkt *f)
{
	uint8_t *a = f->b + 14;

	eth(f, 0x0806);
	memset(f->b, 0xff, 6);
	w16(a, 1);
	w16(a + 2, 0x0800);
	a[4] = 6;
	a[5] = 4;
	w16(a + 6, 1);
	memcpy(a + 8, MAC_GUEST, 6);
	memcpy(a + 14, A4_GUEST, 4);
	memset(a + 18, 0, 6);
	a[24] = 10; a[25] = 0; a[26] = 2; a[27] = 2;
	f->n = 14 + 28;
}

/* Parse a heap copy of exactly len bytes of f. */
static enum frame_kind parse_exact(const uint8_t *f, size_t len, struct frame_ip *ip,
				   uint8_t **copy_out)
{
	uint8_t *copy = malloc(len ? len : 1);
	enum frame_kind k;

	assert_non_null(copy);
	memcpy(copy, f, len);
	k = frame_parse(copy, len, ip);
	*copy_out = copy;
	return k;
}

/* What a FRAME_IP result promises (frame.h), checked against the buffer. */
static void check_ip_result(const uint8_t *buf, size_t len, const struct frame_ip *ip)
{
	size_t iph = ip->family == AF_INET ? 20 : 40;

	assert_true(ip->family == AF_INET || ip->family == AF_INET6);
	assert_true(ip->l4 >= buf + ETH_HDR + iph);
	assert_true(ip->l4 <= buf + len);
	assert_true(ip->l4len <= (size_t)(buf + len - ip->l4));
	switch (ip->proto) {
	case IPPROTO_TCP_:
		assert_true(ip->l4len >= TCP_HDR);
		assert_true(tcp_hdr_len(ip->l4) >= TCP_HDR);
		assert_true(tcp_hdr_len(ip->l4) <= ip->l4len);
		break;
	case IPPROTO_UDP_:
		assert_true(ip->l4len >= UDP_HDR);
		assert_int_equal(r16(ip->l4 + 4), ip->l4len);
		break;
	case IPPROTO_ICMP_:
		assert_int_equal(ip->family, AF_INET);
		assert_true(ip->l4len >= 4);
		break;
	case IPPROTO_ICMP6_:
		assert_int_equal(ip->family, AF_INET6);
		assert_true(ip->l4len >= 4);
		break;
	default:
		fail_msg("FRAME_IP with protocol %u", ip->proto);
	}
}

/* ---- frame_parse: good frames ---- */

static void test_parse_ipv4_tcp(void **state)
{
	struct pkt f;
	uint8_t seg[100], *c;
	struct frame_ip ip;
	size_t n;

	(void)state;
	n = tcp_seg(seg, 40000, 80, 1000, 0, TCP_SYN, 20, NULL, 0);
	ip4(&f, IPPROTO_TCP_, seg, n, 0, 0x4000);
	assert_int_equal(parse_exact(f.b, f.n, &ip, &c), FRAME_IP);
	assert_int_equal(ip.family, AF_INET);
	assert_int_equal(ip.proto, IPPROTO_TCP_);
	assert_memory_equal(ip.src, A4_GUEST, 4);
	assert_memory_equal(ip.dst, A4_FAR, 4);
	assert_ptr_equal(ip.l4, c + 34);
	assert_int_equal(ip.l4len, 40);
	assert_int_equal(tcp_hdr_len(ip.l4), 40);
	check_ip_result(c, f.n, &ip);
	free(c);

	/* With data, and with IP options (IHL 8): l4 starts after them. */
	n = tcp_seg(seg, 40000, 80, 1000, 1, TCP_ACK | TCP_PSH, 0, "GET / HTTP/1.1\r\n", 16);
	ip4(&f, IPPROTO_TCP_, seg, n, 12, 0);
	assert_int_equal(parse_exact(f.b, f.n, &ip, &c), FRAME_IP);
	assert_ptr_equal(ip.l4, c + 14 + 32);
	assert_int_equal(ip.l4len, 36);
	assert_memory_equal(ip.l4 + 20, "GET / HTTP/1.1\r\n", 16);
	free(c);

	/* Ethernet padding after the IP packet: lengths come from the IP header. */
	n = tcp_seg(seg, 40000, 80, 1000, 1, TCP_ACK, 0, NULL, 0);
	ip4(&f, IPPROTO_TCP_, seg, n, 0, 0);
	memset(f.b + f.n, 0xee, 6);
	f.n = 60;
	assert_int_equal(parse_exact(f.b, f.n, &ip, &c), FRAME_IP);
	assert_int_equal(ip.l4len, 20);
	free(c);
}

static void test_parse_ipv4_udp_icmp(void **state)
{
	struct pkt f;
	uint8_t l4[100], *c;
	struct frame_ip ip;
	size_t n;

	(void)state;
	n = udp_dgram(l4, 5353, 53, "\x12\x34hello", 7);
	ip4(&f, IPPROTO_UDP_, l4, n, 0, 0);
	assert_int_equal(parse_exact(f.b, f.n, &ip, &c), FRAME_IP);
	assert_int_equal(ip.proto, IPPROTO_UDP_);
	assert_int_equal(ip.l4len, 15);
	assert_memory_equal(ip.l4 + 8, "\x12\x34hello", 7);
	free(c);

	/* An empty datagram. */
	n = udp_dgram(l4, 1, 2, NULL, 0);
	ip4(&f, IPPROTO_UDP_, l4, n, 0, 0);
	assert_int_equal(parse_exact(f.b, f.n, &ip, &c), FRAME_IP);
	assert_int_equal(ip.l4len, 8);
	free(c);

	n = icmp_echo(l4, 8, 56);
	ip4(&f, IPPROTO_ICMP_, l4, n, 0, 0);
	assert_int_equal(parse_exact(f.b, f.n, &ip, &c), FRAME_IP);
	assert_int_equal(ip.proto, IPPROTO_ICMP_);
	assert_int_equal(ip.l4len, 64);
	assert_int_equal(ip.l4[0], 8);
	free(c);
}

static void test_parse_ipv6(void **state)
{
	struct pkt f;
	uint8_t l4[100], *c;
	struct frame_ip ip;
	size_t n;

	(void)state;
	n = tcp_seg(l4, 40001, 443, 7, 0, TCP_SYN, 20, NULL, 0);
	ip6(&f, IPPROTO_TCP_, l4, n);
	assert_int_equal(parse_exact(f.b, f.n, &ip, &c), FRAME_IP);
	assert_int_equal(ip.family, AF_INET6);
	assert_int_equal(ip.proto, IPPROTO_TCP_);
	assert_memory_equal(ip.src, A6_GUEST, 16);
	assert_memory_equal(ip.dst, A6_FAR, 16);
	assert_ptr_equal(ip.l4, c + 54);
	assert_int_equal(ip.l4len, 40);
	free(c);

	n = udp_dgram(l4, 5353, 53, "abc", 3);
	ip6(&f, IPPROTO_UDP_, l4, n);
	assert_int_equal(parse_exact(f.b, f.n, &ip, &c), FRAME_IP);
	assert_int_equal(ip.l4len, 11);
	free(c);

	n = icmp_echo(l4, 135, 16); /* shaped like a Neighbor Solicitation */
	ip6(&f, IPPROTO_ICMP6_, l4, n);
	assert_int_equal(parse_exact(f.b, f.n, &ip, &c), FRAME_IP);
	assert_int_equal(ip.proto, IPPROTO_ICMP6_);
	assert_int_equal(ip.l4len, 24);
	free(c);

	/* Ethernet padding after the payload: payload length rules. */
	n = tcp_seg(l4, 1, 2, 3, 4, TCP_ACK, 0, NULL, 0);
	ip6(&f, IPPROTO_TCP_, l4, n);
	memset(f.b + f.n, 0, 10);
	f.n += 10;
	assert_int_equal(parse_exact(f.b, f.n, &ip, &c), FRAME_IP);
	assert_int_equal(ip.l4len, 20);
	free(c);
}

static void test_parse_other_kinds(void **state)
{
	struct pkt f;
	uint8_t *c;
	struct frame_ip ip;

	(void)state;
	arp_request(&f);
	assert_int_equal(parse_exact(f.b, f.n, &ip, &c), FRAME_ARP);
	free(c);
	/* frame_parse leaves ARP's body to the caller: a bare header is ARP too. */
	assert_int_equal(parse_exact(f.b, 14, &ip, &c), FRAME_ARP);
	free(c);
	eth(&f, 0x88cc); /* LLDP */
	memset(f.b + 14, 0, 50);
	f.n = 64;
	assert_int_equal(parse_exact(f.b, f.n, &ip, &c), FRAME_OTHER);
	free(c);
	eth(&f, 0x8100); /* a VLAN tag is not looked into */
	assert_int_equal(parse_exact(f.b, f.n, &ip, &c), FRAME_OTHER);
	free(c);
	for (size_t n = 0; n < ETH_HDR; n++) {
		assert_int_equal(parse_exact(f.b, n, &ip, &c), FRAME_BAD);
		free(c);
	}
}

/* ---- frame_parse: malformed ---- */

static void test_parse_ipv4_header_errors(void **state)
{
	struct pkt f, g;
	uint8_t seg[64], *c;
	struct frame_ip ip;
	size_t n = tcp_seg(seg, 40000, 80, 1, 0, TCP_SYN, 0, NULL, 0);

	(void)state;
	ip4(&f, IPPROTO_TCP_, seg, n, 0, 0);

	/* Header checksum: any single flipped bit in the header is caught. */
	for (size_t byte = 0; byte < 20; byte++)
		for (int bit = 0; bit < 8; bit++) {
			enum frame_kind k;

			g = f;
			g.b[14 + byte] ^= (uint8_t)(1 << bit);
			k = parse_exact(g.b, g.n, &ip, &c);
			assert_true(k == FRAME_BAD || k == FRAME_BAD_CSUM);
			free(c);
		}
	/* A wrong checksum only. */
	g = f;
	w16(g.b + 24, r16(g.b + 24) ^ 0x0101);
	assert_int_equal(parse_exact(g.b, g.n, &ip, &c), FRAME_BAD_CSUM);
	free(c);

	/* Version 6 inside ethertype IPv4; IHL below 5; total length lies. */
	struct {
		size_t off;
		unsigned v;
		bool wide;
	} lies[] = {
		{ 0, 0x65, false }, { 0, 0x44, false }, { 0, 0x40, false }, { 0, 0x4f, false },
		{ 2, 19, true },    { 2, 0, true },	{ 2, 41, true },    { 2, 0xffff, true },
	};
	for (size_t i = 0; i < N_ELEMS(lies); i++) {
		uint8_t *ipb;

		g = f;
		ipb = g.b + 14;
		if (lies[i].wide)
			w16(ipb + lies[i].off, lies[i].v);
		else
			ipb[lies[i].off] = (uint8_t)lies[i].v;
		w16(ipb + 10, 0);
		/* Recompute over what the header claims (bounded by the frame), so
		 * only the lie itself is wrong. */
		{
			size_t ihl = (size_t)(ipb[0] & 15) * 4;

			if (ihl >= 20 && ihl <= g.n - 14)
				w16(ipb + 10, ip_csum(ipb, ihl));
		}
		assert_int_equal(parse_exact(g.b, g.n, &ip, &c), FRAME_BAD);
		free(c);
	}

	/* IHL 15 (60 bytes) in a frame whose total length is only 40. */
	g = f;
	g.b[14] = 0x4f;
	w16(g.b + 24, 0);
	memset(g.b + 34, 1, 40);
	memcpy(g.b + 74, seg, 20);
	g.n = 14 + 60 + 20;
	w16(g.b + 16, 60 + 20);
	w16(g.b + 24, ip_csum(g.b + 14, 60));
	assert_int_equal(parse_exact(g.b, g.n, &ip, &c), FRAME_IP); /* consistent: ok */
	assert_ptr_equal(ip.l4, c + 74);
	free(c);
	w16(g.b + 16, 40);
	w16(g.b + 24, 0);
	w16(g.b + 24, ip_csum(g.b + 14, 60));
	assert_int_equal(parse_exact(g.b, g.n, &ip, &c), FRAME_BAD); /* total < IHL */
	free(c);
}

static void test_parse_fragments(void **state)
{
	struct pkt f;
	uint8_t l4[64], *c;
	struct frame_ip ip;
	size_t n = udp_dgram(l4, 1000, 2000, "xxxxxxxx", 8);
	static const unsigned frag[] = { 0x2000, 0x0001, 0x2001, 0x1fff, 0x6000, 0x4001, 0x3fff };

	(void)state;
	for (size_t i = 0; i < N_ELEMS(frag); i++) {
		ip4(&f, IPPROTO_UDP_, l4, n, 0, frag[i]);
		assert_int_equal(parse_exact(f.b, f.n, &ip, &c), FRAME_FRAGMENT);
		free(c);
	}
	/* DF alone, and the reserved bit alone, are not fragments. */
	ip4(&f, IPPROTO_UDP_, l4, n, 0, 0x4000);
	assert_int_equal(parse_exact(f.b, f.n, &ip, &c), FRAME_IP);
	free(c);
	ip4(&f, IPPROTO_UDP_, l4, n, 0, 0x8000);
	assert_int_equal(parse_exact(f.b, f.n, &ip, &c), FRAME_IP);
	free(c);
	/* A fragment with a broken header checksum is a bad checksum first. */
	ip4(&f, IPPROTO_UDP_, l4, n, 0, 0x2000);
	f.b[24] ^= 0x80;
	assert_int_equal(parse_exact(f.b, f.n, &ip, &c), FRAME_BAD_CSUM);
	free(c);
	/* A later fragment may carry anything, even an impossible UDP header. */
	memset(l4, 0xff, sizeof(l4));
	ip4(&f, IPPROTO_UDP_, l4, 3, 0, 0x00b9);
	assert_int_equal(parse_exact(f.b, f.n, &ip, &c), FRAME_FRAGMENT);
	free(c);
}

static void test_parse_next_headers(void **state)
{
	struct pkt f;
	uint8_t l4[64], *c;
	struct frame_ip ip;
	/* hop-by-hop, routing, ESP, AH, no next header, destination options,
	 * mobility, HIP, shim6, experimental. */
	static const uint8_t ext[] = { 0, 43, 50, 51, 59, 60, 135, 139, 140, 253, 254 };
	/* ICMP (v4) inside IPv6, GRE, SCTP, UDP-Lite, IPv4/IPv6 in IPv6, OSPF. */
	static const uint8_t other6[] = { 1, 47, 132, 136, 4, 41, 89, 255 };

	(void)state;
	memset(l4, 0, sizeof(l4));
	l4[1] = 0; /* the next header's "length" */
	for (size_t i = 0; i < N_ELEMS(ext); i++) {
		ip6(&f, ext[i], l4, 48);
		assert_int_equal(parse_exact(f.b, f.n, &ip, &c), FRAME_EXTHDR);
		assert_int_equal(ip.proto, ext[i]);
		assert_int_equal(ip.family, AF_INET6);
		free(c);
	}
	for (size_t i = 0; i < N_ELEMS(other6); i++) {
		ip6(&f, other6[i], l4, 48);
		assert_int_equal(parse_exact(f.b, f.n, &ip, &c), FRAME_PROTO);
		assert_int_equal(ip.proto, other6[i]);
		free(c);
	}
	/* The IPv6 fragment header is a fragment. */
	ip6(&f, 44, l4, 48);
	assert_int_equal(parse_exact(f.b, f.n, &ip, &c), FRAME_FRAGMENT);
	free(c);
	/* IPv4 carrying ICMPv6, or another protocol: FRAME_PROTO, with the
	 * addresses and the protocol for the audit line. */
	static const uint8_t odd4[] = { IPPROTO_ICMP6_, 47, 132, 50, 0, 255 };
	for (size_t i = 0; i < N_ELEMS(odd4); i++) {
		ip4(&f, odd4[i], l4, 24, 0, 0);
		assert_int_equal(parse_exact(f.b, f.n, &ip, &c), FRAME_PROTO);
		assert_int_equal(ip.proto, odd4[i]);
		assert_memory_equal(ip.dst, A4_FAR, 4);
		free(c);
	}

	/* IPv6 payload length beyond the frame; version 4 under ethertype IPv6. */
	ip6(&f, IPPROTO_UDP_, l4, udp_dgram(l4, 1, 2, NULL, 0));
	w16(f.b + 18, 9);
	assert_int_equal(parse_exact(f.b, f.n, &ip, &c), FRAME_BAD);
	free(c);
	w16(f.b + 18, 0xffff);
	assert_int_equal(parse_exact(f.b, f.n, &ip, &c), FRAME_BAD);
	free(c);
	w16(f.b + 18, 8);
	f.b[14] = 0x40;
	assert_int_equal(parse_exact(f.b, f.n, &ip, &c), FRAME_BAD);
	free(c);
	/* Payload length 0 with TCP/UDP/ICMPv6 next header: no room for them. */
	static const uint8_t nx[] = { IPPROTO_TCP_, IPPROTO_UDP_, IPPROTO_ICMP6_ };
	for (size_t i = 0; i < N_ELEMS(nx); i++) {
		ip6(&f, nx[i], l4, 0);
		assert_int_equal(parse_exact(f.b, f.n, &ip, &c), FRAME_BAD);
		free(c);
	}
}

static void test_parse_tcp_offsets(void **state)
{
	struct pkt f;
	uint8_t seg[128], *c;
	struct frame_ip ip;
	size_t n;

	(void)state;
	for (unsigned doff = 0; doff < 16; doff++) {
		for (int v6 = 0; v6 < 2; v6++) {
			n = tcp_seg(seg, 1, 80, 1, 0, TCP_SYN, 20, "abcd", 4); /* 44 bytes */
			seg[12] = (uint8_t)(doff << 4 | (seg[12] & 15));
			if (v6)
				ip6(&f, IPPROTO_TCP_, seg, n);
			else
				ip4(&f, IPPROTO_TCP_, seg, n, 0, 0);
			enum frame_kind k = parse_exact(f.b, f.n, &ip, &c);

			if (doff < 5 || doff * 4 > n)
				assert_int_equal(k, FRAME_BAD);
			else
				assert_int_equal(k, FRAME_IP);
			if (k == FRAME_IP)
				check_ip_result(c, f.n, &ip);
			free(c);
		}
	}
	/* The data offset reaching exactly the segment's end: no payload, fine. */
	n = tcp_seg(seg, 1, 80, 1, 0, TCP_SYN, 40, NULL, 0);
	ip4(&f, IPPROTO_TCP_, seg, n, 0, 0);
	assert_int_equal(parse_exact(f.b, f.n, &ip, &c), FRAME_IP);
	assert_int_equal(ip.l4len, 60);
	free(c);
	/* A 20-byte header claimed, 19 bytes sent (IP total length says so). */
	ip4(&f, IPPROTO_TCP_, seg, 19, 0, 0);
	assert_int_equal(parse_exact(f.b, f.n, &ip, &c), FRAME_BAD);
	free(c);
}

static void test_parse_udp_length_lies(void **state)
{
	struct pkt f;
	uint8_t l4[64], *c;
	struct frame_ip ip;

	(void)state;
	for (unsigned claim = 0; claim < 40; claim++) {
		for (int v6 = 0; v6 < 2; v6++) {
			size_t n = udp_dgram(l4, 5353, 53, "0123456789abcdef", 16); /* 24 bytes */
			enum frame_kind k;

			w16(l4 + 4, claim);
			if (v6)
				ip6(&f, IPPROTO_UDP_, l4, n);
			else
				ip4(&f, IPPROTO_UDP_, l4, n, 0, 0);
			k = parse_exact(f.b, f.n, &ip, &c);
			if (claim < 8 || claim > n) {
				assert_int_equal(k, FRAME_BAD);
			} else {
				/* Shorter than the IP payload: trimmed to its own length. */
				assert_int_equal(k, FRAME_IP);
				assert_int_equal(ip.l4len, claim);
				check_ip_result(c, f.n, &ip);
			}
			free(c);
		}
	}
	for (unsigned claim = 0xfff0; claim; claim++) { /* up to 0xffff */
		size_t n = udp_dgram(l4, 5353, 53, "x", 1);

		w16(l4 + 4, claim);
		ip4(&f, IPPROTO_UDP_, l4, n, 0, 0);
		assert_int_equal(parse_exact(f.b, f.n, &ip, &c), FRAME_BAD);
		free(c);
		if (claim == 0xffff)
			break;
	}
	/* ICMP shorter than its 4-byte header. */
	for (size_t n = 0; n < 4; n++) {
		ip4(&f, IPPROTO_ICMP_, l4, n, 0, 0);
		assert_int_equal(parse_exact(f.b, f.n, &ip, &c), FRAME_BAD);
		free(c);
		ip6(&f, IPPROTO_ICMP6_, l4, n);
		assert_int_equal(parse_exact(f.b, f.n, &ip, &c), FRAME_BAD);
		free(c);
	}
}

/* A set of valid frames, each with where its IP packet ends. */
static size_t sample_frames(struct pkt *out, size_t *ip_end, size_t max)
{
	static const uint8_t dns_q[] = "\1\2\1\0\0\1\0\0\0\0\0\0\4evil\4test\0\0\1\0\1";
	uint8_t l4[1600], data[1400];
	size_t i = 0, n;

	memset(data, 0x5a, sizeof(data));
	assert_true(max >= 9);
	n = tcp_seg(l4, 40000, 80, 100, 0, TCP_SYN, 20, NULL, 0);
	ip4(&out[i++], IPPROTO_TCP_, l4, n, 0, 0x4000);
	n = tcp_seg(l4, 40000, 80, 100, 5, TCP_ACK | TCP_PSH, 0, "hello, world", 12);
	ip4(&out[i++], IPPROTO_TCP_, l4, n, 8, 0);
	n = tcp_seg(l4, 40000, 443, 100, 5, TCP_ACK, 12, data, 1400);
	ip4(&out[i++], IPPROTO_TCP_, l4, n, 0, 0);
	n = udp_dgram(l4, 5353, 53, dns_q, sizeof(dns_q) - 1);
	ip4(&out[i++], IPPROTO_UDP_, l4, n, 0, 0);
	n = icmp_echo(l4, 8, 32);
	ip4(&out[i++], IPPROTO_ICMP_, l4, n, 0, 0);
	n = tcp_seg(l4, 40001, 443, 1, 0, TCP_SYN, 20, NULL, 0);
	ip6(&out[i++], IPPROTO_TCP_, l4, n);
	n = udp_dgram(l4, 5353, 53, "abcdefgh", 8);
	ip6(&out[i++], IPPROTO_UDP_, l4, n);
	n = icmp_echo(l4, 135, 24);
	ip6(&out[i++], IPPROTO_ICMP6_, l4, n);
	for (size_t j = 0; j < i; j++)
		ip_end[j] = out[j].n;
	/* Padded to Ethernet's minimum: the IP packet ends before the frame. */
	n = tcp_seg(l4, 40000, 80, 100, 5, TCP_ACK, 0, NULL, 0);
	ip4(&out[i], IPPROTO_TCP_, l4, n, 0, 0);
	ip_end[i] = out[i].n;
	memset(out[i].b + out[i].n, 0, 60 - out[i].n);
	out[i++].n = 60;
	return i;
}

static void test_parse_every_truncation(void **state)
{
	struct pkt f[16];
	size_t end[16], nf = sample_frames(f, end, N_ELEMS(f));

	(void)state;
	for (size_t i = 0; i < nf; i++) {
		struct frame_ip full;
		uint8_t *c;
		enum frame_kind kfull = parse_exact(f[i].b, f[i].n, &full, &c);

		assert_int_equal(kfull, FRAME_IP);
		free(c);
		for (size_t len = 0; len <= f[i].n; len++) {
			struct frame_ip ip;
			enum frame_kind k = parse_exact(f[i].b, len, &ip, &c);

			if (len < end[i]) {
				assert_int_equal(k, FRAME_BAD);
			} else {
				assert_int_equal(k, FRAME_IP);
				check_ip_result(c, len, &ip);
				assert_int_equal(ip.l4len, full.l4len);
			}
			free(c);
		}
	}
	/* ARP: every cut with the Ethernet header present is still ARP. */
	struct pkt a;

	arp_request(&a);
	for (size_t len = 0; len <= a.n; len++) {
		struct frame_ip ip;
		uint8_t *c;

		assert_int_equal(parse_exact(a.b, len, &ip, &c), len < 14 ? FRAME_BAD : FRAME_ARP);
		free(c);
	}
}

static uint32_t rng_state;
static uint32_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 17;
	rng_state ^= rng_state << 5;
	return rng_state;
}

/* Random bit flips, byte writes and cuts of the sample frames, plus random
 * bytes behind an IP ethertype: every FRAME_IP must keep frame.h's promises. */
static void test_parse_mutations(void **state)
{
	struct pkt f[16];
	size_t end[16], nf = sample_frames(f, end, N_ELEMS(f));
	unsigned seen[FRAME_KIND_MAX + 1] = { 0 };

	(void)state;
	rng_state = 0x6b696c6e;
	for (int iter = 0; iter < 200000; iter++) {
		struct pkt g = f[rnd() % nf];
		struct frame_ip ip;
		uint8_t *c;
		enum frame_kind k;
		unsigned what = rnd() % 8;

		if (what == 0) { /* random bytes, IPv4 or IPv6 ethertype */
			g.n = rnd() % 200;
			for (size_t j = 0; j < g.n; j++)
				g.b[j] = (uint8_t)rnd();
			if (g.n >= 15) {
				w16(g.b + 12, rnd() & 1 ? 0x0800 : 0x86dd);
				g.b[14] = (uint8_t)((g.b[12] == 8 ? 0x40 : 0x60) | (g.b[14] & 15));
			}
		} else {
			unsigned flips = 1 + rnd() % 6;

			for (unsigned j = 0; j < flips; j++) {
				size_t at = rnd() % g.n;

				if (rnd() & 1)
					g.b[at] ^= (uint8_t)(1u << (rnd() % 8));
				else
					g.b[at] = (uint8_t)rnd();
			}
			/* Keep the IPv4 header checksum right half of the time, so
			 * mutations reach the transport checks. */
			if (g.b[12] == 8 && g.b[13] == 0 && (rnd() & 1)) {
				size_t ihl = (size_t)(g.b[14] & 15) * 4;

				if (ihl >= 20 && 14 + ihl <= g.n) {
					w16(g.b + 24, 0);
					w16(g.b + 24, ip_csum(g.b + 14, ihl));
				}
			}
			if (what == 1)
				g.n = rnd() % (g.n + 1);
		}
		k = parse_exact(g.b, g.n, &ip, &c);
		assert_true(k <= FRAME_KIND_MAX);
		seen[k]++;
		if (k == FRAME_IP)
			check_ip_result(c, g.n, &ip);
		free(c);
	}
	/* The mutations reached every outcome but ARP/OTHER's rarer paths. */
	assert_true(seen[FRAME_IP] > 1000);
	assert_true(seen[FRAME_BAD] > 1000);
	assert_true(seen[FRAME_FRAGMENT] > 10);
	assert_true(seen[FRAME_EXTHDR] + seen[FRAME_PROTO] > 10);
	assert_true(seen[FRAME_BAD_CSUM] > 1000);
}

/* frame_l4_csum_ok against this file's own checksum: every transport. */
static void test_l4_checksums(void **state)
{
	static const uint8_t protos[] = { IPPROTO_TCP_, IPPROTO_UDP_, IPPROTO_ICMP_, IPPROTO_ICMP6_ };
	uint8_t l4[600], *c;
	struct frame_ip ip;
	struct pkt f;

	(void)state;
	for (size_t i = 0; i < N_ELEMS(protos); i++) {
		for (size_t len = 8; len < 520; len += 37) {
			uint8_t proto = protos[i];
			int family = proto == IPPROTO_ICMP6_ ? AF_INET6 : proto == IPPROTO_ICMP_ ? AF_INET
				   : (len & 1) ? AF_INET6 : AF_INET;
			size_t n = proto == IPPROTO_TCP_ ? tcp_seg(l4, 1000, 80, 1, 0, TCP_SYN, 0, NULL, 0)
							 : len;
			struct csum cs = { 0 };

			if (proto == IPPROTO_TCP_) {
				memset(l4 + n, 0x5a, len);
				n += len;
			} else if (proto == IPPROTO_UDP_) {
				udp_dgram(l4, 1000, 53, NULL, 0);
				memset(l4 + 8, 0xa5, n - 8);
				w16(l4 + 4, (unsigned)n);
			} else {
				memset(l4, 0x33, n);
				l4[0] = 8;
			}
			w16(l4 + csum_off(proto), 0);
			if (proto != IPPROTO_ICMP_)
				cs_pseudo(&cs, family, family == AF_INET ? A4_GUEST : A6_GUEST,
					  family == AF_INET ? A4_FAR : A6_FAR, proto, n);
			cs_add(&cs, l4, n);
			w16(l4 + csum_off(proto), cs_final(&cs) ? cs_final(&cs) : 0xffff);
			if (family == AF_INET)
				ip4(&f, proto, l4, n, 0, 0);
			else
				ip6(&f, proto, l4, n);
			assert_int_equal(parse_exact(f.b, f.n, &ip, &c), FRAME_IP);
			assert_true(frame_l4_csum_ok(&ip));
			/* One flipped bit anywhere in the transport part is caught. */
			c[f.n - 1 - (len % n)] ^= 0x10;
			assert_false(frame_l4_csum_ok(&ip));
			free(c);
		}
	}
	/* UDP over IPv4 may say "no checksum"; over IPv6 it may not. */
	udp_dgram(l4, 1000, 53, "abcd", 4);
	ip4(&f, IPPROTO_UDP_, l4, 12, 0, 0);
	assert_int_equal(parse_exact(f.b, f.n, &ip, &c), FRAME_IP);
	assert_true(frame_l4_csum_ok(&ip));
	free(c);
	ip6(&f, IPPROTO_UDP_, l4, 12);
	assert_int_equal(parse_exact(f.b, f.n, &ip, &c), FRAME_IP);
	assert_false(frame_l4_csum_ok(&ip));
	free(c);
}

/* ---- frame_build ---- */

/* Check a built frame field by field and its checksums independently. */
static void verify_built(const uint8_t *out, size_t n, const uint8_t *dmac, const uint8_t *smac,
			 int family, const uint8_t *src, const uint8_t *dst, uint8_t proto,
			 const uint8_t *l4, size_t l4len)
{
	size_t al = family == AF_INET ? 4 : 16, iph = family == AF_INET ? 20 : 40;
	const uint8_t *ip = out + 14, *p = out + 14 + iph;
	size_t off = csum_off(proto);
	struct csum cs = { 0 };
	struct frame_ip parsed;
	uint8_t *copy;

	assert_int_equal(n, 14 + iph + l4len);
	assert_memory_equal(out, dmac, 6);
	assert_memory_equal(out + 6, smac, 6);
	if (family == AF_INET) {
		assert_int_equal(r16(out + 12), 0x0800);
		assert_int_equal(ip[0], 0x45);
		assert_int_equal(ip[1], 0);
		assert_int_equal(r16(ip + 2), 20 + l4len);
		assert_int_equal(r16(ip + 6), 0x4000); /* DF, no fragment */
		assert_int_equal(ip[8], 64);
		assert_int_equal(ip[9], proto);
		assert_memory_equal(ip + 12, src, 4);
		assert_memory_equal(ip + 16, dst, 4);
		assert_int_equal(ip_csum(ip, 20), 0); /* the header checksum verifies */
	} else {
		assert_int_equal(r16(out + 12), 0x86dd);
		assert_int_equal(ip[0] >> 4, 6);
		assert_int_equal(r16(ip + 4), l4len);
		assert_int_equal(ip[6], proto);
		assert_int_equal(ip[7], proto == IPPROTO_ICMP6_ ? 255 : 64);
		assert_memory_equal(ip + 8, src, 16);
		assert_memory_equal(ip + 24, dst, 16);
	}
	/* The transport checksum verifies over pseudo header + segment. */
	if (proto != IPPROTO_ICMP_)
		cs_pseudo(&cs, family, src, dst, proto, l4len);
	cs_add(&cs, p, l4len);
	assert_int_equal(cs_final(&cs), 0);
	if (proto == IPPROTO_UDP_)
		assert_int_not_equal(r16(p + 6), 0); /* 0 means "no checksum" */
	/* The segment itself is unchanged except for its checksum field. */
	assert_memory_equal(p, l4, off);
	if (l4len > off + 2)
		assert_memory_equal(p + off + 2, l4 + off + 2, l4len - off - 2);

	/* And the parser gives the same back. */
	copy = malloc(n);
	assert_non_null(copy);
	memcpy(copy, out, n);
	assert_int_equal(frame_parse(copy, n, &parsed), FRAME_IP);
	assert_int_equal(parsed.family, family);
	assert_int_equal(parsed.proto, proto);
	assert_memory_equal(parsed.src, src, al);
	assert_memory_equal(parsed.dst, dst, al);
	assert_int_equal(parsed.l4len, l4len);
	assert_memory_equal(parsed.l4, p, l4len);
	free(copy);
}

static void build_and_verify(int family, uint8_t proto, const uint8_t *l4, size_t l4len)
{
	const uint8_t *src = family == AF_INET ? A4_FAR : A6_FAR;
	const uint8_t *dst = family == AF_INET ? A4_GUEST : A6_GUEST;
	size_t need = 14 + (family == AF_INET ? 20u : 40u) + l4len;
	uint8_t *out = malloc(need);
	size_t n;

	assert_non_null(out);
	n = frame_build(out, need, MAC_GUEST, MAC_GW, family, src, dst, proto, l4, l4len);
	verify_built(out, n, MAC_GUEST, MAC_GW, family, src, dst, proto, l4, l4len);
	free(out);
}

static void test_build_round_trip(void **state)
{
	uint8_t l4[1600];
	static const size_t dl[] = { 0, 1, 2, 3, 7, 100, 1399, 1400 };

	(void)state;
	for (size_t i = 0; i < sizeof(l4); i++)
		l4[i] = (uint8_t)(i * 7 + 3);
	for (size_t i = 0; i < N_ELEMS(dl); i++) {
		size_t n;

		n = tcp_seg(l4, 80, 40000, 0xfffffff0u, 12345, TCP_SYN | TCP_ACK, 20, NULL, 0);
		w16(l4 + 16, 0xdead); /* a stale checksum is replaced */
		memset(l4 + n, 0xc3, dl[i]);
		build_and_verify(AF_INET, IPPROTO_TCP_, l4, n + dl[i]);
		build_and_verify(AF_INET6, IPPROTO_TCP_, l4, n + dl[i]);
		n = udp_dgram(l4, 53, 5353, NULL, 0);
		memset(l4 + n, 0x3c, dl[i]);
		w16(l4 + 4, (unsigned)(n + dl[i]));
		build_and_verify(AF_INET, IPPROTO_UDP_, l4, n + dl[i]);
		build_and_verify(AF_INET6, IPPROTO_UDP_, l4, n + dl[i]);
		n = icmp_echo(l4, 0, dl[i]);
		build_and_verify(AF_INET, IPPROTO_ICMP_, l4, n);
		l4[0] = 136;
		build_and_verify(AF_INET6, IPPROTO_ICMP6_, l4, n);
	}
	/* The largest frames: 1500 bytes of IP. */
	tcp_seg(l4, 80, 40000, 1, 1, TCP_ACK, 0, NULL, 0);
	build_and_verify(AF_INET, IPPROTO_TCP_, l4, 1480);
	build_and_verify(AF_INET6, IPPROTO_TCP_, l4, 1460);
}

/* A UDP checksum that comes out as 0 is sent as 0xffff (RFC 768). */
static void test_build_udp_zero_checksum(void **state)
{
	uint8_t l4[16], out[FRAME_MAX];
	struct csum cs = { 0 };
	size_t n;

	(void)state;
	for (int family = 0; family < 2; family++) {
		int fam = family ? AF_INET6 : AF_INET;
		const uint8_t *src = fam == AF_INET ? A4_FAR : A6_FAR;
		const uint8_t *dst = fam == AF_INET ? A4_GUEST : A6_GUEST;
		uint16_t s;

		udp_dgram(l4, 53, 5353, "\0\0", 2);
		memset(&cs, 0, sizeof(cs));
		cs_pseudo(&cs, fam, src, dst, IPPROTO_UDP_, 10);
		cs_add(&cs, l4, 10);
		s = cs_fold(&cs);
		/* Make the ones' complement sum 0xffff: its complement is 0. */
		w16(l4 + 8, (uint16_t)(0xffff - s));
		n = frame_build(out, sizeof(out), MAC_GUEST, MAC_GW, fam, src, dst, IPPROTO_UDP_, l4,
				10);
		assert_int_equal(n, 14 + (fam == AF_INET ? 20 : 40) + 10);
		assert_int_equal(r16(out + n - 10 + 6), 0xffff);
		verify_built(out, n, MAC_GUEST, MAC_GW, fam, src, dst, IPPROTO_UDP_, l4, 10);
	}
}

/* l4 may already sit in out's payload area (frame.h). */
static void test_build_in_place(void **state)
{
	uint8_t out[FRAME_MAX], ref[64];
	size_t n, len;

	(void)state;
	len = tcp_seg(ref, 443, 40001, 77, 88, TCP_ACK | TCP_PSH, 0, "in place", 8);
	memcpy(out + 14 + 40, ref, len);
	n = frame_build(out, sizeof(out), MAC_GUEST, MAC_GW, AF_INET6, A6_FAR, A6_GUEST,
			IPPROTO_TCP_, out + 54, len);
	verify_built(out, n, MAC_GUEST, MAC_GW, AF_INET6, A6_FAR, A6_GUEST, IPPROTO_TCP_, ref, len);
	memcpy(out + 14 + 20, ref, len);
	n = frame_build(out, sizeof(out), MAC_GUEST, MAC_GW, AF_INET, A4_FAR, A4_GUEST,
			IPPROTO_TCP_, out + 34, len);
	verify_built(out, n, MAC_GUEST, MAC_GW, AF_INET, A4_FAR, A4_GUEST, IPPROTO_TCP_, ref, len);
}

static void test_build_rejects(void **state)
{
	uint8_t l4[64], *out, *big;
	size_t len = tcp_seg(l4, 1, 2, 3, 4, TCP_ACK, 0, "data", 4);

	(void)state;
	/* cap one byte short, for each family; exactly enough works. */
	for (int v6 = 0; v6 < 2; v6++) {
		int fam = v6 ? AF_INET6 : AF_INET;
		const uint8_t *s = v6 ? A6_FAR : A4_FAR, *d = v6 ? A6_GUEST : A4_GUEST;
		size_t need = 14 + (v6 ? 40u : 20u) + len;

		for (size_t cap = 0; cap < need; cap++) {
			out = malloc(cap ? cap : 1);
			assert_non_null(out);
			memset(out, 0xaa, cap);
			assert_int_equal(frame_build(out, cap, MAC_GUEST, MAC_GW, fam, s, d,
						     IPPROTO_TCP_, l4, len), 0);
			for (size_t j = 0; j < cap; j++) /* nothing written */
				assert_int_equal(out[j], 0xaa);
			free(out);
		}
		out = malloc(need);
		assert_non_null(out);
		assert_int_equal(frame_build(out, need, MAC_GUEST, MAC_GW, fam, s, d, IPPROTO_TCP_,
					     l4, len), need);
		free(out);
	}

	out = malloc(FRAME_MAX);
	assert_non_null(out);
	/* Unsupported family or protocol, or ICMP of the other family. */
	assert_int_equal(frame_build(out, FRAME_MAX, MAC_GUEST, MAC_GW, AF_UNIX, A4_FAR, A4_GUEST,
				     IPPROTO_TCP_, l4, len), 0);
	assert_int_equal(frame_build(out, FRAME_MAX, MAC_GUEST, MAC_GW, AF_INET, A4_FAR, A4_GUEST,
				     47, l4, len), 0);
	assert_int_equal(frame_build(out, FRAME_MAX, MAC_GUEST, MAC_GW, AF_INET, A4_FAR, A4_GUEST,
				     IPPROTO_ICMP6_, l4, len), 0);
	assert_int_equal(frame_build(out, FRAME_MAX, MAC_GUEST, MAC_GW, AF_INET6, A6_FAR, A6_GUEST,
				     IPPROTO_ICMP_, l4, len), 0);
	free(out);

	/* An IPv4 total length past 65535. */
	big = calloc(1, 70000);
	out = malloc(70100);
	assert_non_null(big);
	assert_non_null(out);
	assert_int_equal(frame_build(out, 70100, MAC_GUEST, MAC_GW, AF_INET, A4_FAR, A4_GUEST,
				     IPPROTO_TCP_, big, 65536 - 20), 0);
	assert_int_equal(frame_build(out, 70100, MAC_GUEST, MAC_GW, AF_INET, A4_FAR, A4_GUEST,
				     IPPROTO_TCP_, big, 65535 - 20), 14 + 65535);
	free(big);
	free(out);
}

/* A transport payload shorter than its own header has nowhere to put the
 * checksum: frame_build must refuse it rather than write past l4len (and,
 * with an exact cap, past the buffer). */
static void test_build_short_transport(void **state)
{
	static const struct {
		uint8_t proto;
		size_t min;
	} t[] = { { IPPROTO_TCP_, TCP_HDR }, { IPPROTO_UDP_, UDP_HDR }, { IPPROTO_ICMP_, 4 } };
	uint8_t l4[32];

	(void)state;
	memset(l4, 0, sizeof(l4));
	for (size_t i = 0; i < N_ELEMS(t); i++)
		for (size_t len = 0; len < t[i].min; len++) {
			size_t cap = 14 + 20 + len;
			uint8_t *out = malloc(cap + 32);

			assert_non_null(out);
			memset(out, 0xaa, cap + 32);
			assert_int_equal(frame_build(out, cap, MAC_GUEST, MAC_GW, AF_INET, A4_FAR,
						     A4_GUEST, t[i].proto, l4, len), 0);
			for (size_t j = cap; j < cap + 32; j++)
				assert_int_equal(out[j], 0xaa);
			free(out);
		}
}

/* ---- tcp_header / tcp_reset_for ---- */

static void test_tcp_header(void **state)
{
	uint8_t h[TCP_HDR];

	(void)state;
	memset(h, 0xff, sizeof(h));
	tcp_header(h, 80, 40000, 0x01020304, 0xa0b0c0d0, TCP_SYN | TCP_ACK, 29200);
	assert_int_equal(r16(h), 80);
	assert_int_equal(r16(h + 2), 40000);
	assert_int_equal(r32(h + 4), 0x01020304);
	assert_int_equal(r32(h + 8), 0xa0b0c0d0);
	assert_int_equal(h[12], 0x50);
	assert_int_equal(h[13], TCP_SYN | TCP_ACK);
	assert_int_equal(r16(h + 14), 29200);
	assert_int_equal(r16(h + 16), 0);
	assert_int_equal(r16(h + 18), 0);
}

static void reset_of(uint8_t flags, uint32_t seq, uint32_t ack, size_t opts, size_t dlen,
		     uint8_t *rst)
{
	uint8_t seg[200], data[100];
	size_t n;

	memset(data, 'd', sizeof(data));
	n = tcp_seg(seg, 40000, 80, seq, ack, flags, opts, data, dlen);
	memset(rst, 0xee, TCP_HDR);
	{
		uint8_t *exact = malloc(n); /* reads stay inside the segment */

		assert_non_null(exact);
		memcpy(exact, seg, n);
		tcp_reset_for(exact, n, rst);
		free(exact);
	}
	/* Ports swapped, bare header, window 0, checksum left to frame_build. */
	assert_int_equal(r16(rst), 80);
	assert_int_equal(r16(rst + 2), 40000);
	assert_int_equal(rst[12], 0x50);
	assert_int_equal(r16(rst + 14), 0);
	assert_int_equal(r16(rst + 18), 0);
}

static void test_reset_for(void **state)
{
	uint8_t r[TCP_HDR];

	(void)state;
	/* No ACK: ack = seq + length, SYN and FIN count one each; seq = 0. */
	reset_of(TCP_SYN, 1000, 0, 20, 0, r);
	assert_int_equal(r[13], TCP_RST | TCP_ACK);
	assert_int_equal(r32(r + 4), 0);
	assert_int_equal(r32(r + 8), 1001);

	reset_of(TCP_SYN, 0xffffffffu, 0, 0, 0, r); /* wraps */
	assert_int_equal(r32(r + 8), 0);

	reset_of(TCP_SYN | TCP_FIN, 5000, 0, 0, 10, r);
	assert_int_equal(r32(r + 8), 5000 + 10 + 2);

	reset_of(TCP_FIN, 0xfffffff0u, 0, 12, 20, r);
	assert_int_equal(r32(r + 8), 5); /* 0xfffffff0 + 20 + 1, wrapped */

	reset_of(TCP_PSH, 42, 0, 40, 7, r); /* options do not count, data does */
	assert_int_equal(r[13], TCP_RST | TCP_ACK);
	assert_int_equal(r32(r + 8), 49);

	reset_of(0, 42, 0, 0, 0, r); /* a null segment */
	assert_int_equal(r32(r + 8), 42);

	/* ACK set: seq = its ack, no ACK in the reset, ack field 0. */
	reset_of(TCP_ACK, 1000, 0xabcdef01u, 0, 0, r);
	assert_int_equal(r[13], TCP_RST);
	assert_int_equal(r32(r + 4), 0xabcdef01u);
	assert_int_equal(r32(r + 8), 0);

	reset_of(TCP_ACK | TCP_PSH | TCP_FIN, 1000, 77, 12, 50, r);
	assert_int_equal(r[13], TCP_RST);
	assert_int_equal(r32(r + 4), 77);

	reset_of(TCP_SYN | TCP_ACK, 1000, 2000, 20, 0, r);
	assert_int_equal(r[13], TCP_RST);
	assert_int_equal(r32(r + 4), 2000);
	assert_int_equal(r32(r + 8), 0);
}

/* ---- tcp_clamp_mss ---- */

/* Run the clamp on an exact heap copy; return it (caller frees). */
static uint8_t *clamp(const uint8_t *seg, size_t hdrlen, uint16_t mss)
{
	uint8_t *c = malloc(hdrlen);

	assert_non_null(c);
	memcpy(c, seg, hdrlen);
	tcp_clamp_mss(c, hdrlen, mss);
	return c;
}

static size_t with_opts(uint8_t *seg, const uint8_t *opts, size_t n)
{
	size_t hl = 20 + (n + 3) / 4 * 4;

	tcp_seg(seg, 80, 40000, 1, 2, TCP_SYN | TCP_ACK, 0, NULL, 0);
	seg[12] = (uint8_t)(hl / 4 << 4);
	memset(seg + 20, 0, hl - 20); /* EOL padding */
	memcpy(seg + 20, opts, n);
	return hl;
}

static void test_clamp_mss_good(void **state)
{
	uint8_t seg[60], *c;
	size_t hl;

	(void)state;
	/* Linux's SYN options: MSS 1460, SACK-permitted, timestamps, NOP, WS. */
	hl = tcp_seg(seg, 80, 40000, 1, 2, TCP_SYN | TCP_ACK, 20, NULL, 0);
	c = clamp(seg, hl, 1440);
	assert_int_equal(r16(c + 22), 1440);
	assert_memory_equal(c, seg, 22);
	assert_memory_equal(c + 24, seg + 24, hl - 24);
	free(c);
	/* Already below: untouched; equal: untouched. */
	w16(seg + 22, 1200);
	c = clamp(seg, hl, 1440);
	assert_memory_equal(c, seg, hl);
	free(c);
	w16(seg + 22, 1440);
	c = clamp(seg, hl, 1440);
	assert_memory_equal(c, seg, hl);
	free(c);

	/* MSS after NOPs, after window scale and SACK-permitted, as the last option. */
	static const uint8_t o1[] = { 1, 1, 1, 2, 4, 0xff, 0xff };
	static const uint8_t o2[] = { 3, 3, 7, 4, 2, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8, 2, 4, 0x23, 0x28 };
	hl = with_opts(seg, o1, sizeof(o1));
	c = clamp(seg, hl, 1440);
	assert_int_equal(r16(c + 20 + 5), 1440);
	free(c);
	hl = with_opts(seg, o2, sizeof(o2));
	c = clamp(seg, hl, 1440);
	assert_int_equal(r16(c + 20 + 17), 1440);
	assert_memory_equal(c + 20, o2, 17);
	free(c);
	/* The MSS option's value ending exactly at the header's end. */
	static const uint8_t o3[] = { 1, 1, 1, 1, 1, 1, 1, 1, 2, 4, 0x40, 0x00 };
	hl = with_opts(seg, o3, sizeof(o3));
	assert_int_equal(hl, 32);
	c = clamp(seg, hl, 536);
	assert_int_equal(r16(c + 30), 536);
	free(c);
	/* No options at all. */
	hl = tcp_seg(seg, 80, 40000, 1, 2, TCP_SYN, 0, NULL, 0);
	c = clamp(seg, hl, 1);
	assert_memory_equal(c, seg, hl);
	free(c);
}

static void test_clamp_mss_malformed(void **state)
{
	static const struct {
		uint8_t o[40];
		size_t n;
	} bad[] = {
		{ { 0, 2, 4, 0x05, 0xb4 }, 5 },	      /* EOL first: nothing after it counts */
		{ { 0, 2, 2, 4, 0x05, 0xb4 }, 6 },	      /* ... not even a well-formed MSS */
		{ { 8, 0, 2, 4, 0x05, 0xb4 }, 6 },	      /* length 0: stop */
		{ { 8, 1, 2, 4, 0x05, 0xb4 }, 6 },	      /* length 1: stop */
		{ { 2, 0, 0x05, 0xb4 }, 4 },		      /* MSS with length 0 */
		{ { 2, 1, 0x05, 0xb4 }, 4 },		      /* MSS with length 1 */
		{ { 2, 3, 0x05, 0xb4 }, 4 },		      /* MSS with length 3 */
		{ { 2, 5, 0x05, 0xb4, 0 }, 5 },	      /* MSS with length 5 */
		{ { 1, 1, 8, 40, 2, 4, 0x05, 0xb4 }, 8 }, /* an option past the header hides MSS */
	};
	uint8_t seg[60], *c;

	(void)state;
	for (size_t i = 0; i < N_ELEMS(bad); i++) {
		size_t hl = with_opts(seg, bad[i].o, bad[i].n);

		c = clamp(seg, hl, 1000);
		assert_memory_equal(c, seg, hl);
		free(c);
	}
	/* Option kinds and lengths at the very end of the header. */
	{
		static const uint8_t tail_kind[] = { 1, 1, 1, 2 }; /* MSS kind in the last byte */
		static const uint8_t tail_len[] = { 1, 1, 2, 4 };  /* MSS whose value is cut off */
		static const uint8_t tail_big[] = { 1, 1, 5, 3 };  /* 3 bytes claimed, 2 left */
		size_t hl;

		hl = with_opts(seg, tail_kind, sizeof(tail_kind));
		c = clamp(seg, hl, 1000);
		assert_memory_equal(c, seg, hl);
		free(c);
		hl = with_opts(seg, tail_len, sizeof(tail_len));
		c = clamp(seg, hl, 1000);
		assert_memory_equal(c, seg, hl);
		free(c);
		hl = with_opts(seg, tail_big, sizeof(tail_big));
		c = clamp(seg, hl, 1000);
		assert_memory_equal(c, seg, hl);
		free(c);
	}
	/* The clamp trusts hdrlen only: a header cut at the MSS value is not written. */
	{
		size_t hl = tcp_seg(seg, 80, 40000, 1, 2, TCP_SYN, 20, NULL, 0);

		for (size_t cut = 20; cut <= hl; cut++) {
			c = clamp(seg, cut, 1000);
			if (cut >= 24)
				assert_int_equal(r16(c + 22), 1000);
			else
				assert_memory_equal(c, seg, cut);
			free(c);
		}
	}
	/* Random option bytes: only a well-formed MSS value may change, and only down. */
	rng_state = 12345;
	for (int iter = 0; iter < 100000; iter++) {
		size_t hl = 20 + 4 * (rnd() % 11);
		uint16_t mss = (uint16_t)(rnd() % 3000);

		tcp_seg(seg, 80, 40000, 1, 2, TCP_SYN, 0, NULL, 0);
		for (size_t j = 20; j < hl; j++) {
			static const uint8_t pick[] = { 0, 1, 1, 2, 2, 3, 4, 4, 8, 10, 40 };
			unsigned r = rnd() % (N_ELEMS(pick) + 2);

			seg[j] = r < N_ELEMS(pick) ? pick[r] : (uint8_t)rnd();
		}
		c = clamp(seg, hl, mss);
		for (size_t j = 20; j < hl; j++) {
			if (c[j] == seg[j])
				continue;
			/* j is the first value byte of an MSS option (kind 2 len 4) or its second. */
			size_t v = j >= 22 && seg[j - 2] == 2 && seg[j - 1] == 4 ? j : j - 1;

			assert_true(v >= 22 && v + 2 <= hl);
			assert_int_equal(seg[v - 2], 2);
			assert_int_equal(seg[v - 1], 4);
			assert_int_equal(r16(c + v), mss);
			assert_true(r16(seg + v) > mss);
		}
		free(c);
	}
}

/* ---- bucket ---- */

#define MS 1000000ull
#define SEC 1000000000ull

static void test_bucket_unlimited(void **state)
{
	struct bucket b;

	(void)state;
	bucket_init(&b, 0, 5 * SEC);
	assert_int_equal(b.rate, 0);
	assert_true(bucket_avail(&b, 5 * SEC) == UINT64_MAX);
	bucket_take(&b, 1ull << 50);
	assert_true(bucket_avail(&b, 5 * SEC) == UINT64_MAX);
	assert_int_equal(bucket_wait_ms(&b, 5 * SEC), 0);
	assert_true(bucket_avail(&b, 0) == UINT64_MAX); /* the clock going back: still unlimited */
}

static void test_bucket_wait_for(void **state)
{
	struct bucket b;

	(void)state;
	bucket_init(&b, 0, 0);
	assert_int_equal(bucket_wait_for_ms(&b, 1ull << 40, 0), 0); /* unlimited */
	bucket_init(&b, 4096, 0); /* burst 4096 */
	assert_int_equal(bucket_wait_for_ms(&b, 4096, 0), 0);
	bucket_take(&b, 4096);
	/* 300 bytes at 4096/s: 73.2 ms, rounded up. */
	assert_int_equal(bucket_wait_for_ms(&b, 300, 0), 74);
	assert_true(bucket_avail(&b, 73 * MS) < 300);
	assert_true(bucket_avail(&b, 74 * MS) >= 300);
	/* More than the burst waits for a full bucket, at most a second. */
	{
		int w = bucket_wait_for_ms(&b, 1 << 20, 74 * MS);

		assert_true(w > 900 && w <= 1000);
		assert_true(bucket_avail(&b, 74 * MS + (uint64_t)w * MS) == 4096);
	}
	/* A query-count bucket: one token a second. */
	bucket_init(&b, 1, 0);
	b.burst = b.tokens = 1;
	bucket_take(&b, 1);
	assert_int_equal(bucket_wait_for_ms(&b, 1, 0), 1000);
	assert_int_equal(bucket_wait_for_ms(&b, 1, SEC), 0);
}

static void test_bucket_init_burst(void **state)
{
	struct bucket b;

	(void)state;
	bucket_init(&b, 1000, 0);
	assert_int_equal(b.burst, 4096); /* the floor */
	assert_int_equal(b.tokens, 4096);
	bucket_init(&b, 20480, 0);
	assert_int_equal(b.burst, 4096);
	bucket_init(&b, 20485, 0);
	assert_int_equal(b.burst, 4097);
	bucket_init(&b, 1000000, 7);
	assert_int_equal(b.burst, 200000); /* a fifth of a second */
	assert_int_equal(b.tokens, 200000);
	assert_int_equal(b.last_ns, 7);
	bucket_init(&b, 1ull << 40, 0);
	assert_true(b.burst == (1ull << 40) / 5);
}

static void test_bucket_refill(void **state)
{
	struct bucket b;
	uint64_t t = 100 * SEC;

	(void)state;
	bucket_init(&b, 1000000, t); /* 1 MB/s, burst 200000 */
	assert_int_equal(bucket_avail(&b, t), 200000);
	bucket_take(&b, 200000);
	assert_int_equal(bucket_avail(&b, t), 0);
	/* 1 ms: 1000 bytes; 100 ms more: 100000 more. */
	assert_int_equal(bucket_avail(&b, t + 1 * MS), 1000);
	assert_int_equal(bucket_avail(&b, t + 101 * MS), 101000);
	/* The burst caps it: a little over, and however long the pause. */
	assert_int_equal(bucket_avail(&b, t + 201 * MS), 200000);
	assert_int_equal(bucket_avail(&b, t + 10 * SEC), 200000);
	assert_int_equal(bucket_avail(&b, t + 3600 * SEC), 200000);
	/* Time standing still or going back adds nothing and takes nothing. */
	bucket_take(&b, 150000);
	assert_int_equal(bucket_avail(&b, t + 3600 * SEC), 50000);
	assert_int_equal(bucket_avail(&b, t), 50000);
	assert_int_equal(bucket_avail(&b, t + 3600 * SEC), 50000);

	/* Steps too small for one token are not lost: they add up. */
	bucket_init(&b, 1000, 0); /* one byte per ms */
	bucket_take(&b, 4096);
	for (uint64_t us = 100; us <= 1000 * 1000; us += 100) /* 10000 steps of 0.1 ms */
		(void)bucket_avail(&b, us * 1000);
	assert_int_equal(bucket_avail(&b, SEC), 1000);

	/* A long run at an even pace gives the rate exactly. */
	bucket_init(&b, 123456, 0);
	bucket_take(&b, b.burst);
	uint64_t got = 0;
	for (uint64_t ms = 1; ms <= 10000; ms++) {
		uint64_t a = bucket_avail(&b, ms * MS);

		got += a;
		bucket_take(&b, a);
	}
	/* 123456 B/s for 10 s, within one byte per step of truncation. */
	assert_true(got <= 1234560);
	assert_true(got >= 1234560 - 10000);

	/* The largest rate the parser allows, over the 10 s clamp: no overflow. */
	bucket_init(&b, 1ull << 40, 0);
	bucket_take(&b, b.burst);
	assert_true(bucket_avail(&b, 1 * MS) == (1ull << 40) / 1000);
	bucket_take(&b, UINT64_MAX);
	assert_true(bucket_avail(&b, 1 * MS + 20 * SEC) == b.burst);
	/* 2^40 B/s times 2^24 us is 2^64: only the clamp keeps that from wrapping to 0. */
	bucket_take(&b, UINT64_MAX);
	assert_true(bucket_avail(&b, 1 * MS + 20 * SEC + (1ull << 24) * 1000) == b.burst);
}

static void test_bucket_take(void **state)
{
	struct bucket b;

	(void)state;
	bucket_init(&b, 10000, 0); /* burst 4096 */
	bucket_take(&b, 1000);
	assert_int_equal(bucket_avail(&b, 0), 3096);
	bucket_take(&b, 5000); /* more than there is: empty, not wrapped */
	assert_int_equal(bucket_avail(&b, 0), 0);
	bucket_take(&b, 1);
	assert_int_equal(bucket_avail(&b, 0), 0);
	bucket_take(&b, UINT64_MAX);
	assert_int_equal(bucket_avail(&b, 0), 0);
	bucket_take(&b, 0);
	assert_int_equal(bucket_avail(&b, 0), 0);
	assert_int_equal(bucket_avail(&b, 100 * MS), 1000);
}

static void test_bucket_wait(void **state)
{
	struct bucket b;

	(void)state;
	bucket_init(&b, 1000000, 0);
	assert_int_equal(bucket_wait_ms(&b, 0), 0); /* full */
	bucket_take(&b, UINT64_MAX);
	/* 2048 bytes at 1 MB/s: 2.048 ms, rounded up to 3. */
	assert_int_equal(bucket_wait_ms(&b, 0), 3);
	/* Tokens there again: no wait. */
	assert_int_equal(bucket_wait_ms(&b, 1 * MS), 0);

	bucket_init(&b, 100000, 0);
	bucket_take(&b, UINT64_MAX);
	assert_int_equal(bucket_wait_ms(&b, 0), 2048 * 1000 / 100000 + 1);
	bucket_init(&b, 1000, 0); /* 2 s worth: capped at 1 s */
	bucket_take(&b, UINT64_MAX);
	assert_int_equal(bucket_wait_ms(&b, 0), 1000);
	bucket_init(&b, 1, 0);
	bucket_take(&b, UINT64_MAX);
	assert_int_equal(bucket_wait_ms(&b, 0), 1000);
	bucket_init(&b, 1ull << 40, 0);
	bucket_take(&b, UINT64_MAX);
	assert_int_equal(bucket_wait_ms(&b, 0), 1); /* never 0 while empty */
	/* The wait it asks for is enough for some tokens to be there. */
	for (uint64_t rate = 1; rate <= (1ull << 40); rate = rate * 3 + 1) {
		int w;

		bucket_init(&b, rate, 0);
		bucket_take(&b, UINT64_MAX);
		w = bucket_wait_ms(&b, 0);
		assert_true(w >= 1 && w <= 1000);
		if (rate >= 1000)
			assert_true(bucket_avail(&b, (uint64_t)w * MS) > 0);
	}
}

/* csum_adjust against a full recomputation: the NAT rewrite kiln-net does on
 * every segment from slirp (IPv4 10.0.2.100:1 -> 10.0.2.15:N becomes the
 * guest's view, IPv4 or IPv6), over random payloads. */
static void test_csum_adjust(void **state)
{
	static const uint8_t fwd4[4] = { 10, 0, 2, 100 };
	uint8_t seg[1480], old[12], now[36];
	unsigned seed = 7;

	(void)state;
	for (int round = 0; round < 200; round++) {
		int family = round % 2 ? AF_INET6 : AF_INET;
		const uint8_t *src = family == AF_INET ? A4_FAR : A6_FAR;
		const uint8_t *dst = family == AF_INET ? A4_GUEST : A6_GUEST;
		size_t alen = family == AF_INET ? 4 : 16;
		size_t len = TCP_HDR + (size_t)(rand_r(&seed) % (sizeof(seg) - TCP_HDR));
		struct csum c = { 0 };

		for (size_t i = 0; i < len; i++)
			seg[i] = (uint8_t)rand_r(&seed);
		seg[12] = 5 << 4;
		w16(seg, 1);
		w16(seg + 2, 2048 + (unsigned)round);
		w16(seg + 16, 0);
		cs_pseudo(&c, AF_INET, fwd4, A4_GUEST, IPPROTO_TCP_, len);
		cs_add(&c, seg, len);
		w16(seg + 16, cs_final(&c));
		memcpy(old, fwd4, 4);
		memcpy(old + 4, A4_GUEST, 4);
		memcpy(old + 8, seg, 4);
		w16(seg, 443);
		w16(seg + 2, 40000 + (unsigned)round);
		memcpy(now, src, alen);
		memcpy(now + alen, dst, alen);
		memcpy(now + 2 * alen, seg, 4);
		w16(seg + 16, csum_adjust((uint16_t)r16(seg + 16), old, sizeof(old), now, 2 * alen + 4));
		memset(&c, 0, sizeof(c));
		cs_pseudo(&c, family, src, dst, IPPROTO_TCP_, len);
		cs_add(&c, seg, len);
		assert_int_equal(cs_fold(&c), 0xffff); /* verifies */
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_ipv4_tcp),
		cmocka_unit_test(test_parse_ipv4_udp_icmp),
		cmocka_unit_test(test_parse_ipv6),
		cmocka_unit_test(test_parse_other_kinds),
		cmocka_unit_test(test_parse_ipv4_header_errors),
		cmocka_unit_test(test_parse_fragments),
		cmocka_unit_test(test_parse_next_headers),
		cmocka_unit_test(test_parse_tcp_offsets),
		cmocka_unit_test(test_parse_udp_length_lies),
		cmocka_unit_test(test_parse_every_truncation),
		cmocka_unit_test(test_parse_mutations),
		cmocka_unit_test(test_l4_checksums),
		cmocka_unit_test(test_build_round_trip),
		cmocka_unit_test(test_build_udp_zero_checksum),
		cmocka_unit_test(test_build_in_place),
		cmocka_unit_test(test_build_rejects),
		cmocka_unit_test(test_build_short_transport),
		cmocka_unit_test(test_tcp_header),
		cmocka_unit_test(test_reset_for),
		cmocka_unit_test(test_clamp_mss_good),
		cmocka_unit_test(test_clamp_mss_malformed),
		cmocka_unit_test(test_bucket_unlimited),
		cmocka_unit_test(test_bucket_wait_for),
		cmocka_unit_test(test_bucket_init_burst),
		cmocka_unit_test(test_bucket_refill),
		cmocka_unit_test(test_bucket_take),
		cmocka_unit_test(test_bucket_wait),
		cmocka_unit_test(test_csum_adjust),
	};

	return cmocka_run_group_tests_name("net_frame", tests, NULL, NULL);
}
