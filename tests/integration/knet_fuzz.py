#!/usr/bin/env python3
"""kiln-net without a VM: this script plays the guest on the VMM end of its
socket (AF_UNIX SOCK_SEQPACKET, one Ethernet frame per message).

    knet_fuzz.py KILN_NET [--seed N] [--frames N] [--netns] [--no-seccomp]
                 [--no-jail] [--rate BYTES] [--dns-rate N] [--drop-flood N]
                 [--keep DIR]

It starts KILN_NET --fd N --allow 203.0.113.7:80 --audit-fd M --status-fd S
--resolver 127.0.0.1:1 and then:
  1. sanity: ARP for the gateway; a Neighbor Solicitation for fd00::2 (and
     none answered for the guest's own address); DNS for a name no rule
     allows, over IPv4 and IPv6 (REFUSED, same id); a SYN with no rule
     (RST|ACK, ack = seq + 1) over IPv4 and IPv6; a stray ACK (RST, seq = ack).
  1b. every kind of frame kiln-net drops at intake (spoofed MAC or source,
     fragments, extension headers, GRE/SCTP/ESP, other ethertypes, bad
     lengths and checksums, odd TCP flags, ICMP, foreign ARP, stray
     segments) leaves an audit line with a count; with --drop-flood N, N
     more leave a bounded number of lines.
  2. with --netns (run it as root under `unshare -n`: it changes the
     namespace): the servers live in a namespace of their own behind a veth
     (kiln-net asks the kernel whether a destination is its host's, so they
     must not be local here): 203.0.113.7:80, [2001:db8::7]:80, 11.0.2.8:80
     and :443, a UDP echo on 203.0.113.7:7; a fake resolver on
     127.0.0.1:5300 (kiln-net's --resolver then) whose answers are broken on
     purpose half of the time; extra rules [2001:db8::7]:80,
     udp:203.0.113.7:7, *.allowed.test and HOST_NET_RULES. Checked: whole
     TCP connections over IPv4 and IPv6, the UDP relay, DNS forwarding and
     pinning, rebinding kept out of answers, Host and SNI allowed and denied
     (the server never sees a denied request), a pinned address on a port no
     rule allows, IPv6 SYNs with an MSS too big for IPv6 or none; 300
     addresses given to kiln-net's own namespace while it runs (and one
     more later) unreachable by CIDR rule and translated forms and withheld
     from DNS answers; private and translated answers withheld, a ;private
     rule's kept; forged resolver replies (wrong ID, question, type, port)
     ignored, fresh IDs and source ports; with --dns-rate that a DNS flood
     goes upstream at that rate; with --rate that the limit holds.
  3. fuzz: random and mutated frames (bit flips, byte writes, cuts, growth,
     random lengths 1..2000, oversized up to 64 KiB) of every kind above and
     more (fragments, extension headers, IP options, spoofed sources, other
     ethertypes), as fast as the socket takes them, some aimed at live flows
     (one spliced, one waiting for its Host, one for its SNI); during the
     third quarter the guest reads nothing.
  4. sanity again (and the --netns checks): kiln-net alive and answering.
  5. hang up: kiln-net must exit 0, write exactly one JSON status line with
     the counters, and only JSON audit lines (each with time/proto/verdict/
     reason, or audit.c's "suppressed" line); its stderr must show no seccomp
     violation and no sanitizer report.
Every frame kiln-net sends is checked too: Ethernet to the guest's MAC from
the gateway's (ARP: from slirp's MAC for the address asked), IP to the
guest's address, IPv4 header and transport checksums right, lengths honest.

Prints "PASS text" / "FAIL text" / "# note" lines (t-knet.sh turns them into
TAP) and exits 1 if anything failed. The seed is printed; all randomness comes
from it. Frame length 0 is never sent: on a SOCK_SEQPACKET socket an empty
record reads as the VMM hanging up, and kiln-vmm never sends frames shorter
than 14 bytes.
"""
import argparse
import collections
import ctypes
import json
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

GUEST_MAC = bytes.fromhex("026b6c6e0001")
GW_MAC = bytes.fromhex("52550a000202")
BCAST = b"\xff" * 6
A4 = socket.inet_aton
A6 = lambda s: socket.inet_pton(socket.AF_INET6, s)  # noqa: E731
G4, GW4, DNS4 = A4("10.0.2.15"), A4("10.0.2.2"), A4("10.0.2.3")
G6, GW6, DNS6 = A6("fd00::15"), A6("fd00::2"), A6("fd00::3")
FAR4, FAR6 = A4("203.0.113.7"), A6("2001:db8::7")
NORULE4, NORULE6 = A4("192.0.2.99"), A6("2001:db8::99")
FIN, SYN, RST, PSH, ACK, URG_FLAG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
TCP, UDP, ICMP, ICMP6 = 6, 17, 1, 58

results = {"pass": 0, "fail": 0}


def say(ok, text):
    results["pass" if ok else "fail"] += 1
    print(("PASS " if ok else "FAIL ") + text, flush=True)
    return ok


def note(text):
    print("# " + text, flush=True)


# ---- frames ----

def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def pseudo(src, dst, proto, length):
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, proto, length)
    return src + dst + struct.pack("!IxxxB", length, proto)


def l4_fill_csum(src, dst, proto, l4):
    off = {TCP: 16, UDP: 6}.get(proto, 2)
    l4 = bytearray(l4)
    l4[off:off + 2] = b"\0\0"
    body = bytes(l4) if proto == ICMP else pseudo(src, dst, proto, len(l4)) + bytes(l4)
    c = csum(body)
    if proto == UDP and c == 0:
        c = 0xFFFF
    l4[off:off + 2] = struct.pack("!H", c)
    return bytes(l4)


def eth(dst, src, etype, payload):
    return dst + src + struct.pack("!H", etype) + payload


def ip4(src, dst, proto, l4, frag=0x4000, ident=1, ttl=64, opts=b"", fix_l4=True):
    if fix_l4:
        l4 = l4_fill_csum(src, dst, proto, l4)
    ihl = 5 + len(opts) // 4
    h = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(l4), ident, frag, ttl, proto,
                    0, src, dst) + opts
    h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
    return eth(GW_MAC, GUEST_MAC, 0x0800, h + l4)


def ip6(src, dst, nxt, l4, hop=64, fix_l4=True, l4proto=None):
    if fix_l4:
        l4 = l4_fill_csum(src, dst, l4proto or nxt, l4)
    h = struct.pack("!IHBB16s16s", 0x60000000, len(l4), nxt, hop, src, dst)
    return eth(GW_MAC, GUEST_MAC, 0x86DD, h + l4)


def tcp(sport, dport, seq, ack, flags, data=b"", opts=b"", win=64240):
    opts += b"\0" * (-len(opts) % 4)
    return struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                       (5 + len(opts) // 4) << 4, flags, win, 0, 0) + opts + data


def udp(sport, dport, data):
    return struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data


def dns_name(name):
    out = b""
    for label in name.split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def dns_query(qid, name, qtype=1, flags=0x0100):
    return struct.pack("!HHHHHH", qid, flags, 1, 0, 0, 0) + dns_name(name) + struct.pack("!HH", qtype, 1)


def arp(op, sha, spa, tha, tpa, dst=BCAST):
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, sha, spa, tha, tpa)
    return eth(dst, GUEST_MAC, 0x0806, body)


def solicited_node(addr):
    return A6("ff02::1:ff00:0")[:13] + addr[13:]


def ns(target, src=G6):
    body = struct.pack("!BBHI16s", 135, 0, 0, 0, target)
    if src != bytes(16):
        body += struct.pack("!BB6s", 1, 1, GUEST_MAC)
    return ip6(src, solicited_node(target), ICMP6, body, hop=255)


MSS_OPT = b"\x02\x04\x05\xb4"


# ---- what kiln-net sends ----

class Frame:
    """A frame from kiln-net, parsed; .bad says what is wrong with it."""

    def __init__(self, raw):
        self.raw = raw
        self.bad = None
        self.etype = None
        self.proto = None
        self.family = None
        self.src = self.dst = None
        self.l4 = b""
        try:
            self._parse()
        except (struct.error, IndexError) as e:
            self.bad = f"unparseable: {e}"

    def _parse(self):
        f = self.raw
        if len(f) < 14:
            self.bad = f"{len(f)} bytes"
            return
        if len(f) > 1514:
            self.bad = f"{len(f)} bytes, more than 1514"
            return
        self.etype = struct.unpack("!H", f[12:14])[0]
        if self.etype == 0x0806:
            # slirp's ARP, passed through: from its MAC for the address asked
            # about (52:55 + IPv4), to whatever sender the request named.
            if len(f) < 42:
                self.bad = "short ARP"
            elif f[6:8] != GW_MAC[:2] or f[8:12] != f[28:32]:
                self.bad = f"ARP from {f[6:12].hex()} for {f[28:32].hex()}"
            return
        if f[0:6] != GUEST_MAC or f[6:12] != GW_MAC:
            self.bad = f"MACs {f[0:6].hex()} <- {f[6:12].hex()}"
            return
        if self.etype == 0x0800:
            ihl = (f[14] & 15) * 4
            tot = struct.unpack("!H", f[16:18])[0]
            if f[14] >> 4 != 4 or ihl < 20 or tot < ihl or 14 + tot > len(f):
                self.bad = "IPv4 lengths"
                return
            if csum(f[14:14 + ihl]) != 0:
                self.bad = "IPv4 header checksum"
                return
            self.family, self.proto = 4, f[23]
            self.src, self.dst = f[26:30], f[30:34]
            self.l4 = f[14 + ihl:14 + tot]
        elif self.etype == 0x86DD:
            pl = struct.unpack("!H", f[18:20])[0]
            if f[14] >> 4 != 6 or 54 + pl > len(f):
                self.bad = "IPv6 lengths"
                return
            self.family, self.proto = 6, f[20]
            self.src, self.dst = f[22:38], f[38:54]
            self.l4 = f[54:54 + pl]
        else:
            self.bad = f"ethertype {self.etype:#x}"
            return
        # To the guest's addresses; a Neighbor Advertisement goes back to
        # whatever source the solicitation named (or to all nodes).
        na = self.family == 6 and self.proto == ICMP6 and len(f) > 54 and f[54] == 136
        if self.dst not in (G4, G6) and not na:
            self.bad = f"IP frame to {self.dst.hex()}"
            return
        if self.proto in (TCP, UDP, ICMP, ICMP6):
            need = {TCP: 20, UDP: 8}.get(self.proto, 4)
            if len(self.l4) < need:
                self.bad = f"short transport header ({len(self.l4)} bytes, proto {self.proto})"
                return
            if self.proto == ICMP:
                ok = csum(self.l4) == 0
            elif self.proto == UDP and self.l4[6:8] == b"\0\0" and self.family == 4:
                ok = True
            else:
                ok = csum(pseudo(self.src, self.dst, self.proto, len(self.l4)) + self.l4) == 0
            if not ok:
                self.bad = f"transport checksum (proto {self.proto})"
                return
            if self.proto == TCP and not 20 <= (self.l4[12] >> 4) * 4 <= len(self.l4):
                self.bad = "TCP data offset"
            if self.proto == UDP and struct.unpack("!H", self.l4[4:6])[0] != len(self.l4):
                self.bad = "UDP length"
        else:
            self.bad = f"IP protocol {self.proto}"

    # TCP fields
    def ports(self):
        return struct.unpack("!HH", self.l4[0:4])

    def tcp(self):
        sp, dp, seq, ack, off, flags = struct.unpack("!HHIIBB", self.l4[0:14])
        return sp, dp, seq, ack, flags, self.l4[(off >> 4) * 4:]


class Guest:
    """The VMM end of the socket: a reader thread keeps recent frames."""

    def __init__(self, sock):
        self.sock = sock
        self.cv = threading.Condition()
        self.frames = collections.deque(maxlen=20000)
        self.received = 0
        self.bad = []
        self.eof = False
        self.arp_answered = 0
        self.paused = threading.Event()  # set: the guest stops reading (its rx ring is full)
        self.thread = threading.Thread(target=self._reader, daemon=True)
        self.thread.start()

    def _reader(self):
        while True:
            while self.paused.is_set():
                time.sleep(0.01)
            try:
                raw = self.sock.recv(70000)
            except OSError:
                raw = b""
            if not raw:
                with self.cv:
                    self.eof = True
                    self.cv.notify_all()
                return
            f = Frame(raw)
            if f.bad and len(self.bad) < 20:
                self.bad.append(f"{f.bad}: {raw[:80].hex()}")
            # A guest answers ARP requests for its address (slirp asks).
            if not f.bad and f.etype == 0x0806 and raw[20:22] == b"\0\1" and raw[38:42] == G4:
                try:
                    self.sock.send(arp(2, GUEST_MAC, G4, raw[22:28], raw[28:32], dst=raw[6:12]))
                    self.arp_answered += 1
                except OSError:
                    pass
            with self.cv:
                self.received += 1
                self.frames.append(f)
                self.cv.notify_all()

    def send(self, frame):
        self.sock.send(frame)

    def clear(self):
        with self.cv:
            self.frames.clear()

    def expect(self, pred, timeout=3.0):
        """The first frame (arrived or arriving) for which pred is true."""
        end = time.monotonic() + timeout
        with self.cv:
            while True:
                for i, f in enumerate(self.frames):
                    if f.bad is None and pred(f):
                        del self.frames[i]
                        return f
                left = end - time.monotonic()
                if left <= 0 or self.eof:
                    return None
                self.cv.wait(left)


# ---- the sanity checks ----

def check_arp(g, tag):
    g.send(arp(1, GUEST_MAC, G4, bytes(6), GW4))
    f = g.expect(lambda f: f.etype == 0x0806 and f.raw[20:22] == b"\0\2" and f.raw[28:32] == GW4)
    ok = f is not None and f.raw[22:28] == GW_MAC and f.raw[0:6] == GUEST_MAC and \
        f.raw[32:38] == GUEST_MAC and f.raw[38:42] == G4
    say(ok, f"{tag}: ARP request for 10.0.2.2 answered with 52:55:0a:00:02:02"
        + ("" if ok else f" (got {f.raw.hex() if f else 'nothing'})"))


def is_na(f, target):
    return f.family == 6 and f.proto == ICMP6 and f.l4[0] == 136 and f.l4[8:24] == target


def check_ns(g, tag):
    g.send(ns(GW6))
    f = g.expect(lambda f: is_na(f, GW6))
    ok = f is not None and f.src == GW6 and f.dst == G6 and f.raw[21] == 255 and \
        f.l4[1] == 0 and f.l4[4] & 0xE0 == 0xE0 and f.l4[24:32] == b"\x02\x01" + GW_MAC
    say(ok, f"{tag}: Neighbor Solicitation for fd00::2 answered (NA, hop limit 255, gateway MAC)"
        + ("" if ok else f" (got {f.raw.hex() if f else 'nothing'})"))
    # The guest's duplicate address detection for its own address: no answer.
    g.send(ns(G6, src=bytes(16)))
    f = g.expect(lambda f: is_na(f, G6), timeout=0.5)
    say(f is None, f"{tag}: DAD probe for fd00::15 left unanswered")


def dns_reply_pred(family, sport, qid):
    def pred(f):
        return f.family == family and f.proto == UDP and f.ports() == (53, sport) and \
            len(f.l4) >= 20 and struct.unpack("!H", f.l4[8:10])[0] == qid
    return pred


def check_dns(g, tag, rnd):
    for family in (4, 6):
        qid, sport = rnd.randrange(65536), 5353 if family == 4 else 5354
        q = dns_query(qid, "evil.test")
        if family == 4:
            g.send(ip4(G4, DNS4, UDP, udp(sport, 53, q)))
        else:
            g.send(ip6(G6, DNS6, UDP, udp(sport, 53, q)))
        f = g.expect(dns_reply_pred(family, sport, qid))
        srv = DNS4 if family == 4 else DNS6
        ok = f is not None and f.src == srv and f.dst == (G4 if family == 4 else G6)
        if ok:
            flags = struct.unpack("!H", f.l4[10:12])[0]
            ok = flags & 0x8000 and flags & 0xF == 5 and dns_name("evil.test") in f.l4[8:]
        say(bool(ok), f"{tag}: DNS evil.test A over IPv{family}: REFUSED, same id"
            + ("" if ok else f" (got {f.raw.hex() if f else 'nothing'})"))


def rst_pred(family, far, dport):
    def pred(f):
        return f.family == family and f.proto == TCP and f.src == far and f.ports() == (80, dport) \
            and f.tcp()[4] & RST
    return pred


def check_tcp_reset(g, tag, rnd):
    for family, far in ((4, NORULE4), (6, NORULE6)):
        sport, seq = rnd.randrange(30000, 60000), rnd.randrange(1 << 32)
        seg = tcp(sport, 80, seq, 0, SYN, opts=MSS_OPT)
        g.send(ip4(G4, far, TCP, seg) if family == 4 else ip6(G6, far, TCP, seg))
        f = g.expect(rst_pred(family, far, sport))
        ok = f is not None
        if ok:
            _, _, rseq, rack, flags, _ = f.tcp()
            ok = flags == RST | ACK and rack == (seq + 1) & 0xFFFFFFFF and rseq == 0
        say(ok, f"{tag}: SYN to {socket.inet_ntop(socket.AF_INET if family == 4 else socket.AF_INET6, far)}:80"
            f" (no rule): RST|ACK, ack = seq + 1" + ("" if ok else f" (got {f.raw.hex() if f else 'nothing'})"))
    # A stray ACK with no connection: RST with seq = its ack.
    sport, ack = rnd.randrange(30000, 60000), rnd.randrange(1 << 32)
    g.send(ip4(G4, NORULE4, TCP, tcp(sport, 80, 12345, ack, ACK)))
    f = g.expect(rst_pred(4, NORULE4, sport))
    ok = f is not None and f.tcp()[4] == RST and f.tcp()[2] == ack
    say(ok, f"{tag}: stray ACK: RST with seq = its ack")


def sanity(g, tag, rnd):
    g.clear()
    check_arp(g, tag)
    check_ns(g, tag)
    check_dns(g, tag, rnd)
    check_tcp_reset(g, tag, rnd)


# ---- the netns part: servers, a resolver, whole connections (--netns) ----

REQUEST = b"GET /knet HTTP/1.0\r\nHost: 203.0.113.7\r\n\r\n"
NAMED = "11.0.2.8"         # public: reachable only through DNS for *.allowed.test
NAMED4 = A4(NAMED)


def http_request(host):
    return b"GET /knet HTTP/1.0\r\nHost: " + host.encode() + b"\r\n\r\n"


def reply_for(req):
    return b"HTTP/1.0 200 OK\r\n\r\n" + b"kiln-net says hello " * 400 + req[:16]


def client_hello(sni):
    """A TLS ClientHello (TLS 1.3 shaped) whose only name is sni."""
    name = sni.encode()
    exts = struct.pack("!HHHBH", 0, len(name) + 5, len(name) + 3, 0, len(name)) + name
    exts += struct.pack("!HHH", 0x000A, 4, 2) + b"\x00\x1d"          # supported_groups
    exts += struct.pack("!HHB", 0x002B, 3, 2) + b"\x03\x04"          # supported_versions
    body = b"\x03\x03" + bytes(range(32)) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    body += struct.pack("!H", len(exts)) + exts
    hs = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


class Servers:
    """HTTP-ish on port 80 (reply after the request head), TLS-ish on 443
    (reply with the byte count of the first record), UDP echo on 7."""

    def __init__(self):
        self.accepted = 0
        self.received = []  # what every connection got, in order
        for fam, addr, port in ((socket.AF_INET, "203.0.113.7", 80), (socket.AF_INET6, "2001:db8::7", 80),
                                (socket.AF_INET, NAMED, 80), (socket.AF_INET, NAMED, 443)):
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((addr, port))
            s.listen(128)
            threading.Thread(target=self._accept, args=(s, port), daemon=True).start()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("203.0.113.7", 7))
        threading.Thread(target=self._echo, daemon=True).start()

    def _accept(self, s, port):
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(c, port), daemon=True).start()

    def _serve(self, c, port):
        c.settimeout(30)
        buf = b""
        try:
            while True:
                if port == 80 and b"\r\n\r\n" in buf:
                    c.sendall(reply_for(buf))
                    break
                if port == 443 and len(buf) >= 5 and len(buf) >= 5 + struct.unpack("!H", buf[3:5])[0]:
                    c.sendall(b"tls-ok:%d" % len(buf))
                    break
                d = c.recv(4096)
                if not d:
                    break
                buf += d
            c.shutdown(socket.SHUT_WR)
            while True:
                d = c.recv(4096)
                if not d:
                    break
                buf += d
        except OSError:
            pass
        self.received.append(buf)
        c.close()

    def _echo(self):
        while True:
            try:
                d, peer = self.udp.recvfrom(4096)
                self.udp.sendto(b"echo:" + d, peer)
            except OSError:
                return


def parse_question(msg):
    """(id, name, qtype, end of question) of a DNS query, or None."""
    try:
        qid = struct.unpack("!H", msg[0:2])[0]
        i, labels = 12, []
        while msg[i]:
            labels.append(msg[i + 1:i + 1 + msg[i]].decode("ascii", "replace"))
            i += 1 + msg[i]
        qtype = struct.unpack("!H", msg[i + 1:i + 3])[0]
        return qid, ".".join(labels).lower(), qtype, i + 5
    except (IndexError, struct.error):
        return None


FORGED = A4("6.6.6.6")  # what a forged reply claims
HOST4, HOST6 = "11.9.0.7", "2a00:65::7"  # given to kiln-net's own namespace (host addresses)
FIXED = {  # name: [(type, address)]: what each answer must become
    "hostaddr.allowed.test": [("A", HOST4), ("AAAA", HOST6)],
    "host64.allowed.test": [("AAAA", "64:ff9b::b09:7")],
    "host6to4.allowed.test": [("AAAA", "2002:b09:7::1")],
    "hostmapped.allowed.test": [("AAAA", "::ffff:11.9.0.7")],
    "private.allowed.test": [("A", "10.1.2.3"), ("A", "100.64.1.1"), ("A", "192.168.7.7"),
                             ("A", "172.20.0.1"), ("A", "198.18.0.1"), ("A", NAMED),
                             ("AAAA", "fd12::1"), ("AAAA", "2001:db8::1")],
    "translated.allowed.test": [("AAAA", "64:ff9b::a01:203"), ("AAAA", "64:ff9b::7f00:1"),
                                ("AAAA", "::ffff:10.1.2.3"), ("AAAA", "2002:a9fe:a9fe::1"),
                                ("AAAA", "2001:0:808:808::f5fe:fdfc"), ("AAAA", "::a9fe:a9fe"),
                                ("AAAA", "64:ff9b::b00:208")],
    "db.corp.test": [("A", "10.1.2.3"), ("A", "127.0.0.1"), ("A", HOST4)],
}
# What kiln-net must keep of each (the rest withheld, with the reason).
FIXED_KEEP = {
    "hostaddr.allowed.test": set(), "host64.allowed.test": set(), "host6to4.allowed.test": set(),
    "hostmapped.allowed.test": set(),
    "private.allowed.test": {NAMED},
    "translated.allowed.test": {"64:ff9b::b00:208"},
    "db.corp.test": {"10.1.2.3"},
}
FIXED_WHY = {"hostaddr.allowed.test": "host-address", "host64.allowed.test": "host-address",
             "host6to4.allowed.test": "host-address", "hostmapped.allowed.test": "host-address",
             "private.allowed.test": "private-address", "db.corp.test": None,
             "translated.allowed.test": None}


def rr(name_wire, rtype, ttl, rdata):
    return name_wire + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata


class Resolver:
    """The host's resolver, on 127.0.0.1:5300. good.* names get 11.0.2.8,
    rebind.* names 127.0.0.1 and 11.0.2.8, names in FIXED their records,
    forge-* names forged replies first (FORGED in them); every other name
    one of many answers, broken on purpose half of the time (seeded). Every
    query's ID, source port and time are kept (self.seen)."""
    MODES = ["good", "good", "cname", "many", "nx", "tc", "wrongid", "junk", "cut", "flip", "flip",
             "twice", "ptrloop", "silent", "other-type", "rebind6"]

    def __init__(self, seed):
        self.rnd = random.Random(seed ^ 0x5EED)
        self.queries = 0
        self.modes = collections.Counter()
        self.seen = []  # (monotonic time, id, source port, name)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 5300))
        self.other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the wrong source port
        self.other.bind(("127.0.0.1", 5301))
        threading.Thread(target=self._run, daemon=True).start()

    def forged(self, msg, q, how):
        """(socket, reply) pairs: the forgery first, then the real answer."""
        qid, name, qtype, qend = q
        question = msg[12:qend]
        fake = rr(b"\xc0\x0c", 1, 60, FORGED)
        real = struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + question + rr(b"\xc0\x0c", 1, 60, NAMED4)
        if how == "id":
            bad = struct.pack("!HHHHHH", qid ^ 1, 0x8180, 1, 1, 0, 0) + question + fake
        elif how == "question":
            other = dns_name("other.allowed.test") + struct.pack("!HH", qtype, 1)
            bad = struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + other + fake
        elif how == "type":
            bad = struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + question[:-4] + \
                struct.pack("!HH", 28, 1) + fake
        else:  # "port" and "only": right ID and question, wrong source port / only forged
            bad = struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + question + fake
        if how == "port":
            return [(self.other, bad), (self.sock, real)]
        if how == "only":
            return [(self.sock, struct.pack("!HHHHHH", qid ^ 0x100, 0x8180, 1, 1, 0, 0) + question + fake)]
        return [(self.sock, bad), (self.sock, real)]

    def _answer(self, msg, q, mode):
        qid, name, qtype, qend = q
        question = msg[12:qend]
        ptr = b"\xc0\x0c"
        hdr = lambda n, flags=0x8180, qid=qid: struct.pack("!HHHHHH", qid, flags, 1, n, 0, 0)  # noqa: E731
        a = lambda ip: rr(ptr, 1, 60, A4(ip))  # noqa: E731
        if mode == "good":
            return [hdr(1) + question + a(NAMED)] if qtype == 1 else [hdr(0) + question]
        if mode == "rebind":
            return [hdr(2) + question + a("127.0.0.1") + a(NAMED)]
        if mode == "rebind6":
            return [hdr(1) + question + rr(ptr, 28, 60, A6("::1"))]
        if mode == "cname":
            target = dns_name("cdn.example")
            return [hdr(2) + question + rr(ptr, 5, 30, target) + rr(target, 1, 5, NAMED4)]
        if mode == "many":
            return [hdr(40) + question + b"".join(a(f"203.0.113.{i}") for i in range(40))]
        if mode == "nx":
            return [hdr(0, 0x8183) + question]
        if mode == "tc":
            return [hdr(1, 0x8380) + question + a(NAMED)]
        if mode == "wrongid":
            return [hdr(1, qid=qid ^ 0x4242) + question + a("203.0.113.9")]
        if mode == "junk":
            return [msg[0:2] + self.rnd.randbytes(self.rnd.randrange(0, 600))]
        if mode == "twice":
            return [hdr(1) + question + a(NAMED)] * 2
        if mode == "ptrloop":  # an answer whose name points at itself
            off = len(hdr(1) + question)
            return [hdr(1) + question + struct.pack("!H", 0xC000 | off) + struct.pack("!HHIH", 1, 1, 60, 4)
                    + NAMED4]
        if mode == "other-type":
            return [hdr(1) + question + rr(ptr, 16, 60, b"\x05hello")]
        good = bytearray(hdr(2) + question + rr(ptr, 5, 30, dns_name("cdn.example"))
                         + rr(dns_name("cdn.example"), 1, 5, NAMED4))
        if mode == "cut":
            return [bytes(good[:self.rnd.randrange(2, len(good))])]
        for _ in range(self.rnd.randrange(1, 6)):  # flip
            good[self.rnd.randrange(2, len(good))] ^= 1 << self.rnd.randrange(8)
        return [bytes(good)]

    def _run(self):
        while True:
            try:
                msg, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            q = parse_question(msg)
            if q is None:
                continue
            self.queries += 1
            self.seen.append((time.monotonic(), q[0], peer[1], q[1]))
            if q[1].startswith("forge-"):
                for sock, out in self.forged(msg, q, q[1].split(".")[0][6:]):
                    sock.sendto(out, peer)
                continue
            if q[1] in FIXED:
                rtype = {1: "A", 28: "AAAA"}.get(q[2])
                addrs = [x for t, x in FIXED[q[1]] if t == rtype]
                out = struct.pack("!HHHHHH", q[0], 0x8180, 1, len(addrs), 0, 0) + msg[12:q[3]]
                for x in addrs:
                    out += rr(b"\xc0\x0c", q[2], 60, socket.inet_pton(
                        socket.AF_INET6 if ":" in x else socket.AF_INET, x))
                self.sock.sendto(out, peer)
                continue
            if q[1].startswith("flood"):
                self.sock.sendto(struct.pack("!HHHHHH", q[0], 0x8183, 1, 0, 0, 0) + msg[12:q[3]], peer)
                continue
            if q[1].startswith("good."):
                mode = "good"
            elif q[1].startswith("rebind."):
                mode = "rebind"
            else:
                mode = self.rnd.choice(self.MODES)
            self.modes[mode] += 1
            if mode == "silent":
                continue
            for out in self._answer(msg, q, mode):
                self.sock.sendto(out, peer)


def tcp_session(g, family, far, port, request, rnd, mss=None):
    """Guest side of one connection: SYN, request, read to FIN, FIN. Returns
    (outcome, bytes received, detail); outcome "closed", "reset" or "fail".
    The SYN announces what Linux would for MTU 1500 (1460 / 1440), or mss."""
    me = G4 if family == 4 else G6
    wrap = (lambda seg: ip4(me, far, TCP, seg)) if family == 4 else (lambda seg: ip6(me, far, TCP, seg))
    sport, iss = rnd.randrange(30000, 60000), rnd.randrange(1 << 32)

    def from_far(f):
        return f.family == family and f.proto == TCP and f.src == far and f.dst == me and \
            f.ports() == (port, sport)

    mss = mss or (1460 if family == 4 else 1440)
    opts = struct.pack("!BBH", 2, 4, mss) if mss > 0 else b"\x04\x02\x01\x01"  # <0: SACK-ok only
    g.send(wrap(tcp(sport, port, iss, 0, SYN, opts=opts)))
    f = g.expect(from_far, timeout=5)
    if f is None:
        return "fail", b"", "no answer to the SYN"
    _, _, irs, ack, flags, _ = f.tcp()
    if flags & RST:
        return "reset", b"", "reset at the SYN"
    if flags != SYN | ACK or ack != (iss + 1) & 0xFFFFFFFF:
        return "fail", b"", f"not a SYN-ACK for our SYN: flags {flags:#x} ack {ack} (iss {iss})"
    if family == 6:  # the MSS clamp for IPv6
        opts = f.l4[20:(f.l4[12] >> 4) * 4]
        i = opts.find(b"\x02\x04")
        if i < 0 or struct.unpack("!H", opts[i + 2:i + 4])[0] > 1440:
            return "fail", b"", f"IPv6 SYN-ACK options {opts.hex()}: MSS not at most 1440"
    snd, rcv = iss + 1, irs + 1
    g.send(wrap(tcp(sport, port, snd, rcv, ACK)))
    g.send(wrap(tcp(sport, port, snd, rcv, PSH | ACK, request)))
    snd += len(request)
    got, fin = b"", False
    end = time.monotonic() + 8
    while not fin and time.monotonic() < end:
        f = g.expect(from_far, timeout=max(0.1, end - time.monotonic()))
        if f is None:
            break
        _, _, seq, ack, flags, data = f.tcp()
        if flags & RST:
            return "reset", got, f"reset after {len(got)} bytes"
        if seq == rcv & 0xFFFFFFFF:
            got += data
            rcv += len(data)
            if flags & FIN:
                rcv += 1
                fin = True
        g.send(wrap(tcp(sport, port, snd, rcv, ACK)))
    if not fin:
        return "fail", got, f"no FIN; {len(got)} bytes"
    g.send(wrap(tcp(sport, port, snd, rcv, FIN | ACK)))
    snd += 1
    f = g.expect(lambda f: from_far(f) and f.tcp()[3] == snd & 0xFFFFFFFF and f.tcp()[4] & ACK,
                 timeout=5)
    if f is None:
        return "fail", got, "our FIN not acknowledged"
    return "closed", got, f"{len(request)} bytes up, {len(got)} down"


def check_session(g, family, far, port, request, want, rnd, text, mss=None):
    outcome, got, detail = tcp_session(g, family, far, port, request, rnd, mss)
    if want == "reset":
        return say(outcome == "reset" and not got, f"{text}: reset ({detail})")
    return say(outcome == "closed" and got == want, f"{text} ({detail})"
               + ("" if got == want or outcome != "closed" else f"; got {got[:60]!r}"))


def dns_ask(g, rnd, name, qtype=1, timeout=3.0):
    """The guest's resolver: the reply's DNS message (bytes), or None."""
    qid, sport = rnd.randrange(65536), rnd.randrange(20000, 30000)
    g.send(ip4(G4, DNS4, UDP, udp(sport, 53, dns_query(qid, name, qtype))))
    f = g.expect(dns_reply_pred(4, sport, qid), timeout=timeout)
    return None if f is None else f.l4[8:]


def check_resolver(g, rnd, tag):
    # good.allowed.test: forwarded, answered, pinned (kiln-net may still be
    # busy with queries the fuzz left pending: SERVFAIL is retried).
    end = time.monotonic() + 8
    while True:
        m = dns_ask(g, rnd, "good.allowed.test")
        rcode = None if m is None else struct.unpack("!H", m[2:4])[0] & 15
        if rcode != 2 or time.monotonic() > end:
            break
        time.sleep(0.5)
    ok = m is not None and rcode == 0 and struct.unpack("!H", m[6:8])[0] >= 1 and NAMED4 in m
    say(ok, f"{tag}: good.allowed.test A forwarded and answered with 11.0.2.8"
        + ("" if ok else f" (got {m.hex() if m else 'nothing'})"))
    m = dns_ask(g, rnd, "rebind.allowed.test")
    ok = m is not None and struct.unpack("!H", m[2:4])[0] & 15 == 0 and NAMED4 in m and \
        A4("127.0.0.1") not in m[12:]
    say(ok, f"{tag}: rebind.allowed.test: 127.0.0.1 kept out of the answer, 11.0.2.8 kept"
        + ("" if ok else f" (got {m.hex() if m else 'nothing'})"))


def udp_round_trip(g, sport):
    g.send(ip4(G4, FAR4, UDP, udp(sport, 7, b"ping")))
    f = g.expect(lambda f: f.family == 4 and f.proto == UDP and f.src == FAR4 and
                 f.ports() == (7, sport), timeout=3)
    return f is not None and f.l4[8:] == b"echo:ping"


UDP_SPORT = 4007  # the guest's UDP flow for the sanity checks


def netns_checks(g, rnd, servers, tag):
    check_session(g, 4, FAR4, 80, REQUEST, reply_for(REQUEST), rnd,
                  f"{tag}: whole TCP connection over IPv4 to 203.0.113.7:80 (IP rule)")
    check_session(g, 6, FAR6, 80, REQUEST, reply_for(REQUEST), rnd,
                  f"{tag}: whole TCP connection over IPv6 to [2001:db8::7]:80 (IP rule)")
    say(udp_round_trip(g, UDP_SPORT), f"{tag}: UDP round trip to 203.0.113.7:7 (udp: rule)")
    check_resolver(g, rnd, tag)
    req = http_request("good.allowed.test")
    check_session(g, 4, NAMED4, 80, req, reply_for(req), rnd,
                  f"{tag}: HTTP to 11.0.2.8 with Host good.allowed.test (pinned, Host checked)")
    check_session(g, 4, NAMED4, 80, http_request("evil.test"), "reset", rnd,
                  f"{tag}: HTTP to 11.0.2.8 with Host evil.test")
    hello = client_hello("good.allowed.test")
    check_session(g, 4, NAMED4, 443, hello, b"tls-ok:%d" % len(hello), rnd,
                  f"{tag}: TLS to 11.0.2.8:443 with SNI good.allowed.test")
    check_session(g, 4, NAMED4, 443, client_hello("evil.test"), "reset", rnd,
                  f"{tag}: TLS to 11.0.2.8:443 with SNI evil.test")
    check_session(g, 4, NAMED4, 22, b"SSH-2.0-x\r\n", "reset", rnd,
                  f"{tag}: 11.0.2.8:22 (pinned, port not allowed)")
    time.sleep(0.2)
    say(not any(b"evil.test" in r for r in servers.received),
        f"{tag}: no server ever received a denied request")


def live_flows(g, rnd):
    """Connections left open for the fuzz: spliced (IP rule) and held (Host
    not sent yet). Each (far, port, sport, snd, rcv)."""
    flows = []
    for far, port in ((FAR4, 80), (NAMED4, 80), (NAMED4, 443)):
        sport, iss = rnd.randrange(30000, 60000), rnd.randrange(1 << 32)
        g.send(ip4(G4, far, TCP, tcp(sport, port, iss, 0, SYN, opts=MSS_OPT)))
        f = g.expect(lambda f, far=far, port=port, sport=sport: f.proto == TCP and f.src == far and
                     f.ports() == (port, sport), timeout=5)
        if f is None or f.tcp()[4] != SYN | ACK:
            continue
        irs = f.tcp()[2]
        g.send(ip4(G4, far, TCP, tcp(sport, port, iss + 1, irs + 1, ACK)))
        flows.append((far, port, sport, iss + 1, irs + 1))
    return flows


# ---- the namespaces (--netns) ----

def unshare_net():
    """Move this thread (only) into a fresh network namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x40000000) != 0:  # CLONE_NEWNET
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def ip_batch(cmds):
    subprocess.run(["ip", "-batch", "-"], input="\n".join(cmds) + "\n", text=True, check=True,
                   stdout=subprocess.DEVNULL)


def setup_netns():
    """kiln-net runs in this namespace; the servers get one of their own
    behind a veth (kf0 here, kf1 there), made by a thread that moves into
    it, so that their addresses are not this namespace's: kiln-net asks the
    kernel whether a destination is its host's own, and an address on lo
    here would be. Returns the Servers."""
    box = {}

    def far_side():
        try:
            unshare_net()
            ip_batch(["link set lo up",
                      f"link add kf1 type veth peer name kf0 netns {os.getpid()}",
                      "addr add 203.0.113.7/32 dev lo", f"addr add {NAMED}/32 dev lo",
                      "addr add 2001:db8::7/128 dev lo nodad",
                      "addr add 64:ff9b::b00:208/128 dev lo nodad",
                      "addr add 10.99.0.2/24 dev kf1", "addr add fd99::2/64 dev kf1 nodad",
                      "link set kf1 up", "route add default via 10.99.0.1",
                      "route add ::/0 via fd99::1"])
            box["servers"] = Servers()
        except Exception as e:  # noqa: BLE001 (reported by the caller)
            box["error"] = e

    t = threading.Thread(target=far_side)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    ip_batch(["link set lo up", "addr add 10.99.0.1/24 dev kf0", "addr add fd99::1/64 dev kf0 nodad",
              "link set kf0 up", "route add default via 10.99.0.2", "route add ::/0 via fd99::2",
              "route add 203.0.113.0/24 via 10.99.0.2",
              "route add 11.0.2.0/24 via 10.99.0.2", "route add 2001:db8::/32 via fd99::2",
              "route add 64:ff9b::/96 via fd99::2", "route add 2002::/16 via fd99::2"])
    return box["servers"]


def read_audit(fd):
    """The audit log so far (pread: kiln-net shares the file offset)."""
    data, off = b"", 0
    while True:
        d = os.pread(fd, 1 << 20, off)
        if not d:
            break
        data += d
        off += len(d)
    out = []
    for line in data.decode(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def wait_audit(fd, pred, timeout=3.0):
    """The first audit line for which pred is true, waiting for it."""
    end = time.monotonic() + timeout
    while True:
        for e in read_audit(fd):
            if pred(e):
                return e
        if time.monotonic() > end:
            return None
        time.sleep(0.1)


# ---- host addresses, private and translated answers, forgeries (--netns) ----

HOST_NET_RULES = ["11.9.0.0/16", "[2a00:65::/64]", "[64:ff9b::/96]:80", "[2002::/16]:80",
                  "*.corp.test;private"]


def syn_outcome(g, family, far, port, rnd):
    """SYN to far:port: "synack" (then reset by us) or "reset"/"none"."""
    me = G4 if family == 4 else G6
    wrap = (lambda seg: ip4(me, far, TCP, seg)) if family == 4 else (lambda seg: ip6(me, far, TCP, seg))
    sport, iss = rnd.randrange(30000, 60000), rnd.randrange(1 << 32)
    g.send(wrap(tcp(sport, port, iss, 0, SYN, opts=MSS_OPT)))
    f = g.expect(lambda f: f.proto == TCP and f.src == far and f.ports() == (port, sport), timeout=5)
    if f is None:
        return "none"
    if f.tcp()[4] & RST:
        return "reset"
    g.send(wrap(tcp(sport, port, iss + 1, 0, RST)))
    return "synack"


def check_host_addresses(g, rnd, audit_fd):
    """150 IPv4 and 150 IPv6 addresses given to kiln-net's namespace while it
    runs, one more later: none reachable by CIDR rule or translated form,
    none given to the guest by DNS."""
    cmds = [f"addr add 11.9.{i // 200}.{i % 200 + 1}/32 dev lo" for i in range(150)]
    cmds += [f"addr add 2a00:65::{i + 1:x}/128 dev lo nodad" for i in range(150)]
    ip_batch(cmds)
    targets = [(4, "11.9.0.1"), (4, HOST4), (4, "11.9.0.150"), (6, "2a00:65::1"), (6, HOST6),
               (6, "2a00:65::96"), (6, "64:ff9b::b09:7"), (6, "2002:b09:7::1"), (6, "64:ff9b::b09:96")]
    for family, addr in targets:
        far = A4(addr) if family == 4 else A6(addr)
        out = syn_outcome(g, family, far, 80, rnd)
        e = wait_audit(audit_fd, lambda e, a=addr: e.get("proto") == "tcp" and e.get("dst") == a
                       and e.get("port") == 80)
        say(out == "reset" and e is not None and e["verdict"] == "deny" and e["reason"] == "host-address",
            f"host address {addr}:80 (a CIDR rule covers it): reset, audited host-address"
            + ("" if e is None else f" ({e['verdict']} {e['reason']})"))
    # The control: a translated form of a public address is let through (the
    # connect is refused out there: nothing listens on it).
    out = syn_outcome(g, 6, A6("64:ff9b::b00:208"), 80, rnd)
    e = wait_audit(audit_fd, lambda e: e.get("dst") == "64:ff9b::b00:208")
    say(e is not None and e["verdict"] == "error", "control: [64:ff9b::11.0.2.8]:80 allowed by the "
        "policy (then refused out there)" + ("" if e is None else f" ({e['verdict']} {e['reason']})"))
    # One more, added now.
    ip_batch(["addr add 11.9.7.7/32 dev lo", "addr add 2a00:65::7777/128 dev lo nodad"])
    for family, addr in ((4, "11.9.7.7"), (6, "2a00:65::7777")):
        out = syn_outcome(g, family, A4(addr) if family == 4 else A6(addr), 443, rnd)
        e = wait_audit(audit_fd, lambda e, a=addr: e.get("dst") == a and e.get("port") == 443)
        say(out == "reset" and e is not None and e["reason"] == "host-address",
            f"an address added after kiln-net started ({addr}) is denied as host-address")


def answer_addrs(m):
    """(rcode, [addresses]) of a DNS reply to one question (answers are
    pointers to the question: kiln-net's own form)."""
    rcode = struct.unpack("!H", m[2:4])[0] & 15
    an = struct.unpack("!H", m[6:8])[0]
    i = 12
    while m[i]:
        i += 1 + m[i]
    i += 5
    out = []
    for _ in range(an):
        rtype, _, _, rdlen = struct.unpack("!HHIH", m[i + 2:i + 12])
        rdata = m[i + 12:i + 12 + rdlen]
        out.append(socket.inet_ntop(socket.AF_INET if rdlen == 4 else socket.AF_INET6, rdata))
        i += 12 + rdlen
    return rcode, out


def check_answers(g, rnd, audit_fd):
    """Host, private and translated answers withheld (and audited); the
    ;private rule's answers kept, its reserved and host ones not."""
    for name in FIXED:
        got = []
        for qtype in (1, 28):
            m = dns_ask(g, rnd, name, qtype)
            if m is not None:
                got += answer_addrs(m)[1]
        keep = FIXED_KEEP[name]
        want_drop = {x for _, x in FIXED[name]} - keep
        lines = [e for e in read_audit(audit_fd) if e.get("proto") == "dns" and e.get("name") == name]
        dropped = set(" ".join(e.get("dropped", "") for e in lines).split())
        reasons = set(" ".join(e.get("dropped_reasons", "") for e in lines).split())
        norm = {socket.inet_ntop(socket.AF_INET6, A6(x)) if ":" in x else x for x in want_drop}
        ok = set(got) == keep and norm <= dropped
        why = FIXED_WHY[name]
        if why:
            ok = ok and reasons == {why}
        say(ok, f"DNS {name}: the guest got {sorted(got)}; withheld and audited {sorted(dropped)}"
            f" ({' '.join(sorted(reasons))})")


def check_forgeries(g, rnd, resolver, audit_fd):
    for how in ("id", "question", "type", "port"):
        m = dns_ask(g, rnd, f"forge-{how}.allowed.test", timeout=6)
        rc, got = answer_addrs(m) if m else (None, [])
        say(rc == 0 and got == [NAMED], f"a forged reply (wrong {how}) before the real one: ignored,"
            f" the guest got {got} (rcode {rc})")
    m = dns_ask(g, rnd, "forge-only.allowed.test", timeout=8)
    rc, got = answer_addrs(m) if m else (None, [])
    say(rc == 2 and not got, f"only a forged reply: the guest got SERVFAIL (rcode {rc}, {got})")
    e = wait_audit(audit_fd, lambda e: e.get("reason") == "mismatched-reply", timeout=3)
    say(e is not None and e.get("count", 0) >= 1, "forged replies counted in the audit log"
        + ("" if e is None else f" ({e.get('count')} in one line)"))
    # IDs and source ports: fresh and unpredictable for every question.
    for i in range(40):
        dns_ask(g, rnd, f"good.r{i}.allowed.test")
    seen = [x for x in resolver.seen if x[3].startswith("good.r")][-40:]
    ports = {x[2] for x in seen}
    ids = [x[1] for x in seen]
    steps = sum(1 for a, b in zip(ids, ids[1:]) if (b - a) & 0xFFFF in (1, 0xFFFF))
    say(len(seen) == 40 and len(ports) >= 36 and steps <= 2 and len(set(ids)) >= 36,
        f"40 upstream questions: {len(ports)} source ports, {len(set(ids))} IDs, {steps} sequential steps")


def check_dns_rate(g, rnd, resolver, audit_fd, rate):
    """A flood of allowed questions: upstream at most --dns-rate per second
    (burst: one second's worth); the rest wait or get SERVFAIL, audited."""
    start = len(resolver.seen)
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < 3:
        q = dns_query(rnd.randrange(65536), f"flood{n}.x.allowed.test")
        g.send(ip4(G4, DNS4, UDP, udp(rnd.randrange(20000, 60000), 53, q)))
        n += 1
        if n % 20 == 0:
            time.sleep(0.02)  # about 1000 a second
    time.sleep(RESOLVER_WAIT)
    got = [x for x in resolver.seen[start:] if x[3].startswith("flood")]
    span = (got[-1][0] - t0) if got else 0
    most = 1.2 * (rate + rate * span)
    least = 0.8 * rate * span
    say(got and least <= len(got) <= most,
        f"DNS flood of {n} questions in 3 s: {len(got)} went upstream in {span:.2f} s "
        f"(--dns-rate {rate}: {least:.0f}..{most:.0f})")
    e = wait_audit(audit_fd, lambda e: e.get("proto") == "dns" and e.get("reason") in ("dns-busy", "rate-limited"))
    say(e is not None, "the questions over the cap answered SERVFAIL and audited"
        + ("" if e is None else f" ({e['reason']})"))


RESOLVER_WAIT = 6  # seconds: a question may wait 5 s in kiln-net's queue


# ---- dropped frames: every kind audited, a flood bounded ----

OTHER_MAC = bytes.fromhex("026b6c6e0002")


def drop_frames(rnd):
    """(reason, frame) for every kind of frame kiln-net drops at intake."""
    syn = lambda: tcp(rnd.randrange(30000, 60000), 80, rnd.randrange(1 << 32), 0, SYN, opts=MSS_OPT)  # noqa: E731
    bad_csum = bytearray(ip4(G4, NORULE4, TCP, syn()))
    bad_csum[-4] ^= 0x55  # the transport checksum of the last option bytes
    bad_hdr = bytearray(ip4(G4, NORULE4, UDP, udp(1000, 9, b"x")))
    bad_hdr[24] ^= 0x01  # the IPv4 header checksum
    short = bytearray(ip4(G4, NORULE4, UDP, udp(1000, 9, b"xxxx")))
    short[16:18] = struct.pack("!H", 200)  # total length beyond the frame
    fix_ip4_header(short)
    hopbyhop = bytes([TCP, 0]) + b"\x01\x04\0\0\0\0" + syn()
    frag6 = bytes([TCP, 0, 0, 1]) + b"\0\0\0\1" + syn()
    return [
        ("spoofed-mac", eth(GW_MAC, OTHER_MAC, 0x0800, ip4(G4, NORULE4, TCP, syn())[14:])),
        ("spoofed-source", ip4(A4("10.0.2.16"), NORULE4, TCP, syn())),
        ("spoofed-source", ip6(A6("fd00::16"), NORULE6, TCP, syn())),
        ("ip-fragment", ip4(G4, NORULE4, UDP, udp(1000, 9, b"frag"), frag=0x2000)),
        ("ip-fragment", ip6(G6, NORULE6, 44, frag6, fix_l4=False)),
        ("ipv6-extension-header", ip6(G6, NORULE6, 0, hopbyhop, fix_l4=False)),
        ("ip-protocol", ip4(G4, NORULE4, 47, b"\0\0\x08\0" + bytes(20), fix_l4=False)),  # GRE
        ("ip-protocol", ip4(G4, NORULE4, 132, bytes(28), fix_l4=False)),  # SCTP
        ("ip-protocol", ip4(G4, NORULE4, 50, bytes(28), fix_l4=False)),  # ESP
        ("ethertype", eth(GW_MAC, GUEST_MAC, 0x88CC, bytes(46))),
        ("ethertype", eth(GW_MAC, GUEST_MAC, 0x8100, bytes(46))),
        ("malformed", bytes(short)),
        ("malformed", GW_MAC + GUEST_MAC + b"\x08\x00" + b"\x45"),
        ("bad-checksum", bytes(bad_csum)),
        ("bad-checksum", bytes(bad_hdr)),
        ("tcp-flags", ip4(G4, NORULE4, TCP, tcp(1000, 80, 1, 0, SYN | FIN))),
        ("tcp-flags", ip4(G4, NORULE4, TCP, tcp(1000, 80, 1, 0, 0))),
        ("tcp-flags", ip4(G4, NORULE4, TCP, tcp(1000, 80, 1, 0, FIN | PSH | URG_FLAG))),
        ("icmp", ip4(G4, NORULE4, ICMP, struct.pack("!BBHHH", 8, 0, 0, 1, 1) + b"ping")),
        ("icmp", ip6(G6, NORULE6, ICMP6, struct.pack("!BBHHH", 128, 0, 0, 1, 1) + b"ping")),
        ("arp", arp(1, GUEST_MAC, A4("10.0.2.99"), bytes(6), GW4)),
        ("no-connection", ip4(G4, NORULE4, TCP, tcp(1000, 80, 1, 12345, ACK))),
    ]


def check_drops(g, rnd, audit_fd, flood):
    frames = drop_frames(rnd)
    for _, f in frames:
        g.send(f)
    for reason in sorted({r for r, _ in frames}):
        e = wait_audit(audit_fd, lambda e, r=reason: e.get("reason") == r and isinstance(e.get("count"), int)
                       and e.get("verdict") == "deny", timeout=3)
        say(e is not None, f"dropped frame '{reason}' audited"
            + ("" if e is None else f" (count {e['count']}, proto {e['proto']})"))
    if not flood:
        return
    time.sleep(1.2)  # the window above is written
    before = len(read_audit(audit_fd))
    t0 = time.monotonic()
    sent = 0
    while sent < flood:
        for _, f in frames:
            try:
                g.send(f)
            except OSError:
                pass
            sent += 1
    took = time.monotonic() - t0
    time.sleep(1.5)
    lines = read_audit(audit_fd)[before:]
    kinds = len({r for r, _ in frames})
    bound = kinds * (took + 3) + 10
    counted = sum(e.get("count", 0) for e in lines)
    say(len(lines) <= bound and counted >= 0.5 * sent,
        f"a flood of {sent} dropped frames in {took:.1f} s: {len(lines)} audit lines (at most {bound:.0f}),"
        f" counting {counted} frames")


# ---- the fuzzer ----

NAMES = ["evil.test", "allowed.test", "a.allowed.test", "b.allowed.test", "x.y.allowed.test",
         "good.allowed.test", "rebind.allowed.test", "a.b.c.d.e.f", "x" * 63 + ".test", "localhost", "",
         "xn--nxasmq6b.test", "UPPER.Test", "under_score.test", "-bad-.test"]


def base_frames(rnd, flow):
    """One valid frame of a random kind."""
    k = rnd.randrange(16)
    sport = rnd.randrange(1, 65536)
    if k == 0:
        return arp(rnd.choice([1, 2, 3]), GUEST_MAC, G4, bytes(6),
                   rnd.choice([GW4, DNS4, A4("10.0.2.100"), A4("10.0.2.99"), A4("8.8.8.8")]))
    if k == 1:
        return ns(rnd.choice([GW6, DNS6, G6, FAR6, A6("fe80::1")]), src=rnd.choice([G6, bytes(16)]))
    if k == 2:  # other ICMPv6: echo, router solicitation, MLD, errors
        t = rnd.choice([128, 129, 133, 134, 143, 1, 2, 3, 4])
        return ip6(G6, rnd.choice([GW6, FAR6, A6("ff02::2")]), ICMP6,
                   struct.pack("!BBHI", t, 0, 0, 0) + rnd.randbytes(rnd.randrange(0, 64)), hop=255)
    if k == 3:  # DNS, both families, odd types and flags
        q = dns_query(rnd.randrange(65536), rnd.choice(NAMES),
                      rnd.choice([1, 28, 16, 255, 15, 65, 0]), rnd.choice([0x0100, 0, 0x8100, 0x7900]))
        if rnd.random() < 0.2:  # EDNS OPT in the additional section
            q = q[:10] + b"\0\1" + q[12:] + b"\0\0\x29\x10\0\0\0\0\0\0\0"
        if rnd.random() < 0.5:
            return ip4(G4, DNS4, UDP, udp(sport, 53, q))
        return ip6(G6, DNS6, UDP, udp(sport, 53, q))
    if k == 4:  # SYNs: no rule, the allowed one, reserved and host addresses
        dst = rnd.choice([NORULE4, FAR4, GW4, DNS4, A4("10.0.2.100"), A4("127.0.0.1"),
                          A4("169.254.169.254"), A4("255.255.255.255"), A4("224.0.0.1")])
        return ip4(G4, dst, TCP, tcp(sport, rnd.choice([80, 443, 1, 22, 53]), rnd.randrange(1 << 32),
                                     0, SYN, opts=MSS_OPT))
    if k == 5:
        dst = rnd.choice([NORULE6, FAR6, GW6, A6("::1"), A6("fe80::1"), A6("::ffff:127.0.0.1")])
        return ip6(G6, dst, TCP, tcp(sport, rnd.choice([80, 443]), rnd.randrange(1 << 32), 0, SYN,
                                     opts=MSS_OPT))
    if k == 6:  # segments with no connection
        return ip4(G4, rnd.choice([NORULE4, FAR4]), TCP,
                   tcp(sport, 80, rnd.randrange(1 << 32), rnd.randrange(1 << 32),
                       rnd.randrange(256), rnd.randbytes(rnd.randrange(0, 100))))
    if k == 7:  # UDP, no udp rule for most
        dst = rnd.choice([NORULE4, FAR4, GW4, DNS4])
        return ip4(G4, dst, UDP, udp(sport, rnd.choice([7, 53, 123, 443]), rnd.randbytes(rnd.randrange(0, 200))))
    if k == 8:
        return ip6(G6, rnd.choice([NORULE6, FAR6]), UDP, udp(sport, rnd.choice([7, 53, 443]), rnd.randbytes(20)))
    if k == 9:  # ICMP echo
        return ip4(G4, rnd.choice([GW4, NORULE4, FAR4]), ICMP, struct.pack("!BBHHH", 8, 0, 0, 1, 1) + rnd.randbytes(32))
    if k == 10:  # IPv4 fragments
        return ip4(G4, NORULE4, rnd.choice([UDP, TCP]), rnd.randbytes(rnd.randrange(8, 100)),
                   frag=rnd.choice([0x2000, 0x0001, 0x20b9]), fix_l4=False)
    if k == 11:  # IPv6 extension headers
        nxt = rnd.choice([0, 43, 44, 60, 59, 51])
        return ip6(G6, NORULE6, nxt, bytes([TCP, 0]) + rnd.randbytes(6) + tcp(sport, 80, 1, 0, SYN),
                   fix_l4=False)
    if k == 12:  # IPv4 options
        return ip4(G4, NORULE4, TCP, tcp(sport, 80, 1, 0, SYN), opts=b"\x01" * 4 * rnd.randrange(1, 11))
    if k == 13:  # spoofed sources
        return ip4(A4("10.0.2.16"), NORULE4, TCP, tcp(sport, 80, 1, 0, SYN))
    if k == 14 and flow:  # segments of the live flows
        far, port, fsport, snd, rcv = rnd.choice(flow)
        if rnd.random() < 0.3:  # part of a request head or a hello
            data = rnd.choice([http_request("good.allowed.test"), client_hello("good.allowed.test")])
            cut = rnd.randrange(0, len(data))
            return ip4(G4, far, TCP, tcp(fsport, port, snd + cut, rcv, PSH | ACK, data[cut:cut + 100]))
        return ip4(G4, far, TCP, tcp(fsport, port, snd + rnd.randrange(-5000, 5000),
                                      rcv + rnd.randrange(-5000, 5000),
                                      rnd.choice([ACK, PSH | ACK, ACK | FIN, SYN, ACK | URG_FLAG, 0]),
                                      rnd.randbytes(rnd.randrange(0, 600)), win=rnd.randrange(65536)))
    return eth(rnd.choice([GW_MAC, BCAST]), GUEST_MAC, rnd.choice([0x88CC, 0x8100, 0x0842, 0x9000]),
               rnd.randbytes(rnd.randrange(0, 200)))



def fix_ip4_header(f):
    if len(f) >= 34 and f[12:14] == b"\x08\x00":
        ihl = (f[14] & 15) * 4
        if ihl >= 20 and 14 + ihl <= len(f):
            f[24:26] = b"\0\0"
            f[24:26] = struct.pack("!H", csum(bytes(f[14:14 + ihl])))


def fix_l4_csum(f):
    """Recompute the transport checksum of an IPv4/IPv6 TCP/UDP/ICMP frame
    (so that mutations reach past kiln-net's checksum check)."""
    try:
        if f[12:14] == b"\x08\x00":
            ihl, tot = (f[14] & 15) * 4, struct.unpack("!H", f[16:18])[0]
            src, dst, proto, l4 = bytes(f[26:30]), bytes(f[30:34]), f[23], bytes(f[14 + ihl:14 + tot])
            start = 14 + ihl
        elif f[12:14] == b"\x86\xdd":
            pl = struct.unpack("!H", f[18:20])[0]
            src, dst, proto, l4 = bytes(f[22:38]), bytes(f[38:54]), f[20], bytes(f[54:54 + pl])
            start = 54
        else:
            return
        if proto not in (TCP, UDP, ICMP, ICMP6) or len(l4) < 8 or start + len(l4) > len(f):
            return
        f[start:start + len(l4)] = l4_fill_csum(src, dst, proto, l4)
    except (IndexError, struct.error):
        return


def mutate(rnd, f, flow):
    f = bytearray(f)
    how = rnd.randrange(12)
    if how == 0:  # random bytes, random length
        return rnd.randbytes(rnd.randrange(1, 2001))
    if how == 1:  # oversized
        size = rnd.choice([rnd.randrange(1515, 2100), rnd.randrange(2100, 9000),
                           rnd.randrange(9000, 65000)])
        return bytes(f) + rnd.randbytes(max(1, size - len(f)))
    if how == 2:  # cut
        return bytes(f[:rnd.randrange(1, len(f) + 1)])
    if how == 3:  # grown with junk, up to 2000
        return bytes(f) + rnd.randbytes(rnd.randrange(1, max(2, 2001 - len(f))))
    if how == 4:
        return bytes(f)  # as is
    # bit flips and byte writes, often with the IPv4 header checksum repaired
    for _ in range(rnd.randrange(1, 9)):
        i = rnd.randrange(len(f))
        if rnd.random() < 0.6:
            f[i] ^= 1 << rnd.randrange(8)
        else:
            f[i] = rnd.randrange(256)
    if rnd.random() < 0.7:
        fix_ip4_header(f)
    if rnd.random() < 0.5:
        fix_l4_csum(f)
    if how == 5:
        f = f[:rnd.randrange(1, len(f) + 1)]
    return bytes(f)


def fuzz(g, rnd, count, flow):
    sent = bytes_sent = 0
    kinds = collections.Counter()
    start = time.monotonic()
    for i in range(count):
        # For the third quarter the guest reads nothing: kiln-net's socket
        # and its queue fill up, then it must drop, and recover afterwards.
        if i == count // 2:
            g.paused.set()
        elif i == count * 3 // 4:
            g.paused.clear()
        if i % 40 == 0:  # a clean query for an allowed name: the resolver's answers are fuzzed too
            name = f"{rnd.randrange(1 << 30):x}.allowed.test"
            q = dns_query(rnd.randrange(65536), name, rnd.choice([1, 1, 28, 15]))
            frame = ip4(G4, DNS4, UDP, udp(rnd.randrange(1, 65536), 53, q))
        else:
            frame = mutate(rnd, base_frames(rnd, flow), flow)
        if not frame:
            continue
        try:
            g.send(frame)
        except OSError as e:
            if e.errno == 90:  # EMSGSIZE: bigger than the socket takes; fine
                kinds["emsgsize"] += 1
                continue
            note(f"send failed after {sent} frames: {e}")
            g.paused.clear()
            return sent, False
        sent += 1
        bytes_sent += len(frame)
        kinds["short" if len(frame) < 14 else "oversized" if len(frame) > 1514 else "normal"] += 1
    g.paused.clear()
    note(f"fuzz: {sent} frames, {bytes_sent} bytes in {time.monotonic() - start:.2f} s "
         f"({dict(kinds)})")
    return sent, True


# ---- main ----

def read_lines(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    data = b""
    while True:
        d = os.read(fd, 1 << 20)
        if not d:
            break
        data += d
    return data


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("knet")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--no-seccomp", action="store_true")
    ap.add_argument("--no-jail", action="store_true")
    ap.add_argument("--rate", type=int, help="pass --rate BYTES to kiln-net")
    ap.add_argument("--dns-rate", type=int, help="pass --dns-rate N to kiln-net, and flood DNS to check it")
    ap.add_argument("--drop-flood", type=int, default=0, metavar="N",
                    help="after auditing each kind of dropped frame once, send N more")
    ap.add_argument("--netns", action="store_true",
                    help="we run in a fresh network namespace: add test addresses and servers")
    ap.add_argument("--keep", metavar="DIR", help="write kiln-net's audit log, status line and stderr there")
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else int.from_bytes(os.urandom(4), "big")
    note(f"seed {seed} (rerun with --seed {seed})")
    rnd = random.Random(seed)
    random.seed(seed)

    servers = resolver = None
    udp_new_ok = False
    if a.netns:
        servers = setup_netns()
        resolver = Resolver(seed)

    vmm, guest_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    audit = tempfile.TemporaryFile()
    status = tempfile.TemporaryFile()
    errf = tempfile.TemporaryFile()
    args = [a.knet, "--fd", str(vmm.fileno()), "--allow", "203.0.113.7:80",
            "--audit-fd", str(audit.fileno()), "--status-fd", str(status.fileno()),
            "--resolver", "127.0.0.1:5300" if a.netns else "127.0.0.1:1"]
    if a.netns:
        args += ["--allow", "[2001:db8::7]:80", "--allow", "udp:203.0.113.7:7",
                 "--allow", "*.allowed.test"]
        for rule in HOST_NET_RULES:
            args += ["--allow", rule]
    if a.no_seccomp:
        args.append("--no-seccomp")
    if a.no_jail:
        args.append("--no-jail")
    if a.rate:
        args += ["--rate", str(a.rate)]
    if a.dns_rate:
        args += ["--dns-rate", str(a.dns_rate)]
    note("running " + " ".join(args[1:]))
    env = dict(os.environ)
    # LeakSanitizer cannot stop the world under kiln-net's seccomp filter and
    # without /proc in its jail: leaks are not what this test looks for.
    env.setdefault("ASAN_OPTIONS", "detect_leaks=0:abort_on_error=0")
    t0 = time.monotonic()
    proc = subprocess.Popen(args, pass_fds=(vmm.fileno(), audit.fileno(), status.fileno()),
                            stdin=subprocess.DEVNULL, stdout=errf, stderr=errf, env=env)
    vmm.close()
    g = Guest(guest_sock)

    sanity(g, "before fuzz", rnd)
    check_drops(g, rnd, audit.fileno(), a.drop_flood)
    live = []
    if servers and a.rate:
        # Both buckets start full (a fifth of a second, at least 4096 bytes):
        # the rest of the reply waits for tokens.
        want = reply_for(REQUEST)
        least = max(0, len(want) - max(4096, a.rate // 5)) / a.rate
        t = time.monotonic()
        check_session(g, 4, FAR4, 80, REQUEST, want, rnd, f"--rate {a.rate}: a whole connection")
        took = time.monotonic() - t
        say(took >= 0.9 * least, f"--rate {a.rate}: {len(want)} bytes took {took:.2f} s (at least {least:.2f} s)")
    if servers:
        netns_checks(g, rnd, servers, "before fuzz")
        check_host_addresses(g, rnd, audit.fileno())
        check_answers(g, rnd, audit.fileno())
        check_forgeries(g, rnd, resolver, audit.fileno())
        if a.dns_rate:
            check_dns_rate(g, rnd, resolver, audit.fileno(), a.dns_rate)
        # A guest may announce more than an IPv6 frame can carry (MSS 1460):
        # slirp must still never send it segments that do not fit in 1514 bytes.
        check_session(g, 6, FAR6, 80, REQUEST, reply_for(REQUEST), rnd,
                      "IPv6 connection whose SYN announces MSS 1460", mss=1460)
        check_session(g, 6, FAR6, 80, REQUEST, reply_for(REQUEST), rnd,
                      "IPv6 connection whose SYN has no MSS option", mss=-1)
        live = live_flows(g, rnd)
        say(len(live) == 3, f"{len(live)} live flows to fuzz against (spliced, Host held, SNI held)")

    sent, sent_ok = fuzz(g, rnd, a.frames, live)
    say(sent_ok, f"kiln-net took {sent} fuzz frames")
    time.sleep(0.5)
    say(proc.poll() is None, "kiln-net alive after the fuzz"
        + ("" if proc.poll() is None else f" (exit status {proc.returncode})"))
    sanity(g, "after fuzz", rnd)
    if servers:
        netns_checks(g, rnd, servers, "after fuzz")
        # More UDP flows than kiln-net keeps (64, each until idle for 30 s):
        # a new one must still get through, or at least be audited (checked
        # below) rather than dropped without a word.
        for sport in range(5000, 5070):
            g.send(ip4(G4, FAR4, UDP, udp(sport, 7, b"fill")))
        time.sleep(0.3)
        udp_new_ok = udp_round_trip(g, 5070)
        note(f"resolver: {resolver.queries} queries, modes {dict(resolver.modes)}; "
             f"servers: {servers.accepted} connections")

    frames_in = g.received
    say(not g.bad, f"every frame from kiln-net well-formed ({frames_in} frames)"
        + ("" if not g.bad else ": " + "; ".join(g.bad[:5])))

    # Hang up like the VMM does.
    guest_sock.shutdown(socket.SHUT_RDWR)
    guest_sock.close()
    try:
        rc = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
        note("kiln-net did not exit within 30 s of the hang-up: killed")
    note(f"kiln-net ran {time.monotonic() - t0:.1f} s")
    stderr = read_lines(errf.fileno()).decode(errors="replace")
    for line in stderr.splitlines()[:int(os.environ.get("KNET_STDERR_LINES", "20"))]:
        note("stderr: " + line)
    say(rc == 0, f"kiln-net exits 0 after the hang-up (status {rc})")
    say("seccomp violation" not in stderr, "no seccomp violation")
    say("Sanitizer" not in stderr and "runtime error" not in stderr, "no sanitizer report")

    if a.keep:
        os.makedirs(a.keep, exist_ok=True)
        for name, f in (("audit.jsonl", audit), ("status.json", status), ("stderr.txt", errf)):
            with open(os.path.join(a.keep, name), "wb") as out:
                out.write(read_lines(f.fileno()))
    st = read_lines(status.fileno()).decode(errors="replace")
    lines = st.splitlines()
    counters = None
    if len(lines) == 1 and st.endswith("\n"):
        try:
            counters = json.loads(lines[0])
        except ValueError:
            pass
    keys = ("allowed", "blocked", "dns_queries", "bytes_up", "bytes_down")
    ok = isinstance(counters, dict) and all(isinstance(counters.get(k), int) for k in keys)
    say(ok, f"exactly one JSON status line with {', '.join(keys)} (got {st!r:.200})")

    text = read_lines(audit.fileno()).decode(errors="replace")
    events, suppressed, badlines = [], 0, []
    for line in text.splitlines():
        try:
            o = json.loads(line)
        except ValueError:
            badlines.append(line)
            continue
        if not isinstance(o, dict) or not isinstance(o.get("time"), str):
            badlines.append(line)
        elif o.get("event") == "suppressed" and isinstance(o.get("count"), int):
            suppressed += o["count"]
        elif all(isinstance(o.get(k), str) for k in ("proto", "verdict", "reason")) and \
                o["proto"] in ("tcp", "udp", "dns", "icmp", "frame") and \
                o["verdict"] in ("allow", "deny", "error"):
            events.append(o)
        else:
            badlines.append(line)
    say(text.endswith("\n") and not badlines,
        f"audit: {len(events)} event lines, {suppressed} suppressed, all JSON with "
        f"time/proto/verdict/reason" + ("" if not badlines else f"; bad: {badlines[:3]}"))
    say(any(e["proto"] == "dns" and e.get("name") == "evil.test" and e["verdict"] == "deny"
            for e in events), "audit: the refused DNS query for evil.test")
    say(any(e["proto"] == "tcp" and e.get("dst") == "192.0.2.99" and e.get("port") == 80 and
            e["verdict"] == "deny" and e["reason"] == "no-rule" for e in events),
        "audit: the SYN to 192.0.2.99:80, deny no-rule")
    if ok:
        say(counters["dns_queries"] >= 4 and counters["blocked"] >= 4,
            f"counters count the probes ({counters})")
        total = counters["allowed"] + counters["blocked"]
        single = [e for e in events if "count" not in e]
        dropped = sum(e["count"] for e in events if "count" in e and e["verdict"] == "deny")
        say(total >= len(single) + dropped + suppressed,
            f"counters cover every audit event ({total} >= {len(single)} lines + {dropped} counted in "
            f"drop lines + {suppressed} suppressed)")
    if servers:
        allowed = [e for e in events if e["proto"] == "tcp" and e["verdict"] == "allow"
                   and e.get("bytes_up") == len(REQUEST)
                   and e.get("bytes_down") == len(reply_for(REQUEST))]
        say(len(allowed) >= 4, f"audit: the whole connections with exact byte counts ({len(allowed)} lines)")
        if ok:
            say(counters["bytes_up"] >= 4 * len(REQUEST) and counters["bytes_down"] >= 4 * len(reply_for(REQUEST)),
                "status: bytes_up/bytes_down include the connections")
        say(udp_new_ok or any(e["proto"] == "udp" and e["verdict"] == "error" for e in events),
            "after fuzz: a 71st UDP flow (kiln-net keeps 64): relayed, or audited as an error")
        say(any(e["proto"] == "dns" and e.get("name") == "rebind.allowed.test" and e["reason"] == "rebinding"
                and "127.0.0.1" in e.get("dropped", "") for e in events),
            "audit: the rebinding answer, 127.0.0.1 dropped")
        for what in ("Host", "SNI"):
            port = 80 if what == "Host" else 443
            say(any(e["proto"] == "tcp" and e.get("dst") == NAMED and e.get("port") == port
                    and e.get("name") == "evil.test" and e["verdict"] == "deny" for e in events),
                f"audit: the {what} evil.test connection denied, with the name")
    note(f"{results['pass']} passed, {results['fail']} failed")
    return 1 if results["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
