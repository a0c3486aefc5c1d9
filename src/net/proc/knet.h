/*
 * kiln-net's process state, shared by its modules (docs/net-design.md):
 *   main.c     arguments, set-up, the poll loop
 *   guest.c    frames from and to the VMM: intake checks, ARP, NDP, queueing
 *   tcp.c      TCP: policy, NAT onto slirp's one guestfwd, sniffing, splice
 *   dns.c      the guest's resolver: policy, forwarding, pinning
 *   udp.c      UDP relay for udp: rules
 *   audit.c    the audit log and the counters
 *   host.c     "is this address the host's?", asked of the kernel (rtnetlink)
 *   sandbox.c  kiln-net's own jail and seccomp filter
 * One process serves one VM, single-threaded.
 */
#ifndef KILN_NET_PROC_KNET_H
#define KILN_NET_PROC_KNET_H

#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "net/bucket.h"
#include "net/frame.h"
#include "net/rules.h"

struct Slirp;

/* Every fd is polled at most once per turn and kiln-net may hold at most
 * KNET_FILES_MAX (its RLIMIT_NOFILE), so the poll set cannot fill up. */
#define KNET_FILES_MAX	 1024
#define KNET_POLL_MAX	 KNET_FILES_MAX
#define KNET_OUTQ_FRAMES 2048 /* frames held for the VMM socket (about 3 MiB) */

/* The internal IPv4 tuple every guest TCP connection is rewritten to:
 * guest 10.0.2.15:<flow port> -> the guestfwd 10.0.2.100:1 (slirp). */
#define KNET_FWD_PORT 1

struct pollset {
	struct pollfd fd[KNET_POLL_MAX];
	int n;
	int timeout_ms;
};

/* Add fd (events POLLIN/POLLOUT); its index, or -1 when full. */
int pollset_add(struct pollset *ps, int fd, short events);
short pollset_revents(const struct pollset *ps, int idx);
void pollset_timeout(struct pollset *ps, int ms);

struct outq {
	uint8_t (*frame)[FRAME_MAX];
	uint16_t *len;
	unsigned head, count;
};

struct knet_counts {
	uint64_t allowed, blocked, dns_queries, bytes_up, bytes_down;
};

struct knet {
	struct Slirp *slirp;
	struct net_policy *pol;
	int vmm_fd;		/* SOCK_SEQPACKET, one Ethernet frame per message */
	bool vmm_gone;		/* the VMM hung up */
	int fwd_listen;		/* the Unix listener behind slirp's guestfwd */
	char fwd_path[64];
	int audit_fd;		/* -1: no audit log */
	int status_fd;		/* -1: no status line */
	struct sockaddr_storage resolver; /* the host's DNS server */
	socklen_t resolver_len;	/* 0: none known, queries get SERVFAIL */
	int host_fd;		/* NETLINK_ROUTE, for host_check */
	struct bucket up, down;	/* --rate: guest->world, world->guest */
	struct bucket dnsq;	/* --dns-rate: upstream DNS queries per second */
	struct outq outq;	/* frames for the guest the socket did not take yet */
	struct knet_counts count;
	const char *rule_text[NET_RULES_MAX]; /* as given, for the audit log */
	/* Addresses as bytes (network order). */
	uint8_t guest_mac[6], gw_mac[6];
	uint8_t guest4[4], gw4[4], dns4[4], fwd4[4];
	uint8_t guest6[16], gw6[16], dns6[16];
};

/* Milliseconds of CLOCK_MONOTONIC (the policy's clock). */
uint64_t knet_now_ms(void);
/* Bytes of an address of this family (4 or 16). */
static inline size_t knet_alen(int family) { return family == AF_INET ? 4 : 16; }
/* addr:port (network-order bytes) as a socket address; its length. */
socklen_t knet_sockaddr(int family, const uint8_t *addr, uint16_t port,
			struct sockaddr_storage *ss);

/* host.c: open the rtnetlink socket (before the jail); the policy's host
 * check (rules.h: net_host_check_fn), ctx is the struct knet. */
int host_init(struct knet *k);
int host_check(void *ctx, const struct net_ip *ip);

/* guest.c */
int guest_init(struct knet *k);
void guest_input(struct knet *k, uint8_t *frame, size_t len);
/* Queue or send one frame to the guest; dropped (false) when the queue is full. */
bool guest_send(struct knet *k, const uint8_t *frame, size_t len);
/* Build and send an IP packet to the guest from src (gateway MAC). */
bool guest_send_ip(struct knet *k, int family, const uint8_t *src, const uint8_t *dst,
		   uint8_t proto, const uint8_t *l4, size_t l4len);
void guest_flush(struct knet *k);
/* True while frames wait for the VMM socket (readers of the world pause). */
bool guest_congested(const struct knet *k);
/* Frames from slirp (its send_packet callback). */
void guest_from_slirp(struct knet *k, const uint8_t *frame, size_t len);

/* tcp.c */
int tcp_init(struct knet *k);
void tcp_guest_segment(struct knet *k, const struct frame_ip *ip);
/* A TCP frame slirp sent towards the guest (already parsed). */
void tcp_from_slirp(struct knet *k, const struct frame_ip *ip);
void tcp_poll_fill(struct knet *k, struct pollset *ps);
void tcp_poll_handle(struct knet *k, const struct pollset *ps);
/* Close every flow (audit lines with what they carried). */
void tcp_shutdown(struct knet *k);

/* dns.c */
#define KNET_DNS_PENDING 64 /* guest queries queued or asked upstream at once */
int dns_init(struct knet *k);
void dns_guest_query(struct knet *k, const struct frame_ip *ip);
void dns_poll_fill(struct knet *k, struct pollset *ps);
void dns_poll_handle(struct knet *k, const struct pollset *ps);
/* Fail every question still open (audit lines). */
void dns_shutdown(struct knet *k);

/* udp.c */
void udp_guest_datagram(struct knet *k, const struct frame_ip *ip);
void udp_poll_fill(struct knet *k, struct pollset *ps);
void udp_poll_handle(struct knet *k, const struct pollset *ps);
void udp_shutdown(struct knet *k);

/* audit.c: one JSON line per event; counters. */
struct audit_event {
	const char *proto;	/* "tcp", "udp", "dns", "icmp" */
	const char *verdict;	/* "allow", "deny", "error" */
	const char *reason;	/* net_reason_str(), or a failure token */
	int rule;		/* index of the deciding rule or -1 */
	int family;
	const uint8_t *dst;	/* NULL for DNS */
	uint16_t port;
	const char *name;	/* SNI/Host, or the DNS name; NULL if none */
	const char *qtype;	/* DNS only */
	const char *answers;	/* DNS only: space-separated addresses given to the guest */
	const char *dropped;	/* DNS only: addresses withheld (rebinding) */
	const char *dropped_reasons; /* DNS only: why, one token per withheld address */
	uint64_t bytes_up, bytes_down;
	uint64_t duration_ms;
};
void audit_event(struct knet *k, const struct audit_event *e);
/* Things dropped without a decision of their own, counted per kind and
 * written as one line per kind per second with the count. */
enum knet_drop {
	DROP_SPOOFED_MAC,    /* a frame not from the guest NIC's MAC */
	DROP_SPOOFED_SOURCE, /* an IP source that is not the guest's address */
	DROP_FRAGMENT,	     /* IPv4 fragments, IPv6 fragment headers */
	DROP_EXTHDR,	     /* IPv6 extension headers */
	DROP_PROTO,	     /* IP protocols other than TCP, UDP, ICMP */
	DROP_ETHERTYPE,	     /* ethertypes other than IPv4, IPv6, ARP */
	DROP_MALFORMED,	     /* bad lengths, truncated or oversized frames */
	DROP_BAD_CSUM,	     /* IPv4 header or transport checksums */
	DROP_TCP_FLAGS,	     /* impossible TCP flag combinations */
	DROP_TCP_STRAY,	     /* TCP segments for no connection (answered with RST) */
	DROP_ARP,	     /* ARP not about the guest's own address */
	DROP_ICMP,	     /* ICMP and ICMPv6 (neighbour discovery for the gateway aside) */
	DROP_UDP_RATE,	     /* UDP datagrams from the guest over --net-rate */
	DROP_UDP_DOWN,	     /* UDP datagrams for the guest over --net-rate */
	DROP_UDP_TOO_BIG,    /* UDP datagrams for the guest larger than its MTU */
	DROP_GUEST_QUEUE,    /* frames for the guest: the queue to the VMM was full */
	DROP_PIN_EVICTED,    /* a live DNS pin evicted to make room */
	DROP_DNS_MISMATCH,   /* a resolver reply whose ID or question is not ours */
	KNET_DROP_KINDS
};
struct audit_drop_info {
	int family;	     /* 0 if no address */
	const uint8_t *dst;
	uint16_t port;
	int detail;	     /* IP protocol (DROP_PROTO, DROP_EXTHDR) or ethertype; -1 */
	const char *name;
};
void audit_drop(struct knet *k, enum knet_drop kind, const struct audit_drop_info *info);
/* Write the counts once their second is over (force: now). Returns the
 * milliseconds until the next flush is due, or -1 if nothing is counted. */
int audit_drops_flush(struct knet *k, bool force);
void audit_status(struct knet *k);

/* sandbox.c: enter the jail and create the guestfwd listener (or, without
 * the jail, create it in a temporary directory that sandbox_cleanup removes);
 * then, once everything is open, the seccomp filter. 0 or -errno with why. */
int sandbox_enter(struct knet *k, bool use_jail, char *why, size_t whylen);
int sandbox_filter(bool jailed, char *why, size_t whylen);
void sandbox_cleanup(struct knet *k);

#endif
