/*
 * SNI and Host sniffing for kiln-net (src/net/sniff.c), the first bytes of
 * a guest's TCP connection.
 *
 * Input: byte 0 picks the parser (even: TLS ClientHello, odd: HTTP head),
 * byte 1 the number of cut points (at most 16, u16 each), then the bytes.
 * kiln-net calls the parser on everything received so far after every read;
 * the cut points are where reads ended.
 *
 * Properties: the verdict is stable under splitting: once a prefix gives a
 * verdict other than "need more", every longer prefix (and the whole) gives
 * the same verdict (and with "ok" the same host and port); "ok" always comes with a valid host name
 * (lower case letters, digits, '-' and '.', labels of 1..63, at most 253,
 * no trailing dot), and an HTTP Host appears in the head as sent; nothing
 * past SNIFF_MAX bytes is looked at.
 */
#include "fuzz.h"
#include "net/sniff.h"

struct verdict {
	enum sniff_result r;
	char host[SNIFF_HOST_MAX + 1];
	uint16_t port;
};

static void sniff(bool http, const uint8_t *p, size_t n, struct verdict *v)
{
	memset(v, 0, sizeof(*v));
	if (http)
		v->r = sniff_http_host(p, n, v->host, sizeof(v->host), &v->port);
	else
		v->r = sniff_tls_sni(p, n, v->host, sizeof(v->host));
}

static bool host_ok(const char *h)
{
	size_t n = strnlen(h, SNIFF_HOST_MAX + 1), label = 0;

	if (n == 0 || n > SNIFF_HOST_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = h[i];

		if (c == '.') {
			if (!label)
				return false;
			label = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-') {
			if (++label > 63)
				return false;
		} else {
			return false;
		}
	}
	return label > 0;
}

/* Does the host appear in the head, case aside? */
static bool in_head(const uint8_t *p, size_t n, const char *h)
{
	size_t k = strlen(h);

	for (size_t i = 0; i + k <= n; i++) {
		size_t j = 0;

		while (j < k && (p[i + j] | (p[i + j] >= 'A' && p[i + j] <= 'Z' ? 0x20 : 0)) ==
					(uint8_t)h[j])
			j++;
		if (j == k)
			return true;
	}
	return false;
}

/* Host and port mean something only with "ok" (kiln-net clears them otherwise). */
static bool same(const struct verdict *a, const struct verdict *b)
{
	return a->r == b->r && (a->r != SNIFF_OK || (a->port == b->port && !strcmp(a->host, b->host)));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz in = { data, size };
	bool http = fz_u8(&in) & 1;
	unsigned ncut = fz_u8(&in) % 17;
	size_t cuts[17], n;
	struct verdict whole, v, first;
	const uint8_t *p;
	bool decided = false;

	for (unsigned i = 0; i < ncut; i++)
		cuts[i] = fz_u16(&in);
	n = fz_take(&in, in.n, &p);
	sniff(http, p, n, &whole);
	if (whole.r == SNIFF_OK) {
		FZ_CHECK(host_ok(whole.host), "host '%s'", whole.host);
		if (http)
			FZ_CHECK(in_head(p, n, whole.host), "Host '%s' is not in the head", whole.host);
	}
	/* Beyond SNIFF_MAX bytes nothing counts. */
	if (n > SNIFF_MAX) {
		sniff(http, p, SNIFF_MAX, &v);
		FZ_CHECK(same(&v, &whole), "bytes past SNIFF_MAX changed the verdict");
	}
	/* Growing prefixes, as reads end at the cut points (sorted). */
	for (unsigned i = 1; i < ncut; i++)
		for (unsigned j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) {
			size_t t = cuts[j];

			cuts[j] = cuts[j - 1];
			cuts[j - 1] = t;
		}
	for (unsigned i = 0; i < ncut; i++) {
		if (cuts[i] > n)
			break;
		sniff(http, p, cuts[i], &v);
		if (decided)
			FZ_CHECK(same(&v, &first), "verdict %s after %zu bytes, %s before",
				 sniff_result_str(v.r), cuts[i], sniff_result_str(first.r));
		else if (v.r != SNIFF_NEED_MORE) {
			first = v;
			decided = true;
		}
	}
	if (decided)
		FZ_CHECK(same(&whole, &first), "verdict %s on the whole, %s on a prefix",
			 sniff_result_str(whole.r), sniff_result_str(first.r));
	return 0;
}
