/*
 * "Is this destination the host itself?", asked of the kernel at the moment
 * of every decision (docs/net.md): one NETLINK_ROUTE RTM_GETROUTE lookup for
 * the address, as `ip route get` does. A route of type local, broadcast,
 * anycast or multicast means the host would deliver the packet to itself;
 * unicast means it leaves; unreachable, blackhole, prohibit and throw mean
 * there is no way out. Nothing is cached, so there is no table to fill and
 * nothing goes stale: an address added while the VM runs is judged the
 * moment it is used. Any error, timeout or malformed reply is an error the
 * policy treats as "denied" (rules.h: net_host_check_fn).
 *
 * The socket is opened before the jail and the seccomp filter; afterwards
 * only sendto/recvfrom/poll on it are needed, which the filter allows anyway.
 */
#include <errno.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"
#include "net/proc/knet.h"

/* NLMSG_OK compares the header's u32 length with an int (it must stay an int:
 * NLMSG_NEXT subtracts aligned lengths from it); clang warns on that. */
#pragma GCC diagnostic ignored "-Wsign-compare"

#define HOST_TIMEOUT_MS 500 /* the kernel answers at once; this is a backstop */
#define HOST_RECV_MAX	8   /* replies read while looking for ours */

struct host_req {
	struct nlmsghdr nh;
	struct rtmsg rt;
	struct rtattr dst_attr;
	uint8_t dst[16];
};

int host_init(struct knet *k)
{
	struct sockaddr_nl me = { .nl_family = AF_NETLINK };
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE);

	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&me, sizeof(me)) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	k->host_fd = fd;
	return 0;
}

/* The route type in one reply, or -errno. */
static int route_type(const struct nlmsghdr *nh, int family)
{
	const struct rtmsg *rt;

	if (nh->nlmsg_type == NLMSG_ERROR) {
		const struct nlmsgerr *e = NLMSG_DATA(nh);

		if (nh->nlmsg_len < NLMSG_LENGTH(sizeof(*e)))
			return -EBADMSG;
		/* error 0 would be an ACK, which we never asked for. */
		return e->error < 0 && e->error > -4096 ? e->error : -EBADMSG;
	}
	if (nh->nlmsg_type != RTM_NEWROUTE || nh->nlmsg_len < NLMSG_LENGTH(sizeof(*rt)))
		return -EBADMSG;
	rt = NLMSG_DATA(nh);
	if (rt->rtm_family != family)
		return -EBADMSG;
	return rt->rtm_type;
}

/* Send the lookup and wait for the reply with our sequence number. */
static int ask(struct knet *k, const struct net_ip *ip, uint32_t seq)
{
	struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
	size_t alen = ip->family == AF_INET ? 4 : 16;
	struct host_req req;
	uint8_t buf[8192] __attribute__((aligned(NLMSG_ALIGNTO)));
	uint64_t deadline = knet_now_ms() + HOST_TIMEOUT_MS;

	memset(&req, 0, sizeof(req));
	req.nh.nlmsg_len = (uint32_t)(NLMSG_LENGTH(sizeof(req.rt)) + RTA_LENGTH(alen));
	req.nh.nlmsg_type = RTM_GETROUTE;
	req.nh.nlmsg_flags = NLM_F_REQUEST;
	req.nh.nlmsg_seq = seq;
	req.rt.rtm_family = (uint8_t)ip->family;
	req.rt.rtm_dst_len = (uint8_t)(alen * 8);
	req.dst_attr.rta_type = RTA_DST;
	req.dst_attr.rta_len = (unsigned short)RTA_LENGTH(alen);
	memcpy(req.dst, ip->b, alen);
	/* Late replies to lookups that timed out, and overrun notices, go first. */
	for (int i = 0; i < 64 && recv(k->host_fd, buf, sizeof(buf), MSG_DONTWAIT) != -1; i++)
		;
	if (sendto(k->host_fd, &req, req.nh.nlmsg_len, 0, (struct sockaddr *)&kernel,
		   sizeof(kernel)) != (ssize_t)req.nh.nlmsg_len)
		return errno ? -errno : -EIO;

	for (int turn = 0; turn < HOST_RECV_MAX; turn++) {
		struct pollfd pfd = { .fd = k->host_fd, .events = POLLIN };
		struct sockaddr_nl from;
		socklen_t flen = sizeof(from);
		uint64_t now = knet_now_ms();
		ssize_t n;
		int len;

		if (now >= deadline)
			return -ETIMEDOUT;
		if (poll(&pfd, 1, (int)(deadline - now)) <= 0)
			return -ETIMEDOUT;
		n = recvfrom(k->host_fd, buf, sizeof(buf), MSG_DONTWAIT | MSG_TRUNC,
			     (struct sockaddr *)&from, &flen);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n < 0)
			return -errno;
		/* Only the kernel speaks here; a cut reply is a malformed one. */
		if (flen < sizeof(from) || from.nl_pid != 0 || (size_t)n > sizeof(buf))
			continue;
		len = (int)n;
		for (struct nlmsghdr *nh = (struct nlmsghdr *)buf; NLMSG_OK(nh, len);
		     nh = NLMSG_NEXT(nh, len)) {
			if (nh->nlmsg_seq != seq) /* a late reply to an earlier lookup */
				continue;
			return route_type(nh, ip->family);
		}
	}
	return -ETIMEDOUT;
}

int host_check(void *ctx, const struct net_ip *ip)
{
	static uint32_t seq;
	struct knet *k = ctx;
	int t;

	if (!k || k->host_fd < 0 || !ip || (ip->family != AF_INET && ip->family != AF_INET6))
		return -EINVAL;
	t = ask(k, ip, ++seq);
	switch (t) {
	case RTN_UNICAST:
		return 0;
	case RTN_LOCAL:
	case RTN_BROADCAST:
	case RTN_ANYCAST:
	case RTN_MULTICAST:
		return 1;
	case RTN_UNREACHABLE:
	case RTN_BLACKHOLE:
	case RTN_PROHIBIT:
	case RTN_THROW:
		return -ENETUNREACH;
	default:
		if (t == -ENETUNREACH || t == -EHOSTUNREACH)
			return t;
		return t < 0 ? t : -EPROTO; /* a type we do not know: cannot tell */
	}
}
