/*
 * kiln-net's first-payload sniffers: SNI from TLS ClientHellos built byte by
 * byte in the shape OpenSSL sends (TLS 1.3 with the usual extensions), split
 * over records, cut short and lying about lengths; Host from HTTP/1.x request
 * heads, with and without Host, duplicated, folded, with bare line ends.
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

#include <cmocka.h>

#include "net/sniff.h"

struct buf {
	uint8_t b[40000];
	size_t n;
};

static void put8(struct buf *p, unsigned v)
{
	assert_true(p->n < sizeof(p->b));
	p->b[p->n++] = (uint8_t)v;
}

static void put16(struct buf *p, unsigned v)
{
	put8(p, (v >> 8) & 0xff);
	put8(p, v & 0xff);
}

static void putbytes(struct buf *p, const void *d, size_t n)
{
	assert_true(p->n + n <= sizeof(p->b));
	memcpy(p->b + p->n, d, n);
	p->n += n;
}

/* Patch a big-endian length of `bytes` bytes at `at` to cover up to the end. */
static void patch_len(struct buf *p, size_t at, int bytes)
{
	size_t v = p->n - at - (size_t)bytes;

	for (int i = bytes - 1; i >= 0; i--, v >>= 8)
		p->b[at + (size_t)i] = (uint8_t)v;
}

struct hello {
	const char *names[4];	/* host_name entries; none: no SNI extension */
	int nnames;
	bool sni_twice;		/* two server_name extensions */
	unsigned other_type;	/* when nonzero, an extra entry of this name_type first */
	size_t padding;		/* bytes in a padding extension (21) */
	bool no_extensions;	/* TLS 1.0 style: nothing after compression methods */
};

static void put_sni_ext(struct buf *p, const struct hello *h)
{
	size_t ext, list;

	put16(p, 0);
	ext = p->n;
	put16(p, 0);
	list = p->n;
	put16(p, 0);
	if (h->other_type) {
		put8(p, h->other_type);
		put16(p, 3);
		putbytes(p, "abc", 3);
	}
	for (int i = 0; i < h->nnames; i++) {
		put8(p, 0);
		put16(p, (unsigned)strlen(h->names[i]));
		putbytes(p, h->names[i], strlen(h->names[i]));
	}
	patch_len(p, list, 2);
	patch_len(p, ext, 2);
}

/* The handshake message: type 1, 24-bit length, ClientHello body. */
static void client_hello(struct buf *p, const struct hello *h)
{
	static const uint8_t suites[] = { 0x13, 0x02, 0x13, 0x03, 0x13, 0x01, 0xc0, 0x2c,
					  0xc0, 0x30, 0x00, 0x9f, 0xcc, 0xa9, 0xcc, 0xa8,
					  0xcc, 0xaa, 0xc0, 0x2b, 0xc0, 0x2f, 0x00, 0xff };
	static const uint8_t groups[] = { 0x00, 0x0a, 0x00, 0x1d, 0x00, 0x17, 0x00,
					  0x1e, 0x00, 0x19, 0x00, 0x18 };
	size_t hs, exts;

	p->n = 0;
	put8(p, 1);
	hs = p->n;
	put8(p, 0);
	put16(p, 0);
	put16(p, 0x0303);
	for (int i = 0; i < 32; i++)
		put8(p, (unsigned)(i * 7 + 1)); /* random */
	put8(p, 32);
	for (int i = 0; i < 32; i++)
		put8(p, (unsigned)(0xe0 + (i & 15))); /* legacy session id */
	put16(p, sizeof(suites));
	putbytes(p, suites, sizeof(suites));
	put8(p, 1);
	put8(p, 0); /* null compression */
	if (!h->no_extensions) {
		exts = p->n;
		put16(p, 0);
		if (h->nnames || h->other_type)
			put_sni_ext(p, h);
		put16(p, 11); /* ec_point_formats */
		put16(p, 4);
		put8(p, 3);
		put8(p, 0);
		put8(p, 1);
		put8(p, 2);
		put16(p, 10); /* supported_groups */
		put16(p, sizeof(groups) + 2);
		put16(p, sizeof(groups));
		putbytes(p, groups, sizeof(groups));
		put16(p, 35); /* session_ticket */
		put16(p, 0);
		put16(p, 22); /* encrypt_then_mac */
		put16(p, 0);
		put16(p, 23); /* extended_master_secret */
		put16(p, 0);
		put16(p, 13); /* signature_algorithms */
		put16(p, 8);
		put16(p, 6);
		put16(p, 0x0403);
		put16(p, 0x0804);
		put16(p, 0x0401);
		put16(p, 43); /* supported_versions */
		put16(p, 5);
		put8(p, 4);
		put16(p, 0x0304);
		put16(p, 0x0303);
		put16(p, 45); /* psk_key_exchange_modes */
		put16(p, 2);
		put8(p, 1);
		put8(p, 1);
		put16(p, 51); /* key_share: x25519 */
		put16(p, 38);
		put16(p, 36);
		put16(p, 0x001d);
		put16(p, 32);
		for (int i = 0; i < 32; i++)
			put8(p, (unsigned)(0x40 + i));
		if (h->sni_twice)
			put_sni_ext(p, h);
		if (h->padding) {
			put16(p, 21);
			put16(p, (unsigned)h->padding);
			for (size_t i = 0; i < h->padding; i++)
				put8(p, 0);
		}
		patch_len(p, exts, 2);
	}
	patch_len(p, hs, 3);
}

/* Wrap a handshake message in records of at most `frag` bytes. */
static void records(struct buf *out, const struct buf *hs, size_t frag)
{
	out->n = 0;
	for (size_t off = 0; off < hs->n; off += frag) {
		size_t n = hs->n - off < frag ? hs->n - off : frag;

		put8(out, 22);
		put16(out, 0x0301);
		put16(out, (unsigned)n);
		putbytes(out, hs->b + off, n);
	}
}

static struct buf hs, rec;
static char host[SNIFF_HOST_MAX + 1];

static enum sniff_result sni_of(const struct buf *p, size_t len)
{
	uint8_t *copy = malloc(len ? len : 1); /* exact size, so ASan sees overreads */
	enum sniff_result r;

	memcpy(copy, p->b, len);
	r = sniff_tls_sni(copy, len, host, sizeof(host));
	free(copy);
	return r;
}

static enum sniff_result sni_hello(const struct hello *h, size_t frag)
{
	client_hello(&hs, h);
	records(&rec, &hs, frag);
	return sni_of(&rec, rec.n);
}

#define HELLO(...) (&(struct hello){ __VA_ARGS__ })

/* ---- TLS ---- */

static void test_tls_basic(void **state)
{
	assert_int_equal(sni_hello(HELLO(.names = { "API.Example.com" }, .nnames = 1), 16384),
			 SNIFF_OK);
	assert_string_equal(host, "api.example.com");
	assert_int_equal(sni_hello(HELLO(.names = { "example.com." }, .nnames = 1), 16384),
			 SNIFF_OK);
	assert_string_equal(host, "example.com");
	assert_int_equal(sni_hello(HELLO(.names = { "xn--bcher-kva.example" }, .nnames = 1),
				   16384),
			 SNIFF_OK);
	assert_string_equal(host, "xn--bcher-kva.example");
	assert_string_equal(sniff_result_str(SNIFF_UNSUPPORTED), "unsupported");
	assert_string_equal(sniff_result_str((enum sniff_result)42), "?");
}

static void test_tls_every_prefix(void **state)
{
	assert_int_equal(sni_hello(HELLO(.names = { "api.example.com" }, .nnames = 1), 16384),
			 SNIFF_OK);
	for (size_t len = 0; len < rec.n; len++)
		if (sni_of(&rec, len) != SNIFF_NEED_MORE)
			fail_msg("prefix of %zu bytes: %s", len, sniff_result_str(sni_of(&rec, len)));
	/* More after the ClientHello (early data, another record) is fine. */
	put8(&rec, 23);
	put16(&rec, 0x0303);
	put16(&rec, 1);
	put8(&rec, 0);
	assert_int_equal(sni_of(&rec, rec.n), SNIFF_OK);
}

static void test_tls_split_records(void **state)
{
	const size_t frags[] = { 1, 2, 3, 7, 50, 100, 4000 };

	for (size_t i = 0; i < sizeof(frags) / sizeof(frags[0]); i++) {
		host[0] = 'x';
		assert_int_equal(sni_hello(HELLO(.names = { "split.example.org" }, .nnames = 1),
					   frags[i]),
				 SNIFF_OK);
		assert_string_equal(host, "split.example.org");
		for (size_t len = 0; len < rec.n; len += 3)
			assert_int_equal(sni_of(&rec, len), SNIFF_NEED_MORE);
	}
	/* Something other than a handshake record between the fragments. */
	client_hello(&hs, HELLO(.names = { "split.example.org" }, .nnames = 1));
	records(&rec, &hs, 40);
	rec.b[45] = 21; /* the second record becomes an alert */
	assert_int_equal(sni_of(&rec, rec.n), SNIFF_BAD);
	assert_int_equal(sni_of(&rec, 46), SNIFF_BAD);
}

static void test_tls_no_sni(void **state)
{
	assert_int_equal(sni_hello(HELLO(.nnames = 0), 16384), SNIFF_NONE);
	assert_string_equal(host, "");
	assert_int_equal(sni_hello(HELLO(.no_extensions = true), 16384), SNIFF_NONE);
	/* A server_name extension with only another name type. */
	assert_int_equal(sni_hello(HELLO(.other_type = 7), 16384), SNIFF_NONE);
	assert_int_equal(sni_hello(HELLO(.other_type = 7, .names = { "a.example" }, .nnames = 1),
				   16384),
			 SNIFF_OK);
	assert_string_equal(host, "a.example");
}

static void test_tls_multiple_names(void **state)
{
	assert_int_equal(sni_hello(HELLO(.names = { "a.example", "A.EXAMPLE." }, .nnames = 2),
				   16384),
			 SNIFF_OK);
	assert_string_equal(host, "a.example");
	assert_int_equal(sni_hello(HELLO(.names = { "a.example", "evil.example" }, .nnames = 2),
				   16384),
			 SNIFF_BAD);
	assert_int_equal(sni_hello(HELLO(.names = { "a.example" }, .nnames = 1, .sni_twice = true),
				   16384),
			 SNIFF_BAD);
}

static void test_tls_bad_names(void **state)
{
	char l64[80], long254[300];
	const char *bad[] = { "", ".", "a..example", ".example", "ex_ample.com", "sl/ash.com",
			      "sp ace.com", "1.2.3.4:443", "t\xc3\xa9st.com", "a.example..",
			      l64, long254 };

	memset(l64, 'a', 64);
	snprintf(l64 + 64, sizeof(l64) - 64, ".com");
	memset(long254, 'a', sizeof(long254));
	for (int i = 63; i < 254; i += 64)
		long254[i] = '.';
	long254[254] = '\0';
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (sni_hello(HELLO(.names = { bad[i] }, .nnames = 1), 16384) != SNIFF_BAD)
			fail_msg("'%s' accepted", bad[i]);
	/* A NUL inside the name. */
	assert_int_equal(sni_hello(HELLO(.names = { "good.example" }, .nnames = 1), 16384),
			 SNIFF_OK);
	{
		uint8_t *at = memmem(rec.b, rec.n, "good", 4);

		assert_non_null(at);
		at[2] = 0;
		assert_int_equal(sni_of(&rec, rec.n), SNIFF_BAD);
	}
	/* 253 characters are the limit. */
	long254[253] = '\0';
	assert_int_equal(sni_hello(HELLO(.names = { long254 }, .nnames = 1), 16384), SNIFF_OK);
	assert_int_equal(strlen(host), 253);
}

/* Offsets in the record built by sni_hello with one record. */
#define REC_HDR 5
#define HS_HDR	4
#define SID_AT	(REC_HDR + HS_HDR + 2 + 32)

static void test_tls_lying_lengths(void **state)
{
	const struct hello *h = HELLO(.names = { "lie.example" }, .nnames = 1);
	size_t exts_at, sni_at;

	/* Record length: zero, above 2^14. */
	sni_hello(h, 16384);
	rec.b[3] = 0;
	rec.b[4] = 0;
	assert_int_equal(sni_of(&rec, rec.n), SNIFF_BAD);
	sni_hello(h, 16384);
	rec.b[3] = 0x40;
	rec.b[4] = 0x01;
	assert_int_equal(sni_of(&rec, rec.n), SNIFF_BAD);
	/* Record longer than what follows: wait for it. */
	sni_hello(h, 16384);
	rec.b[4] += 10;
	assert_int_equal(sni_of(&rec, rec.n), SNIFF_OK); /* the hello is complete anyway */
	rec.b[4] -= 10;
	/* Handshake length beyond the record: need more; beyond any cap: too long. */
	rec.b[REC_HDR + 3] += 1;
	assert_int_equal(sni_of(&rec, rec.n), SNIFF_NEED_MORE);
	rec.b[REC_HDR + 1] = 0xff;
	assert_int_equal(sni_of(&rec, rec.n), SNIFF_TOO_LONG);
	/* Handshake length shorter than the body: the body does not parse. */
	sni_hello(h, 16384);
	rec.b[REC_HDR + 3] -= 1;
	assert_int_equal(sni_of(&rec, rec.n), SNIFF_BAD);
	/* Session id longer than 32. */
	sni_hello(h, 16384);
	rec.b[SID_AT] = 33;
	assert_int_equal(sni_of(&rec, rec.n), SNIFF_BAD);
	/* Odd cipher suite length; zero. */
	sni_hello(h, 16384);
	rec.b[SID_AT + 1 + 32 + 1] = 23;
	assert_int_equal(sni_of(&rec, rec.n), SNIFF_BAD);
	sni_hello(h, 16384);
	rec.b[SID_AT + 1 + 32 + 1] = 0;
	assert_int_equal(sni_of(&rec, rec.n), SNIFF_BAD);
	/* No compression method. */
	sni_hello(h, 16384);
	rec.b[SID_AT + 1 + 32 + 2 + 24] = 0;
	assert_int_equal(sni_of(&rec, rec.n), SNIFF_BAD);
	/* Extension block length: too long, too short. */
	exts_at = SID_AT + 1 + 32 + 2 + 24 + 2;
	sni_hello(h, 16384);
	rec.b[exts_at + 1] += 1;
	assert_int_equal(sni_of(&rec, rec.n), SNIFF_BAD);
	sni_hello(h, 16384);
	rec.b[exts_at + 1] -= 1;
	assert_int_equal(sni_of(&rec, rec.n), SNIFF_BAD);
	/* server_name: extension length, list length, name length. */
	sni_at = exts_at + 2;
	assert_int_equal(rec.b[sni_at + 1], 0); /* type 0 comes first */
	sni_hello(h, 16384);
	rec.b[sni_at + 3] += 1;
	assert_int_equal(sni_of(&rec, rec.n), SNIFF_BAD);
	sni_hello(h, 16384);
	rec.b[sni_at + 5] += 1;
	assert_int_equal(sni_of(&rec, rec.n), SNIFF_BAD);
	sni_hello(h, 16384);
	rec.b[sni_at + 5] -= 1;
	assert_int_equal(sni_of(&rec, rec.n), SNIFF_BAD);
	sni_hello(h, 16384);
	rec.b[sni_at + 8] = 0xff;
	assert_int_equal(sni_of(&rec, rec.n), SNIFF_BAD);
	sni_hello(h, 16384);
	rec.b[sni_at + 8] -= 1;
	assert_int_equal(sni_of(&rec, rec.n), SNIFF_BAD);
	/* An empty server name list. */
	sni_hello(h, 16384);
	rec.b[sni_at + 4] = 0;
	rec.b[sni_at + 5] = 0;
	assert_int_equal(sni_of(&rec, rec.n), SNIFF_BAD);
}

static void test_tls_not_a_hello(void **state)
{
	const struct hello *h = HELLO(.names = { "a.example" }, .nnames = 1);
	const char *http = "GET / HTTP/1.1\r\n";
	struct buf p = { .n = 0 };

	putbytes(&p, http, strlen(http));
	assert_int_equal(sni_of(&p, p.n), SNIFF_BAD);
	assert_int_equal(sni_of(&p, 1), SNIFF_BAD);
	sni_hello(h, 16384);
	rec.b[0] = 23; /* application data */
	assert_int_equal(sni_of(&rec, rec.n), SNIFF_BAD);
	sni_hello(h, 16384);
	rec.b[1] = 2; /* SSL 2 record version */
	assert_int_equal(sni_of(&rec, rec.n), SNIFF_BAD);
	assert_int_equal(sni_of(&rec, 2), SNIFF_BAD);
	sni_hello(h, 16384);
	rec.b[REC_HDR] = 2; /* ServerHello */
	assert_int_equal(sni_of(&rec, rec.n), SNIFF_BAD);
	assert_int_equal(sni_of(&rec, REC_HDR + 1), SNIFF_BAD);
	sni_hello(h, 16384);
	rec.b[REC_HDR + HS_HDR] = 2; /* legacy_version 2.x */
	assert_int_equal(sni_of(&rec, rec.n), SNIFF_BAD);
	/* An SSLv2-compatible hello. */
	p.n = 0;
	put16(&p, 0x8000 | 46);
	put8(&p, 1);
	put16(&p, 0x0301);
	assert_int_equal(sni_of(&p, p.n), SNIFF_UNSUPPORTED);
	/* Bad arguments. */
	assert_int_equal(sniff_tls_sni(rec.b, rec.n, host, 10), SNIFF_BAD);
	assert_int_equal(sniff_tls_sni(NULL, 5, host, sizeof(host)), SNIFF_BAD);
}

static void test_tls_cap(void **state)
{
	/* A ClientHello bigger than the cap: too long, as soon as it is known. */
	assert_int_equal(sni_hello(HELLO(.names = { "big.example" }, .nnames = 1,
					 .padding = 20000),
				   16384),
			 SNIFF_TOO_LONG);
	assert_int_equal(sni_of(&rec, 9), SNIFF_TOO_LONG);
	/* One that nearly fills it, sent in many records. */
	assert_int_equal(sni_hello(HELLO(.names = { "big.example" }, .nnames = 1,
					 .padding = 15000),
				   4000),
			 SNIFF_OK);
	assert_string_equal(host, "big.example");
	/* One that fits alone but not with its record headers in small records. */
	assert_int_equal(sni_hello(HELLO(.names = { "big.example" }, .nnames = 1,
					 .padding = 16000),
				   100),
			 SNIFF_TOO_LONG);
	/* More input than the cap with a small hello at the front: fine. */
	assert_int_equal(sni_hello(HELLO(.names = { "small.example" }, .nnames = 1), 16384),
			 SNIFF_OK);
	memset(rec.b + rec.n, 0x17, 20000);
	rec.n += 20000;
	assert_int_equal(sni_of(&rec, rec.n), SNIFF_OK);
}

static void test_tls_corruption(void **state)
{
	uint32_t seed = 777;

	client_hello(&hs, HELLO(.names = { "fuzz.example" }, .nnames = 1));
	for (int iter = 0; iter < 20000; iter++) {
		struct buf c;
		enum sniff_result r;

		records(&c, &hs, iter % 3 ? 16384 : 60);
		for (int f = 0; f < 1 + iter % 4; f++) {
			seed = seed * 1103515245u + 12345u;
			c.b[(seed >> 8) % c.n] ^= (uint8_t)(1u << ((seed >> 4) & 7));
		}
		seed = seed * 1103515245u + 12345u;
		if (seed % 4 == 0)
			c.n = (seed >> 10) % c.n;
		r = sni_of(&c, c.n);
		assert_true(r <= SNIFF_UNSUPPORTED);
		if (r == SNIFF_OK)
			assert_true(strlen(host) >= 1 && strlen(host) <= SNIFF_HOST_MAX);
	}
}

/* ---- HTTP ---- */

static uint16_t port;

static enum sniff_result http(const char *s)
{
	size_t n = strlen(s);
	uint8_t *copy = malloc(n ? n : 1);
	enum sniff_result r;

	memcpy(copy, s, n);
	r = sniff_http_host(copy, n, host, sizeof(host), &port);
	free(copy);
	return r;
}

static void test_http_basic(void **state)
{
	assert_int_equal(http("GET / HTTP/1.1\r\nHost: Example.COM\r\nAccept: */*\r\n\r\n"),
			 SNIFF_OK);
	assert_string_equal(host, "example.com");
	assert_int_equal(port, 0);
	assert_int_equal(http("POST /upload?x=1 HTTP/1.0\r\nContent-Length: 4\r\n"
			      "hOsT:api.example.com.:8080\r\n\r\nHost: evil.com"),
			 SNIFF_OK);
	assert_string_equal(host, "api.example.com");
	assert_int_equal(port, 8080);
	assert_int_equal(http("OPTIONS * HTTP/1.1\r\nHost: a.example \t\r\n\r\n"), SNIFF_OK);
	assert_string_equal(host, "a.example");
	assert_int_equal(http("GET / HTTP/1.1\r\nHost:\t a.example:1\r\n\r\n"), SNIFF_OK);
	assert_int_equal(port, 1);
}

static void test_http_missing_or_duplicated(void **state)
{
	assert_int_equal(http("GET / HTTP/1.0\r\n\r\n"), SNIFF_NONE);
	assert_int_equal(http("GET / HTTP/1.1\r\nX-Host: a.example\r\nHostname: b\r\n\r\n"),
			 SNIFF_NONE);
	assert_string_equal(host, "");
	assert_int_equal(http("GET / HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\n\r\n"),
			 SNIFF_BAD);
	assert_int_equal(http("GET / HTTP/1.1\r\nhost: a.example\r\nHOST: b.example\r\n\r\n"),
			 SNIFF_BAD);
	assert_string_equal(host, "");
}

static void test_http_host_values(void **state)
{
	const char *bad[] = { "", "a.example:", "a.example:0", "a.example:65536",
			      "a.example:80x", "a.example:123456", "a_b.example", "a..example",
			      "a.example:80:80", "user@a.example", "a.example/x", "a example" };
	char req[256];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", bad[i]);
		if (http(req) != SNIFF_BAD)
			fail_msg("Host '%s' accepted", bad[i]);
	}
	assert_int_equal(http("GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n"),
			 SNIFF_UNSUPPORTED);
	assert_int_equal(http("GET / HTTP/1.1\r\nHost: a.example:65535\r\n\r\n"), SNIFF_OK);
	assert_int_equal(port, 65535);
}

static void test_http_framing(void **state)
{
	/* Bare LF, bare CR, NUL, other controls, folding, space before the colon. */
	assert_int_equal(http("GET / HTTP/1.1\nHost: a.example\n\n"), SNIFF_BAD);
	assert_int_equal(http("GET / HTTP/1.1\r\nHost: a.example\n\r\n"), SNIFF_BAD);
	assert_int_equal(http("GET / HTTP/1.1\r\nX: y\rHost: evil\r\nHost: a.example\r\n\r\n"),
			 SNIFF_BAD);
	assert_int_equal(http("GET / HTTP/1.1\r\nHost: a.ex\x01mple\r\n\r\n"), SNIFF_BAD);
	assert_int_equal(http("GET / HTTP/1.1\r\nX: y\r\n Host: a.example\r\n\r\n"), SNIFF_BAD);
	assert_int_equal(http("GET / HTTP/1.1\r\nHost : a.example\r\n\r\n"), SNIFF_BAD);
	assert_int_equal(http("GET / HTTP/1.1\r\n: a.example\r\n\r\n"), SNIFF_BAD);
	assert_int_equal(http("GET / HTTP/1.1\r\nNoColon\r\n\r\n"), SNIFF_BAD);
	{
		const char with_nul[] = "GET / HTTP/1.1\r\nHost: a.example\0\r\n\r\n";
		uint8_t copy[sizeof(with_nul) - 1];

		memcpy(copy, with_nul, sizeof(copy));
		assert_int_equal(sniff_http_host(copy, sizeof(copy), host, sizeof(host), &port),
				 SNIFF_BAD);
	}
}

static void test_http_request_line(void **state)
{
	assert_int_equal(http("GET http://evil.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n"),
			 SNIFF_UNSUPPORTED);
	assert_int_equal(http("CONNECT evil.example:443 HTTP/1.1\r\nHost: a.example\r\n\r\n"),
			 SNIFF_UNSUPPORTED);
	assert_int_equal(http("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), SNIFF_UNSUPPORTED);
	assert_int_equal(http("GET / HTTP/1.2\r\nHost: a.example\r\n\r\n"), SNIFF_BAD);
	assert_int_equal(http("GET / HTTP/1.1 \r\nHost: a.example\r\n\r\n"), SNIFF_BAD);
	assert_int_equal(http("GET /  HTTP/1.1\r\nHost: a.example\r\n\r\n"), SNIFF_BAD);
	assert_int_equal(http("GET  / HTTP/1.1\r\nHost: a.example\r\n\r\n"), SNIFF_BAD);
	assert_int_equal(http("GET /\r\n\r\n"), SNIFF_BAD);
	assert_int_equal(http("G(T / HTTP/1.1\r\nHost: a.example\r\n\r\n"), SNIFF_BAD);
	assert_int_equal(http("GET *x HTTP/1.1\r\nHost: a.example\r\n\r\n"), SNIFF_UNSUPPORTED);
	assert_int_equal(http("\r\n\r\n"), SNIFF_BAD);
	assert_int_equal(http("GET /\x7f HTTP/1.1\r\nHost: a.example\r\n\r\n"), SNIFF_BAD);
}

static void test_http_prefixes_and_cap(void **state)
{
	const char *req = "GET /index.html HTTP/1.1\r\nHost: www.example.com:80\r\n"
			  "User-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n";
	size_t n = strlen(req);
	struct buf *big = malloc(sizeof(*big));

	assert_int_equal(http(req), SNIFF_OK);
	for (size_t len = 0; len < n; len++) {
		uint8_t *copy = malloc(len ? len : 1);

		memcpy(copy, req, len);
		assert_int_equal(sniff_http_host(copy, len, host, sizeof(host), &port),
				 SNIFF_NEED_MORE);
		free(copy);
	}
	/* Not HTTP at all: said at once, not after 16 KiB. */
	assert_int_equal(http("\x16\x03\x01"), SNIFF_BAD);
	assert_int_equal(http("SSH-2.0-OpenSSH_9.6\r\n"), SNIFF_BAD);
	assert_int_equal(http("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), SNIFF_BAD);
	/* A head that never ends. */
	assert_non_null(big);
	big->n = 0;
	putbytes(big, "GET / HTTP/1.1\r\n", 16);
	while (big->n < SNIFF_MAX + 100)
		putbytes(big, "X-Pad: aaaaaaaaaaaaaaaaaaaaaaaa\r\n", 33);
	assert_int_equal(sniff_http_host(big->b, SNIFF_MAX - 1, host, sizeof(host), &port),
			 SNIFF_NEED_MORE);
	assert_int_equal(sniff_http_host(big->b, SNIFF_MAX, host, sizeof(host), &port),
			 SNIFF_TOO_LONG);
	assert_int_equal(sniff_http_host(big->b, big->n, host, sizeof(host), &port),
			 SNIFF_TOO_LONG);
	/* Bad arguments. */
	assert_int_equal(sniff_http_host(big->b, big->n, host, 4, &port), SNIFF_BAD);
	assert_int_equal(sniff_http_host(big->b, big->n, host, sizeof(host), NULL), SNIFF_BAD);
	assert_int_equal(sniff_http_host(NULL, 3, host, sizeof(host), &port), SNIFF_BAD);
	free(big);
}

static void test_http_corruption(void **state)
{
	const char *req = "GET /index.html HTTP/1.1\r\nHost: www.example.com:80\r\n"
			  "Accept: */*\r\n\r\n";
	uint32_t seed = 99;

	for (int iter = 0; iter < 20000; iter++) {
		uint8_t c[128];
		size_t n = strlen(req);
		enum sniff_result r;
		uint8_t *copy;

		memcpy(c, req, n);
		for (int f = 0; f < 1 + iter % 3; f++) {
			seed = seed * 1103515245u + 12345u;
			c[(seed >> 8) % n] = (uint8_t)(seed >> 20);
		}
		seed = seed * 1103515245u + 12345u;
		if (seed % 4 == 0)
			n = (seed >> 10) % n;
		copy = malloc(n ? n : 1);
		memcpy(copy, c, n);
		r = sniff_http_host(copy, n, host, sizeof(host), &port);
		free(copy);
		assert_true(r <= SNIFF_UNSUPPORTED);
		if (r == SNIFF_OK)
			assert_true(strlen(host) >= 1);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tls_basic),
		cmocka_unit_test(test_tls_every_prefix),
		cmocka_unit_test(test_tls_split_records),
		cmocka_unit_test(test_tls_no_sni),
		cmocka_unit_test(test_tls_multiple_names),
		cmocka_unit_test(test_tls_bad_names),
		cmocka_unit_test(test_tls_lying_lengths),
		cmocka_unit_test(test_tls_not_a_hello),
		cmocka_unit_test(test_tls_cap),
		cmocka_unit_test(test_tls_corruption),
		cmocka_unit_test(test_http_basic),
		cmocka_unit_test(test_http_missing_or_duplicated),
		cmocka_unit_test(test_http_host_values),
		cmocka_unit_test(test_http_framing),
		cmocka_unit_test(test_http_request_line),
		cmocka_unit_test(test_http_prefixes_and_cap),
		cmocka_unit_test(test_http_corruption),
	};

	return cmocka_run_group_tests_name("net_sniff", tests, NULL, NULL);
}
