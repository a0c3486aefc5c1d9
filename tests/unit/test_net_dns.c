/*
 * kiln-net's DNS codec: guest queries (well formed and hostile: truncations,
 * lying counts, pointer loops, oversize labels and names, odd bytes), the
 * answers we build, and resolver responses read for the pin table (CNAME
 * chains in any order, loops, mismatches). Hand-built packets throughout.
 */
#include <errno.h>
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

#include "net/dnsmsg.h"

struct pkt {
	uint8_t b[4096];
	size_t n;
};

static void put8(struct pkt *p, unsigned v)
{
	assert_true(p->n < sizeof(p->b));
	p->b[p->n++] = (uint8_t)v;
}

static void put16(struct pkt *p, unsigned v)
{
	put8(p, v >> 8);
	put8(p, v & 0xff);
}

static void put32(struct pkt *p, uint32_t v)
{
	put16(p, v >> 16);
	put16(p, v & 0xffff);
}

static void putbytes(struct pkt *p, const void *d, size_t n)
{
	assert_true(p->n + n <= sizeof(p->b));
	memcpy(p->b + p->n, d, n);
	p->n += n;
}

/* Labels from dotted text, ending with the root unless ptr >= 0 (then a pointer). */
static size_t putname_ptr(struct pkt *p, const char *name, int ptr)
{
	size_t at = p->n;
	const char *s = name;

	while (*s) {
		const char *dot = strchr(s, '.');
		size_t l = dot ? (size_t)(dot - s) : strlen(s);

		put8(p, (unsigned)l);
		putbytes(p, s, l);
		s += l + (dot ? 1 : 0);
	}
	if (ptr >= 0)
		put16(p, 0xc000u | (unsigned)ptr);
	else
		put8(p, 0);
	return at;
}

static size_t putname(struct pkt *p, const char *name)
{
	return putname_ptr(p, name, -1);
}

static void header(struct pkt *p, unsigned id, unsigned flags, unsigned qd, unsigned an,
		   unsigned ns, unsigned ar)
{
	p->n = 0;
	put16(p, id);
	put16(p, flags);
	put16(p, qd);
	put16(p, an);
	put16(p, ns);
	put16(p, ar);
}

static void query(struct pkt *p, unsigned id, const char *name, unsigned type)
{
	header(p, id, 0x0100 /* RD */, 1, 0, 0, 0);
	putname(p, name);
	put16(p, type);
	put16(p, DNS_CLASS_IN);
}

/* A response header and question for q. Returns the question name's offset. */
static size_t response_head(struct pkt *p, const struct dns_query *q, unsigned flags,
			    unsigned an)
{
	size_t at;

	header(p, q->id, 0x8180 | flags, 1, an, 0, 0);
	at = putname(p, q->name);
	put16(p, q->qtype);
	put16(p, DNS_CLASS_IN);
	return at;
}

/* A record header with an owner given by pointer; then the caller adds rdata. */
static void rr_head(struct pkt *p, int owner_ptr, unsigned type, uint32_t ttl, unsigned rdlen)
{
	put16(p, 0xc000u | (unsigned)owner_ptr);
	put16(p, type);
	put16(p, DNS_CLASS_IN);
	put32(p, ttl);
	put16(p, rdlen);
}

static void rr_a(struct pkt *p, int owner_ptr, uint32_t ttl, uint8_t a, uint8_t b, uint8_t c,
		 uint8_t d)
{
	const uint8_t addr[4] = { a, b, c, d };

	rr_head(p, owner_ptr, DNS_TYPE_A, ttl, 4);
	putbytes(p, addr, 4);
}

/* A CNAME owned by the name at owner_ptr; returns the offset of its target. */
static size_t rr_cname(struct pkt *p, int owner_ptr, uint32_t ttl, const char *target)
{
	size_t len_at, at;

	rr_head(p, owner_ptr, DNS_TYPE_CNAME, ttl, 0);
	len_at = p->n - 2;
	at = putname(p, target);
	p->b[len_at] = (uint8_t)((p->n - at) >> 8);
	p->b[len_at + 1] = (uint8_t)(p->n - at);
	return at;
}

static int parse_resp(const struct pkt *p, const struct dns_query *q, struct dns_addr *out,
		      size_t max, size_t *n, int *rcode)
{
	return dns_parse_response(p->b, p->n, q, out, max, n, rcode);
}

/* ---- queries ---- */

static void test_query_basic(void **state)
{
	struct pkt p;
	struct dns_query q;
	bool ans;

	query(&p, 0x1234, "Api.Example.COM", DNS_TYPE_AAAA);
	assert_int_equal(dns_parse_query(p.b, p.n, &q, &ans), 0);
	assert_true(ans);
	assert_int_equal(q.id, 0x1234);
	assert_true(q.rd);
	assert_int_equal(q.qtype, DNS_TYPE_AAAA);
	assert_int_equal(q.qclass, DNS_CLASS_IN);
	assert_string_equal(q.name, "api.example.com");
	assert_int_equal(q.qwire_len, 17);
	assert_memory_equal(q.qwire, p.b + 12, 17); /* case kept for the echo */

	/* The root, an underscore label, RD clear. */
	header(&p, 7, 0, 1, 0, 0, 0);
	put8(&p, 0);
	put16(&p, 2);
	put16(&p, 1);
	assert_int_equal(dns_parse_query(p.b, p.n, &q, NULL), 0);
	assert_string_equal(q.name, "");
	assert_false(q.rd);
	query(&p, 8, "_dmarc.example.com", 16);
	assert_int_equal(dns_parse_query(p.b, p.n, &q, NULL), 0);
	assert_string_equal(q.name, "_dmarc.example.com");
}

static void test_query_edns(void **state)
{
	struct pkt p;
	struct dns_query q;

	query(&p, 1, "example.com", 1);
	p.b[11] = 1; /* ARCOUNT: an OPT record follows */
	put8(&p, 0);
	put16(&p, 41);
	put16(&p, 4096);
	put32(&p, 0);
	put16(&p, 0);
	assert_int_equal(dns_parse_query(p.b, p.n, &q, NULL), 0);
	assert_string_equal(q.name, "example.com");
}

static void test_query_truncated(void **state)
{
	struct pkt p;
	struct dns_query q;
	bool ans;

	query(&p, 0xbeef, "www.example.com", 1);
	for (size_t len = 0; len < p.n; len++) {
		uint8_t *copy = malloc(len ? len : 1); /* exact size, for ASan */

		memcpy(copy, p.b, len);
		assert_int_equal(dns_parse_query(copy, len, &q, &ans), -EBADMSG);
		assert_int_equal(ans, len >= 12);
		if (len >= 12)
			assert_int_equal(q.id, 0xbeef);
		free(copy);
	}
	assert_int_equal(dns_parse_query(NULL, 0, &q, &ans), -EBADMSG);
	assert_false(ans);
}

static void test_query_header_checks(void **state)
{
	struct pkt p;
	struct dns_query q;
	bool ans;

	query(&p, 1, "example.com", 1);
	p.b[2] |= 0x80; /* a response: never answered */
	assert_int_equal(dns_parse_query(p.b, p.n, &q, &ans), -EBADMSG);
	assert_false(ans);

	query(&p, 2, "example.com", 1);
	p.b[2] |= 2 << 3; /* STATUS */
	assert_int_equal(dns_parse_query(p.b, p.n, &q, &ans), -ENOTSUP);
	assert_true(ans);
	assert_int_equal(q.id, 2);

	for (int field = 4; field <= 8; field += 2) {
		for (unsigned v = 0; v < 3; v++) {
			query(&p, 3, "example.com", 1);
			p.b[field + 1] = (uint8_t)v;
			if (field == 4 && v == 1)
				continue;
			assert_int_equal(dns_parse_query(p.b, p.n, &q, &ans), field == 4 || v ? -EBADMSG : 0);
			assert_true(ans);
		}
	}
	/* QDCOUNT 0xffff with one question. */
	query(&p, 4, "example.com", 1);
	p.b[4] = p.b[5] = 0xff;
	assert_int_equal(dns_parse_query(p.b, p.n, &q, NULL), -EBADMSG);
}

static void test_query_pointers(void **state)
{
	struct pkt p;
	struct dns_query q;

	/* A pointer to itself, into the header, forwards, and a two-step loop. */
	const unsigned targets[] = { 12, 0, 2, 11, 20, 0x3fff };

	for (size_t i = 0; i < sizeof(targets) / sizeof(targets[0]); i++) {
		header(&p, 1, 0, 1, 0, 0, 0);
		put16(&p, 0xc000 | targets[i]);
		put16(&p, 1);
		put16(&p, 1);
		put32(&p, 0);
		assert_int_equal(dns_parse_query(p.b, p.n, &q, NULL), -EBADMSG);
	}
	header(&p, 1, 0, 1, 0, 0, 0);
	putname_ptr(&p, "www", 18); /* points at its own pointer */
	put16(&p, 1);
	put16(&p, 1);
	assert_int_equal(dns_parse_query(p.b, p.n, &q, NULL), -EBADMSG);
	/* A pointer cut in half. */
	header(&p, 1, 0, 1, 0, 0, 0);
	put8(&p, 0xc0);
	assert_int_equal(dns_parse_query(p.b, p.n, &q, NULL), -EBADMSG);
}

static void test_query_label_limits(void **state)
{
	struct pkt p;
	struct dns_query q;
	char l63[64], name[300];

	memset(l63, 'a', 63);
	l63[63] = '\0';
	/* 0x40 and 0x80 label types are refused; 64 is therefore impossible. */
	for (unsigned t = 0x40; t <= 0x80; t += 0x40) {
		header(&p, 1, 0, 1, 0, 0, 0);
		put8(&p, t);
		for (int i = 0; i < 70; i++)
			put8(&p, 'a');
		put8(&p, 0);
		put16(&p, 1);
		put16(&p, 1);
		assert_int_equal(dns_parse_query(p.b, p.n, &q, NULL), -EBADMSG);
	}
	/* 255 bytes on the wire (253 characters) pass, 256 do not. */
	snprintf(name, sizeof(name), "%s.%s.%s.%.61s", l63, l63, l63, l63);
	query(&p, 1, name, 1);
	assert_int_equal(dns_parse_query(p.b, p.n, &q, NULL), 0);
	assert_int_equal(strlen(q.name), 253);
	assert_int_equal(q.qwire_len, 255);
	snprintf(name, sizeof(name), "%s.%s.%s.%.62s", l63, l63, l63, l63);
	query(&p, 1, name, 1);
	assert_int_equal(dns_parse_query(p.b, p.n, &q, NULL), -EBADMSG);
	/* Many one-letter labels: 127 is the most that fits. */
	header(&p, 1, 0, 1, 0, 0, 0);
	for (int i = 0; i < 128; i++) {
		put8(&p, 1);
		put8(&p, 'a');
	}
	put8(&p, 0);
	put16(&p, 1);
	put16(&p, 1);
	assert_int_equal(dns_parse_query(p.b, p.n, &q, NULL), -EBADMSG);
	/* A label whose length runs past the end. */
	header(&p, 1, 0, 1, 0, 0, 0);
	put8(&p, 40);
	putbytes(&p, "short", 5);
	assert_int_equal(dns_parse_query(p.b, p.n, &q, NULL), -EBADMSG);
	/* No type and class after the name. */
	header(&p, 1, 0, 1, 0, 0, 0);
	putname(&p, "example.com");
	put16(&p, 1);
	assert_int_equal(dns_parse_query(p.b, p.n, &q, NULL), -EBADMSG);
}

static void test_query_odd_bytes(void **state)
{
	const char *bad[] = { "a.b", "sp ace", "nul\0x", "t\xc3\xa9st", "star*", "sl/ash" };
	struct pkt p;
	struct dns_query q;
	uint8_t out[512];
	int len;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		size_t l = strlen(bad[i]) + (i == 2 ? 2 : 0);
		bool ans;

		header(&p, 0x4242, 0x0100, 1, 0, 0, 0);
		put8(&p, (unsigned)l); /* one label holding the odd bytes */
		putbytes(&p, bad[i], l);
		putname(&p, "example.com");
		put16(&p, 1);
		put16(&p, 1);
		assert_int_equal(dns_parse_query(p.b, p.n, &q, &ans), -EILSEQ);
		assert_true(ans);
		assert_string_equal(q.name, "");
		/* The REFUSED answer still carries the question exactly as asked. */
		len = dns_build_error(&q, DNS_RCODE_REFUSED, out, sizeof(out));
		assert_int_equal(len, (int)p.n);
		assert_memory_equal(out + 12, p.b + 12, p.n - 12);
		assert_int_equal(out[3] & 0xf, DNS_RCODE_REFUSED);
	}
}

/* ---- building ---- */

static void test_build_error(void **state)
{
	struct pkt p;
	struct dns_query q;
	uint8_t out[512];
	int len;
	size_t n;
	int rcode;
	struct dns_addr a[4];

	query(&p, 0xabcd, "Evil.Example", 1);
	assert_int_equal(dns_parse_query(p.b, p.n, &q, NULL), 0);
	len = dns_build_error(&q, DNS_RCODE_REFUSED, out, sizeof(out));
	assert_int_equal(len, (int)p.n);
	assert_int_equal(out[0], 0xab);
	assert_int_equal(out[1], 0xcd);
	assert_int_equal(out[2], 0x81); /* QR, opcode 0, RD echoed */
	assert_int_equal(out[3], 0x85); /* RA, REFUSED */
	assert_int_equal(out[5], 1);
	assert_int_equal(out[7] | out[9] | out[11], 0);
	assert_memory_equal(out + 12, p.b + 12, p.n - 12);
	/* It reads back as a response to that query. */
	assert_int_equal(dns_parse_response(out, (size_t)len, &q, a, 4, &n, &rcode), 0);
	assert_int_equal(rcode, DNS_RCODE_REFUSED);
	assert_int_equal(n, 0);

	len = dns_build_error(&q, DNS_RCODE_NXDOMAIN, out, sizeof(out));
	assert_int_equal(out[3] & 0xf, DNS_RCODE_NXDOMAIN);
	/* Too small: nothing written past cap. */
	memset(out, 0x5a, sizeof(out));
	assert_int_equal(dns_build_error(&q, DNS_RCODE_REFUSED, out, p.n - 1), -ENOSPC);
	assert_int_equal(out[0], 0x5a);
	/* No question known: header only. */
	q.qwire_len = 0;
	assert_int_equal(dns_build_error(&q, DNS_RCODE_FORMERR, out, sizeof(out)), 12);
	assert_int_equal(out[5], 0);
	assert_int_equal(out[3] & 0xf, DNS_RCODE_FORMERR);
	assert_int_equal(dns_build_error(&q, DNS_RCODE_FORMERR, out, 11), -ENOSPC);
}

static void test_query_init(void **state)
{
	struct dns_query q;

	assert_int_equal(dns_query_init(&q, 9, "Example.COM.", DNS_TYPE_A), 0);
	assert_string_equal(q.name, "example.com");
	assert_int_equal(q.qwire_len, 13);
	assert_int_equal(dns_query_init(&q, 9, "a..b", 1), -EINVAL);
	assert_int_equal(q.qwire_len, 0);
	assert_int_equal(dns_query_init(&q, 9, "a b", 1), -EINVAL);
	assert_int_equal(dns_query_init(&q, 9, NULL, 1), -EINVAL);
	assert_int_equal(dns_query_init(&q, 9, ".", 1), 0);
	assert_string_equal(q.name, "");
}

static void test_build_answer(void **state)
{
	struct dns_query q;
	struct dns_addr in[4] = {
		{ AF_INET, { 192, 0, 2, 1 }, 60 },
		{ AF_INET6, { 0x20, 0x01, 0x0d, 0xb8, [15] = 1 }, 60 },
		{ AF_INET, { 192, 0, 2, 2 }, 0x80000000u },
		{ AF_INET6, { 0x20, 0x01, 0x0d, 0xb8, [15] = 2 }, 30 },
	};
	struct dns_addr out[8];
	uint8_t buf[512];
	size_t n;
	int len, rcode;

	assert_int_equal(dns_query_init(&q, 0x55, "api.example.com", DNS_TYPE_A), 0);
	len = dns_build_answer(&q, in, 4, buf, sizeof(buf));
	assert_int_equal(len, 12 + 17 + 4 + 2 * 16);
	assert_int_equal(buf[7], 2);
	assert_int_equal(buf[3], 0x80);
	assert_int_equal(dns_parse_response(buf, (size_t)len, &q, out, 8, &n, &rcode), 0);
	assert_int_equal(n, 2);
	assert_memory_equal(out[0].addr, in[0].addr, 4);
	assert_int_equal(out[0].ttl, 60);
	assert_int_equal(out[1].ttl, 0x7fffffff);

	q.qtype = DNS_TYPE_AAAA;
	len = dns_build_answer(&q, in, 4, buf, sizeof(buf));
	assert_int_equal(dns_parse_response(buf, (size_t)len, &q, out, 8, &n, &rcode), 0);
	assert_int_equal(n, 2);
	assert_int_equal(out[1].family, AF_INET6);
	assert_memory_equal(out[1].addr, in[3].addr, 16);

	/* NODATA, and records that do not fit are left out. */
	len = dns_build_answer(&q, in, 0, buf, sizeof(buf));
	assert_int_equal(len, 12 + 17 + 4);
	assert_int_equal(buf[7], 0);
	len = dns_build_answer(&q, in, 4, buf, 12 + 17 + 4 + 28 + 27);
	assert_int_equal(buf[7], 1);
	assert_int_equal(len, 12 + 17 + 4 + 28);
	assert_int_equal(dns_build_answer(&q, in, 4, buf, 20), -ENOSPC);
	q.qwire_len = 0;
	assert_int_equal(dns_build_answer(&q, in, 4, buf, sizeof(buf)), -EINVAL);
}

/* ---- responses ---- */

static void test_response_cname_chain(void **state)
{
	struct dns_query q;
	struct pkt p;
	struct dns_addr out[8];
	size_t n, qn, c1, c2;
	int rcode;

	assert_int_equal(dns_query_init(&q, 0x99, "www.example.com", DNS_TYPE_A), 0);
	qn = response_head(&p, &q, 0, 6);
	c1 = rr_cname(&p, (int)qn, 300, "cdn.example.net");
	c2 = rr_cname(&p, (int)c1, 60, "edge.cdn.net");
	rr_a(&p, (int)c2, 120, 203, 0, 113, 1);
	rr_a(&p, (int)c2, 30, 203, 0, 113, 2);
	rr_a(&p, (int)c1, 120, 6, 6, 6, 6);  /* an intermediate name: not the answer */
	rr_a(&p, (int)qn, 120, 6, 6, 6, 7); /* nor the asked name, which has a CNAME */
	assert_int_equal(parse_resp(&p, &q, out, 8, &n, &rcode), 0);
	assert_int_equal(rcode, 0);
	assert_int_equal(n, 2);
	assert_int_equal(out[0].family, AF_INET);
	assert_memory_equal(out[0].addr, "\xcb\x00\x71\x01", 4);
	assert_int_equal(out[0].ttl, 60);
	assert_int_equal(out[1].ttl, 30);
	/* max bounds the output, not the parse. */
	assert_int_equal(parse_resp(&p, &q, out, 1, &n, &rcode), 0);
	assert_int_equal(n, 1);
}

static void test_response_out_of_order(void **state)
{
	struct dns_query q;
	struct pkt p;
	struct dns_addr out[8];
	size_t n, qn, edge, cdn;
	int rcode;

	/* A record first, then the second link, then the first. Names written
	 * out before they are pointed at. */
	assert_int_equal(dns_query_init(&q, 0x99, "www.example.com", DNS_TYPE_AAAA), 0);
	qn = response_head(&p, &q, 0, 3);
	put16(&p, 0);
	p.n -= 2;
	{
		const uint8_t v6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 9 };

		edge = p.n;
		putname(&p, "edge.cdn.net");
		put16(&p, DNS_TYPE_AAAA);
		put16(&p, DNS_CLASS_IN);
		put32(&p, 500);
		put16(&p, 16);
		putbytes(&p, v6, 16);
	}
	cdn = p.n;
	putname(&p, "cdn.example.net");
	put16(&p, DNS_TYPE_CNAME);
	put16(&p, DNS_CLASS_IN);
	put32(&p, 400);
	put16(&p, 2);
	put16(&p, 0xc000 | (unsigned)edge);
	rr_head(&p, (int)qn, DNS_TYPE_CNAME, 450, 2);
	put16(&p, 0xc000 | (unsigned)cdn);
	assert_int_equal(parse_resp(&p, &q, out, 8, &n, &rcode), 0);
	assert_int_equal(n, 1);
	assert_int_equal(out[0].family, AF_INET6);
	assert_int_equal(out[0].addr[15], 9);
	assert_int_equal(out[0].ttl, 400);
}

static void test_response_cname_loops(void **state)
{
	struct dns_query q;
	struct pkt p;
	struct dns_addr out[8];
	size_t n, qn, at;
	int rcode;
	char name[32];

	/* a -> b -> a */
	assert_int_equal(dns_query_init(&q, 1, "a.example", DNS_TYPE_A), 0);
	qn = response_head(&p, &q, 0, 2);
	at = rr_cname(&p, (int)qn, 60, "b.example");
	rr_head(&p, (int)at, DNS_TYPE_CNAME, 60, 2);
	put16(&p, 0xc000 | (unsigned)qn);
	assert_int_equal(parse_resp(&p, &q, out, 8, &n, &rcode), -ELOOP);
	assert_int_equal(n, 0);

	/* A chain of DNS_MAX_CNAMES links is followed, one more is not. */
	for (int links = DNS_MAX_CNAMES; links <= DNS_MAX_CNAMES + 1; links++) {
		int owner;

		qn = response_head(&p, &q, 0, (unsigned)links + 1);
		owner = (int)qn;
		for (int i = 0; i < links; i++) {
			snprintf(name, sizeof(name), "c%d.example", i);
			owner = (int)rr_cname(&p, owner, 60, name);
		}
		rr_a(&p, owner, 60, 192, 0, 2, 1);
		assert_int_equal(parse_resp(&p, &q, out, 8, &n, &rcode),
				 links == DNS_MAX_CNAMES ? 0 : -ELOOP);
		assert_int_equal(n, links == DNS_MAX_CNAMES ? 1 : 0);
	}
}

static void test_response_lies(void **state)
{
	struct dns_query q;
	struct pkt p;
	struct dns_addr out[8];
	size_t n, qn, len_at;
	int rcode;

	assert_int_equal(dns_query_init(&q, 7, "example.com", DNS_TYPE_A), 0);
	/* ANCOUNT says three, two are there. */
	qn = response_head(&p, &q, 0, 3);
	rr_a(&p, (int)qn, 60, 192, 0, 2, 1);
	rr_a(&p, (int)qn, 60, 192, 0, 2, 2);
	assert_int_equal(parse_resp(&p, &q, out, 8, &n, &rcode), -EBADMSG);
	assert_int_equal(n, 0);
	/* RDLENGTH past the end. */
	qn = response_head(&p, &q, 0, 1);
	rr_head(&p, (int)qn, DNS_TYPE_A, 60, 400);
	put32(&p, 0xc0000201);
	assert_int_equal(parse_resp(&p, &q, out, 8, &n, &rcode), -EBADMSG);
	/* An A record that is not four bytes. */
	qn = response_head(&p, &q, 0, 1);
	rr_head(&p, (int)qn, DNS_TYPE_A, 60, 5);
	put32(&p, 0xc0000201);
	put8(&p, 0);
	assert_int_equal(parse_resp(&p, &q, out, 8, &n, &rcode), -EBADMSG);
	/* A CNAME whose target runs past its RDLENGTH (the rest is trailing junk). */
	qn = response_head(&p, &q, 0, 1);
	rr_cname(&p, (int)qn, 60, "target.example");
	len_at = p.n - 16 - 2;
	p.b[len_at + 1] = 4;
	assert_int_equal(parse_resp(&p, &q, out, 8, &n, &rcode), -EBADMSG);
	/* A record header cut short. */
	qn = response_head(&p, &q, 0, 1);
	put16(&p, 0xc000 | (unsigned)qn);
	put16(&p, DNS_TYPE_A);
	assert_int_equal(parse_resp(&p, &q, out, 8, &n, &rcode), -EBADMSG);
}

static void test_response_pointer_attacks(void **state)
{
	struct dns_query q;
	struct pkt p;
	struct dns_addr out[8];
	size_t n, qn, here;
	int rcode;

	assert_int_equal(dns_query_init(&q, 7, "example.com", DNS_TYPE_A), 0);
	/* An owner pointing at itself. */
	response_head(&p, &q, 0, 1);
	here = p.n;
	put16(&p, 0xc000 | (unsigned)here);
	put16(&p, 1);
	put16(&p, 1);
	put32(&p, 60);
	put16(&p, 4);
	put32(&p, 0);
	assert_int_equal(parse_resp(&p, &q, out, 8, &n, &rcode), -EBADMSG);
	/* Forwards, to a name that does exist later. */
	response_head(&p, &q, 0, 2);
	here = p.n;
	put16(&p, 0xc000 | (unsigned)(here + 16));
	put16(&p, 1);
	put16(&p, 1);
	put32(&p, 60);
	put16(&p, 4);
	put32(&p, 0);
	putname(&p, "example.com");
	put16(&p, 1);
	put16(&p, 1);
	put32(&p, 60);
	put16(&p, 4);
	put32(&p, 0);
	assert_int_equal(parse_resp(&p, &q, out, 8, &n, &rcode), -EBADMSG);
	/* Two names pointing at each other: "x" -> "y" -> "x". */
	qn = response_head(&p, &q, 0, 1);
	(void)qn;
	here = p.n;
	put8(&p, 1);
	put8(&p, 'x');
	put16(&p, 0xc000 | (unsigned)(here + 4));
	put8(&p, 1);
	put8(&p, 'y');
	put16(&p, 0xc000 | (unsigned)here);
	assert_int_equal(parse_resp(&p, &q, out, 8, &n, &rcode), -EBADMSG);
	/* Chains of backwards pointers (each step legal) kept in an unknown
	 * record's data, then used as an A record's owner: 20 hops are fine,
	 * more than DNS_MAX_PTRS are not. */
	for (int hops = 20; hops <= 40; hops += 20) {
		size_t last;

		qn = response_head(&p, &q, 0, 2);
		rr_head(&p, (int)qn, 99, 60, (unsigned)(2 * hops));
		last = p.n;
		put16(&p, 0xc000 | (unsigned)qn);
		for (int i = 1; i < hops; i++) {
			put16(&p, 0xc000 | (unsigned)last);
			last = p.n - 2;
		}
		rr_a(&p, (int)last, 60, 192, 0, 2, 1);
		assert_int_equal(parse_resp(&p, &q, out, 8, &n, &rcode), hops == 20 ? 0 : -EBADMSG);
		assert_int_equal(n, hops == 20 ? 1 : 0);
	}
}

static void test_response_mismatch(void **state)
{
	struct dns_query q, other;
	struct pkt p;
	struct dns_addr out[8];
	size_t n, qn;
	int rcode;

	assert_int_equal(dns_query_init(&q, 7, "example.com", DNS_TYPE_A), 0);
	qn = response_head(&p, &q, 0, 1);
	rr_a(&p, (int)qn, 60, 192, 0, 2, 1);
	assert_int_equal(parse_resp(&p, &q, out, 8, &n, &rcode), 0);
	assert_int_equal(n, 1);

	other = q;
	other.id = 8;
	assert_int_equal(parse_resp(&p, &other, out, 8, &n, &rcode), -EBADMSG);
	other = q;
	other.qtype = DNS_TYPE_AAAA;
	assert_int_equal(parse_resp(&p, &other, out, 8, &n, &rcode), -EBADMSG);
	assert_int_equal(dns_query_init(&other, 7, "example.org", DNS_TYPE_A), 0);
	assert_int_equal(parse_resp(&p, &other, out, 8, &n, &rcode), -EBADMSG);
	/* Letter case in the echoed question does not matter (0x20 randomisation). */
	assert_int_equal(dns_query_init(&other, 7, "ExAmPlE.cOm", DNS_TYPE_A), 0);
	assert_int_equal(parse_resp(&p, &other, out, 8, &n, &rcode), 0);
	assert_int_equal(n, 1);
	/* Not a response; truncated (TC); two questions. */
	p.b[2] &= 0x7f;
	assert_int_equal(parse_resp(&p, &q, out, 8, &n, &rcode), -EBADMSG);
	p.b[2] |= 0x80 | 0x02;
	assert_int_equal(parse_resp(&p, &q, out, 8, &n, &rcode), -EMSGSIZE);
	p.b[2] &= (uint8_t)~0x02;
	p.b[5] = 2;
	assert_int_equal(parse_resp(&p, &q, out, 8, &n, &rcode), -EBADMSG);
	/* A record of another class is skipped. */
	qn = response_head(&p, &q, 0, 1);
	rr_a(&p, (int)qn, 60, 192, 0, 2, 1);
	p.b[p.n - 4 - 6 - 3] = 3; /* class CH */
	assert_int_equal(parse_resp(&p, &q, out, 8, &n, &rcode), 0);
	assert_int_equal(n, 0);
}

static void test_response_rcode_and_ttl(void **state)
{
	struct dns_query q;
	struct pkt p;
	struct dns_addr out[8];
	size_t n, qn;
	int rcode;

	assert_int_equal(dns_query_init(&q, 7, "gone.example.com", DNS_TYPE_A), 0);
	qn = response_head(&p, &q, DNS_RCODE_NXDOMAIN, 1);
	rr_a(&p, (int)qn, 60, 192, 0, 2, 1);
	assert_int_equal(parse_resp(&p, &q, out, 8, &n, &rcode), 0);
	assert_int_equal(rcode, DNS_RCODE_NXDOMAIN);
	assert_int_equal(n, 0);
	/* A TTL with the top bit set counts as zero (RFC 2181). */
	qn = response_head(&p, &q, 0, 1);
	rr_a(&p, (int)qn, 0x80000010u, 192, 0, 2, 1);
	assert_int_equal(parse_resp(&p, &q, out, 8, &n, &rcode), 0);
	assert_int_equal(n, 1);
	assert_int_equal(out[0].ttl, 0);
	/* Too short for a header. */
	assert_int_equal(dns_parse_response(p.b, 11, &q, out, 8, &n, &rcode), -EBADMSG);
}

/* Every prefix and many random corruptions of a response and a query: never
 * a crash or an out-of-bounds read (run under ASan), never garbage out. */
static void test_corruption(void **state)
{
	struct dns_query q, pq;
	struct pkt p, qp;
	struct dns_addr out[8];
	size_t n, qn, c1;
	int rcode;
	uint32_t seed = 12345;

	assert_int_equal(dns_query_init(&q, 0x77, "www.example.com", DNS_TYPE_A), 0);
	qn = response_head(&p, &q, 0, 3);
	c1 = rr_cname(&p, (int)qn, 300, "cdn.example.net");
	rr_a(&p, (int)c1, 120, 203, 0, 113, 1);
	rr_a(&p, (int)c1, 120, 203, 0, 113, 2);
	assert_int_equal(parse_resp(&p, &q, out, 8, &n, &rcode), 0);
	assert_int_equal(n, 2);
	for (size_t len = 0; len < p.n; len++) {
		uint8_t *copy = malloc(len ? len : 1);

		memcpy(copy, p.b, len);
		assert_int_not_equal(dns_parse_response(copy, len, &q, out, 8, &n, &rcode), 0);
		assert_int_equal(n, 0);
		free(copy);
	}
	query(&qp, 0x77, "www.example.com", 1);
	for (int iter = 0; iter < 20000; iter++) {
		struct pkt c = (iter & 1) ? p : qp;
		int flips = 1 + (int)(seed % 4);
		uint8_t *copy;

		for (int f = 0; f < flips; f++) {
			seed = seed * 1103515245u + 12345u;
			c.b[(seed >> 8) % c.n] = (uint8_t)(seed >> 20);
		}
		seed = seed * 1103515245u + 12345u;
		if (seed % 5 == 0)
			c.n = (seed >> 10) % c.n;
		copy = malloc(c.n ? c.n : 1);
		memcpy(copy, c.b, c.n);
		if (iter & 1) {
			if (dns_parse_response(copy, c.n, &q, out, 8, &n, &rcode) == 0)
				assert_true(n <= 8);
		} else if (dns_parse_query(copy, c.n, &pq, NULL) == 0) {
			assert_true(strlen(pq.name) <= DNS_NAME_TEXT_MAX);
			assert_true(pq.qwire_len <= DNS_WIRE_NAME_MAX);
		}
		free(copy);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_query_basic),
		cmocka_unit_test(test_query_edns),
		cmocka_unit_test(test_query_truncated),
		cmocka_unit_test(test_query_header_checks),
		cmocka_unit_test(test_query_pointers),
		cmocka_unit_test(test_query_label_limits),
		cmocka_unit_test(test_query_odd_bytes),
		cmocka_unit_test(test_query_init),
		cmocka_unit_test(test_build_error),
		cmocka_unit_test(test_build_answer),
		cmocka_unit_test(test_response_cname_chain),
		cmocka_unit_test(test_response_out_of_order),
		cmocka_unit_test(test_response_cname_loops),
		cmocka_unit_test(test_response_lies),
		cmocka_unit_test(test_response_pointer_attacks),
		cmocka_unit_test(test_response_mismatch),
		cmocka_unit_test(test_response_rcode_and_ttl),
		cmocka_unit_test(test_corruption),
	};

	return cmocka_run_group_tests_name("net_dns", tests, NULL, NULL);
}
