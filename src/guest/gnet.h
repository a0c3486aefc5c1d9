/*
 * The guest's network, set up by kiln-init from kiln.ip / kiln.ip6 (issue 6,
 * docs/protocol.md): static addresses and default routes on the one
 * virtio-net NIC, and /etc/resolv.conf. No DHCP, no router adverts, no DAD.
 * Without kiln.ip and kiln.ip6 nothing is touched (no NIC: no network).
 */
#ifndef KILN_GUEST_GNET_H
#define KILN_GUEST_GNET_H

struct bootargs;

/* Configure what ba asks for; every failure is one console line and leaves
 * the guest without (that part of) its network, never fatal. */
void gnet_configure(const struct bootargs *ba);

#endif
