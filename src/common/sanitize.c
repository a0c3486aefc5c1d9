/* Guest-supplied text made safe for a terminal or a log line (sanitize.h). */
#include "sanitize.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* Length of a valid UTF-8 sequence at p (1..4), or 0 when it is not one. */
static size_t utf8_len(const uint8_t *p, size_t n, uint32_t *cp)
{
	size_t len;
	uint32_t c, min;

	if (p[0] < 0x80) {
		*cp = p[0];
		return 1;
	}
	if ((p[0] & 0xe0) == 0xc0) {
		len = 2, c = p[0] & 0x1f, min = 0x80;
	} else if ((p[0] & 0xf0) == 0xe0) {
		len = 3, c = p[0] & 0x0f, min = 0x800;
	} else if ((p[0] & 0xf8) == 0xf0) {
		len = 4, c = p[0] & 0x07, min = 0x10000;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		c = (c << 6) | (p[i] & 0x3f);
	}
	/* Overlong forms, surrogates and values past Unicode are not text. */
	if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return 0;
	*cp = c;
	return len;
}

/* Code points a terminal or a reader would interpret rather than show. */
static bool cp_unsafe(uint32_t c)
{
	return c < 0x20 || c == 0x7f || (c >= 0x80 && c <= 0x9f) || /* C0, DEL, C1 */
	       c == 0x061c || c == 0x200e || c == 0x200f ||	     /* bidi marks */
	       (c >= 0x2028 && c <= 0x202e) ||			     /* line/para sep, bidi */
	       (c >= 0x2066 && c <= 0x2069) ||			     /* bidi isolates */
	       c == 0xfeff;					     /* BOM / ZWNBSP */
}

/* The pieces of src that fit in room bytes of dst; *all: every byte did. */
static size_t emit(char *dst, size_t room, const uint8_t *p, size_t srclen, bool *all)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0, i = 0;

	while (i < srclen) {
		char piece[16];
		size_t plen, n;
		uint32_t cp = 0;

		n = utf8_len(p + i, srclen - i, &cp);
		if (n && !cp_unsafe(cp) && cp != '\\') {
			memcpy(piece, p + i, n);
			plen = n;
		} else if (n == 1 && cp == '\\') {
			piece[0] = piece[1] = '\\';
			plen = 2;
		} else {
			/* One byte escaped; a multi-byte unsafe character byte by byte. */
			size_t k = n ? n : 1;

			plen = 0;
			for (size_t j = 0; j < k; j++) {
				piece[plen++] = '\\';
				piece[plen++] = 'x';
				piece[plen++] = hex[p[i + j] >> 4];
				piece[plen++] = hex[p[i + j] & 15];
			}
			n = k;
		}
		if (o + plen > room)
			break;
		memcpy(dst + o, piece, plen);
		o += plen;
		i += n;
	}
	*all = i == srclen;
	return o;
}

char *text_sanitize(char *dst, size_t dstlen, const char *src, size_t srclen)
{
	const uint8_t *p = (const uint8_t *)src;
	size_t o;
	bool all;

	if (dstlen < 4) {
		if (dstlen)
			dst[0] = 0;
		return dst;
	}
	o = emit(dst, dstlen - 1, p, srclen, &all);
	if (!all) {
		/* Again, leaving room for "...": cut at a piece boundary. */
		o = emit(dst, dstlen - 4, p, srclen, &all);
		memcpy(dst + o, "...", 3);
		o += 3;
	}
	dst[o] = 0;
	return dst;
}

char *text_sanitize_str(char *dst, size_t dstlen, const char *src)
{
	return text_sanitize(dst, dstlen, src, strlen(src));
}
