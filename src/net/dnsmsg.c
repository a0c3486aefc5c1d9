/* DNS wire format for kiln-net (see dnsmsg.h). */
#include "net/dnsmsg.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#define WIRE_MAX DNS_WIRE_NAME_MAX /* length bytes and the final 0 included */

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void wr16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void wr32(uint8_t *p, uint32_t v)
{
	wr16(p, (uint16_t)(v >> 16));
	wr16(p + 2, (uint16_t)v);
}

static uint8_t lower(uint8_t c)
{
	return (c >= 'A' && c <= 'Z') ? (uint8_t)(c - 'A' + 'a') : c;
}

/*
 * Read the name at off into wire (uncompressed, lower case, at most WIRE_MAX
 * bytes). *end is where the record continues: after the first pointer or the
 * final 0. Every pointer must target an offset past the header and strictly
 * before the previous target (or the name's start), so following pointers
 * always moves backwards and terminates; DNS_MAX_PTRS bounds it as well.
 */
static int read_name(const uint8_t *m, size_t len, size_t off, uint8_t *wire, size_t *wlen,
		     size_t *end)
{
	size_t pos = off, w = 0, limit = off;
	unsigned ptrs = 0;
	bool jumped = false;

	for (;;) {
		uint8_t c;

		if (pos >= len)
			return -EBADMSG;
		c = m[pos];
		if ((c & 0xc0) == 0xc0) {
			size_t target;

			if (len - pos < 2 || ++ptrs > DNS_MAX_PTRS)
				return -EBADMSG;
			target = (size_t)(c & 0x3f) << 8 | m[pos + 1];
			if (target < DNS_HDR_SIZE || target >= limit)
				return -EBADMSG;
			if (!jumped)
				*end = pos + 2;
			jumped = true;
			limit = pos = target;
			continue;
		}
		if (c & 0xc0) /* 0x40 and 0x80: extended and reserved label types */
			return -EBADMSG;
		if (c == 0) {
			wire[w++] = 0; /* room is kept by the check below */
			if (!jumped)
				*end = pos + 1;
			*wlen = w;
			return 0;
		}
		if (len - pos - 1 < c || w + 1 + c + 1 > WIRE_MAX)
			return -EBADMSG;
		wire[w++] = c;
		for (size_t i = 0; i < c; i++)
			wire[w++] = lower(m[pos + 1 + i]);
		pos += 1 + (size_t)c;
	}
}

/* Presentation form of a wire name; -EILSEQ if a label has other bytes than
 * letters, digits, '-' and '_'. */
static int wire_to_text(const uint8_t *wire, size_t wlen, char *out)
{
	size_t i = 0, o = 0;

	while (i < wlen && wire[i]) {
		uint8_t c = wire[i++];

		if (o)
			out[o++] = '.';
		for (size_t k = 0; k < c; k++) {
			uint8_t b = wire[i + k];

			if (!((b >= 'a' && b <= 'z') || (b >= '0' && b <= '9') || b == '-' ||
			      b == '_'))
				return -EILSEQ;
			out[o++] = (char)b;
		}
		i += c;
	}
	out[o] = '\0';
	return 0;
}

/* Wire form of a presentation name (no escapes; a trailing dot is fine). */
static int text_to_wire(const char *name, uint8_t *wire, size_t *wlen)
{
	size_t w = 0, n = strnlen(name, DNS_NAME_TEXT_MAX + 2);
	const char *p = name;

	if (n > 0 && name[n - 1] == '.')
		n--;
	if (n > DNS_NAME_TEXT_MAX)
		return -EINVAL;
	while (p < name + n) {
		const char *dot = memchr(p, '.', (size_t)(name + n - p));
		size_t l = dot ? (size_t)(dot - p) : (size_t)(name + n - p);

		if (l == 0 || l > 63)
			return -EINVAL;
		wire[w++] = (uint8_t)l;
		for (size_t i = 0; i < l; i++)
			wire[w++] = lower((uint8_t)p[i]);
		p += l + (dot ? 1 : 0);
		if (dot && p == name + n) /* "a..": caught above; "a." was trimmed */
			return -EINVAL;
	}
	wire[w++] = 0;
	*wlen = w;
	return 0;
}

int dns_query_init(struct dns_query *q, uint16_t id, const char *name, uint16_t qtype)
{
	int ret;

	memset(q, 0, sizeof(*q));
	if (!name || text_to_wire(name, q->qwire, &q->qwire_len))
		goto bad;
	ret = wire_to_text(q->qwire, q->qwire_len, q->name);
	if (ret)
		goto bad;
	q->id = id;
	q->rd = true;
	q->qtype = qtype;
	q->qclass = DNS_CLASS_IN;
	return 0;
bad:
	memset(q, 0, sizeof(*q));
	return -EINVAL;
}

int dns_parse_query(const uint8_t *msg, size_t len, struct dns_query *q, bool *answerable)
{
	uint8_t wire[WIRE_MAX];
	size_t wlen, end;
	int ret;

	memset(q, 0, sizeof(*q));
	if (answerable)
		*answerable = false;
	if (!msg || len < DNS_HDR_SIZE || (msg[2] & 0x80))
		return -EBADMSG;
	q->id = rd16(msg);
	q->rd = msg[2] & 1;
	if (answerable)
		*answerable = true;
	if (((msg[2] >> 3) & 0xf) != 0)
		return -ENOTSUP;
	if (rd16(msg + 4) != 1 || rd16(msg + 6) != 0 || rd16(msg + 8) != 0)
		return -EBADMSG;
	/* No compression here: a pointer could only point into the header. */
	ret = read_name(msg, len, DNS_HDR_SIZE, wire, &wlen, &end);
	if (ret)
		return ret;
	if (len - end < 4 || end - DNS_HDR_SIZE != wlen)
		return -EBADMSG;
	memcpy(q->qwire, msg + DNS_HDR_SIZE, wlen);
	q->qwire_len = wlen;
	q->qtype = rd16(msg + end);
	q->qclass = rd16(msg + end + 2);
	ret = wire_to_text(wire, wlen, q->name);
	if (ret)
		q->name[0] = '\0';
	return ret;
}

/* Header and question. Offset past them, or a negative errno. */
static int put_head(const struct dns_query *q, int rcode, uint8_t *buf, size_t cap)
{
	size_t qd = q->qwire_len ? q->qwire_len + 4 : 0;

	if (q->qwire_len > WIRE_MAX)
		return -EINVAL;
	if (cap < DNS_HDR_SIZE + qd)
		return -ENOSPC;
	memset(buf, 0, DNS_HDR_SIZE);
	wr16(buf, q->id);
	buf[2] = (uint8_t)(0x80 | (q->rd ? 1 : 0));
	buf[3] = (uint8_t)(0x80 | (rcode & 0xf));
	if (!qd)
		return DNS_HDR_SIZE;
	wr16(buf + 4, 1);
	memcpy(buf + DNS_HDR_SIZE, q->qwire, q->qwire_len);
	wr16(buf + DNS_HDR_SIZE + q->qwire_len, q->qtype);
	wr16(buf + DNS_HDR_SIZE + q->qwire_len + 2, q->qclass);
	return (int)(DNS_HDR_SIZE + qd);
}

int dns_build_error(const struct dns_query *q, int rcode, uint8_t *buf, size_t cap)
{
	return put_head(q, rcode, buf, cap);
}

int dns_build_query(const struct dns_query *q, uint8_t *buf, size_t cap)
{
	int ret;

	if (q->qwire_len == 0)
		return -EINVAL;
	ret = put_head(q, 0, buf, cap);
	if (ret > 0) {
		buf[2] = 0x01; /* a query, recursion desired */
		buf[3] = 0;
	}
	return ret;
}

int dns_build_answer(const struct dns_query *q, const struct dns_addr *addrs, size_t n,
		     uint8_t *buf, size_t cap)
{
	int ret;
	size_t off, count = 0;

	if (q->qwire_len == 0)
		return -EINVAL;
	ret = put_head(q, DNS_RCODE_NOERROR, buf, cap);
	if (ret < 0)
		return ret;
	off = (size_t)ret;
	for (size_t i = 0; i < n && count < 0xffff; i++) {
		size_t alen;
		uint16_t type;

		if (addrs[i].family == AF_INET && q->qtype == DNS_TYPE_A) {
			alen = 4;
			type = DNS_TYPE_A;
		} else if (addrs[i].family == AF_INET6 && q->qtype == DNS_TYPE_AAAA) {
			alen = 16;
			type = DNS_TYPE_AAAA;
		} else {
			continue;
		}
		if (cap - off < 12 + alen)
			break;
		wr16(buf + off, 0xc000 | DNS_HDR_SIZE); /* the question's name */
		wr16(buf + off + 2, type);
		wr16(buf + off + 4, DNS_CLASS_IN);
		wr32(buf + off + 6, addrs[i].ttl > 0x7fffffff ? 0x7fffffff : addrs[i].ttl);
		wr16(buf + off + 10, (uint16_t)alen);
		memcpy(buf + off + 12, addrs[i].addr, alen);
		off += 12 + alen;
		count++;
	}
	wr16(buf + 6, (uint16_t)count);
	return (int)off;
}

struct rr {
	uint8_t owner[WIRE_MAX];
	size_t owner_len;
	uint16_t type, class;
	uint32_t ttl;
	size_t rdoff, rdlen;
};

/* One resource record at *off; *off moves past it. */
static int read_rr(const uint8_t *m, size_t len, size_t *off, struct rr *rr)
{
	size_t end;
	int ret = read_name(m, len, *off, rr->owner, &rr->owner_len, &end);

	if (ret)
		return ret;
	if (len - end < 10)
		return -EBADMSG;
	rr->type = rd16(m + end);
	rr->class = rd16(m + end + 2);
	rr->ttl = rd32(m + end + 4);
	if (rr->ttl > 0x7fffffff) /* RFC 2181 8: treat as zero */
		rr->ttl = 0;
	rr->rdlen = rd16(m + end + 8);
	rr->rdoff = end + 10;
	if (len - rr->rdoff < rr->rdlen)
		return -EBADMSG;
	*off = rr->rdoff + rr->rdlen;
	return 0;
}

static bool wire_eq(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	return alen == blen && !memcmp(a, b, alen);
}

int dns_parse_response(const uint8_t *msg, size_t len, const struct dns_query *q,
		       struct dns_addr *out, size_t max, size_t *n, int *rcode)
{
	uint8_t want[WIRE_MAX], qname[WIRE_MAX];
	size_t want_len, qlen, off, answers_at;
	unsigned ancount, links;
	uint32_t chain_ttl = UINT32_MAX;
	struct rr rr;
	int ret;

	*n = 0;
	*rcode = -1;
	if (!msg || len < DNS_HDR_SIZE || !(msg[2] & 0x80) || ((msg[2] >> 3) & 0xf) != 0 ||
	    rd16(msg) != q->id || rd16(msg + 4) != 1)
		return -EBADMSG;
	if (msg[2] & 0x02)
		return -EMSGSIZE;
	if (q->qwire_len == 0 || q->qwire_len > WIRE_MAX)
		return -EBADMSG;
	want_len = q->qwire_len;
	for (size_t i = 0; i < want_len; i++)
		want[i] = lower(q->qwire[i]);
	ret = read_name(msg, len, DNS_HDR_SIZE, qname, &qlen, &off);
	if (ret)
		return ret;
	if (len - off < 4 || !wire_eq(qname, qlen, want, want_len) ||
	    rd16(msg + off) != q->qtype || rd16(msg + off + 2) != q->qclass)
		return -EBADMSG;
	off += 4;
	*rcode = msg[3] & 0xf;
	if (*rcode != DNS_RCODE_NOERROR)
		return 0;

	/* Every answer record must be there and well formed. */
	ancount = rd16(msg + 6);
	answers_at = off;
	for (unsigned i = 0; i < ancount; i++) {
		ret = read_rr(msg, len, &off, &rr);
		if (ret)
			return ret;
	}

	/* Follow CNAMEs from the asked name, in any order. */
	for (links = 0;; links++) {
		bool found = false;

		off = answers_at;
		for (unsigned i = 0; i < ancount && !found; i++) {
			size_t end;

			if (read_rr(msg, len, &off, &rr))
				return -EBADMSG;
			if (rr.type != DNS_TYPE_CNAME || rr.class != DNS_CLASS_IN ||
			    !wire_eq(rr.owner, rr.owner_len, want, want_len))
				continue;
			if (links == DNS_MAX_CNAMES)
				return -ELOOP;
			/* The target must lie within the record's data (pointers aside). */
			if (read_name(msg, rr.rdoff + rr.rdlen, rr.rdoff, want, &want_len, &end) ||
			    end != rr.rdoff + rr.rdlen)
				return -EBADMSG;
			if (rr.ttl < chain_ttl)
				chain_ttl = rr.ttl;
			found = true;
		}
		if (!found)
			break;
	}

	off = answers_at;
	for (unsigned i = 0; i < ancount; i++) {
		size_t alen = q->qtype == DNS_TYPE_A ? 4 : 16;

		if (read_rr(msg, len, &off, &rr))
			return -EBADMSG;
		if (rr.type != q->qtype || rr.class != DNS_CLASS_IN ||
		    (q->qtype != DNS_TYPE_A && q->qtype != DNS_TYPE_AAAA) ||
		    !wire_eq(rr.owner, rr.owner_len, want, want_len))
			continue;
		if (rr.rdlen != alen)
			return -EBADMSG;
		if (*n == max)
			continue;
		memset(&out[*n], 0, sizeof(out[*n]));
		out[*n].family = alen == 4 ? AF_INET : AF_INET6;
		memcpy(out[*n].addr, msg + rr.rdoff, alen);
		out[*n].ttl = rr.ttl < chain_ttl ? rr.ttl : chain_ttl;
		(*n)++;
	}
	return 0;
}
