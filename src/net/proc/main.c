/*
 * kiln-net: the egress of one microVM (issue 6, docs/net.md). It owns the far
 * end of the VMM's virtio-net socket, plays the guest's gateway and DNS server,
 * and lets out only what the --allow rules allow, writing an audit line for
 * every attempt. The VMM itself never has network access.
 *
 *   kiln-net --fd N [--allow RULE]... [--audit-fd N] [--status-fd N]
 *            [--rate BYTES] [--dns-rate N] [--resolver ADDR[:PORT]]
 *            [--no-jail] [--no-seccomp]
 *
 * Exits 0 once the VMM hangs up (or on SIGTERM/SIGINT/SIGHUP), after closing
 * every connection and writing the status line; 2 on bad arguments, 1 when
 * it cannot set up. One line on stderr either way.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <signal.h>
#include <stdarg.h>
#include <slirp/libslirp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/guestnet.h"
#include "common/util.h"
#include "net/proc/knet.h"

#define RATE_MAX   (1ull << 40)
#define RECV_BURST 256 /* guest frames handled per loop turn */

static volatile sig_atomic_t stop_signal;

struct args {
	bool jail, filter;
	const char *resolver;
};

/* ---- small shared helpers ---- */

uint64_t knet_now_ms(void)
{
	return now_ns() / 1000000;
}

socklen_t knet_sockaddr(int family, const uint8_t *addr, uint16_t port,
			struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		memcpy(&s4->sin_addr, addr, 4);
		return sizeof(*s4);
	}
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

	s6->sin6_family = AF_INET6;
	s6->sin6_port = htons(port);
	memcpy(&s6->sin6_addr, addr, 16);
	return sizeof(*s6);
}

int pollset_add(struct pollset *ps, int fd, short events)
{
	if (ps->n >= KNET_POLL_MAX)
		return -1;
	ps->fd[ps->n] = (struct pollfd){ .fd = fd, .events = events };
	return ps->n++;
}

short pollset_revents(const struct pollset *ps, int idx)
{
	return idx >= 0 && idx < ps->n ? ps->fd[idx].revents : 0;
}

void pollset_timeout(struct pollset *ps, int ms)
{
	if (ms >= 0 && (ps->timeout_ms < 0 || ms < ps->timeout_ms))
		ps->timeout_ms = ms;
}

/* ---- arguments ---- */

static int __attribute__((format(printf, 1, 2))) usage(const char *fmt, ...)
{
	va_list ap;

	fputs("kiln-net: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 2;
}

static int parse_fd(const char *s, int *fd)
{
	uint64_t v;

	if (parse_u64(s, 0, 1 << 20, &v))
		return -EINVAL;
	*fd = (int)v;
	return 0;
}

/* ADDR or [ADDR]:PORT or IPv4:PORT. */
static int parse_resolver(struct knet *k, const char *text)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *port = NULL;
	uint64_t p = 53;
	struct sockaddr_in *s4 = (struct sockaddr_in *)&k->resolver;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&k->resolver;

	if (strlen(text) >= sizeof(host) + 6)
		return -EINVAL;
	if (text[0] == '[') {
		const char *end = strchr(text, ']');

		if (!end || (size_t)(end - text - 1) >= sizeof(host))
			return -EINVAL;
		memcpy(host, text + 1, (size_t)(end - text - 1));
		host[end - text - 1] = '\0';
		if (end[1] == ':')
			port = end + 2;
		else if (end[1])
			return -EINVAL;
	} else {
		const char *colon = strchr(text, ':');

		if (colon && !strchr(colon + 1, ':')) { /* IPv4:PORT */
			if ((size_t)(colon - text) >= sizeof(host))
				return -EINVAL;
			memcpy(host, text, (size_t)(colon - text));
			host[colon - text] = '\0';
			port = colon + 1;
		} else {
			snprintf(host, sizeof(host), "%s", text);
		}
	}
	if (port && parse_u64(port, 1, 65535, &p))
		return -EINVAL;
	memset(&k->resolver, 0, sizeof(k->resolver));
	if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)p);
		k->resolver_len = sizeof(*s4);
	} else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)p);
		k->resolver_len = sizeof(*s6);
	} else {
		return -EINVAL;
	}
	return 0;
}

/* The host's resolver: the first nameserver line of /etc/resolv.conf. */
static void default_resolver(struct knet *k)
{
	char line[256], addr[128];
	FILE *f = fopen("/etc/resolv.conf", "re");

	if (!f)
		return;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, " nameserver %127s", addr) == 1 && !parse_resolver(k, addr))
			break;
	fclose(f);
}

static int parse_args(struct knet *k, struct args *a, int argc, char **argv)
{
	char err[NET_RULE_TEXT_MAX + 128];
	uint64_t rate = 0, dns_rate = NET_DNS_RATE_DEFAULT;

	a->jail = a->filter = true;
	for (int i = 1; i < argc; i++) {
		const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(opt, "--no-jail")) {
			a->jail = false;
			continue;
		}
		if (!strcmp(opt, "--no-seccomp")) {
			a->filter = false;
			continue;
		}
		if (!val)
			return usage("%s needs a value (see the header of src/net/proc/main.c)", opt);
		i++;
		if (!strcmp(opt, "--fd")) {
			if (parse_fd(val, &k->vmm_fd))
				return usage("--fd: not a file descriptor: '%s'", val);
		} else if (!strcmp(opt, "--audit-fd")) {
			if (parse_fd(val, &k->audit_fd))
				return usage("--audit-fd: not a file descriptor: '%s'", val);
		} else if (!strcmp(opt, "--status-fd")) {
			if (parse_fd(val, &k->status_fd))
				return usage("--status-fd: not a file descriptor: '%s'", val);
		} else if (!strcmp(opt, "--rate")) {
			if (parse_u64(val, 1, RATE_MAX, &rate))
				return usage("--rate: bytes per second from 1 to 2^40, not '%s'", val);
		} else if (!strcmp(opt, "--dns-rate")) {
			if (parse_u64(val, 1, NET_DNS_RATE_MAX, &dns_rate))
				return usage("--dns-rate: queries per second from 1 to %d, not '%s'",
					     NET_DNS_RATE_MAX, val);
		} else if (!strcmp(opt, "--resolver")) {
			a->resolver = val;
		} else if (!strcmp(opt, "--allow")) {
			unsigned n = net_policy_nrules(k->pol);

			if (net_policy_add_rule(k->pol, val, err, sizeof(err)))
				return usage("%s", err);
			k->rule_text[n] = val;
		} else {
			return usage("unknown option '%s'", opt);
		}
	}
	if (k->vmm_fd < 0)
		return usage("%s", "--fd is required");
	if (a->resolver && parse_resolver(k, a->resolver))
		return usage("--resolver: not ADDR, IPv4:PORT or [IPv6]:PORT: '%s'", a->resolver);
	bucket_init(&k->up, rate, now_ns());
	bucket_init(&k->down, rate, now_ns());
	/* Queries, not bytes: bursts of up to one second's worth. */
	bucket_init(&k->dnsq, dns_rate, now_ns());
	k->dnsq.burst = k->dnsq.tokens = dns_rate;
	return 0;
}

/* ---- addresses ---- */

static void ip_bytes(int family, const char *text, uint8_t *out)
{
	if (inet_pton(family, text, out) != 1)
		abort(); /* our own constants */
}

static void addresses(struct knet *k)
{
	static const uint8_t guest_mac[6] = GUESTNET_GUEST_MAC, gw_mac[6] = GUESTNET_GW_MAC;

	memcpy(k->guest_mac, guest_mac, 6);
	memcpy(k->gw_mac, gw_mac, 6);
	ip_bytes(AF_INET, GUESTNET_IP4, k->guest4);
	ip_bytes(AF_INET, GUESTNET_GW4, k->gw4);
	ip_bytes(AF_INET, GUESTNET_DNS4, k->dns4);
	ip_bytes(AF_INET, "10.0.2.100", k->fwd4);
	ip_bytes(AF_INET6, GUESTNET_IP6, k->guest6);
	ip_bytes(AF_INET6, GUESTNET_GW6, k->gw6);
	ip_bytes(AF_INET6, GUESTNET_DNS6, k->dns6);
}

/* ---- libslirp glue ---- */

struct slirp_timer {
	SlirpTimerId id;
	void *cb_opaque;
	int64_t expire_ms;
	bool armed, used;
};
static struct slirp_timer timers[4];

static ssize_t cb_send_packet(const void *buf, size_t len, void *opaque)
{
	guest_from_slirp(opaque, buf, len);
	return (ssize_t)len;
}

static void cb_guest_error(const char *msg, void *opaque)
{
	(void)opaque;
	fprintf(stderr, "kiln-net: slirp: %s\n", msg);
}

static int64_t cb_clock(void *opaque)
{
	(void)opaque;
	return (int64_t)now_ns();
}

static void *cb_timer_new(SlirpTimerId id, void *cb_opaque, void *opaque)
{
	(void)opaque;
	for (unsigned i = 0; i < ARRAY_SIZE(timers); i++)
		if (!timers[i].used) {
			timers[i] = (struct slirp_timer){ .id = id, .cb_opaque = cb_opaque, .used = true };
			return &timers[i];
		}
	return NULL;
}

static void cb_timer_free(void *t, void *opaque)
{
	(void)opaque;
	if (t)
		((struct slirp_timer *)t)->used = false;
}

static void cb_timer_mod(void *t, int64_t expire_ms, void *opaque)
{
	(void)opaque;
	if (t) {
		((struct slirp_timer *)t)->expire_ms = expire_ms;
		((struct slirp_timer *)t)->armed = true;
	}
}

static void cb_nop_fd(int fd, void *opaque) { (void)fd; (void)opaque; }
static void cb_notify(void *opaque) { (void)opaque; }

static int cb_add_poll(int fd, int events, void *opaque)
{
	short e = 0;

	if (events & SLIRP_POLL_IN)
		e |= POLLIN;
	if (events & SLIRP_POLL_OUT)
		e |= POLLOUT;
	if (events & SLIRP_POLL_PRI)
		e |= POLLPRI;
	return pollset_add(opaque, fd, e);
}

static int cb_get_revents(int idx, void *opaque)
{
	short e = pollset_revents(opaque, idx);
	int r = 0;

	if (e & POLLIN)
		r |= SLIRP_POLL_IN;
	if (e & POLLOUT)
		r |= SLIRP_POLL_OUT;
	if (e & POLLPRI)
		r |= SLIRP_POLL_PRI;
	if (e & POLLERR)
		r |= SLIRP_POLL_ERR;
	if (e & POLLHUP)
		r |= SLIRP_POLL_HUP;
	return r;
}

static const SlirpCb slirp_cb = {
	.send_packet = cb_send_packet,
	.guest_error = cb_guest_error,
	.clock_get_ns = cb_clock,
	.timer_free = cb_timer_free,
	.timer_mod = cb_timer_mod,
	.register_poll_fd = cb_nop_fd,
	.unregister_poll_fd = cb_nop_fd,
	.notify = cb_notify,
	.timer_new_opaque = cb_timer_new,
};

/* Before the jail: glib seeds its random generator from /dev/urandom here.
 * slirp as a TCP terminator only (docs/net-design.md): restricted (it may
 * connect nowhere but the guestfwd), no DNS, no DHCP, no host loopback, no
 * IPv6 (its restricted check is wrong for IPv6 in 4.7). */
static int slirp_start(struct knet *k)
{
	SlirpConfig c;

	memset(&c, 0, sizeof(c));
	c.version = 4;
	c.restricted = 1;
	c.in_enabled = true;
	inet_pton(AF_INET, GUESTNET_NET4, &c.vnetwork);
	inet_pton(AF_INET, GUESTNET_MASK4, &c.vnetmask);
	memcpy(&c.vhost, k->gw4, 4);
	memcpy(&c.vnameserver, k->dns4, 4);
	memcpy(&c.vdhcp_start, k->guest4, 4);
	c.in6_enabled = false;
	/* IPv6 flows go through slirp as IPv4: its segments (MSS = MTU - 40)
	 * must still fit an IPv6 frame, whose header is 20 bytes longer. */
	c.if_mtu = GUESTNET_MTU - 20;
	c.if_mru = GUESTNET_MTU - 20;
	c.disable_host_loopback = true;
	c.disable_dns = true;
	c.disable_dhcp = true;
	k->slirp = slirp_new(&c, &slirp_cb, k);
	return k->slirp ? 0 : -ENOMEM;
}

/* The one guestfwd: every guest connection, once NATed, ends here. */
static int slirp_forward(struct knet *k)
{
	struct in_addr fwd;

	memcpy(&fwd, k->fwd4, 4);
	return slirp_add_unix(k->slirp, k->fwd_path, &fwd, KNET_FWD_PORT) ? -EINVAL : 0;
}

static void slirp_timers(struct knet *k, struct pollset *ps, bool fire)
{
	int64_t now = (int64_t)knet_now_ms();

	for (unsigned i = 0; i < ARRAY_SIZE(timers); i++) {
		struct slirp_timer *t = &timers[i];

		if (!t->used || !t->armed)
			continue;
		if (fire && now >= t->expire_ms) {
			t->armed = false;
			slirp_handle_timer(k->slirp, t->id, t->cb_opaque);
		} else if (!fire) {
			pollset_timeout(ps, now >= t->expire_ms ? 0 : (int)(t->expire_ms - now));
		}
	}
}

/* ---- the loop ---- */

static void on_signal(int sig)
{
	stop_signal = sig;
}

#define RECV_VEC 32

static void guest_frames(struct knet *k)
{
	static uint8_t frame[RECV_VEC][FRAME_MAX + 1];
	struct mmsghdr msg[RECV_VEC];
	struct iovec iov[RECV_VEC];

	for (int turn = 0; turn < RECV_BURST / RECV_VEC; turn++) {
		int n;

		for (int i = 0; i < RECV_VEC; i++) {
			iov[i] = (struct iovec){ frame[i], sizeof(frame[i]) };
			msg[i] = (struct mmsghdr){ .msg_hdr = { .msg_iov = &iov[i], .msg_iovlen = 1 } };
		}
		n = recvmmsg(k->vmm_fd, msg, RECV_VEC, MSG_DONTWAIT, NULL);
		if (n < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				k->vmm_gone = true;
			return;
		}
		for (int i = 0; i < n; i++) {
			size_t len = msg[i].msg_len;

			if (len == 0) { /* end of stream: the VMM hung up */
				k->vmm_gone = true;
				return;
			}
			/* Longer than a frame (the kernel cut it: MSG_TRUNC): guest_input
			 * drops and counts it without reading past FRAME_MAX + 1. */
			if (msg[i].msg_hdr.msg_flags & MSG_TRUNC || len > FRAME_MAX)
				len = FRAME_MAX + 1;
			guest_input(k, frame[i], len);
		}
		if (n < RECV_VEC)
			return;
	}
}

static void run(struct knet *k, const sigset_t *unblocked)
{
	static struct pollset ps;

	while (!k->vmm_gone && !stop_signal) {
		uint32_t slirp_timeout = 1000;
		struct timespec ts;
		int vmm, fwd, r;

		ps.n = 0;
		ps.timeout_ms = audit_drops_flush(k, false);
		vmm = pollset_add(&ps, k->vmm_fd, (short)(POLLIN | (k->outq.count ? POLLOUT : 0)));
		fwd = pollset_add(&ps, k->fwd_listen, POLLIN);
		tcp_poll_fill(k, &ps);
		dns_poll_fill(k, &ps);
		udp_poll_fill(k, &ps);
		slirp_pollfds_fill(k->slirp, &slirp_timeout, cb_add_poll, &ps);
		pollset_timeout(&ps, slirp_timeout > 1000 ? 1000 : (int)slirp_timeout);
		slirp_timers(k, &ps, false);
		ts.tv_sec = ps.timeout_ms / 1000;
		ts.tv_nsec = (long)(ps.timeout_ms % 1000) * 1000000;
		r = ppoll(ps.fd, (nfds_t)ps.n, &ts, unblocked);
		if (r < 0)
			for (int i = 0; i < ps.n; i++)
				ps.fd[i].revents = 0;
		slirp_pollfds_poll(k->slirp, r < 0, cb_get_revents, &ps);
		slirp_timers(k, &ps, true);
		if (pollset_revents(&ps, vmm) & POLLOUT)
			guest_flush(k);
		if (pollset_revents(&ps, vmm) & (POLLIN | POLLHUP | POLLERR))
			guest_frames(k);
		if (pollset_revents(&ps, fwd) & POLLIN) { /* never expected: not ours */
			int stray = accept4(k->fwd_listen, NULL, NULL, SOCK_CLOEXEC);

			if (stray >= 0)
				close(stray);
		}
		tcp_poll_handle(k, &ps);
		dns_poll_handle(k, &ps);
		udp_poll_handle(k, &ps);
		guest_flush(k);
	}
}

static int setup(struct knet *k, const struct args *a, sigset_t *unblocked)
{
	char why[256];
	struct sigaction sa;
	sigset_t block;
	int ret;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGHUP);
	sigprocmask(SIG_BLOCK, &block, unblocked);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (!a->resolver)
		default_resolver(k);
	/* The host check asks the kernel: its socket is opened before the jail
	 * and the filter (which allow no new netlink socket). */
	ret = host_init(k);
	if (ret) {
		fprintf(stderr, "kiln-net: cannot open the routing socket: %s\n", strerror(-ret));
		return 1;
	}
	net_policy_set_host_check(k->pol, host_check, k);
	tzset(); /* glibc reads the time zone once, here, not inside the jail */
	ret = slirp_start(k) ? -ENOMEM : 0;
	if (ret)
		snprintf(why, sizeof(why), "cannot start libslirp");
	if (!ret)
		ret = sandbox_enter(k, a->jail, why, sizeof(why));
	if (!ret && (ret = guest_init(k) || tcp_init(k) ? -ENOMEM : 0))
		snprintf(why, sizeof(why), "out of memory");
	if (!ret && (ret = dns_init(k)))
		snprintf(why, sizeof(why), "cannot reach the resolver: %s", strerror(-ret));
	if (!ret && (ret = slirp_forward(k)))
		snprintf(why, sizeof(why), "cannot add slirp's guestfwd");
	if (!ret && a->filter)
		ret = sandbox_filter(a->jail, why, sizeof(why));
	if (ret) {
		fprintf(stderr, "kiln-net: %s\n", why);
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct knet k = { .vmm_fd = -1, .fwd_listen = -1, .audit_fd = -1, .status_fd = -1,
			  .host_fd = -1 };
	struct args a = { 0 };
	sigset_t unblocked;
	int ret;

	k.pol = net_policy_new(0);
	if (!k.pol) {
		fputs("kiln-net: out of memory\n", stderr);
		return 1;
	}
	addresses(&k);
	ret = parse_args(&k, &a, argc, argv);
	if (!ret)
		ret = setup(&k, &a, &unblocked);
	if (!ret) {
		run(&k, &unblocked);
		tcp_shutdown(&k);
		udp_shutdown(&k);
		dns_shutdown(&k);
		guest_flush(&k);
		audit_status(&k);
	}
	sandbox_cleanup(&k);
	return ret;
}
