/*
 * DNS messages (RFC 1035 wire format) for kiln-net: parse the guest's query,
 * build REFUSED/NXDOMAIN/empty and A/AAAA answers, and read the A/AAAA
 * records a real resolver returned for the asked name (through CNAMEs).
 * All input is hostile: every read is bounds-checked, compression pointers
 * must point strictly backwards (so they cannot loop) and are counted, names
 * are capped at 255 bytes on the wire.
 */
#ifndef KILN_NET_DNSMSG_H
#define KILN_NET_DNSMSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DNS_HDR_SIZE	    12
#define DNS_NAME_TEXT_MAX   253 /* presentation form without the trailing dot */
#define DNS_MAX_PTRS	    32	/* compression pointers followed in one name */
#define DNS_MAX_CNAMES	    8	/* CNAME links followed in a response */
#define DNS_UDP_MAX	    512 /* answers we build without EDNS */

#define DNS_TYPE_A	1
#define DNS_TYPE_CNAME	5
#define DNS_TYPE_AAAA	28
#define DNS_CLASS_IN	1

#define DNS_RCODE_NOERROR  0
#define DNS_RCODE_FORMERR  1
#define DNS_RCODE_SERVFAIL 2
#define DNS_RCODE_NXDOMAIN 3
#define DNS_RCODE_NOTIMP   4
#define DNS_RCODE_REFUSED  5

#define DNS_WIRE_NAME_MAX 255

struct dns_query {
	uint16_t id;
	bool rd; /* recursion desired, echoed back */
	uint16_t qtype, qclass;
	char name[DNS_NAME_TEXT_MAX + 1]; /* lower case, no trailing dot; "" for the root */
	/* The question's name as the guest sent it (case kept, for the echo);
	 * qwire_len == 0: no question known, replies carry none. */
	uint8_t qwire[DNS_WIRE_NAME_MAX];
	size_t qwire_len;
};

/* A query built locally (for tests and for asking the resolver). 0 or -EINVAL. */
int dns_query_init(struct dns_query *q, uint16_t id, const char *name, uint16_t qtype);

/*
 * Parse a query from the guest. Returns
 *   0          a well-formed standard query with one question;
 *   -EBADMSG   malformed (short, not a query, QDCOUNT != 1, answer or
 *              authority records, bad name encoding, truncated question);
 *   -ENOTSUP   a well-formed message with an opcode other than QUERY;
 *   -EILSEQ    the name has bytes outside [A-Za-z0-9_-] in a label.
 * Whenever the message had a full header and QR was clear, q->id and q->rd
 * are set even on error (*answerable is then true) so the caller can answer
 * FORMERR, NOTIMP or REFUSED; otherwise drop it. answerable may be NULL.
 * With -EILSEQ the question (qwire, qtype, qclass) is kept for that answer,
 * but q->name is "".
 */
int dns_parse_query(const uint8_t *msg, size_t len, struct dns_query *q, bool *answerable);

/* A response with no answer records: the question echoed (none if
 * q->qwire_len is 0), QR, RA, q's id and RD, and rcode. Length, or -ENOSPC. */
int dns_build_error(const struct dns_query *q, int rcode, uint8_t *buf, size_t cap);

/* The query q as sent to a recursive resolver (RD set). Length, -EINVAL
 * without a question, or -ENOSPC. */
int dns_build_query(const struct dns_query *q, uint8_t *buf, size_t cap);

struct dns_addr {
	int family; /* AF_INET or AF_INET6 */
	uint8_t addr[16];
	uint32_t ttl;
};

/* NOERROR answer to q with the addresses of q's type (A: IPv4, AAAA: IPv6;
 * others are skipped) as records owned by the question's name. Records that
 * do not fit in cap are left out (TC is not set). n == 0 gives NODATA.
 * Length, -EINVAL without a question, or -ENOSPC when not even the header
 * and question fit. */
int dns_build_answer(const struct dns_query *q, const struct dns_addr *addrs, size_t n,
		     uint8_t *buf, size_t cap);

/*
 * Read a resolver's response to q: the id, question (case ignored), type and
 * class must match. Follows CNAMEs from q->name (at most DNS_MAX_CNAMES links, in any
 * order within the answer section) and returns the A (or AAAA, after q's
 * type) records of the final name in out[0..*n), at most max of them. Each
 * TTL is the smallest along the chain. *rcode gets the response code (no
 * records unless NOERROR). Returns 0, -EBADMSG (malformed, mismatched or
 * counts that lie), -ELOOP (CNAME chain too long or looping) or -EMSGSIZE
 * (TC set: nothing returned).
 */
int dns_parse_response(const uint8_t *msg, size_t len, const struct dns_query *q,
		       struct dns_addr *out, size_t max, size_t *n, int *rcode);

#endif
