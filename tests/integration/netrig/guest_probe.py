#!/usr/bin/env python3
"""Guest side of t-net's hardening cases (issue 11), run inside the Debian
guest as root: one Python start for many cases (Python starts slowly in an
emulated guest). Prints one line per case, like net_guest.sh:

    R NAME rc=N out=TEXT

and the host side (t-net.sh) judges them against the rig's logs and
kiln-net's audit log.

    guest_probe.py main   DNS answers (withheld or kept), forged replies,
                          connections to host addresses and translated
                          forms, every kind of dropped frame, a flood
    guest_probe.py rate   16 connections with 16 KB first flights, then a
                          flood of long DNS names (for --net-rate)
"""
import os
import random
import select
import socket
import struct
import sys
import threading
import time

DNS = ("10.0.2.3", 53)
GW_MAC = bytes.fromhex("52550a000202")
GW4, ME4 = socket.inet_aton("10.0.2.2"), socket.inet_aton("10.0.2.15")
ME6 = socket.inet_pton(socket.AF_INET6, "fd00::15")
FAR4 = socket.inet_aton("11.0.2.99")    # a public address no rule opens
FAR6 = socket.inet_pton(socket.AF_INET6, "2a00:11::99")


def report(name, rc, out):
    out = " ".join(str(out).split())[:300]
    print(f"R {name} rc={rc} out={out}", flush=True)


# --- DNS ---------------------------------------------------------------------------

def qname(name):
    return b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"


def ask(name, qtype, timeout=3.0):
    """(rcode, [addresses]) of our resolver's answer, or (None, []) on timeout."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    qid = random.randrange(65536)
    s.sendto(struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname(name) + struct.pack("!HH", qtype, 1), DNS)
    end = time.monotonic() + timeout
    try:
        while True:
            s.settimeout(max(0.01, end - time.monotonic()))
            m = s.recv(4096)
            if struct.unpack_from("!H", m)[0] == qid:
                break
    except socket.timeout:
        return None, []
    finally:
        s.close()
    rcode, an = m[3] & 15, struct.unpack_from("!H", m, 6)[0]
    i = 12
    while m[i]:
        i += 1 + m[i]
    i += 5
    out = []
    for _ in range(an):
        if m[i] & 0xC0 == 0xC0:
            i += 2
        else:
            while m[i]:
                i += 1 + m[i]
            i += 1
        rtype, _, _, rdlen = struct.unpack_from("!HHIH", m, i)
        rdata = m[i + 10:i + 10 + rdlen]
        if rtype in (1, 28):
            out.append(socket.inet_ntop(socket.AF_INET if rtype == 1 else socket.AF_INET6, rdata))
        i += 10 + rdlen
    return rcode, out


def dns_case(name, qname_, qtype, timeout=3.0):
    rcode, addrs = ask(qname_, qtype, timeout)
    report(name, 0 if rcode is not None else 1, f"rcode={rcode} {' '.join(addrs) or '-'}")


# (case, name, type): names under ip.test spell their address (no ;private
# rule), under ipp.test the same with a ;private rule (t-net's rules).
ANSWERS = [
    ("a_public", "11-0-2-10.ip.test", 1),
    ("a_private", "10-1-2-3.ip.test", 1),
    ("a_private_optin", "10-1-2-3.ipp.test", 1),
    ("a_cgnat", "100-64-1-1.ip.test", 1),
    ("a_bench", "198-18-0-1.ip.test", 1),
    ("a_doc", "192-0-2-10.ip.test", 1),
    ("a_doc_optin", "192-0-2-10.ipp.test", 1),
    ("a_ula", "fd12xx1.ip.test", 28),
    ("a_reserved_optin", "127-0-0-1.ipp.test", 1),
    ("a_meta_optin", "169-254-169-254.ipp.test", 1),
    ("a_host_veth_optin", "198-51-100-1.ipp.test", 1),
    ("a_host_bcast_optin", "198-51-100-255.ipp.test", 1),
    ("a_host_dummy", "11-9-0-7.ip.test", 1),
    ("a_host_dummy6", "2a00x65xx7.ip.test", 28),
    ("a_host_dummy_last", "11-9-0-150.ip.test", 1),
    ("a_nat64_private", "64xff9bxxa01x203.ip.test", 28),
    ("a_nat64_loop_optin", "64xff9bxx7f00x1.ipp.test", 28),
    ("a_nat64_meta_optin", "64xff9bxxa9fexa9fe.ipp.test", 28),
    ("a_nat64_host", "64xff9bxxb09x7.ip.test", 28),
    ("a_nat64_public", "64xff9bxxb00x20a.ip.test", 28),
    ("a_mapped_private", "xxffffxa01x203.ip.test", 28),
    ("a_mapped_loop_optin", "xxffffx7f00x1.ipp.test", 28),
    ("a_6to4_private", "2002xa01x203xx1.ip.test", 28),
    ("a_6to4_host", "2002xb09x7xx1.ip.test", 28),
    ("a_teredo_loop_optin", "2001x0x808x808xx80ffxfffe.ipp.test", 28),
    ("a_compat_meta_optin", "xxa9fexa9fe.ipp.test", 28),
    ("a_translated_optin", "xxffffx0x7f00x1.ipp.test", 28),
]


# --- TCP ---------------------------------------------------------------------------

def connect(name, host, port, family=socket.AF_INET):
    """Outcome of one connect (kiln-net resets denied SYNs: refused)."""
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(12)
    try:
        s.connect((host, port))
        s.settimeout(3)
        try:
            got = s.recv(100)
        except socket.timeout:
            got = b""
        report(name, 0, "connected " + got.decode(errors="replace"))
    except ConnectionRefusedError:
        report(name, 1, "refused")
    except socket.timeout:
        report(name, 2, "timeout")
    except OSError as e:
        report(name, 3, f"error {e.errno}")
    finally:
        s.close()


CONNECTS = [
    ("c_host_cidr4", "11.9.0.7", 8089, socket.AF_INET),
    ("c_host_cidr4_last", "11.9.0.150", 8089, socket.AF_INET),
    ("c_host_cidr6", "2a00:65::7", 8089, socket.AF_INET6),
    ("c_host_cidr6_last", "2a00:65::96", 8089, socket.AF_INET6),
    ("c_host_veth", "198.51.100.1", 8089, socket.AF_INET),
    ("c_host_veth6", "2001:db8:1::1", 8089, socket.AF_INET6),
    ("c_host_bcast", "198.51.100.255", 8089, socket.AF_INET),
    ("c_host_nat64", "64:ff9b::c633:6401", 8089, socket.AF_INET6),
    ("c_host_nat64_dummy", "64:ff9b::b09:7", 8089, socket.AF_INET6),
    ("c_host_6to4", "2002:c633:6401::1", 8089, socket.AF_INET6),
    ("c_host_teredo", "2001:0:c633:6401::1", 8089, socket.AF_INET6),
    ("c_private_wide", "192.0.2.10", 81, socket.AF_INET),
]


# --- raw frames (AF_PACKET) ----------------------------------------------------------

def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def l4sum(src, dst, proto, l4, off):
    if len(src) == 4:
        ph = src + dst + struct.pack("!BBH", 0, proto, len(l4))
    else:
        ph = src + dst + struct.pack("!IxxxB", len(l4), proto)
    body = bytearray(l4)
    body[off:off + 2] = b"\0\0"
    c = csum(bytes(body) if proto == 1 else ph + bytes(body))
    body[off:off + 2] = struct.pack("!H", c)
    return bytes(body)


def ip4(mac, src, dst, proto, l4, frag=0x4000):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 7, frag, 64, proto, 0, src, dst)
    h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
    return GW_MAC + mac + b"\x08\x00" + h + l4


def ip6(mac, src, dst, nh, l4):
    return GW_MAC + mac + b"\x86\xdd" + struct.pack("!IHBB16s16s", 0x60000000, len(l4), nh, 64, src, dst) + l4


def tcp(sport, dport, flags, seq=1, ack=0):
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 0x50, flags, 64240, 0, 0)


def frames(mac):
    """(kind, frame): one of every kind kiln-net must drop and audit."""
    syn4 = lambda d=FAR4: l4sum(ME4, d, 6, tcp(40000, 80, 0x02), 16)  # noqa: E731
    bad = bytearray(ip4(mac, ME4, FAR4, 6, syn4()))
    bad[-3] ^= 0x40                                 # the TCP checksum no longer adds up
    short = bytearray(ip4(mac, ME4, FAR4, 17, l4sum(ME4, FAR4, 17, struct.pack("!HHHH", 1, 9, 12, 0) + b"abcd", 6)))
    short[16:18] = struct.pack("!H", 400)           # total length beyond the frame
    short[24:26] = b"\0\0"
    short[24:26] = struct.pack("!H", csum(bytes(short[14:34])))
    other_mac = bytes.fromhex("026b6c6e0077")
    return [
        ("spoofed-mac", ip4(other_mac, ME4, FAR4, 6, syn4())),
        ("spoofed-source", ip4(mac, socket.inet_aton("10.0.2.77"), FAR4, 6,
                               l4sum(socket.inet_aton("10.0.2.77"), FAR4, 6, tcp(40001, 80, 0x02), 16))),
        ("ip-fragment", ip4(mac, ME4, FAR4, 17, struct.pack("!HHHH", 1, 9, 16, 0) + b"frag", frag=0x2000)),
        ("ip-fragment", ip6(mac, ME6, FAR6, 44, bytes([6, 0, 0, 1, 0, 0, 0, 1]) + tcp(40002, 80, 0x02))),
        ("ipv6-extension-header", ip6(mac, ME6, FAR6, 0, bytes([6, 0, 1, 4, 0, 0, 0, 0]) + tcp(40003, 80, 0x02))),
        ("ip-protocol", ip4(mac, ME4, FAR4, 47, b"\0\0\x08\0" + bytes(24))),   # GRE
        ("ip-protocol", ip4(mac, ME4, FAR4, 132, bytes(32))),                   # SCTP
        ("ip-protocol", ip4(mac, ME4, FAR4, 50, bytes(32))),                    # ESP
        ("ethertype", GW_MAC + mac + b"\x88\xcc" + bytes(46)),                  # LLDP
        ("ethertype", GW_MAC + mac + b"\x81\x00" + bytes(46)),                  # VLAN
        ("malformed", bytes(short)),
        ("bad-checksum", bytes(bad)),
        ("tcp-flags", ip4(mac, ME4, FAR4, 6, l4sum(ME4, FAR4, 6, tcp(40004, 80, 0x03), 16))),  # SYN+FIN
        ("tcp-flags", ip4(mac, ME4, FAR4, 6, l4sum(ME4, FAR4, 6, tcp(40005, 80, 0x00), 16))),  # null
        ("tcp-flags", ip4(mac, ME4, FAR4, 6, l4sum(ME4, FAR4, 6, tcp(40006, 80, 0x29), 16))),  # Xmas
        ("icmp", ip4(mac, ME4, FAR4, 1, l4sum(ME4, FAR4, 1, struct.pack("!BBHHH", 8, 0, 0, 1, 1), 2))),
        ("arp", GW_MAC + mac + b"\x08\x06" + struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac,
                                                          socket.inet_aton("10.0.2.99"), bytes(6), GW4)),
    ]


def drop_cases(flood):
    ifname = "eth0"
    mac = bytes.fromhex(open(f"/sys/class/net/{ifname}/address").read().strip().replace(":", ""))
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((ifname, 0))
    fs = frames(mac)
    for kind, f in fs:
        s.send(f)
    report("frames", 0, " ".join(sorted({k for k, _ in fs})))
    time.sleep(1.5)   # their lines are written before the flood's
    t0, sent = time.monotonic(), 0
    while sent < flood:
        for _, f in fs:
            try:
                s.send(f)
                sent += 1
            except OSError:
                time.sleep(0.001)
    report("flood", 0, f"sent={sent} seconds={time.monotonic() - t0:.1f}")
    s.close()


def wait_flag():
    """The host adds addresses while we run and then lets flag.test resolve."""
    end = time.monotonic() + 120
    while time.monotonic() < end:
        rcode, addrs = ask("flag.test", 1, 2)
        if addrs:
            return True
        time.sleep(0.5)
    return False


def main_cases():
    t = [time.monotonic()]
    for name, qn, qt in ANSWERS:
        dns_case(name, qn, qt)
    t.append(time.monotonic())
    for how in ("id", "port", "q", "type"):
        dns_case(f"forge_{how}", f"{how}.forge.test", 1, timeout=8)
    dns_case("forge_only", "only.forge.test", 1, timeout=10)
    t.append(time.monotonic())
    for name, host, port, fam in CONNECTS:
        connect(name, host, port, fam)
    t.append(time.monotonic())
    report("flag", 0 if wait_flag() else 1, "")
    dns_case("a_host_added", "11-9-7-7.ip.test", 1)
    dns_case("a_host_added6", "2a00x65xx7777.ip.test", 28)
    connect("c_host_added", "11.9.7.7", 8089)
    connect("c_host_added6", "2a00:65::7777", 8089, socket.AF_INET6)
    t.append(time.monotonic())
    drop_cases(int(os.environ.get("FLOOD", "100000")))
    t.append(time.monotonic())
    report("phases", 0, " ".join(f"{n}={b - a:.1f}s" for n, a, b in
                                 zip(("answers", "forgeries", "connects", "added", "frames"), t, t[1:])))


# --- rate ----------------------------------------------------------------------------

def first_flights(n=16, size=16000):
    """n connections, each sending a size-byte request head at once (Host
    last: kiln-net holds it all until it sees the Host)."""
    addr = socket.getaddrinfo("rate.test", 80, socket.AF_INET, socket.SOCK_STREAM)[0][4]
    head = (b"POST /sink HTTP/1.1\r\nX-Pad: " + b"a" * size + b"\r\nHost: rate.test\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n")
    socks = []
    for _ in range(n):
        s = socket.create_connection(addr, timeout=60)
        socks.append(s)
    t0 = time.monotonic()
    threads = [threading.Thread(target=s.sendall, args=(head,)) for s in socks]
    for t in threads:
        t.start()
    got = 0
    for s in socks:
        try:
            while True:
                d = s.recv(4096)
                if not d:
                    break
                if b"hello from" in d:
                    got += 1
        except OSError:
            pass
        s.close()
    for t in threads:
        t.join()
    report("first_flights", 0 if got == n else 1,
           f"answered={got} bytes={n * len(head)} seconds={time.monotonic() - t0:.1f}")


def dns_flood(seconds=6.0, prebuilt=4000):
    """Long names (about 250 bytes on the wire) under *.flood.test as fast as
    we can, for a while: a counter in front of a fixed random tail, built
    before the clock starts (an emulated guest's Python is slow)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    tail = qname(".".join("".join(random.choice(alphabet) for _ in range(60)) for _ in range(3))
                 + "." + "".join(random.choice(alphabet) for _ in range(30)) + ".flood.test")
    head = random.randrange(1 << 30)
    queries = [struct.pack("!HHHHHH", i & 0xFFFF, 0x0100, 1, 0, 0, 0) + b"\x08" +
               b"%08x" % ((head + i) & 0xFFFFFFFF) + tail + b"\0\1\0\1" for i in range(prebuilt)]
    sent = answered = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(32):
            try:
                s.sendto(queries[sent % prebuilt], DNS)
                sent += 1
            except BlockingIOError:
                select.select([], [s], [], 0.01)
                break
        while True:
            try:
                s.recv(4096)
                answered += 1
            except BlockingIOError:
                break
    report("dns_flood", 0, f"sent={sent} answered={answered}")


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else "main"
    if what == "main":
        main_cases()
    elif what == "rate":
        first_flights()
        dns_flood()
    else:
        sys.exit("usage: guest_probe.py main|rate")


if __name__ == "__main__":
    main()
