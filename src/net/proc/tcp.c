/*
 * TCP for kiln-net (docs/net-design.md, design b'): every guest connection
 * is judged at its SYN, connected for real by kiln-net itself, and only then
 * handed to libslirp, NATed onto one guestfwd (10.0.2.100:1) that slirp
 * connects to kiln-net's Unix listener. kiln-net reads that stream, holds the
 * first bytes until the TLS SNI or HTTP Host passes (port 443/80 under a name
 * rule), and then splices it to the real socket. slirp is only the TCP
 * terminator for the guest; it never connects anywhere itself (restricted
 * mode), and it never sees a frame kiln-net did not rebuild.
 */
#include <errno.h>
#include <slirp/libslirp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"
#include "net/proc/knet.h"
#include "net/sniff.h"

#define FLOWS_MAX	   256
#define FLOW_BUF	   65536
#define NPORT_BASE	   2048	 /* internal ports: NPORT_BASE + slot + FLOWS_MAX * gen */
#define NPORT_GENS	   240	 /* (65536 - NPORT_BASE) / FLOWS_MAX, rounded down */
#define CONNECT_TIMEOUT_MS 10000
#define HANDSHAKE_TIMEOUT_MS 20000
#define SNIFF_TIMEOUT_MS   10000
#define LINGER_MS	   10000
#define MSS_V6		   1440

enum flow_state { FL_FREE = 0, FL_CONNECTING, FL_HANDSHAKE, FL_SNIFF, FL_OPEN, FL_LINGER };

struct flow {
	enum flow_state st;
	int family;
	uint8_t gsrc[16], gdst[16]; /* the guest's view */
	uint16_t gsport, gdport, nport;
	struct net_decision dec;
	char name[SNIFF_HOST_MAX + 1];
	uint8_t syn[60];	/* the held SYN (a SYN with data is denied) */
	size_t synlen;
	int rfd, ufd;		/* the real socket; slirp's stream */
	uint32_t g_nxt, s_nxt;	/* next sequence numbers: guest, slirp */
	bool s_seen;
	uint8_t *u2r, *r2u;	/* FLOW_BUF each; u2r also holds the sniffed bytes */
	size_t u2r_len, u2r_off, r2u_len, r2u_off;
	bool ueof, reof, r_shut, u_shut, audited;
	uint64_t up, down, t_start, deadline;
	int pu, pr;		/* poll indices, -1 if none */
};

static struct flow flows[FLOWS_MAX];
static unsigned nport_gen[FLOWS_MAX];

int tcp_init(struct knet *k)
{
	(void)k;
	for (unsigned i = 0; i < FLOWS_MAX; i++)
		flows[i].rfd = flows[i].ufd = -1;
	return 0;
}


static void flow_audit(struct knet *k, struct flow *x, const char *verdict, const char *reason)
{
	struct audit_event e = {
		.proto = "tcp", .verdict = verdict, .reason = reason, .rule = x->dec.rule,
		.family = x->family, .dst = x->gdst, .port = x->gdport,
		.name = x->name[0] ? x->name : NULL, .bytes_up = x->up, .bytes_down = x->down,
		.duration_ms = knet_now_ms() - x->t_start,
	};

	if (x->audited)
		return;
	x->audited = true;
	audit_event(k, &e);
}

static void flow_release(struct flow *x, bool reset_real)
{
	if (x->rfd >= 0) {
		if (reset_real) {
			struct linger lg = { 1, 0 };

			setsockopt(x->rfd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		}
		close(x->rfd);
	}
	if (x->ufd >= 0)
		close(x->ufd);
	x->rfd = x->ufd = -1;
	free(x->u2r);
	free(x->r2u);
	x->u2r = x->r2u = NULL;
}

static void flow_free(struct flow *x)
{
	flow_release(x, true);
	x->st = FL_FREE;
}

/* A segment to the guest from the flow's remote end (the guest's view). */
static void to_guest(struct knet *k, struct flow *x, uint8_t *seg, size_t len)
{
	guest_send_ip(k, x->family, x->gdst, x->gsrc, IPPROTO_TCP_, seg, len);
}

/* A segment from the guest, NATed to the internal tuple and fed to slirp. */
static void to_slirp(struct knet *k, struct flow *x, const uint8_t *seg, size_t len)
{
	uint8_t frame[FRAME_MAX], tmp[FRAME_MAX];
	size_t n;
	int fd;

	if (len > sizeof(tmp))
		return;
	memcpy(tmp, seg, len);
	put16(tmp, x->nport);
	put16(tmp + 2, KNET_FWD_PORT);
	n = frame_build(frame, sizeof(frame), k->gw_mac, k->guest_mac, AF_INET, k->guest4,
			k->fwd4, IPPROTO_TCP_, tmp, len);
	if (!n)
		return;
	slirp_input(k->slirp, frame, (int)n);
	/* slirp connects its guestfwd (open_unix) inside slirp_input, when the
	 * guest's ACK completes the handshake: at most one, and it is this flow's. */
	fd = accept4(k->fwd_listen, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return;
	if (x->st != FL_HANDSHAKE || x->ufd >= 0) {
		close(fd);
		return;
	}
	x->ufd = fd;
	x->st = x->dec.inspect ? FL_SNIFF : FL_OPEN;
	x->deadline = knet_now_ms() + SNIFF_TIMEOUT_MS;
}

/* Reset all three legs: the guest, slirp's socket, the real connection. */
static void flow_abort(struct knet *k, struct flow *x)
{
	uint8_t seg[TCP_HDR];

	if (x->st == FL_CONNECTING)
		tcp_header(seg, x->gdport, x->gsport, 0, x->g_nxt, TCP_RST | TCP_ACK, 0);
	else
		tcp_header(seg, x->gdport, x->gsport, x->s_nxt, x->g_nxt, TCP_RST | TCP_ACK, 0);
	to_guest(k, x, seg, TCP_HDR);
	if (x->st >= FL_HANDSHAKE && x->st != FL_LINGER) {
		tcp_header(seg, x->gsport, x->gdport, x->g_nxt, 0, TCP_RST, 0);
		to_slirp(k, x, seg, TCP_HDR);
	}
	flow_free(x);
}

static struct flow *flow_find(const struct frame_ip *ip)
{
	uint16_t sp = get16(ip->l4), dp = get16(ip->l4 + 2);
	size_t n = knet_alen(ip->family);

	for (unsigned i = 0; i < FLOWS_MAX; i++) {
		struct flow *x = &flows[i];

		if (x->st != FL_FREE && x->family == ip->family && x->gsport == sp &&
		    x->gdport == dp && !memcmp(x->gsrc, ip->src, n) && !memcmp(x->gdst, ip->dst, n))
			return x;
	}
	return NULL;
}

static void reset_segment(struct knet *k, const struct frame_ip *ip)
{
	uint8_t seg[TCP_HDR];

	tcp_reset_for(ip->l4, ip->l4len, seg);
	guest_send_ip(k, ip->family, ip->dst, ip->src, IPPROTO_TCP_, seg, TCP_HDR);
}

static const char *connect_error(int err)
{
	switch (err) {
	case ECONNREFUSED: return "refused";
	case ETIMEDOUT: return "timeout";
	case ENETUNREACH:
	case EHOSTUNREACH: return "unreachable";
	default: return "connect-failed";
	}
}

/* Start the real connection for an allowed SYN. */
static int flow_connect(struct flow *x)
{
	struct sockaddr_storage ss;
	socklen_t len = knet_sockaddr(x->family, x->gdst, x->gdport, &ss);

	x->rfd = socket(x->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (x->rfd < 0)
		return -errno;
	if (connect(x->rfd, (struct sockaddr *)&ss, len) < 0 && errno != EINPROGRESS)
		return -errno;
	return 0;
}

/* Slots are taken round-robin, so an internal port (slot + generation) comes
 * back only after FLOWS_MAX * NPORT_GENS connections: long after slirp has
 * forgotten the last connection that used it. */
static struct flow *flow_new(const struct frame_ip *ip)
{
	static unsigned cursor;

	for (unsigned n = 0; n < FLOWS_MAX; n++) {
		unsigned i = (cursor + n) % FLOWS_MAX;
		struct flow *x = &flows[i];

		if (x->st != FL_FREE)
			continue;
		cursor = i + 1;
		memset(x, 0, sizeof(*x));
		x->rfd = x->ufd = -1;
		x->pu = x->pr = -1;
		x->u2r = malloc(FLOW_BUF);
		x->r2u = malloc(FLOW_BUF);
		if (!x->u2r || !x->r2u) {
			flow_free(x);
			return NULL;
		}
		x->family = ip->family;
		memcpy(x->gsrc, ip->src, knet_alen(ip->family));
		memcpy(x->gdst, ip->dst, knet_alen(ip->family));
		x->gsport = get16(ip->l4);
		x->gdport = get16(ip->l4 + 2);
		nport_gen[i] = (nport_gen[i] + 1) % NPORT_GENS;
		x->nport = (uint16_t)(NPORT_BASE + i + FLOWS_MAX * nport_gen[i]);
		x->t_start = knet_now_ms();
		return x;
	}
	return NULL;
}

/* A segment for which there is no flow: a SYN is judged, anything else reset. */
static void new_connection(struct knet *k, const struct frame_ip *ip)
{
	const uint8_t *seg = ip->l4;
	size_t hl = tcp_hdr_len(seg), dlen = ip->l4len - hl;
	struct net_ip dst = { .family = ip->family };
	struct net_decision d;
	struct flow *x;
	int err;

	if ((seg[13] & (TCP_SYN | TCP_ACK | TCP_FIN | TCP_RST)) != TCP_SYN) {
		struct audit_drop_info info = { .family = ip->family, .dst = ip->dst,
						.port = get16(seg + 2), .detail = -1 };

		audit_drop(k, DROP_TCP_STRAY, &info);
		if (!(seg[13] & TCP_RST))
			reset_segment(k, ip);
		return;
	}
	memcpy(dst.b, ip->dst, knet_alen(ip->family));
	d = net_decide_connect(k->pol, NET_TCP, &dst, get16(seg + 2), knet_now_ms());
	if (d.verdict != NET_ALLOW || dlen || hl > sizeof(x->syn)) {
		struct audit_event e = { .proto = "tcp", .verdict = "deny",
					 .reason = d.verdict != NET_ALLOW ? net_reason_str(d.reason)
									  : "syn-with-data",
					 .rule = d.rule, .family = ip->family, .dst = ip->dst,
					 .port = get16(seg + 2) };

		audit_event(k, &e);
		reset_segment(k, ip);
		return;
	}
	x = flow_new(ip);
	if (!x) {
		struct audit_event e = { .proto = "tcp", .verdict = "error",
					 .reason = "too-many-connections", .rule = d.rule,
					 .family = ip->family, .dst = ip->dst, .port = get16(seg + 2) };

		audit_event(k, &e);
		reset_segment(k, ip);
		return;
	}
	x->dec = d;
	x->g_nxt = get32(seg + 4) + 1;
	memcpy(x->syn, seg, hl);
	x->synlen = hl;
	x->st = FL_CONNECTING;
	x->deadline = x->t_start + CONNECT_TIMEOUT_MS;
	err = flow_connect(x);
	if (err) {
		flow_audit(k, x, "error", connect_error(-err));
		flow_abort(k, x);
	}
}

void tcp_guest_segment(struct knet *k, const struct frame_ip *ip)
{
	const uint8_t *seg = ip->l4;
	size_t dlen = ip->l4len - tcp_hdr_len(seg);
	uint8_t f = seg[13];
	struct flow *x = flow_find(ip);
	uint32_t end;

	/* A new SYN on a lingering tuple is a new connection. */
	if (x && x->st == FL_LINGER && (f & (TCP_SYN | TCP_ACK)) == TCP_SYN) {
		flow_free(x);
		x = NULL;
	}
	if (!x) {
		new_connection(k, ip);
		return;
	}
	if (x->st == FL_CONNECTING) /* retransmitted SYN: the real connect is pending */
		return;
	end = get32(seg + 4) + (uint32_t)dlen + !!(f & TCP_SYN) + !!(f & TCP_FIN);
	if ((int32_t)(end - x->g_nxt) > 0)
		x->g_nxt = end;
	to_slirp(k, x, seg, ip->l4len);
	if ((f & TCP_RST) && x->st != FL_LINGER) {
		flow_audit(k, x, x->st == FL_SNIFF ? "deny" : "allow",
			   x->st == FL_SNIFF ? "guest-reset" : net_reason_str(x->dec.reason));
		flow_free(x);
	}
}

static void restore_and_send(struct knet *k, struct flow *x, const struct frame_ip *ip,
			     uint8_t *seg);

void tcp_from_slirp(struct knet *k, const struct frame_ip *ip)
{
	uint16_t np = get16(ip->l4 + 2);
	uint8_t *seg = ip->l4; /* guest_from_slirp's private copy: rewritten in place */
	struct flow *x;
	size_t hl = tcp_hdr_len(ip->l4), dlen = ip->l4len - hl;
	uint32_t end;

	if (np < NPORT_BASE)
		return;
	x = &flows[(np - NPORT_BASE) % FLOWS_MAX];
	if (x->st == FL_FREE || x->nport != np)
		return;
	end = get32(seg + 4) + (uint32_t)dlen + !!(seg[13] & TCP_SYN) + !!(seg[13] & TCP_FIN);
	if (!x->s_seen || (int32_t)(end - x->s_nxt) > 0)
		x->s_nxt = end;
	x->s_seen = true;
	if ((seg[13] & TCP_SYN) && x->family == AF_INET6) { /* rare: recompute in full */
		put16(seg, x->gdport);
		put16(seg + 2, x->gsport);
		tcp_clamp_mss(seg, hl, MSS_V6);
		to_guest(k, x, seg, ip->l4len);
		return;
	}
	restore_and_send(k, x, ip, seg);
}

/*
 * The common path (every data segment): give back the guest's addresses and
 * ports and adjust slirp's checksum for just those words (RFC 1624) rather
 * than summing the whole payload again.
 */
static void restore_and_send(struct knet *k, struct flow *x, const struct frame_ip *ip,
			     uint8_t *seg)
{
	uint8_t old[12], now[36], frame[FRAME_MAX];
	size_t n = knet_alen(x->family), len;

	memcpy(old, ip->src, 4);
	memcpy(old + 4, ip->dst, 4);
	memcpy(old + 8, seg, 4);
	put16(seg, x->gdport);
	put16(seg + 2, x->gsport);
	memcpy(now, x->gdst, n);
	memcpy(now + n, x->gsrc, n);
	memcpy(now + 2 * n, seg, 4);
	put16(seg + 16, csum_adjust(get16(seg + 16), old, sizeof(old), now, 2 * n + 4));
	len = frame_wrap(frame, sizeof(frame), k->guest_mac, k->gw_mac, x->family, x->gdst, x->gsrc,
			 IPPROTO_TCP_, seg, ip->l4len);
	if (len)
		guest_send(k, frame, len);
}

/* ---- the socket side ---- */

/* Was the flow allowed by an IP rule naming its destination exactly? */
static bool exact_rule(const struct knet *k, const struct flow *x)
{
	const struct net_rule *r = x->dec.rule >= 0 ? net_policy_rule(k->pol, (unsigned)x->dec.rule)
						    : NULL;

	return r && r->kind == NET_RULE_CIDR && r->prefix == (x->family == AF_INET ? 32u : 128u);
}

static void connect_done(struct knet *k, struct flow *x)
{
	struct net_ip dst = { .family = x->family };
	enum net_reason why;
	int err = 0;
	socklen_t l = sizeof(err);

	if (getsockopt(x->rfd, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
		err = errno;
	if (err) {
		flow_audit(k, x, "error", connect_error(err));
		flow_abort(k, x);
		return;
	}
	/* Judged again now that it is connected, before the guest can send a
	 * byte: an address the host took on since the SYN is still its own. */
	memcpy(dst.b, x->gdst, knet_alen(x->family));
	if (!exact_rule(k, x) && net_ip_judge(k->pol, &dst, &why) == NET_ADDR_DENIED) {
		flow_audit(k, x, "deny", net_reason_str(why));
		flow_abort(k, x);
		return;
	}
	x->st = FL_HANDSHAKE;
	x->deadline = knet_now_ms() + HANDSHAKE_TIMEOUT_MS;
	to_slirp(k, x, x->syn, x->synlen);
}

/* Held bytes from the guest: verdict on the SNI / Host once complete. */
static void sniff_step(struct knet *k, struct flow *x)
{
	struct net_ip dst = { .family = x->family };
	struct net_decision d = { .verdict = NET_DENY, .rule = -1 };
	enum sniff_result s;
	uint16_t hport = 0;
	ssize_t r;

	r = read(x->ufd, x->u2r + x->u2r_len, SNIFF_MAX - x->u2r_len);
	if (r < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (r <= 0) {
		flow_audit(k, x, "deny", "closed-before-verdict");
		flow_abort(k, x);
		return;
	}
	x->u2r_len += (size_t)r;
	if (x->dec.inspect == NET_INSPECT_TLS_SNI)
		s = sniff_tls_sni(x->u2r, x->u2r_len, x->name, sizeof(x->name));
	else
		s = sniff_http_host(x->u2r, x->u2r_len, x->name, sizeof(x->name), &hport);
	if (s == SNIFF_NEED_MORE && x->u2r_len < SNIFF_MAX)
		return;
	memcpy(dst.b, x->gdst, knet_alen(x->family));
	if (s == SNIFF_OK && x->dec.inspect == NET_INSPECT_TLS_SNI)
		d = net_check_sni(k->pol, &dst, x->gdport, x->name, knet_now_ms());
	else if (s == SNIFF_OK)
		d = net_check_http_host(k->pol, &dst, x->gdport, x->name, hport, knet_now_ms());
	if (d.verdict != NET_ALLOW) {
		if (s != SNIFF_OK)
			x->name[0] = '\0';
		x->dec.rule = d.rule;
		flow_audit(k, x, "deny", s == SNIFF_OK ? net_reason_str(d.reason)
						       : sniff_result_str(s));
		flow_abort(k, x);
		return;
	}
	x->dec.reason = d.reason;
	x->dec.rule = d.rule;
	/* The held bytes go out first, through the bucket like all others. */
	x->u2r_off = 0;
	x->st = FL_OPEN;
}

/* One read towards a buffer, limited by the bucket. >0 bytes, 0 EOF, -EAGAIN, -errno. */
static ssize_t pump_read(struct knet *k, int fd, uint8_t *buf, struct bucket *b)
{
	uint64_t avail = bucket_avail(b, now_ns());
	size_t want = avail < FLOW_BUF ? (size_t)avail : FLOW_BUF;
	ssize_t r;

	if (!want)
		return -EAGAIN;
	r = read(fd, buf, want);
	if (r < 0)
		return errno == EINTR || errno == EWOULDBLOCK ? -EAGAIN : -errno;
	bucket_take(b, (uint64_t)r);
	(void)k;
	return r;
}

/* Write what is buffered, at most what bucket b allows (NULL: no limit);
 * the bytes written are taken from it. Bytes written, or -errno on a broken
 * socket. */
static ssize_t pump_write(int fd, const uint8_t *buf, size_t *off, size_t *len, struct bucket *b)
{
	size_t want = *len - *off;
	ssize_t w;

	if (b) {
		uint64_t avail = bucket_avail(b, now_ns());

		if (avail < want)
			want = (size_t)avail;
		if (!want)
			return 0;
	}
	w = send(fd, buf + *off, want, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (w < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -errno;
	if (b)
		bucket_take(b, (uint64_t)w);
	*off += (size_t)w;
	if (*off == *len)
		*off = *len = 0;
	return w;
}

/* Read from the guest's stream: not limited here; what it sends out is
 * limited where it leaves (pump_write with the up bucket). */
static ssize_t pump_read_guest(int fd, uint8_t *buf)
{
	ssize_t r = read(fd, buf, FLOW_BUF);

	if (r < 0)
		return errno == EINTR || errno == EWOULDBLOCK ? -EAGAIN : -errno;
	return r;
}

static void splice_step(struct knet *k, struct flow *x, short ru, short rr)
{
	ssize_t r, w;

	if ((ru & (POLLIN | POLLHUP | POLLERR)) && !x->u2r_len && !x->ueof) {
		r = pump_read_guest(x->ufd, x->u2r);
		if (r > 0) {
			x->u2r_len = (size_t)r;
			x->u2r_off = 0;
		} else if (r == 0 || r != -EAGAIN) {
			x->ueof = true;
		}
	}
	if ((rr & (POLLIN | POLLHUP | POLLERR)) && !x->r2u_len && !x->reof) {
		r = pump_read(k, x->rfd, x->r2u, &k->down);
		if (r > 0) {
			x->r2u_len = (size_t)r;
			x->down += (uint64_t)r;
		} else if (r == 0) {
			x->reof = true;
		} else if (r != -EAGAIN) {
			flow_audit(k, x, "allow", "server-reset");
			flow_abort(k, x);
			return;
		}
	}
	if (x->u2r_len) {
		w = pump_write(x->rfd, x->u2r, &x->u2r_off, &x->u2r_len, &k->up);
		if (w < 0) {
			flow_audit(k, x, "allow", "server-reset");
			flow_abort(k, x);
			return;
		}
		x->up += (uint64_t)w;
	}
	if (x->r2u_len && pump_write(x->ufd, x->r2u, &x->r2u_off, &x->r2u_len, NULL) < 0) {
		flow_audit(k, x, "allow", "guest-reset");
		flow_abort(k, x);
		return;
	}
	/* Half-closes, once what was read before the EOF is written. */
	if (x->ueof && !x->u2r_len && !x->r_shut) {
		shutdown(x->rfd, SHUT_WR);
		x->r_shut = true;
	}
	if (x->reof && !x->r2u_len && !x->u_shut) {
		shutdown(x->ufd, SHUT_WR);
		x->u_shut = true;
	}
	if (x->r_shut && x->u_shut) {
		flow_audit(k, x, "allow", net_reason_str(x->dec.reason));
		flow_release(x, false);
		x->st = FL_LINGER;
		x->deadline = knet_now_ms() + LINGER_MS;
	}
}

void tcp_poll_fill(struct knet *k, struct pollset *ps)
{
	uint64_t now = knet_now_ms();

	for (unsigned i = 0; i < FLOWS_MAX; i++) {
		struct flow *x = &flows[i];
		short eu = 0, er = 0;

		x->pu = x->pr = -1;
		if (x->st == FL_FREE)
			continue;
		if (now >= x->deadline && x->st != FL_OPEN) {
			if (x->st != FL_LINGER)
				flow_audit(k, x, x->st == FL_SNIFF ? "deny" : "error",
					   x->st == FL_SNIFF ? "sniff-timeout"
					   : x->st == FL_CONNECTING ? "timeout" : "handshake-timeout");
			if (x->st == FL_LINGER)
				flow_free(x);
			else
				flow_abort(k, x);
			continue;
		}
		switch (x->st) {
		case FL_CONNECTING:
			er = POLLOUT;
			break;
		case FL_SNIFF:
			eu = POLLIN;
			break;
		case FL_OPEN:
			if (!x->u2r_len && !x->ueof)
				eu |= POLLIN;
			if (!x->r2u_len && !x->reof && !guest_congested(k)) {
				if (bucket_avail(&k->down, now_ns()))
					er |= POLLIN;
				else
					pollset_timeout(ps, bucket_wait_ms(&k->down, now_ns()));
			}
			if (x->u2r_len) {
				if (bucket_avail(&k->up, now_ns()))
					er |= POLLOUT;
				else
					pollset_timeout(ps, bucket_wait_ms(&k->up, now_ns()));
			}
			if (x->r2u_len)
				eu |= POLLOUT;
			break;
		default:
			break;
		}
		if (eu && x->ufd >= 0)
			x->pu = pollset_add(ps, x->ufd, eu);
		if (er && x->rfd >= 0)
			x->pr = pollset_add(ps, x->rfd, er);
		if (x->st != FL_OPEN) {
			uint64_t left = x->deadline > now ? x->deadline - now : 0;

			pollset_timeout(ps, left > 1000 ? 1000 : (int)left);
		}
	}
}

void tcp_poll_handle(struct knet *k, const struct pollset *ps)
{
	for (unsigned i = 0; i < FLOWS_MAX; i++) {
		struct flow *x = &flows[i];
		short ru = x->pu >= 0 ? pollset_revents(ps, x->pu) : 0;
		short rr = x->pr >= 0 ? pollset_revents(ps, x->pr) : 0;

		if (!ru && !rr)
			continue;
		switch (x->st) {
		case FL_CONNECTING:
			connect_done(k, x);
			break;
		case FL_SNIFF:
			sniff_step(k, x);
			break;
		case FL_OPEN:
			splice_step(k, x, ru, rr);
			break;
		default:
			break;
		}
	}
}

void tcp_shutdown(struct knet *k)
{
	for (unsigned i = 0; i < FLOWS_MAX; i++) {
		struct flow *x = &flows[i];

		if (x->st == FL_FREE)
			continue;
		if (x->st != FL_LINGER)
			flow_audit(k, x, x->st == FL_OPEN ? "allow" : "error",
				   x->st == FL_OPEN ? net_reason_str(x->dec.reason) : "shutdown");
		flow_free(x);
	}
}
