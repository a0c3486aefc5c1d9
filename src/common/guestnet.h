/*
 * The guest's network as kiln sets it up (issue 6, docs/net.md): static
 * addressing, no DHCP. kiln-net plays the gateway and the DNS server; libkiln
 * passes the guest side to kiln-init on the kernel command line:
 *   kiln.ip=10.0.2.15/24,10.0.2.2,10.0.2.3  kiln.ip6=fd00::15/64,fd00::2
 * One definition here, used by libkiln and kiln-net.
 */
#ifndef KILN_COMMON_GUESTNET_H
#define KILN_COMMON_GUESTNET_H

#define GUESTNET_IP4	    "10.0.2.15"
#define GUESTNET_PREFIX4    24
#define GUESTNET_NET4	    "10.0.2.0"
#define GUESTNET_MASK4	    "255.255.255.0"
#define GUESTNET_GW4	    "10.0.2.2"
#define GUESTNET_DNS4	    "10.0.2.3"
#define GUESTNET_IP6	    "fd00::15"
#define GUESTNET_PREFIX6    64
#define GUESTNET_GW6	    "fd00::2"
#define GUESTNET_DNS6	    "fd00::3"
#define GUESTNET_MTU	    1500
/* The guest NIC's MAC (kiln-vmm's default: locally administered, unicast,
 * 02:6b:6c:6e "kln" :00:01) and the gateway's (slirp's), as initializers. */
#define GUESTNET_GUEST_MAC  { 0x02, 0x6b, 0x6c, 0x6e, 0x00, 0x01 }
#define GUESTNET_GW_MAC	    { 0x52, 0x55, 0x0a, 0x00, 0x02, 0x02 }

/* The kernel command line parameters for kiln-init. */
#define GUESTNET_BOOTARGS                                                                  \
	"kiln.ip=" GUESTNET_IP4 "/24," GUESTNET_GW4 "," GUESTNET_DNS4 " kiln.ip6=" GUESTNET_IP6 \
	"/64," GUESTNET_GW6

#endif
