/*
 * kiln-net's frame intake with the real TCP, UDP and DNS code and libslirp
 * (src/net/proc/), fed by a fuzzed guest on the VMM's end of its socket.
 * No traffic leaves the machine: the harness defines connect(), sendto(),
 * sendmsg() and sendmmsg() (they take precedence over libc's for kiln-net
 * and libslirp alike) and lets through only Unix sockets, its own fake
 * resolver, and destinations the rules allow, which it redirects to its own
 * servers on 127.0.0.1. kiln-net's main.c is compiled into this harness
 * (#include, its main() renamed) so its own set-up helpers, slirp glue and
 * loop body run here: ppoll() is replaced so that run() makes exactly one
 * turn of its loop at a time; time is a fake clock (--wrap=now_ns).
 *
 * The policy: 192.0.2.0/24 on TCP 80, 443 and 8080; udp:198.51.100.0/24 on
 * 53 and 123; 2001:db8:1::/48 on every TCP port; *.example.com (80, 443),
 * api.example.org on 443 and 8443, example.net on 22. The fake resolver
 * answers from a fixed list: 203.0.113.1-7 and 2001:db8:3::1-7 (fine to
 * pin), and addresses that must never be reached (loopback, link-local,
 * metadata, multicast, "this network", the gateway's).
 *
 * Input: operations, one byte each with arguments: TCP segments (new, or
 * continuing a conversation the harness tracks), UDP datagrams, DNS
 * queries, raw frames, ARP and neighbour solicitations, resolver answers,
 * server-side reads/writes/closes, UDP replies, clock steps, loop turns.
 *
 * Properties:
 *  - kiln-net connects or sends only to destinations the rules allow: an
 *    address a CIDR rule covers on that protocol and port, or an address the
 *    resolver gave for a name a rule allows on that port (TCP); anything else
 *    is a finding (and is never really attempted);
 *  - the first bytes a server behind a pin-only TCP connection on port 80 or
 *    443 receives carry an SNI or Host that names the pinned name;
 *  - every frame kiln-net sends the guest is at most 1514 bytes, from the
 *    gateway's MAC to the guest's, ARP or IP to the guest's address, with a
 *    correct IPv4 header checksum and transport checksum;
 *  - every audit line is a JSON object with proto, verdict and reason (or
 *    the "suppressed" count);
 *  - after each input every flow is closed and no fd is left open.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <jansson.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/un.h>

#include "fuzz.h"
#include "net/dnsmsg.h"
#include "net/sniff.h"

/* kiln-net's main.c, its loop made to run one turn per call. */
int knet_main(int argc, char **argv);
static int one_turn(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *m);
#define main  knet_main
#define ppoll one_turn
#include "net/proc/main.c"
#undef main
#undef ppoll

/* ---- the fake clock ---- */

static uint64_t clock_ns = 1000000000000ULL;

uint64_t __wrap_now_ns(void);
uint64_t __wrap_now_ns(void)
{
	return clock_ns;
}

/* One pass of run()'s loop: poll without waiting, then stop. */
static int one_turn(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *m)
{
	(void)ts;
	(void)m;
	stop_signal = 1;
	return poll(fds, n, 0);
}

/* ---- addresses and rules ---- */

static const char *const rules[] = {
	"192.0.2.0/24:80,443,8080", "udp:198.51.100.0/24:53,123", "2001:db8:1::/48",
	"*.example.com",	    "api.example.org:443,8443;private", "example.net:22",
};

/* Where the guest may send things: each rule's ground, the pin-able ones, the never-ones. */
static const char *const dests[] = {
	"192.0.2.10",	   "192.0.2.200",    "198.51.100.53", "2001:db8:1::10", "2001:db8:1:ffff::1",
	"203.0.113.1",	   "203.0.113.7",    "2001:db8:3::1", "2001:db8:3::7",	"127.0.0.1",
	"169.254.169.254", "224.0.0.251",    "0.0.0.0",	      "::1",		"fe80::1",
	"10.0.2.2",	   "10.0.2.3",	     "10.0.2.100",    "fd00::2",	"fd00::3",
	"8.8.8.8",	   "2606:4700::1111", "192.0.3.1",    "::ffff:192.0.2.10", "93.184.216.34",
	"2606:2800:220:1::1",
};
#define NDESTS (sizeof(dests) / sizeof(dests[0]))

/* What the fake resolver may answer. */
static const char *const answers[] = {
	"203.0.113.1",	"203.0.113.2", "203.0.113.7", "2001:db8:3::1", "2001:db8:3::7",
	"127.0.0.1",	"169.254.169.254", "0.0.0.0", "224.0.0.1",     "::1",
	"fe80::1",	"10.0.2.2",    "10.0.2.3",    "fd00::2",       "ff02::1",
	"93.184.216.34", "2606:2800:220:1::1",
};
#define NANSWERS (sizeof(answers) / sizeof(answers[0]))

static const char *const names[] = {
	"a.example.com", "api.example.org", "example.net", "deep.b.example.com", "example.com",
	"denied.test",	 "API.Example.Org.", "x.api.example.org",
};

static bool addr_of(const char *text, int *family, uint8_t *b)
{
	memset(b, 0, 16);
	if (inet_pton(AF_INET, text, b) == 1) {
		*family = AF_INET;
		return true;
	}
	*family = AF_INET6;
	return inet_pton(AF_INET6, text, b) == 1;
}

/* Ports a name rule allows for name (lower case, no trailing dot): a bitmap of the four. */
static bool name_allows(const char *name, uint16_t port)
{
	size_t n = strlen(name);

	if (n > 12 && !strcmp(name + n - 12, ".example.com"))
		return port == 80 || port == 443;
	if (!strcmp(name, "api.example.org"))
		return port == 443 || port == 8443;
	if (!strcmp(name, "example.net"))
		return port == 22;
	return false;
}

/* Only the ";private" rule lets a name reach a non-public answer. */
static bool name_private(const char *name)
{
	return !strcmp(name, "api.example.org");
}

/* Answers a name may be pinned to: 1 public, 2 non-public (documentation
 * ranges), 0 never (loopback, link-local, slirp's own, multicast...). */
static int pin_kind(int family, const uint8_t *a)
{
	if (family == AF_INET)
		return a[0] == 93 && a[1] == 184 && a[2] == 216	 ? 1
		       : a[0] == 203 && a[1] == 0 && a[2] == 113 ? 2
								 : 0;
	return !memcmp(a, "\x26\x06\x28\x00\x02\x20", 6)   ? 1
	       : !memcmp(a, "\x20\x01\x0d\xb8\x00\x03", 6) ? 2
							      : 0;
}

static bool name_may(const char *name, int kind, uint16_t port)
{
	return kind && name_allows(name, port) && (kind == 1 || name_private(name));
}

/* (name, address) pairs the resolver gave for names a rule covers. */
struct answered {
	char name[256];
	int family;
	uint8_t addr[16];
};
static struct answered given[256];
static unsigned ngiven;

static bool v4mapped(const uint8_t *b)
{
	static const uint8_t pre[12] = { [10] = 0xff, [11] = 0xff };

	return !memcmp(b, pre, 12);
}

/* May kiln-net open (family, addr, port, proto)? The harness's own reading of the rules. */
static bool allowed(int family, const uint8_t *addr, uint16_t port, bool udp)
{
	uint8_t a[16];

	memcpy(a, addr, 16);
	if (family == AF_INET6 && v4mapped(a)) {
		family = AF_INET;
		memmove(a, a + 12, 4);
		memset(a + 4, 0, 12);
	}
	if (family == AF_INET) {
		if (!udp && a[0] == 192 && a[1] == 0 && a[2] == 2)
			return port == 80 || port == 443 || port == 8080;
		if (udp && a[0] == 198 && a[1] == 51 && a[2] == 100)
			return port == 53 || port == 123;
	} else if (!udp && !memcmp(a, "\x20\x01\x0d\xb8\x00\x01", 6)) {
		return true;
	}
	if (udp)
		return false;
	/* Pinned: only the fine part of the answer list, for a name allowed on
	 * that port (and allowed non-public answers, for those). */
	if (!pin_kind(family, a))
		return false;
	for (unsigned i = 0; i < ngiven; i++)
		if (given[i].family == family && !memcmp(given[i].addr, a, family == AF_INET ? 4 : 16) &&
		    name_may(given[i].name, pin_kind(family, a), port))
			return true;
	return false;
}

static bool pin_only(int family, const uint8_t *addr, uint16_t port)
{
	uint8_t a[16];

	memcpy(a, addr, 16);
	if (family == AF_INET6 && v4mapped(a)) {
		family = AF_INET;
		memmove(a, a + 12, 4);
	}
	(void)port;
	return pin_kind(family, a) != 0;
}

/* ---- the harness's servers ---- */

static struct knet k;
static int guest_fd = -1;			/* the VMM's end */
static int tcp_srv = -1, udp_srv = -1, resolver = -1;
static uint16_t tcp_srv_port, udp_srv_port, resolver_port;
static int audit_fd = -1;

/* Connections kiln-net opened, by the local port of its socket. */
struct origin {
	bool used;
	uint16_t lport;
	int family;
	uint8_t addr[16];
	uint16_t port;
	bool udp;
};
static struct origin origins[512];

struct sconn {
	int fd;
	struct origin o;
	uint8_t first[SNIFF_MAX];
	size_t nfirst;
	bool judged;
};
static struct sconn sconns[32];

static void origin_note(int fd, int family, const uint8_t *addr, uint16_t port, bool udp)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	uint16_t lport;

	if (getsockname(fd, (struct sockaddr *)&ss, &len))
		return;
	lport = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
					      : ((struct sockaddr_in6 *)&ss)->sin6_port);
	for (unsigned i = 0; i < 512; i++)
		if (!origins[i].used || origins[i].lport == lport) {
			origins[i] = (struct origin){ .used = true, .lport = lport, .family = family,
						      .port = port, .udp = udp };
			memcpy(origins[i].addr, addr, 16);
			return;
		}
}

static const struct origin *origin_of(uint16_t lport, bool udp)
{
	for (unsigned i = 0; i < 512; i++)
		if (origins[i].used && origins[i].lport == lport && origins[i].udp == udp)
			return &origins[i];
	return NULL;
}

/* ---- the network calls: only what the rules allow, redirected here ---- */

static void sa_parts(const struct sockaddr *sa, int *family, uint8_t *addr, uint16_t *port)
{
	memset(addr, 0, 16);
	*family = sa->sa_family;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s = (const void *)sa;

		memcpy(addr, &s->sin_addr, 4);
		*port = ntohs(s->sin_port);
	} else {
		const struct sockaddr_in6 *s = (const void *)sa;

		memcpy(addr, &s->sin6_addr, 16);
		*port = ntohs(s->sin6_port);
	}
}

static bool is_resolver(const struct sockaddr *sa, socklen_t len)
{
	const struct sockaddr_in *s = (const void *)sa;

	return sa->sa_family == AF_INET && len >= sizeof(*s) && s->sin_port == htons(resolver_port) &&
	       s->sin_addr.s_addr == htonl(INADDR_LOOPBACK);
}

/* Our own servers on 127.0.0.1 (for an IPv6 socket as ::ffff:127.0.0.1). */
static socklen_t redirect(int family, uint16_t port, struct sockaddr_storage *ss)
{
	static const uint8_t lo4[4] = { 127, 0, 0, 1 };
	uint8_t lo6[16] = { [10] = 0xff, [11] = 0xff, [12] = 127, [15] = 1 };

	return knet_sockaddr(family, family == AF_INET ? lo4 : lo6, port, ss);
}

int connect(int fd, const struct sockaddr *sa, socklen_t len)
{
	struct sockaddr_storage ss;
	int type = 0, family, ret;
	socklen_t tl = sizeof(type);
	uint8_t addr[16];
	uint16_t port;
	bool udp;

	if (sa->sa_family == AF_UNIX)
		return (int)syscall(SYS_connect, fd, sa, len);
	FZ_CHECK(sa->sa_family == AF_INET || sa->sa_family == AF_INET6, "connect: family %d",
		 sa->sa_family);
	getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl);
	udp = type == SOCK_DGRAM;
	sa_parts(sa, &family, addr, &port);
	if (udp && is_resolver(sa, len))
		return (int)syscall(SYS_connect, fd, sa, len);
	{
		char text[INET6_ADDRSTRLEN] = "?";

		inet_ntop(family, addr, text, sizeof(text));
		FZ_CHECK(allowed(family, addr, port, udp), "kiln-net connects to %s %s port %u",
			 udp ? "UDP" : "TCP", text, port);
	}
	len = redirect(family, udp ? udp_srv_port : tcp_srv_port, &ss);
	ret = (int)syscall(SYS_connect, fd, (struct sockaddr *)&ss, len);
	origin_note(fd, family, addr, port, udp);
	return ret;
}

static void check_dest(const struct sockaddr *sa, socklen_t len)
{
	int family;
	uint8_t addr[16];
	uint16_t port;

	if (!sa || sa->sa_family == AF_UNIX || sa->sa_family == AF_NETLINK || is_resolver(sa, len))
		return;
	sa_parts(sa, &family, addr, &port);
	FZ_CHECK(0, "kiln-net sends a datagram to family %d port %u by address", family, port);
}

ssize_t sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *sa,
	       socklen_t len)
{
	check_dest(sa, len);
	return syscall(SYS_sendto, fd, buf, n, flags, sa, len);
}

ssize_t sendmsg(int fd, const struct msghdr *m, int flags)
{
	check_dest(m->msg_name, m->msg_namelen);
	return syscall(SYS_sendmsg, fd, m, flags);
}

int sendmmsg(int fd, struct mmsghdr *v, unsigned n, int flags)
{
	for (unsigned i = 0; i < n; i++)
		check_dest(v[i].msg_hdr.msg_name, v[i].msg_hdr.msg_namelen);
	return (int)syscall(SYS_sendmmsg, fd, v, n, flags);
}

/* The harness's own sends: not kiln-net's, not checked. */
static ssize_t hsendto(int fd, const void *buf, size_t n, const struct sockaddr *sa, socklen_t len)
{
	return syscall(SYS_sendto, fd, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL, sa, len);
}

/* ---- the guest's side ---- */

struct conv {
	bool used;
	int family;
	uint8_t dst[16];
	uint16_t sport, dport;
	uint32_t our_next, their_next;
};
static struct conv convs[16];

static void guest_send_frame(const uint8_t *f, size_t n)
{
	if (n)
		(void)!send(guest_fd, f, n, MSG_DONTWAIT | MSG_NOSIGNAL);
}

static void guest_ip(int family, const uint8_t *dst, uint8_t proto, uint8_t *l4, size_t l4len)
{
	uint8_t out[FRAME_MAX + 128];
	size_t n = frame_build(out, sizeof(out), k.gw_mac, k.guest_mac, family,
			       family == AF_INET ? k.guest4 : k.guest6, dst, proto, l4, l4len);

	guest_send_frame(out, n);
}

static uint16_t pick_port(struct fz *in)
{
	static const uint16_t ports[] = { 80, 443, 8080, 22, 8443, 53, 123, 7 };
	uint8_t sel = fz_u8(in);

	return sel < 0xf0 ? ports[sel % 8] : fz_u16(in);
}

static void pick_dest(struct fz *in, int *family, uint8_t *dst)
{
	uint8_t sel = fz_u8(in);

	if (sel < 0xf0) {
		addr_of(dests[sel % NDESTS], family, dst);
		return;
	}
	*family = sel & 1 ? AF_INET6 : AF_INET;
	memset(dst, 0, 16);
	for (unsigned i = 0; i < (*family == AF_INET ? 4u : 16u); i++)
		dst[i] = fz_u8(in);
}

static struct conv *conv_for(int family, const uint8_t *remote, uint16_t rport, uint16_t lport)
{
	size_t n = family == AF_INET ? 4 : 16;

	for (unsigned i = 0; i < 16; i++)
		if (convs[i].used && convs[i].family == family && convs[i].dport == rport &&
		    convs[i].sport == lport && !memcmp(convs[i].dst, remote, n))
			return &convs[i];
	return NULL;
}

/* A TCP segment from the guest: header fields, options, payload. The
 * sequence space it takes (payload, SYN, FIN). */
static uint32_t tcp_segment(struct fz *in, int family, const uint8_t *dst, uint16_t sport,
			uint16_t dport, uint32_t seq, uint32_t ack, uint8_t flags, bool track)
{
	uint8_t l4[FRAME_MAX];
	const uint8_t *opt, *data;
	size_t olen = fz_take(in, (fz_u8(in) % 11) * 4, &opt), dlen;

	dlen = fz_take(in, fz_u16(in) % 1400, &data);
	tcp_header(l4, sport, dport, seq, ack, flags, fz_u16(in));
	memcpy(l4 + TCP_HDR, opt, olen);
	if (olen % 4)
		memset(l4 + TCP_HDR + olen, 0, 4 - olen % 4);
	olen = (olen + 3) / 4 * 4;
	l4[12] = (uint8_t)(((TCP_HDR + olen) / 4) << 4);
	memcpy(l4 + TCP_HDR + olen, data, dlen);
	if (family == AF_INET6 && v4mapped(dst))
		return 0; /* not a frame a guest can send */
	guest_ip(family, dst, IPPROTO_TCP_, l4, TCP_HDR + olen + dlen);
	if (track && (flags & (TCP_SYN | TCP_ACK)) == TCP_SYN) {
		struct conv *c = conv_for(family, dst, dport, sport);

		if (!c)
			c = &convs[seq % 16];
		*c = (struct conv){ .used = true, .family = family, .sport = sport, .dport = dport,
				    .our_next = seq + 1 + (uint32_t)dlen };
		memcpy(c->dst, dst, 16);
	}
	return (uint32_t)dlen + !!(flags & TCP_SYN) + !!(flags & TCP_FIN);
}

static void op_new_tcp(struct fz *in)
{
	int family;
	uint8_t dst[16];
	uint16_t sport, dport;
	uint32_t seq;
	uint8_t flags;

	pick_dest(in, &family, dst);
	sport = (uint16_t)(40000 + fz_u8(in));
	dport = pick_port(in);
	seq = fz_u32(in);
	flags = fz_u8(in);
	if (flags < 0xc0)
		flags = TCP_SYN;
	tcp_segment(in, family, dst, sport, dport, seq, fz_u32(in), flags, true);
}

static void op_continue(struct fz *in)
{
	struct conv *c = &convs[fz_u8(in) % 16];
	uint8_t flags = fz_u8(in);

	if (!c->used)
		return;
	if (flags < 0x80)
		flags = TCP_ACK | (flags & 1 ? TCP_PSH : 0) | (flags & 2 ? TCP_FIN : 0);
	c->our_next += tcp_segment(in, c->family, c->dst, c->sport, c->dport, c->our_next,
				   c->their_next, flags, false);
}

static void op_udp(struct fz *in, bool dns)
{
	uint8_t l4[FRAME_MAX], dst[16];
	const uint8_t *data;
	uint16_t dport;
	int family;
	size_t n;

	if (dns) {
		family = fz_u8(in) & 1 ? AF_INET6 : AF_INET;
		memcpy(dst, family == AF_INET ? k.dns4 : k.dns6, 16);
		dport = 53;
	} else {
		pick_dest(in, &family, dst);
		dport = pick_port(in);
	}
	if (dns && (fz_u8(in) & 1)) {
		/* A well-formed question for one of the names. */
		struct dns_query q;
		uint16_t qtype = fz_u8(in) & 1 ? DNS_TYPE_AAAA : DNS_TYPE_A;
		int len;

		if (dns_query_init(&q, fz_u16(in), names[fz_u8(in) % 8], qtype))
			return;
		len = dns_build_query(&q, l4 + UDP_HDR, sizeof(l4) - UDP_HDR);
		n = len > 0 ? (size_t)len : 0;
	} else {
		n = fz_take(in, fz_u16(in) % 1400, &data);
		memcpy(l4 + UDP_HDR, data, n);
	}
	put16(l4, (uint16_t)(50000 + fz_u8(in)));
	put16(l4 + 2, dport);
	put16(l4 + 4, (uint16_t)(UDP_HDR + n));
	put16(l4 + 6, 0);
	if (family == AF_INET6 && v4mapped(dst))
		return;
	guest_ip(family, dst, IPPROTO_UDP_, l4, UDP_HDR + n);
}

static void op_raw(struct fz *in)
{
	uint8_t f[FRAME_MAX + 64];
	const uint8_t *p;
	uint8_t how = fz_u8(in);
	size_t n = fz_take(in, fz_u16(in) % sizeof(f), &p);

	memcpy(f, p, n);
	if ((how & 1) && n >= 12)
		memcpy(f + 6, k.guest_mac, 6);
	if ((how & 2) && n >= 14 + 20 && (f[14] >> 4) == 4) {
		/* A right IPv4 header checksum, so the rest gets looked at. */
		size_t ihl = (size_t)(f[14] & 15) * 4;
		uint32_t sum = 0;

		if (ihl >= 20 && 14 + ihl <= n) {
			f[24] = f[25] = 0;
			for (size_t i = 0; i < ihl; i += 2)
				sum += (uint32_t)(f[14 + i] << 8 | f[15 + i]);
			while (sum >> 16)
				sum = (sum & 0xffff) + (sum >> 16);
			put16(f + 24, (uint16_t)~sum);
		}
	}
	guest_send_frame(f, n);
}

static void op_arp_ndp(struct fz *in)
{
	uint8_t f[64], l4[32];
	uint8_t sel = fz_u8(in);

	if (sel & 1) {
		/* ARP who-has the gateway or DNS address. */
		memset(f, 0xff, 6);
		memcpy(f + 6, k.guest_mac, 6);
		put16(f + 12, ETHERTYPE_ARP);
		put16(f + 14, 1);
		put16(f + 16, ETHERTYPE_IP4);
		f[18] = 6;
		f[19] = 4;
		put16(f + 20, sel & 2 ? 2 : 1);
		memcpy(f + 22, k.guest_mac, 6);
		memcpy(f + 28, sel & 4 ? k.gw4 : k.guest4, 4);
		memset(f + 32, 0, 6);
		memcpy(f + 38, sel & 8 ? k.gw4 : k.dns4, 4);
		guest_send_frame(f, 42);
		return;
	}
	/* Neighbour solicitation for fd00::2 / fd00::3 (or something else). */
	memset(l4, 0, sizeof(l4));
	l4[0] = sel & 2 ? 135 : 128;
	memcpy(l4 + 8, sel & 4 ? k.gw6 : k.dns6, 16);
	l4[24] = 1;
	l4[25] = 1;
	memcpy(l4 + 26, k.guest_mac, 6);
	guest_ip(AF_INET6, sel & 8 ? k.gw6 : k.dns6, IPPROTO_ICMP6_, l4, 32);
}

/* The fake resolver answers the oldest query it holds. */
static void op_resolver(struct fz *in)
{
	uint8_t q[4096], out[DNS_UDP_MAX];
	struct sockaddr_storage from;
	socklen_t flen = sizeof(from);
	struct dns_query dq;
	struct dns_addr addrs[4];
	uint8_t mode = fz_u8(in);
	ssize_t n = recvfrom(resolver, q, sizeof(q), MSG_DONTWAIT, (struct sockaddr *)&from, &flen);
	size_t na = 0;
	int len = -1;

	if (n <= 0 || dns_parse_query(q, (size_t)n, &dq, NULL))
		return;
	switch (mode % 4) {
	case 0:
	case 1: {
		unsigned count = fz_u8(in) % 5;

		for (unsigned i = 0; i < count; i++) {
			int family;

			memset(&addrs[na], 0, sizeof(addrs[na]));
			addr_of(answers[fz_u8(in) % NANSWERS], &family, addrs[na].addr);
			addrs[na].family = family;
			addrs[na].ttl = fz_u8(in) * 10u;
			if ((family == AF_INET) != (dq.qtype == DNS_TYPE_A))
				continue;
			if (ngiven < 256) {
				snprintf(given[ngiven].name, sizeof(given[0].name), "%s", dq.name);
				given[ngiven].family = family;
				memcpy(given[ngiven].addr, addrs[na].addr, 16);
				ngiven++;
			}
			na++;
		}
		len = dns_build_answer(&dq, addrs, na, out, sizeof(out));
		break;
	}
	case 2:
		len = dns_build_error(&dq, fz_u8(in) & 1 ? DNS_RCODE_NXDOMAIN : DNS_RCODE_SERVFAIL, out,
				      sizeof(out));
		break;
	default: {
		/* Anything, under the query's id (or not). */
		const uint8_t *p;
		size_t m = fz_take(in, fz_u16(in) % sizeof(out), &p);

		memcpy(out, p, m);
		if (m >= 2 && (mode & 4)) {
			out[0] = q[0];
			out[1] = q[1];
		}
		len = (int)m;
		break;
	}
	}
	if (len > 0)
		hsendto(resolver, out, (size_t)len, (struct sockaddr *)&from, flen);
}

/* ---- the servers behind the redirect ---- */

static void server_accept(void)
{
	for (;;) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int fd = accept4(tcp_srv, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		const struct origin *o;
		unsigned i;

		if (fd < 0)
			return;
		o = origin_of(ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
							    : ((struct sockaddr_in6 *)&ss)->sin6_port),
			      false);
		for (i = 0; i < 32 && sconns[i].fd >= 0; i++)
			;
		if (i == 32 || !o) {
			close(fd);
			continue;
		}
		memset(&sconns[i], 0, sizeof(sconns[i]));
		sconns[i].fd = fd;
		sconns[i].o = *o;
	}
}

/* What reaches a server behind a pin on 80/443 was let through by its SNI/Host. */
static void server_judge(struct sconn *c)
{
	char host[SNIFF_HOST_MAX + 1];
	enum sniff_result r;
	uint16_t hport = 0;
	int family = c->o.family;
	uint8_t a[16];
	bool ok = false;

	if (c->judged || !c->nfirst || !pin_only(c->o.family, c->o.addr, c->o.port) ||
	    (c->o.port != 80 && c->o.port != 443))
		return;
	r = c->o.port == 443 ? sniff_tls_sni(c->first, c->nfirst, host, sizeof(host))
			     : sniff_http_host(c->first, c->nfirst, host, sizeof(host), &hport);
	if (r == SNIFF_NEED_MORE && c->nfirst < SNIFF_MAX)
		return;
	FZ_CHECK(r == SNIFF_OK, "a server behind a pin got %zu bytes without a good %s (%s)",
		 c->nfirst, c->o.port == 443 ? "SNI" : "Host", sniff_result_str(r));
	memcpy(a, c->o.addr, 16);
	if (family == AF_INET6 && v4mapped(a)) {
		family = AF_INET;
		memmove(a, a + 12, 4);
		memset(a + 4, 0, 12);
	}
	for (unsigned i = 0; i < ngiven && !ok; i++)
		ok = !strcmp(given[i].name, host) && given[i].family == family &&
		     !memcmp(given[i].addr, a, family == AF_INET ? 4 : 16) &&
		     name_may(host, pin_kind(family, a), c->o.port);
	FZ_CHECK(ok, "'%s' reached a server the resolver never gave it for port %u", host,
		 c->o.port);
	c->judged = true;
}

static void server_read(void)
{
	uint8_t junk[4096];

	for (unsigned i = 0; i < 32; i++) {
		struct sconn *c = &sconns[i];
		ssize_t n;

		if (c->fd < 0)
			continue;
		if (c->nfirst < SNIFF_MAX) {
			n = recv(c->fd, c->first + c->nfirst, SNIFF_MAX - c->nfirst, MSG_DONTWAIT);
			if (n > 0) {
				c->nfirst += (size_t)n;
				server_judge(c);
			}
		} else {
			while (recv(c->fd, junk, sizeof(junk), MSG_DONTWAIT) > 0)
				;
		}
	}
}

static void op_server(struct fz *in)
{
	struct sconn *c = &sconns[fz_u8(in) % 32];
	uint8_t how = fz_u8(in);
	const uint8_t *p;
	size_t n = fz_chunk(in, &p);

	if (c->fd < 0)
		return;
	switch (how % 4) {
	case 0:
	case 1:
		(void)!send(c->fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
		break;
	case 2:
		shutdown(c->fd, SHUT_WR);
		break;
	default:
		close(c->fd);
		c->fd = -1;
		break;
	}
}

static void op_udp_reply(struct fz *in)
{
	uint8_t buf[2048];
	struct sockaddr_storage from;
	socklen_t flen = sizeof(from);
	const uint8_t *p;
	size_t n = fz_take(in, fz_u16(in) % 1600, &p);

	if (recvfrom(udp_srv, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr *)&from, &flen) < 0)
		return;
	hsendto(udp_srv, p, n, (struct sockaddr *)&from, flen);
}

/* ---- what kiln-net sends the guest ---- */

static uint16_t csum(const uint8_t *p, size_t n, uint32_t s)
{
	for (; n > 1; p += 2, n -= 2)
		s += (uint32_t)(p[0] << 8 | p[1]);
	if (n)
		s += (uint32_t)p[0] << 8;
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)s;
}

static void check_guest_frame(const uint8_t *f, size_t n)
{
	static const uint8_t all_nodes[16] = { 0xff, 2, [15] = 1 };
	uint8_t copy[FRAME_MAX];
	struct frame_ip ip;
	enum frame_kind kind;
	size_t alen;
	uint32_t s = 0;

	FZ_CHECK(n >= ETH_HDR && n <= FRAME_MAX, "a %zu-byte frame to the guest", n);
	if (n >= ETH_HDR + 28 && get16(f + 12) == ETHERTYPE_ARP && !memcmp(f, "\xff\xff\xff\xff\xff\xff", 6) &&
	    !memcmp(f + 6, k.gw_mac, 6)) {
		/* slirp asks who has the guest's address: the guest's kernel answers. */
		uint8_t r[42];

		if (get16(f + 20) != 1 || memcmp(f + 38, k.guest4, 4))
			return;
		memcpy(r, f + 6, 6);
		memcpy(r + 6, k.guest_mac, 6);
		memcpy(r + 12, f + 12, 8);
		put16(r + 20, 2);
		memcpy(r + 22, k.guest_mac, 6);
		memcpy(r + 28, k.guest4, 4);
		memcpy(r + 32, f + 22, 10);
		guest_send_frame(r, sizeof(r));
		return;
	}
	/* slirp answers ARP for each of its addresses with MAC 52:55:<address>. */
	if (n >= ETH_HDR + 28 && get16(f + 12) == ETHERTYPE_ARP && !memcmp(f, k.guest_mac, 6) &&
	    f[6] == 0x52 && f[7] == 0x55 && !memcmp(f + 8, f + 28, 4))
		return;
	FZ_CHECK(!memcmp(f, k.guest_mac, 6) && !memcmp(f + 6, k.gw_mac, 6),
		 "a frame to the guest from %02x:%02x:%02x:%02x:%02x:%02x to "
		 "%02x:%02x:%02x:%02x:%02x:%02x, type %04x", f[6], f[7], f[8], f[9], f[10], f[11],
		 f[0], f[1], f[2], f[3], f[4], f[5], get16(f + 12));
	memcpy(copy, f, n);
	kind = frame_parse(copy, n, &ip);
	FZ_CHECK(kind == FRAME_IP || kind == FRAME_ARP, "the guest got a frame of kind %d", kind);
	if (kind == FRAME_ARP)
		return;
	alen = ip.family == AF_INET ? 4 : 16;
	FZ_CHECK(!memcmp(ip.dst, ip.family == AF_INET ? k.guest4 : k.guest6, alen) ||
			 (ip.family == AF_INET6 && !memcmp(ip.dst, all_nodes, 16)),
		 "a packet to the guest for another address");
	if (ip.proto == IPPROTO_UDP_ && ip.family == AF_INET && get16(ip.l4 + 6) == 0)
		return;
	if (ip.proto != IPPROTO_ICMP_) {
		s = csum(ip.src, alen, s);
		s = csum(ip.dst, alen, s);
		s += ip.proto + (uint32_t)ip.l4len;
	}
	FZ_CHECK(csum(ip.l4, ip.l4len, s) == 0xffff, "a bad %s checksum to the guest",
		 ip.proto == IPPROTO_TCP_ ? "TCP" : ip.proto == IPPROTO_UDP_ ? "UDP" : "ICMP");
	if (ip.proto == IPPROTO_TCP_) {
		struct conv *c = conv_for(ip.family, ip.src, get16(ip.l4), get16(ip.l4 + 2));
		uint8_t fl = ip.l4[13];

		if (c)
			c->their_next = get32(ip.l4 + 4) + (uint32_t)(ip.l4len - tcp_hdr_len(ip.l4)) +
					!!(fl & TCP_SYN) + !!(fl & TCP_FIN);
	}
}

static void guest_drain(void)
{
	uint8_t f[FRAME_MAX + 64];
	ssize_t n;

	while ((n = recv(guest_fd, f, sizeof(f), MSG_DONTWAIT | MSG_TRUNC)) > 0)
		check_guest_frame(f, (size_t)n);
}

/* One turn of kiln-net's loop, and everything the harness watches. */
static void turn(void)
{
	sigset_t none;

	sigemptyset(&none);
	stop_signal = 0;
	run(&k, &none);
	stop_signal = 0;
	guest_drain();
	server_accept();
	server_read();
}

/* ---- set-up, reset, checks after each input ---- */

static void check_audit(void)
{
	off_t end = lseek(audit_fd, 0, SEEK_END);
	char *text, *line, *save = NULL;

	if (end <= 0)
		return;
	text = malloc((size_t)end + 1);
	FZ_CHECK(text && pread(audit_fd, text, (size_t)end, 0) == end, "audit read");
	text[end] = 0;
	FZ_CHECK(text[end - 1] == '\n', "audit log does not end a line");
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		json_error_t e;
		json_t *o = json_loads(line, 0, &e);

		FZ_CHECK(json_is_object(o), "audit line is no JSON object: %s", line);
		if (getenv("FUZZ_KNET_AUDIT"))
			fprintf(stderr, "audit: %s\n", line);
		FZ_CHECK((json_is_string(json_object_get(o, "proto")) &&
			  json_is_string(json_object_get(o, "verdict")) &&
			  json_is_string(json_object_get(o, "reason"))) ||
				 json_is_integer(json_object_get(o, "count")),
			 "audit line without proto/verdict/reason: %s", line);
		json_decref(o);
	}
	free(text);
	FZ_CHECK(ftruncate(audit_fd, 0) == 0 && lseek(audit_fd, 0, SEEK_SET) == 0, "audit reset");
}

/* Open sockets: kiln-net's kind of fd (the sanitizers may open pipes of their own). */
static int count_fds(bool show)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	FZ_CHECK(d, "opendir");
	while ((e = readdir(d))) {
		char path[300], to[256] = "";

		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		if (readlink(path, to, sizeof(to) - 1) <= 0 || strncmp(to, "socket:", 7))
			continue;
		n++;
		if (show)
			fprintf(stderr, "fd %s -> %s\n", e->d_name, to);
	}
	closedir(d);
	return n;
}

static void policy_new(uint64_t rate)
{
	char err[256];

	if (k.pol)
		net_policy_free(k.pol);
	k.pol = net_policy_new(0);
	FZ_CHECK(k.pol, "net_policy_new");
	for (unsigned i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
		FZ_CHECK(net_policy_add_rule(k.pol, rules[i], err, sizeof(err)) == 0, "%s", err);
		k.rule_text[i] = rules[i];
	}
	/* The host check asks the kernel, as kiln-net does (one routing socket). */
	static bool host_open;

	if (!host_open)
		FZ_CHECK(host_init(&k) == 0, "host_init");
	host_open = true;
	net_policy_set_host_check(k.pol, host_check, &k);
	bucket_init(&k.up, rate, now_ns());
	bucket_init(&k.down, rate, now_ns());
}

static void slirp_fresh(void)
{
	if (k.slirp)
		slirp_cleanup(k.slirp);
	k.slirp = NULL;
	memset(timers, 0, sizeof(timers));
	FZ_CHECK(slirp_start(&k) == 0 && slirp_forward(&k) == 0, "slirp");
}

static int listener(int type, uint16_t *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	FZ_CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
			 (type != SOCK_STREAM || listen(fd, 64) == 0) &&
			 getsockname(fd, (struct sockaddr *)&sa, &len) == 0,
		 "harness server");
	*port = ntohs(sa.sin_port);
	return fd;
}

static char scratch[64];

static void cleanup(void)
{
	unlink(k.fwd_path);
	rmdir(scratch);
}

/* slirp's guestfwd listener, as sandbox.c makes it without the jail, but in
 * the harness's scratch directory (removed by tests/fuzz/run even after a finding). */
static void fwd_listener_here(void)
{
	struct sockaddr_un su = { .sun_family = AF_UNIX };

	fz_scratch_dir("knet", scratch, sizeof(scratch));
	snprintf(k.fwd_path, sizeof(k.fwd_path), "%s/fwd.sock", scratch);
	memcpy(su.sun_path, k.fwd_path, strlen(k.fwd_path) + 1);
	k.fwd_listen = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	FZ_CHECK(k.fwd_listen >= 0 && bind(k.fwd_listen, (struct sockaddr *)&su, sizeof(su)) == 0 &&
			 listen(k.fwd_listen, 16) == 0,
		 "guestfwd listener");
}

static int base_fds = -1;

static void reset(void)
{
	struct pollset ps = { .n = 0, .timeout_ms = -1 };

	tcp_shutdown(&k);
	udp_shutdown(&k);
	clock_ns += 60ULL * 1000000000ULL; /* every DNS question and flow times out */
	dns_poll_fill(&k, &ps);
	turn();
	k.outq.head = k.outq.count = 0;
	guest_drain();
	for (unsigned i = 0; i < 32; i++) {
		if (sconns[i].fd >= 0)
			close(sconns[i].fd);
		sconns[i].fd = -1;
	}
	{
		uint8_t junk[4096];

		while (recv(udp_srv, junk, sizeof(junk), MSG_DONTWAIT) >= 0)
			;
		while (recv(resolver, junk, sizeof(junk), MSG_DONTWAIT) >= 0)
			;
	}
	slirp_fresh();
	memset(convs, 0, sizeof(convs));
	memset(origins, 0, sizeof(origins));
	ngiven = 0;
	k.vmm_gone = false;
	memset(&k.count, 0, sizeof(k.count));
	check_audit();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct sockaddr_in *r = (struct sockaddr_in *)&k.resolver;
	int sv[2];

	k.vmm_fd = k.fwd_listen = k.audit_fd = k.status_fd = -1;
	FZ_CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0,
		 "socketpair");
	k.vmm_fd = sv[0];
	guest_fd = sv[1];
	addresses(&k);
	tcp_srv = listener(SOCK_STREAM, &tcp_srv_port);
	udp_srv = listener(SOCK_DGRAM, &udp_srv_port);
	resolver = listener(SOCK_DGRAM, &resolver_port);
	r->sin_family = AF_INET;
	r->sin_port = htons(resolver_port);
	r->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	k.resolver_len = sizeof(*r);
	audit_fd = k.audit_fd = memfd_create("audit", MFD_CLOEXEC);
	FZ_CHECK(audit_fd >= 0, "memfd_create");
	for (unsigned i = 0; i < 32; i++)
		sconns[i].fd = -1;
	policy_new(0);
	FZ_CHECK(slirp_start(&k) == 0, "slirp_start");
	fwd_listener_here();
	atexit(cleanup);
	FZ_CHECK(guest_init(&k) == 0 && tcp_init(&k) == 0 && dns_init(&k) == 0, "init");
	FZ_CHECK(slirp_forward(&k) == 0, "slirp_forward");
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz in = { data, size };
	uint8_t rate = fz_u8(&in);

	policy_new(rate < 0xe0 ? 0 : (uint64_t)(rate - 0xdf) * 2000);
	while (in.n) {
		switch (fz_u8(&in) % 12) {
		case 0: op_new_tcp(&in); break;
		case 1: op_continue(&in); break;
		case 2: op_udp(&in, false); break;
		case 3: op_udp(&in, true); break;
		case 4: op_raw(&in); break;
		case 5: op_arp_ndp(&in); break;
		case 6: op_resolver(&in); break;
		case 7: op_server(&in); break;
		case 8: op_udp_reply(&in); break;
		case 9: clock_ns += (uint64_t)fz_u16(&in) * 10000000ULL; break;
		default:
			for (unsigned i = fz_u8(&in) % 8; i; i--)
				turn();
			break;
		}
		turn();
		turn();
	}
	reset();
	if (base_fds < 0) {
		base_fds = count_fds(false);
	} else if (count_fds(false) != base_fds) {
		count_fds(true);
		FZ_CHECK(0, "%d sockets open after the input, %d before", count_fds(false), base_fds);
	}
	return 0;
}
