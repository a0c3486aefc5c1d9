/*
 * DNS messages for kiln-net (src/net/dnsmsg.c): the guest's queries and the
 * resolver's responses.
 *
 * Input: byte 0 picks the mode.
 *  - even: the rest is a query from the guest. When it parses: the name is
 *    lower case, at most 253 characters of [a-z0-9_-.]; the rebuilt query
 *    (dns_build_query) parses back to the same question; an error answer
 *    echoes the question's bytes exactly with the id and RD; an answer built
 *    with addresses (from the first bytes of the query) fits its buffer
 *    (whose size the input picks), and parsed back as the resolver's
 *    response it yields exactly the addresses that fit, in order, with their
 *    TTLs (clamped to 2^31 - 1).
 *  - odd: qtype (u8), id (u16), max answers (u8), a name (u8 length + bytes),
 *    then the rest is a response to that question. dns_parse_response never
 *    returns more than max addresses, only of the asked family, and only
 *    when the id, question and type match.
 */
#include <errno.h>
#include <sys/socket.h>

#include "fuzz.h"
#include "net/dnsmsg.h"

static bool name_ok(const char *n)
{
	size_t len = strnlen(n, DNS_NAME_TEXT_MAX + 1);

	if (len > DNS_NAME_TEXT_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= '0' && n[i] <= '9') || n[i] == '-' ||
		      n[i] == '_' || n[i] == '.'))
			return false;
	return true;
}

static void query_mode(const uint8_t *msg, size_t len)
{
	static const uint32_t ttls[] = { 0, 1, 300, 0x7fffffff, 0x80000000u, 0xffffffffu };
	struct dns_query q, q2;
	struct dns_addr addrs[8], got[8];
	uint8_t buf[1024], resp[1024];
	size_t qend, n = 0, fit = 0, cap;
	bool answerable;
	int r, rcode;

	r = dns_parse_query(msg, len, &q, &answerable);
	if (r == -EILSEQ || r == -ENOTSUP || r == -EBADMSG) {
		if (answerable) /* the caller answers with the id and RD it got */
			FZ_CHECK(dns_build_error(&q, DNS_RCODE_FORMERR, buf, sizeof(buf)) > 0,
				 "cannot build an error answer");
		return;
	}
	FZ_CHECK(r == 0, "dns_parse_query: %d", r);
	FZ_CHECK(answerable && name_ok(q.name), "parsed name '%s'", q.name);
	FZ_CHECK(q.qwire_len >= 1 && q.qwire_len <= DNS_WIRE_NAME_MAX, "qwire_len %zu",
		 q.qwire_len);
	qend = DNS_HDR_SIZE + q.qwire_len + 4;
	FZ_CHECK(qend <= len, "question ends at %zu of %zu", qend, len);

	/* The rebuilt query is the same question. */
	r = dns_build_query(&q, buf, sizeof(buf));
	FZ_CHECK(r == (int)qend, "dns_build_query: %d", r);
	FZ_CHECK(dns_parse_query(buf, (size_t)r, &q2, NULL) == 0 && q2.id == q.id && q2.rd &&
			 q2.qtype == q.qtype && q2.qclass == q.qclass && !strcmp(q2.name, q.name) &&
			 q2.qwire_len == q.qwire_len && !memcmp(q2.qwire, q.qwire, q.qwire_len),
		 "rebuilt query differs");

	/* The error answer echoes the question as sent. */
	r = dns_build_error(&q, DNS_RCODE_REFUSED, buf, sizeof(buf));
	FZ_CHECK(r == (int)qend && !memcmp(buf + DNS_HDR_SIZE, msg + DNS_HDR_SIZE, qend - 12) &&
			 buf[0] == msg[0] && buf[1] == msg[1] && (buf[2] & 0x80) &&
			 (buf[2] & 1) == (msg[2] & 1) && (buf[3] & 0xf) == DNS_RCODE_REFUSED,
		 "error answer does not echo the query");

	/* An answer with addresses, in a buffer the input sizes. */
	for (size_t i = 0; i < 8 && i * 3 + 2 < len; i++) {
		uint8_t b = msg[i * 3], c = msg[i * 3 + 1];

		memset(&addrs[n], 0, sizeof(addrs[n]));
		addrs[n].family = b & 1 ? AF_INET6 : AF_INET;
		memset(addrs[n].addr, c, sizeof(addrs[n].addr));
		addrs[n].ttl = ttls[msg[i * 3 + 2] % 6];
		n++;
	}
	cap = len > 2 ? 12 + (size_t)msg[len - 1] * 4 : sizeof(resp);
	if (cap > sizeof(resp))
		cap = sizeof(resp);
	memset(resp, 0xee, sizeof(resp));
	r = dns_build_answer(&q, addrs, n, resp, cap);
	if (r == -ENOSPC) {
		FZ_CHECK(cap < qend, "-ENOSPC with %zu bytes for a %zu-byte head", cap, qend);
		return;
	}
	FZ_CHECK(r >= (int)qend && (size_t)r <= cap, "answer of %d bytes in %zu", r, cap);
	for (size_t i = (size_t)r; i < sizeof(resp); i++)
		FZ_CHECK(resp[i] == 0xee, "answer wrote past its length");
	{
		size_t got_n = 0, want = 0, off = qend;

		r = dns_parse_response(resp, (size_t)r, &q, got, 8, &got_n, &rcode);
		FZ_CHECK(r == 0 && rcode == 0, "our own answer does not parse (%d)", r);
		for (size_t i = 0; i < n; i++) {
			size_t alen = addrs[i].family == AF_INET ? 4 : 16;
			bool match = (q.qtype == DNS_TYPE_A && alen == 4) ||
				     (q.qtype == DNS_TYPE_AAAA && alen == 16);

			if (!match)
				continue;
			if (off + 12 + alen > cap)
				break;
			off += 12 + alen;
			FZ_CHECK(want < got_n && got[want].family == addrs[i].family &&
					 !memcmp(got[want].addr, addrs[i].addr, alen) &&
					 got[want].ttl == (addrs[i].ttl > 0x7fffffff ? 0x7fffffff
										 : addrs[i].ttl),
				 "address %zu did not come back", i);
			want++;
		}
		fit = want;
		FZ_CHECK(got_n == fit, "%zu addresses back, %zu fit", got_n, fit);
	}
}

static void response_mode(struct fz *in)
{
	static const uint16_t types[] = { DNS_TYPE_A, DNS_TYPE_AAAA, DNS_TYPE_CNAME, 16 };
	struct dns_addr out[64];
	struct dns_query q;
	const uint8_t *name, *msg;
	char text[300];
	uint16_t qtype = types[fz_u8(in) % 4], id = fz_u16(in);
	size_t max = fz_u8(in) % 65, n = 99, nl, len;
	int rcode, r;

	nl = fz_take(in, fz_u8(in), &name);
	memcpy(text, name, nl);
	text[nl] = 0;
	if (dns_query_init(&q, id, text, qtype)) {
		FZ_CHECK(dns_query_init(&q, id, "example.com", qtype) == 0, "dns_query_init");
	} else {
		FZ_CHECK(name_ok(q.name), "dns_query_init name '%s'", q.name);
	}
	len = fz_take(in, in->n, &msg);
	r = dns_parse_response(msg, len, &q, out, max, &n, &rcode);
	FZ_CHECK(n <= max, "%zu addresses for %zu slots", n, max);
	/* -EBADMSG may come after some addresses were read: the caller drops them. */
	FZ_CHECK(r == 0 || n == 0 || r == -EBADMSG, "addresses returned with error %d", r);
	if (r == 0) {
		FZ_CHECK(len >= DNS_HDR_SIZE && msg[0] == (id >> 8) && msg[1] == (uint8_t)id,
			 "response accepted with another id");
		FZ_CHECK(rcode >= 0 && rcode <= 15 && (rcode == 0 || n == 0), "rcode %d with %zu",
			 rcode, n);
	}
	for (size_t i = 0; r == 0 && i < n; i++)
		FZ_CHECK(out[i].family == (qtype == DNS_TYPE_A ? AF_INET : AF_INET6) &&
				 (qtype == DNS_TYPE_A || qtype == DNS_TYPE_AAAA) &&
				 out[i].ttl <= 0x7fffffff,
			 "address %zu of family %d for type %u", i, out[i].family, qtype);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz in = { data, size };
	uint8_t mode = fz_u8(&in);

	if (mode & 1)
		response_mode(&in);
	else
		query_mode(in.p, in.n);
	return 0;
}
