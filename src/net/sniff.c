/* SNI and Host extraction for kiln-net (see sniff.h). */
#include "net/sniff.h"

#include <stdbool.h>
#include <string.h>

#define TLS_RECORD_MAX	  16384 /* plaintext record, RFC 8446 5.1 */
#define TLS_HANDSHAKE	  22
#define TLS_CLIENT_HELLO  1
#define TLS_EXT_SNI	  0
#define TLS_SNI_HOST_NAME 0

const char *sniff_result_str(enum sniff_result r)
{
	switch (r) {
	case SNIFF_OK: return "ok";
	case SNIFF_NEED_MORE: return "need-more";
	case SNIFF_NONE: return "none";
	case SNIFF_BAD: return "malformed";
	case SNIFF_TOO_LONG: return "too-long";
	case SNIFF_UNSUPPORTED: return "unsupported";
	}
	return "?";
}

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

/*
 * A host name from the wire: letters, digits, '-' and '.', labels of 1 to 63,
 * at most 253 characters after dropping one trailing dot. Written lower case
 * to out (SNIFF_HOST_MAX + 1 bytes). 0 or -1. The policy checks it again.
 */
static int host_norm(const uint8_t *s, size_t n, char *out)
{
	size_t label = 0;

	if (n > 0 && s[n - 1] == '.')
		n--;
	if (n == 0 || n > SNIFF_HOST_MAX)
		return -1;
	for (size_t i = 0; i < n; i++) {
		uint8_t c = s[i];

		if (c >= 'A' && c <= 'Z')
			c = (uint8_t)(c - 'A' + 'a');
		if (c == '.') {
			if (label == 0)
				return -1;
			label = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-') {
			if (++label > 63)
				return -1;
		} else {
			return -1;
		}
		out[i] = (char)c;
	}
	if (label == 0)
		return -1; /* "a.." */
	out[n] = '\0';
	return 0;
}

/* ---- TLS ---- */

/* A bounded reader: every take checks what is left. */
struct rd {
	const uint8_t *p;
	size_t left;
};

static bool take(struct rd *r, size_t n, struct rd *sub)
{
	if (r->left < n)
		return false;
	if (sub) {
		sub->p = r->p;
		sub->left = n;
	}
	r->p += n;
	r->left -= n;
	return true;
}

static bool take8(struct rd *r, unsigned *v)
{
	if (r->left < 1)
		return false;
	*v = r->p[0];
	return take(r, 1, NULL);
}

static bool take16(struct rd *r, unsigned *v)
{
	if (r->left < 2)
		return false;
	*v = rd16(r->p);
	return take(r, 2, NULL);
}

/* The server_name extension's data (RFC 6066 3). */
static enum sniff_result parse_sni_ext(struct rd ext, char *host)
{
	struct rd list;
	unsigned n;
	bool have = false;

	if (!take16(&ext, &n) || !take(&ext, n, &list) || ext.left != 0 || n == 0)
		return SNIFF_BAD;
	while (list.left) {
		unsigned type, len;
		struct rd name;
		char norm[SNIFF_HOST_MAX + 1];

		if (!take8(&list, &type) || !take16(&list, &len) || !take(&list, len, &name))
			return SNIFF_BAD;
		if (type != TLS_SNI_HOST_NAME)
			continue;
		if (host_norm(name.p, name.left, norm))
			return SNIFF_BAD;
		if (have && strcmp(norm, host))
			return SNIFF_BAD; /* two different host names */
		memcpy(host, norm, strlen(norm) + 1);
		have = true;
	}
	return have ? SNIFF_OK : SNIFF_NONE;
}

/* A complete ClientHello body (after the 4-byte handshake header). */
static enum sniff_result parse_client_hello(struct rd r, char *host)
{
	unsigned version, n;
	struct rd exts;
	bool seen_sni = false;
	enum sniff_result res = SNIFF_NONE;

	if (!take16(&r, &version) || (version >> 8) != 3 || !take(&r, 32, NULL))
		return SNIFF_BAD;
	if (!take8(&r, &n) || n > 32 || !take(&r, n, NULL)) /* session id */
		return SNIFF_BAD;
	if (!take16(&r, &n) || n < 2 || n % 2 || !take(&r, n, NULL)) /* cipher suites */
		return SNIFF_BAD;
	if (!take8(&r, &n) || n < 1 || !take(&r, n, NULL)) /* compression methods */
		return SNIFF_BAD;
	if (r.left == 0)
		return SNIFF_NONE; /* no extensions at all */
	if (!take16(&r, &n) || !take(&r, n, &exts) || r.left != 0)
		return SNIFF_BAD;
	while (exts.left) {
		unsigned type, len;
		struct rd ext;

		if (!take16(&exts, &type) || !take16(&exts, &len) || !take(&exts, len, &ext))
			return SNIFF_BAD;
		if (type != TLS_EXT_SNI)
			continue;
		if (seen_sni)
			return SNIFF_BAD; /* the same extension twice */
		seen_sni = true;
		res = parse_sni_ext(ext, host);
		if (res == SNIFF_BAD)
			return res;
	}
	return res;
}

enum sniff_result sniff_tls_sni(const uint8_t *buf, size_t len, char *host, size_t hostsz)
{
	uint8_t hs[SNIFF_MAX]; /* the handshake message, reassembled */
	size_t hlen = 0, off = 0;
	bool capped = len >= SNIFF_MAX;
	enum sniff_result more = capped ? SNIFF_TOO_LONG : SNIFF_NEED_MORE;

	if (!host || hostsz < SNIFF_HOST_MAX + 1)
		return SNIFF_BAD;
	host[0] = '\0';
	if (!buf)
		return SNIFF_BAD;
	if (len > SNIFF_MAX)
		len = SNIFF_MAX;
	if (len == 0)
		return SNIFF_NEED_MORE;
	if (buf[0] != TLS_HANDSHAKE)
		return (buf[0] & 0x80) ? SNIFF_UNSUPPORTED : SNIFF_BAD; /* SSLv2-style hello */

	for (;;) {
		size_t rlen, avail;

		if (len - off < 5) {
			/* Check what there is of the next header. */
			if (len - off >= 1 && buf[off] != TLS_HANDSHAKE)
				return SNIFF_BAD;
			if (len - off >= 2 && buf[off + 1] != 3)
				return SNIFF_BAD;
			return more;
		}
		if (buf[off] != TLS_HANDSHAKE || buf[off + 1] != 3)
			return SNIFF_BAD;
		rlen = rd16(buf + off + 3);
		if (rlen == 0 || rlen > TLS_RECORD_MAX)
			return SNIFF_BAD;
		avail = len - off - 5 < rlen ? len - off - 5 : rlen;
		memcpy(hs + hlen, buf + off + 5, avail); /* hlen + avail <= len <= SNIFF_MAX */
		hlen += avail;
		if (hlen >= 1 && hs[0] != TLS_CLIENT_HELLO)
			return SNIFF_BAD;
		if (hlen >= 4) {
			size_t mlen = (size_t)hs[1] << 16 | (size_t)hs[2] << 8 | hs[3];
			struct rd body = { hs + 4, mlen };

			if (mlen + 4 > SNIFF_MAX - 5)
				return SNIFF_TOO_LONG;
			if (hlen >= mlen + 4)
				return parse_client_hello(body, host);
		}
		if (avail < rlen)
			return more;
		off += 5 + rlen;
	}
}

/* ---- HTTP ---- */

static bool is_tchar(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* Is the start of buf still a plausible method? */
static bool method_prefix_ok(const uint8_t *buf, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (buf[i] == ' ')
			return i > 0;
		if (!is_tchar(buf[i]) || i >= 32)
			return false;
	}
	return true;
}

/* The Host header's value (OWS already trimmed). */
static enum sniff_result parse_host_value(const uint8_t *v, size_t n, char *host, uint16_t *port)
{
	const uint8_t *colon;
	size_t hn;

	if (n == 0)
		return SNIFF_BAD;
	if (v[0] == '[')
		return SNIFF_UNSUPPORTED; /* IPv6 literal: no name to check */
	colon = memchr(v, ':', n);
	hn = colon ? (size_t)(colon - v) : n;
	if (colon) {
		size_t pl = n - hn - 1;
		unsigned p = 0;

		if (pl == 0 || pl > 5)
			return SNIFF_BAD;
		for (size_t i = 0; i < pl; i++) {
			if (colon[1 + i] < '0' || colon[1 + i] > '9')
				return SNIFF_BAD;
			p = p * 10 + (unsigned)(colon[1 + i] - '0');
		}
		if (p < 1 || p > 65535)
			return SNIFF_BAD;
		*port = (uint16_t)p;
	}
	if (host_norm(v, hn, host))
		return SNIFF_BAD;
	return SNIFF_OK;
}

static bool ascii_ieq(const uint8_t *a, size_t n, const char *b)
{
	if (strlen(b) != n)
		return false;
	for (size_t i = 0; i < n; i++) {
		uint8_t c = a[i];

		if (c >= 'A' && c <= 'Z')
			c = (uint8_t)(c - 'A' + 'a');
		if (c != (uint8_t)b[i])
			return false;
	}
	return true;
}

enum sniff_result sniff_http_host(const uint8_t *buf, size_t len, char *host, size_t hostsz,
				  uint16_t *port)
{
	size_t head = 0, line, i, sp1, sp2, lend;
	bool capped = len >= SNIFF_MAX;
	unsigned hosts = 0;
	enum sniff_result res = SNIFF_NONE;
	char found[SNIFF_HOST_MAX + 1];
	uint16_t found_port = 0;

	if (!host || hostsz < SNIFF_HOST_MAX + 1 || !port)
		return SNIFF_BAD;
	host[0] = '\0';
	*port = 0;
	if (!buf)
		return SNIFF_BAD;
	if (len > SNIFF_MAX)
		len = SNIFF_MAX;
	if (!method_prefix_ok(buf, len))
		return SNIFF_BAD;

	/* The head ends at the first CRLFCRLF; every CR and LF before it must pair. */
	for (i = 0; i < len; i++) {
		if (buf[i] == '\r') {
			if (i + 1 < len && buf[i + 1] != '\n')
				return SNIFF_BAD;
		} else if (buf[i] == '\n') {
			if (i == 0 || buf[i - 1] != '\r')
				return SNIFF_BAD;
			if (i >= 3 && buf[i - 2] == '\n') {
				head = i + 1;
				break;
			}
		} else if (buf[i] == 0 || (buf[i] < 0x20 && buf[i] != '\t') || buf[i] == 0x7f) {
			return SNIFF_BAD;
		}
	}
	if (!head)
		return capped ? SNIFF_TOO_LONG : SNIFF_NEED_MORE;

	/* Request line: METHOD SP origin-form SP HTTP/1.x */
	lend = (size_t)((const uint8_t *)memchr(buf, '\r', head) - buf);
	for (sp1 = 0; sp1 < lend && buf[sp1] != ' '; sp1++)
		;
	for (sp2 = sp1 + 1; sp2 < lend && buf[sp2] != ' '; sp2++)
		;
	if (sp1 == 0 || sp1 >= lend || sp2 >= lend || sp2 == sp1 + 1)
		return SNIFF_BAD;
	for (i = 0; i < sp1; i++)
		if (!is_tchar(buf[i]))
			return SNIFF_BAD;
	for (i = sp1 + 1; i < sp2; i++)
		if (buf[i] <= 0x20 || buf[i] >= 0x7f)
			return SNIFF_BAD;
	if (lend - sp2 - 1 == 8 && !memcmp(buf + sp2 + 1, "HTTP/2.0", 8))
		return SNIFF_UNSUPPORTED; /* the HTTP/2 preface */
	if (lend - sp2 - 1 != 8 || (memcmp(buf + sp2 + 1, "HTTP/1.1", 8) &&
				    memcmp(buf + sp2 + 1, "HTTP/1.0", 8)))
		return SNIFF_BAD;
	if (sp1 == 7 && !memcmp(buf, "CONNECT", 7))
		return SNIFF_UNSUPPORTED;
	/* Only origin-form ("/path") and "*": an absolute URI would override Host. */
	if (buf[sp1 + 1] != '/' && !(sp2 == sp1 + 2 && buf[sp1 + 1] == '*'))
		return SNIFF_UNSUPPORTED;

	/* Header lines, up to the empty line. */
	for (line = lend + 2; line + 2 <= head; line = lend + 2) {
		size_t colon, vs, ve;

		lend = (size_t)((const uint8_t *)memchr(buf + line, '\r', head - line) - buf);
		if (lend == line)
			break; /* the empty line */
		if (buf[line] == ' ' || buf[line] == '\t')
			return SNIFF_BAD; /* obsolete line folding */
		for (colon = line; colon < lend && is_tchar(buf[colon]); colon++)
			;
		if (colon == line || colon >= lend || buf[colon] != ':')
			return SNIFF_BAD;
		for (vs = colon + 1; vs < lend && (buf[vs] == ' ' || buf[vs] == '\t'); vs++)
			;
		for (ve = lend; ve > vs && (buf[ve - 1] == ' ' || buf[ve - 1] == '\t'); ve--)
			;
		if (!ascii_ieq(buf + line, colon - line, "host"))
			continue;
		if (++hosts > 1)
			return SNIFF_BAD;
		res = parse_host_value(buf + vs, ve - vs, found, &found_port);
		if (res != SNIFF_OK)
			return res;
	}
	if (res == SNIFF_OK) {
		memcpy(host, found, strlen(found) + 1);
		*port = found_port;
	}
	return res;
}
