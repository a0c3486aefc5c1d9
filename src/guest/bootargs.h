/*
 * kiln.* parameters of the guest kernel command line (docs/protocol.md has
 * the table). Parsing is pure and bounded so unit tests can drive it.
 */
#ifndef KILN_GUEST_BOOTARGS_H
#define KILN_GUEST_BOOTARGS_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BOOTARGS_CMDLINE_MAX 4096 /* bytes of /proc/cmdline considered */
#define BOOTARGS_HOST_MAX    64
#define BOOTARGS_DEV_MAX     64

enum bootargs_fstype { BOOTARGS_FS_AUTO, BOOTARGS_FS_EROFS, BOOTARGS_FS_EXT4 };

/* kiln.ip=ADDR/PREFIX,GW[,DNS]: static IPv4 on the one NIC (docs/protocol.md). */
struct bootargs_ip4 {
	bool set;
	struct in_addr addr, gw, dns; /* network byte order */
	unsigned prefix;	      /* 1..31 */
	bool has_dns;
};

/* kiln.ip6=ADDR/PREFIX,GW: static IPv6, no DAD, no router adverts. */
struct bootargs_ip6 {
	bool set;
	struct in6_addr addr, gw;
	unsigned prefix; /* 1..128 */
};

struct bootargs {
	char hostname[BOOTARGS_HOST_MAX + 1];	 /* kiln.hostname, default "kiln" */
	uint32_t port;				 /* kiln.port, default 52 */
	char root[BOOTARGS_DEV_MAX + 1];	 /* kiln.root: device or "none" */
	enum bootargs_fstype rootfstype;	 /* kiln.rootfstype */
	char scratch[BOOTARGS_DEV_MAX + 1];	 /* kiln.scratch: "auto", "tmpfs" or a device */
	int bootmark;				 /* kiln.bootmark I/O port, -1 = off */
	bool debug;				 /* kiln.debug */
	struct bootargs_ip4 ip;			 /* kiln.ip; unset: no network set-up */
	struct bootargs_ip6 ip6;		 /* kiln.ip6 */
};

void bootargs_defaults(struct bootargs *ba);

/*
 * Parse a command line (len bytes, need not be NUL-terminated). Unknown
 * kiln.* parameters are reported in warn (if non-NULL) and ignored; a bad
 * value fails with -EINVAL and a message in err.
 */
int bootargs_parse(const char *cmdline, size_t len, struct bootargs *ba, char *err,
		   size_t errlen, char *warn, size_t warnlen);

#endif
