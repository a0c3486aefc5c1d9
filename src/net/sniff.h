/*
 * The first bytes of a guest's TCP connection, for kiln-net: the SNI host
 * name of a TLS ClientHello, or the Host header of an HTTP/1.x request head.
 * Pure parsers of hostile input; they look at no more than SNIFF_MAX bytes.
 */
#ifndef KILN_NET_SNIFF_H
#define KILN_NET_SNIFF_H

#include <stddef.h>
#include <stdint.h>

#define SNIFF_MAX      16384 /* bytes buffered before giving up */
#define SNIFF_HOST_MAX 253   /* host names, without a trailing dot */

enum sniff_result {
	SNIFF_OK = 0,	   /* host (and port) extracted */
	SNIFF_NEED_MORE,   /* a valid prefix: call again with more bytes */
	SNIFF_NONE,	   /* well formed, but no SNI / no Host header */
	SNIFF_BAD,	   /* malformed, ambiguous or a bad host name */
	SNIFF_TOO_LONG,	   /* still incomplete after SNIFF_MAX bytes */
	SNIFF_UNSUPPORTED, /* valid but not handled (SSLv2 hello, HTTP/2, CONNECT, ...) */
};

const char *sniff_result_str(enum sniff_result r);

/*
 * TLS: buf holds the first len bytes the client sent. A ClientHello split
 * over several handshake records is reassembled. host (at least
 * SNIFF_HOST_MAX + 1 bytes) receives the host_name, lower case, without a
 * trailing dot. Several host_name entries must all be the same name.
 */
enum sniff_result sniff_tls_sni(const uint8_t *buf, size_t len, char *host, size_t hostsz);

/*
 * HTTP/1.0 or 1.1 request head (CRLF line ends only; obsolete line folding,
 * bare CR or LF and absolute-form targets are refused). Exactly one Host
 * header; its name goes to host as above and its port, if any, to *port
 * (0 if none).
 */
enum sniff_result sniff_http_host(const uint8_t *buf, size_t len, char *host, size_t hostsz,
				  uint16_t *port);

#endif
