/*
 * kiln-net's egress policy: --allow rules, the DNS pin table and the verdicts
 * for DNS queries, TCP connects, first payloads and UDP datagrams. Pure code:
 * no sockets, no clock (callers pass `now` in milliseconds), no threads.
 * See docs/net.md for the rule syntax and the decision table.
 */
#ifndef KILN_NET_RULES_H
#define KILN_NET_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NET_NAME_MAX	    253	 /* presentation form, no trailing dot */
#define NET_RULE_MAX_PORTS  16
#define NET_RULES_MAX	    256	 /* rules in one policy */
#define NET_PINS_DEFAULT    1024 /* pin table capacity when 0 is asked */
#define NET_PINS_MAX	    65536
#define NET_PIN_TTL_MIN_S   5
#define NET_PIN_TTL_MAX_S   3600
#define NET_RULE_TEXT_MAX   512 /* longest --allow argument accepted */
/* Upstream DNS questions per second and VM (kiln-net --dns-rate). */
#define NET_DNS_RATE_DEFAULT 100
#define NET_DNS_RATE_MAX     1000000

/* An IPv4 or IPv6 address, network byte order; IPv4 uses b[0..3]. */
struct net_ip {
	int family; /* AF_INET or AF_INET6 */
	uint8_t b[16];
};

enum net_proto { NET_TCP, NET_UDP };
enum net_rule_kind { NET_RULE_NAME, NET_RULE_CIDR };

struct net_rule {
	enum net_rule_kind kind;
	enum net_proto proto;		/* name rules are always NET_TCP */
	char name[NET_NAME_MAX + 1];	/* lower case, no trailing dot; a wildcard's suffix */
	bool wildcard;			/* "*.name": subdomains of name, not name itself */
	struct net_ip ip;		/* CIDR rules: network address (host bits zero) */
	unsigned prefix;		/* 0..32 or 0..128 */
	uint16_t ports[NET_RULE_MAX_PORTS]; /* sorted, distinct */
	unsigned nports;		/* 0: every port (CIDR rules without :PORT) */
	bool private_opt;		/* written with ";private" */
	bool private;			/* opens non-public addresses: ";private", or a CIDR
					 * rule lying wholly inside one non-public block */
};

/* Parse one --allow argument (RULE or RULE;private). 0, or -EINVAL with a
 * one-line message naming the rule and the problem in err. */
int net_rule_parse(const char *text, struct net_rule *out, char *err, size_t errlen);

/* Parse a bare IPv4 or IPv6 address (no brackets, no prefix). IPv4-mapped IPv6
 * (::ffff:a.b.c.d) becomes the IPv4 address. 0 or -EINVAL. */
int net_ip_parse(const char *s, struct net_ip *out);
/* Text form of an address for logs; always NUL-terminated. */
void net_ip_str(const struct net_ip *ip, char *buf, size_t len);

/* Verdicts. */
enum net_verdict {
	NET_DENY = 0,
	NET_ALLOW,
	NET_ANSWER_EMPTY, /* DNS only: answer NOERROR with no records, do not forward */
};

/* What the first bytes the client sends must show before the connection may
 * carry data (sniff.h extracts it; net_check_sni/net_check_http_host judge it). */
enum net_inspect {
	NET_INSPECT_NONE = 0,
	NET_INSPECT_TLS_SNI,
	NET_INSPECT_HTTP_HOST,
};

enum net_reason {
	NET_R_RULE = 0,	      /* allowed: an IP/CIDR rule (or a name rule, for DNS) */
	NET_R_PIN,	      /* allowed: destination pinned for a name whose rule allows the port */
	NET_R_NO_RULE,	      /* denied: no rule matches */
	NET_R_PORT,	      /* denied: pinned for an allowed name, but no rule allows this port */
	NET_R_RESERVED,	      /* denied: link-local, metadata, loopback, multicast, ... */
	NET_R_HOST_ADDR,      /* denied: one of the host's own addresses */
	NET_R_REBINDING,      /* denied: an allowed name resolved to a denied address */
	NET_R_ICMP,	      /* denied: ICMP is never forwarded */
	NET_R_BAD_NAME,	      /* denied: the name is not a valid host name */
	NET_R_DNS_CLASS,      /* denied: DNS class other than IN */
	NET_R_DNS_OTHER_TYPE, /* answered empty: allowed name, type other than A/AAAA */
	NET_R_NOT_PINNED,     /* denied: SNI/Host names an allowed name not pinned to this address */
	NET_R_HOST_PORT,      /* denied: the Host header's port is not the connection's */
	NET_R_BAD_ARG,	      /* denied: the caller passed something impossible */
	NET_R_PRIVATE,	      /* denied: a non-public address no rule opens for non-public use */
	NET_R_HOST_CHECK,     /* denied: the host check failed (fail closed) */
	NET_R_NO_ROUTE,	      /* denied: the host has no route to the address */
};

struct net_decision {
	enum net_verdict verdict;
	enum net_reason reason;
	enum net_inspect inspect;
	int rule; /* index of the rule that decided, or -1 */
};

/* Short, stable token for the audit log ("rule", "rebinding", ...). */
const char *net_reason_str(enum net_reason r);

/* A policy: rules, pins, the host check. Opaque. */
struct net_policy;

/*
 * The host check: is ip (normalised: IPv4-mapped IPv6 arrives as IPv4) one
 * of the host's own addresses, or otherwise delivered by the host itself
 * (a local, broadcast, anycast or multicast route)? Asked at the moment of
 * every decision that needs it, never cached. Returns 1 host, 0 not,
 * -ENETUNREACH / -EHOSTUNREACH when the host has no route to it, any other
 * -errno when it cannot tell (treated as denied). Without one set, every
 * check fails: the policy denies what it cannot check.
 */
typedef int (*net_host_check_fn)(void *ctx, const struct net_ip *ip);
void net_policy_set_host_check(struct net_policy *p, net_host_check_fn fn, void *ctx);

/* How the policy sees a destination address (net_ip_judge). */
enum net_addr_kind {
	NET_ADDR_PUBLIC = 0, /* any matching rule or pin opens it */
	NET_ADDR_PRIVATE,    /* non-public: only a rule that opens non-public addresses */
	NET_ADDR_DENIED,     /* reserved, the host's, unroutable or uncheckable: only an
			      * IP rule naming it exactly */
};

/*
 * Judge a destination: the one function behind DNS answers, TCP SYNs, UDP
 * flows and SNI/Host checks. IPv6 forms that embed an IPv4 address (NAT64
 * 64:ff9b::/96 and 64:ff9b:1::/48, IPv4-mapped, IPv4-translated,
 * IPv4-compatible, 6to4, Teredo server and client, ISATAP) are as bad as the
 * worst of the address and each embedded IPv4 address. *why (may be NULL)
 * gets NET_R_PRIVATE, NET_R_RESERVED, NET_R_HOST_ADDR, NET_R_NO_ROUTE or
 * NET_R_HOST_CHECK for the two last kinds. Calls the host check for the
 * address and each embedded one unless the fixed lists already deny it.
 */
enum net_addr_kind net_ip_judge(const struct net_policy *p, const struct net_ip *ip,
				enum net_reason *why);

/* pin_cap: pin table capacity (0 = NET_PINS_DEFAULT, at most NET_PINS_MAX).
 * NULL when out of memory or pin_cap is too large. */
struct net_policy *net_policy_new(unsigned pin_cap);
void net_policy_free(struct net_policy *p);

/* Parse and append a rule. 0, or -EINVAL (bad rule) / -ENOSPC (NET_RULES_MAX
 * reached) with a message in err. */
int net_policy_add_rule(struct net_policy *p, const char *text, char *err, size_t errlen);
unsigned net_policy_nrules(const struct net_policy *p);
const struct net_rule *net_policy_rule(const struct net_policy *p, unsigned idx);

/* A DNS question from the guest. name in presentation form (a trailing dot
 * is allowed, case is ignored). NET_ALLOW: forward A/AAAA to the resolver;
 * NET_ANSWER_EMPTY: answer NOERROR with no records; NET_DENY: answer REFUSED. */
struct net_decision net_decide_dns(const struct net_policy *p, const char *name, uint16_t qtype,
				   uint16_t qclass);

/* Record a resolver's answer for name (the name the guest asked for). ttl in
 * seconds, clamped to [NET_PIN_TTL_MIN_S, NET_PIN_TTL_MAX_S]. Returns
 *   0         pinned (or refreshed);
 *   1         withheld: the address is denied (net_ip_judge), or non-public
 *             and no rule matching name opens non-public addresses; *why
 *             (may be NULL) says which. Recorded as a rebinding marker that
 *             never allows anything: drop it from the guest's answer;
 *   -EPERM    no rule allows name (nothing recorded);
 *   -EINVAL   bad name or address.
 * When full, an expired entry is reused, else the entry added or refreshed
 * longest ago is evicted (counted: net_pin_evictions). */
int net_pin_add(struct net_policy *p, const char *name, const struct net_ip *ip, uint32_t ttl,
		uint64_t now_ms, enum net_reason *why);
/* Unexpired pins (rebinding markers included). For tests and status. */
unsigned net_pin_count(const struct net_policy *p, uint64_t now_ms);
/* Live entries evicted to make room so far (each one should be audited). */
uint64_t net_pin_evictions(const struct net_policy *p);

/* A new TCP connection or UDP flow from the guest to dst:port. For TCP,
 * inspect says which first payload must be checked before any byte is
 * forwarded (NET_INSPECT_NONE for IP/CIDR rules and for name rules on ports
 * other than 80 and 443). UDP is allowed only by udp: IP/CIDR rules and is
 * never inspected. Rules are tried in order; an IP rule naming dst exactly
 * allows it whatever net_ip_judge says, any other rule or pin only as
 * net_ip_judge permits. */
struct net_decision net_decide_connect(const struct net_policy *p, enum net_proto proto,
				       const struct net_ip *dst, uint16_t port, uint64_t now_ms);
/* ICMP: always denied. */
struct net_decision net_decide_icmp(const struct net_policy *p, const struct net_ip *dst);

/* The first payload of a connection that net_decide_connect allowed with
 * NET_INSPECT_TLS_SNI / NET_INSPECT_HTTP_HOST: the name must be allowed on
 * port by a name rule and pinned (unexpired) to dst. host_port is the port
 * given in the Host header, 0 when there was none; when given it must equal
 * port. */
struct net_decision net_check_sni(const struct net_policy *p, const struct net_ip *dst,
				  uint16_t port, const char *sni, uint64_t now_ms);
struct net_decision net_check_http_host(const struct net_policy *p, const struct net_ip *dst,
					uint16_t port, const char *host, uint16_t host_port,
					uint64_t now_ms);

#endif
