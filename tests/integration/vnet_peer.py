#!/usr/bin/env python3
"""Test harness for kiln-vmm's virtio-net: the far end of its --net socket.

Runs kiln-vmm with one end of an AF_UNIX SOCK_SEQPACKET socketpair as
--net fd=N and plays a tiny host at 10.0.2.2 on the other end: answers ARP
requests and ICMP echo requests (checksums recomputed), counts what it saw.
Usage: vnet_peer.py VMM ARGS... ; prints "PEER frames=N arp=N icmp=N bad=N"
on stderr and exits with the VMM's status."""
import os
import socket
import struct
import subprocess
import sys

PEER_IP = bytes([10, 0, 2, 2])
PEER_MAC = bytes([0x02, 0, 0, 0, 0, 0x02])


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def arp_reply(f):
    # Ethernet(14) + ARP(28): htype 1, ptype 0x0800, op 1 (request) for PEER_IP.
    if len(f) < 42 or f[12:14] != b"\x08\x06" or f[20:22] != b"\x00\x01" or f[38:42] != PEER_IP:
        return None
    sha, spa = f[22:28], f[28:32]
    arp = b"\x00\x01\x08\x00\x06\x04\x00\x02" + PEER_MAC + PEER_IP + sha + spa
    return sha + PEER_MAC + b"\x08\x06" + arp


def icmp_reply(f):
    if len(f) < 34 or f[12:14] != b"\x08\x00":
        return None
    ihl = (f[14] & 0x0F) * 4
    ip = f[14:14 + ihl]
    if f[23] != 1 or ip[16:20] != PEER_IP:
        return None
    total = struct.unpack("!H", ip[2:4])[0]
    icmp = bytearray(f[14 + ihl:14 + total])
    if len(icmp) < 8 or icmp[0] != 8 or csum(bytes(icmp)) != 0:
        return None
    icmp[0] = 0
    icmp[2:4] = b"\0\0"
    icmp[2:4] = struct.pack("!H", csum(bytes(icmp)))
    nip = bytearray(ip)
    nip[12:16], nip[16:20] = ip[16:20], ip[12:16]
    nip[8] = 64
    nip[10:12] = b"\0\0"
    nip[10:12] = struct.pack("!H", csum(bytes(nip)))
    return f[6:12] + PEER_MAC + b"\x08\x00" + bytes(nip) + bytes(icmp)


def main():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    argv = sys.argv[1:] + ["--net", f"fd={theirs.fileno()}"]
    p = subprocess.Popen(argv, pass_fds=[theirs.fileno()])
    theirs.close()
    n = {"frames": 0, "arp": 0, "icmp": 0, "bad": 0}
    ours.settimeout(1.0)
    while True:
        try:
            f = ours.recv(65536)
        except socket.timeout:
            if p.poll() is not None:
                break
            continue
        except OSError:
            break
        if not f:
            break
        n["frames"] += 1
        if len(f) < 14 or len(f) > 1514:
            n["bad"] += 1
            continue
        r = arp_reply(f)
        if r:
            n["arp"] += 1
        else:
            r = icmp_reply(f)
            if r:
                n["icmp"] += 1
        if r:
            ours.send(r)
    rc = p.wait()
    sys.stderr.write("PEER " + " ".join(f"{k}={v}" for k, v in n.items()) + "\n")
    sys.exit(rc)


if __name__ == "__main__":
    main()
