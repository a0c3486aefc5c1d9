/*
 * Static guest networking with the classic ioctls (what ifconfig and route
 * do): SIOCSIFMTU/SIOCSIFFLAGS, SIOCSIFADDR/SIOCSIFNETMASK and SIOCADDRT for
 * IPv4; SIOCSIFADDR with struct in6_ifreq and SIOCADDRT with struct
 * in6_rtmsg for IPv6. Each call fails or succeeds on its own, so there are
 * no netlink acks to track. See gnet.h.
 */
#include "guest/gnet.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <net/route.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <linux/ipv6.h> /* struct in6_ifreq; after netinet/in.h */

#include "guest/bootargs.h"
#include "guest/pid1.h"
#include "guestnet.h"

#define RESOLV_CONF "/etc/resolv.conf"
#define RESOLV_TMP  "/etc/.resolv.conf.kiln"

static void ifr_init(struct ifreq *ifr, const char *name)
{
	memset(ifr, 0, sizeof(*ifr));
	snprintf(ifr->ifr_name, sizeof(ifr->ifr_name), "%s", name);
}

/* An Ethernet interface that is not a loopback? */
static bool is_nic(int fd, const char *name)
{
	struct ifreq ifr;

	ifr_init(&ifr, name);
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0 || (ifr.ifr_flags & IFF_LOOPBACK))
		return false;
	ifr_init(&ifr, name);
	return ioctl(fd, SIOCGIFHWADDR, &ifr) == 0 && ifr.ifr_hwaddr.sa_family == ARPHRD_ETHER;
}

/* The one NIC (virtio-net). 0, -ENODEV (none) or -EEXIST (more than one). */
static int find_nic(int fd, char name[IF_NAMESIZE], unsigned *index)
{
	struct if_nameindex *all = if_nameindex(), *i;
	int found = 0;

	if (!all)
		return -errno;
	for (i = all; i->if_index; i++) {
		if (strlen(i->if_name) >= IF_NAMESIZE || !is_nic(fd, i->if_name))
			continue;
		if (found++)
			break;
		snprintf(name, IF_NAMESIZE, "%s", i->if_name);
		*index = i->if_index;
	}
	if_freenameindex(all);
	return found == 1 ? 0 : found ? -EEXIST : -ENODEV;
}

static int link_up(int fd, const char *name)
{
	struct ifreq ifr;

	ifr_init(&ifr, name);
	ifr.ifr_mtu = GUESTNET_MTU;
	if (ioctl(fd, SIOCSIFMTU, &ifr) < 0)
		return -errno;
	ifr_init(&ifr, name);
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
		return -errno;
	ifr.ifr_flags |= IFF_UP;
	return ioctl(fd, SIOCSIFFLAGS, &ifr) < 0 ? -errno : 0;
}

static void set_sin(struct sockaddr *sa, struct in_addr a)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr = a };

	memcpy(sa, &sin, sizeof(sin));
}

static int ip4_setup(int fd, const char *name, const struct bootargs_ip4 *ip)
{
	struct in_addr mask = { htonl(0xffffffffu << (32 - ip->prefix)) };
	struct rtentry rt;
	struct ifreq ifr;

	ifr_init(&ifr, name);
	set_sin(&ifr.ifr_addr, ip->addr);
	if (ioctl(fd, SIOCSIFADDR, &ifr) < 0)
		return -errno;
	ifr_init(&ifr, name);
	set_sin(&ifr.ifr_netmask, mask);
	if (ioctl(fd, SIOCSIFNETMASK, &ifr) < 0)
		return -errno;
	memset(&rt, 0, sizeof(rt));
	set_sin(&rt.rt_dst, (struct in_addr){ 0 });
	set_sin(&rt.rt_genmask, (struct in_addr){ 0 });
	set_sin(&rt.rt_gateway, ip->gw);
	rt.rt_flags = RTF_UP | RTF_GATEWAY;
	rt.rt_dev = (char *)name;
	return ioctl(fd, SIOCADDRT, &rt) < 0 ? -errno : 0;
}

/* Static addressing: no duplicate address detection, no router adverts, no
 * autoconfigured addresses. Before the link comes up. */
static int ip6_sysctls(const char *name)
{
	static const char *const keys[] = { "accept_dad", "accept_ra", "autoconf" };
	char path[96];

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		int fd, ok;

		snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/%s", name, keys[i]);
		fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd < 0)
			return -errno;
		ok = write(fd, "0\n", 2) == 2;
		close(fd);
		if (!ok)
			return -EIO;
	}
	return 0;
}

static int ip6_setup(int fd6, unsigned index, const struct bootargs_ip6 *ip)
{
	struct in6_ifreq ifr6 = { .ifr6_addr = ip->addr, .ifr6_prefixlen = ip->prefix,
				  .ifr6_ifindex = (int)index };
	struct in6_rtmsg rt;

	if (ioctl(fd6, SIOCSIFADDR, &ifr6) < 0)
		return -errno;
	memset(&rt, 0, sizeof(rt));
	rt.rtmsg_gateway = ip->gw;
	rt.rtmsg_flags = RTF_UP | RTF_GATEWAY;
	rt.rtmsg_metric = 1;
	rt.rtmsg_ifindex = (int)index;
	return ioctl(fd6, SIOCADDRT, &rt) < 0 ? -errno : 0;
}

/* "nameserver DNS" as a new file renamed over /etc/resolv.conf, so a
 * symlink there (dangling or not) is replaced, not followed. */
static int write_resolv(struct in_addr dns)
{
	char line[64], addr[INET_ADDRSTRLEN];
	int fd, n, ret = 0;

	if (!inet_ntop(AF_INET, &dns, addr, sizeof(addr)))
		return -EINVAL;
	n = snprintf(line, sizeof(line), "nameserver %s\n", addr);
	if (mkdir("/etc", 0755) < 0 && errno != EEXIST)
		return -errno;
	fd = open(RESOLV_TMP, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	if (write(fd, line, (size_t)n) != n)
		ret = -EIO;
	if (close(fd) < 0 && !ret)
		ret = -errno;
	if (!ret && rename(RESOLV_TMP, RESOLV_CONF) < 0)
		ret = -errno;
	if (ret)
		unlink(RESOLV_TMP);
	return ret;
}

/* Everything on the NIC; the first failure ends it. */
static void configure(const struct bootargs *ba, int fd, int fd6)
{
	char name[IF_NAMESIZE];
	unsigned index = 0;
	int ret = find_nic(fd, name, &index);

	if (ret) {
		pid1_log("network: %s; going on without network",
			 ret == -ENODEV  ? "kiln.ip/kiln.ip6 given but there is no network device"
			 : ret == -EEXIST ? "more than one network device, none configured"
					  : strerror(-ret));
		return;
	}
	if (ba->ip6.set && (ret = ip6_sysctls(name)))
		pid1_log("network: %s: IPv6 sysctls: %s", name, strerror(-ret));
	else if ((ret = link_up(fd, name)))
		pid1_log("network: %s: up, MTU %d: %s", name, GUESTNET_MTU, strerror(-ret));
	else if (ba->ip.set && (ret = ip4_setup(fd, name, &ba->ip)))
		pid1_log("network: %s: IPv4 address or default route: %s", name, strerror(-ret));
	else if (ba->ip6.set && (ret = ip6_setup(fd6, index, &ba->ip6)))
		pid1_log("network: %s: IPv6 address or default route: %s", name, strerror(-ret));
	else if (ba->ip.set && ba->ip.has_dns && (ret = write_resolv(ba->ip.dns)))
		pid1_log("network: " RESOLV_CONF ": %s", strerror(-ret));
	else if (ba->debug)
		pid1_log("network: %s configured", name);
}

void gnet_configure(const struct bootargs *ba)
{
	int fd, fd6;

	if (!ba->ip.set && !ba->ip6.set)
		return;
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	fd6 = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || fd6 < 0)
		pid1_log("network: socket: %s; going on without network", strerror(errno));
	else
		configure(ba, fd, fd6);
	if (fd >= 0)
		close(fd);
	if (fd6 >= 0)
		close(fd6);
}
