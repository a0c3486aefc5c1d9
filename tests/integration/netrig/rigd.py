#!/usr/bin/env python3
"""kiln netrig daemon: every server of the test network rig, in one process.

Usage: rigd.py DIR WAIT_SECONDS   (started by rig.sh's rig_up, as root; see
README.md). rig_up starts it first, so that Python's start overlaps with the
rest of the setup, and writes "go" to its stdin once the network namespace
"kinet", its addresses and the certificates exist.

Then it binds the host-netns services (127.0.0.1:8088, 198.51.100.1:8089), enters
/run/netns/kinet just long enough to bind the fake internet's servers (DNS,
HTTP, HTTPS, TCP line servers, UDP echo), comes back, starts one thread per
listening socket, and then probes every server from the host netns through the
veth. Its verdict goes to stdout: "ok", or "fail: REASON" (and it exits).

One process instead of several because each Python start costs about a second
on the emulated host. Every thread blocks in accept/recv: idle means 0% CPU.

Connections from the probe's own source addresses (PROBE_SOURCES) are never
logged, so the logs hold only what the tests did.
"""
import contextlib
import ctypes
import itertools
import os
import socket
import ssl
import struct
import sys
import threading
import time

# The address plan: keep in sync with rig.sh and README.md.
KINET = "/run/netns/kinet"
HTTP_ADDRS = ["11.0.2.10", "2a00:11::10", "11.0.2.20", "2a00:11::20", "11.0.2.30", "11.0.2.40",
              "192.0.2.10", "2001:db8::10", "169.254.169.254", "203.0.113.7"]
DNS_ADDRS = ["192.0.2.53", "2001:db8::53"]
BARE_IP = "203.0.113.7"
LINE_PORTS = [8080, 8081]
UDP_ADDRS = ["203.0.113.7", "192.0.2.10", "2001:db8::10", "11.0.2.10"]
UDP_PORT = 9999
# In the host netns: loopback, and every address of the host (IPv4 and IPv6).
HOST_SERVICES = [("127.0.0.1", 8088, "loop.log"), ("0.0.0.0", 8089, "hostaddr.log"),
                 ("::", 8089, "hostaddr.log")]
HOST_PROBES = [("127.0.0.1", 8088), ("198.51.100.1", 8089), ("2001:db8:1::1", 8089)]
FORGED = "6.6.6.6"         # what every forged DNS reply claims
PROBE_V4, PROBE_V6, PROBE_LOOP = "198.51.100.3", "2001:db8:1::3", "127.0.0.2"
PROBE_SOURCES = {PROBE_V4, PROBE_V6, PROBE_LOOP}

IDLE_TIMEOUT = 30          # seconds a connection may sit idle
MAX_BYTES = 200 << 20      # largest /bytes/N
MAX_HEAD = 64 << 10        # largest HTTP request head
CHUNK = bytes(256 << 10)   # what /bytes/N streams, over and over

TTL = 60
# The zone. Names are lower case, without the final dot. CNAMEs are followed.
ZONE = {
    "allowed.test": {"A": ["11.0.2.10"], "AAAA": ["2a00:11::10"]},
    "www.allowed.test": {"A": ["11.0.2.10"]},
    "denied.test": {"A": ["11.0.2.20"], "AAAA": ["2a00:11::20"]},
    "other.test": {"A": ["11.0.2.30"]},
    "rate.test": {"A": ["11.0.2.40"]},
    "doc.test": {"A": ["192.0.2.10"], "AAAA": ["2001:db8::10"]},
    "rebind.test": {"A": ["127.0.0.1"]},
    "rebind6.test": {"AAAA": ["::1"]},
    "meta.test": {"A": ["169.254.169.254"]},
    "cname.test": {"CNAME": "allowed.test"},
}
QTYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT",
          28: "AAAA", 33: "SRV", 64: "SVCB", 65: "HTTPS", 255: "ANY"}
TYPE_CODE = {"A": 1, "CNAME": 5, "AAAA": 28}


# --- small helpers ------------------------------------------------------------

class Log:
    """An append-only log file, one line per event, flushed at once."""

    def __init__(self, path):
        self._f = open(path, "a", buffering=1)
        self._lock = threading.Lock()

    def line(self, text):
        with self._lock:
            self._f.write(text + "\n")
            self._f.flush()


def family(ip):
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def hostport(sockaddr):
    """'1.2.3.4:80' or '[2001:db8::1]:80'."""
    ip, port = sockaddr[0], sockaddr[1]
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def spawn(fn, *args):
    threading.Thread(target=fn, args=args, daemon=True).start()


def _setns(fd):
    if hasattr(os, "setns"):                      # Python 3.12+
        os.setns(fd, os.CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, 0x40000000) != 0:           # CLONE_NEWNET
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def in_netns(path):
    """Run the block in another network namespace (this thread only).
    Sockets keep the namespace they were created in."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(path, os.O_RDONLY)
    try:
        _setns(target)
        yield
    finally:
        _setns(home)
        os.close(home)
        os.close(target)


def tcp_listener(ip, port):
    s = socket.socket(family(ip), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if ip == "::":
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((ip, port))
    s.listen(128)
    return s


def udp_socket(ip, port):
    s = socket.socket(family(ip), socket.SOCK_DGRAM)
    s.bind((ip, port))
    return s


def recv_until(conn, buf, marker, limit):
    """Reads until marker is in buf; returns buf, or None at EOF or over limit."""
    while marker not in buf:
        if len(buf) > limit:
            return None
        data = conn.recv()
        if not data:
            return None
        buf += data
    return buf


# --- TCP connections: byte counting, TLS, the accept loop ---------------------------

class Conn:
    """An accepted TCP socket that counts the payload bytes it receives.
    The FIN is not a byte; a reset loses nothing that had already arrived."""

    sni = "-"

    def __init__(self, sock):
        self.sock = sock
        self.bytes_in = 0
        self.first = self.last = None  # wall-clock times of the first and last byte

    def raw_recv(self):
        data = self.sock.recv(65536)
        if data:
            self.last = time.time()
            self.first = self.first or self.last
        self.bytes_in += len(data)
        return data

    def recv(self):
        return self.raw_recv()

    def sendall(self, data):
        self.sock.sendall(data)

    def drain(self):
        """Counts what arrived but was never read, without waiting."""
        try:
            self.sock.setblocking(False)
            while self.raw_recv():
                pass
        except OSError:
            pass


class TlsConn(Conn):
    """TLS through memory BIOs, so that we read every raw byte ourselves:
    bytes_in counts TLS records (the ClientHello too), not the plaintext."""

    def __init__(self, sock, ctx):
        super().__init__(sock)
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = ctx.wrap_bio(self._in, self._out, server_side=True)

    def _do(self, op, *args):
        """Runs op, feeding it from the socket until it needs no more input,
        and sends whatever it produced."""
        while True:
            try:
                result = op(*args)
                self._flush()
                return result
            except ssl.SSLWantReadError:
                self._flush()
                data = self.raw_recv()
                if data:
                    self._in.write(data)
                else:
                    self._in.write_eof()

    def _flush(self):
        data = self._out.read()
        if data:
            self.sock.sendall(data)

    def handshake(self):
        self._do(self._tls.do_handshake)
        self.sni = getattr(self._tls, "rig_sni", None) or "-"

    def recv(self):
        try:
            return self._do(self._tls.read, 65536)
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return b""

    def sendall(self, data):
        view = memoryview(data)
        while view:
            view = view[self._do(self._tls.write, view):]


def on_sni(tls_object, name, _ctx):
    """Records the ClientHello's server name (None without one)."""
    tls_object.rig_sni = name


def tls_context(d):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(d, "srv.pem"), os.path.join(d, "srv.key"))
    ctx.sni_callback = on_sni
    return ctx


def accept_loop(lsock, handler, log, tls_ctx=None, timing=None):
    """One thread per listening socket; one thread per connection."""
    while True:
        try:
            sock, peer = lsock.accept()
        except OSError:
            time.sleep(0.05)          # EMFILE, ECONNABORTED: try again
            continue
        spawn(serve_conn, sock, peer, handler, log, tls_ctx, timing)


def serve_conn(sock, peer, handler, log, tls_ctx, timing=None):
    """Runs handler(conn), then logs one line with the bytes received
    (unless log is None)."""
    local = sock.getsockname()
    conn = TlsConn(sock, tls_ctx) if tls_ctx else Conn(sock)
    try:
        sock.settimeout(IDLE_TIMEOUT)
        if tls_ctx:
            conn.handshake()
        handler(conn)
    except (OSError, ValueError):     # ssl.SSLError is an OSError
        pass
    finally:
        conn.drain()
        sock.close()
        if log is not None and peer[0] not in PROBE_SOURCES:
            log.line(f"accept {hostport(local)} from {hostport(peer)} bytes_in={conn.bytes_in}")
        if timing is not None and peer[0] not in PROBE_SOURCES and conn.first:
            timing.line(f"conn {hostport(local)} from {hostport(peer)} bytes_in={conn.bytes_in} "
                        f"first={conn.first:.3f} last={conn.last:.3f}")


def line_handler(conn):
    """'port N' at once, then echoes whatever arrives until EOF."""
    conn.sendall(f"port {conn.sock.getsockname()[1]}\n".encode())
    while True:
        data = conn.recv()
        if not data:
            return
        conn.sendall(data)


# --- HTTP and HTTPS ----------------------------------------------------------------

def parse_head(head):
    """(method, target, version, {lower-case name: value}); ValueError if bad."""
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return method, target, version, headers


def response_head(status, length, keep, ctype="text/plain"):
    return (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {length}\r\n"
            f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n").encode()


def send_bytes(conn, n, keep, head_only):
    """Streams n zero bytes without building them in memory."""
    conn.sendall(response_head("200 OK", n, keep, "application/octet-stream"))
    view = memoryview(CHUNK)
    while n > 0 and not head_only:
        part = view[:min(n, len(CHUNK))]
        conn.sendall(part)
        n -= len(part)


def http_request(conn, buf):
    """Serves one request from buf + conn. Returns (keep going?, leftover)."""
    buf = recv_until(conn, buf, b"\r\n\r\n", MAX_HEAD)
    if buf is None:
        return False, b""
    head, _, buf = buf.partition(b"\r\n\r\n")
    try:
        method, target, version, headers = parse_head(head)
        body_len = int(headers.get("content-length", "0"))
    except ValueError:
        conn.sendall(response_head("400 Bad Request", 12, False) + b"bad request\n")
        return False, b""
    while len(buf) < body_len:            # a request body: read and drop
        data = conn.recv()
        if not data:
            return False, b""
        buf += data
    buf = buf[body_len:]
    keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    head_only = method == "HEAD"
    if target.startswith("/bytes/"):
        n = target[len("/bytes/"):]
        if not n.isdigit() or int(n) > MAX_BYTES:
            conn.sendall(response_head("400 Bad Request", 9, False) + (b"" if head_only else b"bad size\n"))
            return False, b""
        send_bytes(conn, int(n), keep, head_only)
    else:
        ip = conn.sock.getsockname()[0]
        body = f"hello from {ip} host={headers.get('host', '-')} sni={conn.sni}\n".encode()
        conn.sendall(response_head("200 OK", len(body), keep) + (b"" if head_only else body))
    return keep, buf


def http_handler(conn):
    """HTTP/1.x with keep-alive. GET /bytes/N: N bytes; anything else: the
    hello line naming the server address, Host and SNI."""
    keep, buf = True, b""
    while keep:
        keep, buf = http_request(conn, buf)


# --- DNS ---------------------------------------------------------------------------

def read_qname(msg, off):
    """Reads an uncompressed name; returns (lower-case name, offset after)."""
    labels = []
    while True:
        n = msg[off]
        if n == 0:
            return ".".join(labels).lower(), off + 1
        if n & 0xC0:
            raise ValueError("compressed question")
        labels.append(msg[off + 1:off + 1 + n].decode("ascii", "replace"))
        off += 1 + n


def encode_name(name):
    return b"".join(bytes([len(l)]) + l.encode() for l in name.split(".") if l) + b"\0"


def encode_rr(owner, rtype, value):
    if rtype == "CNAME":
        rdata = encode_name(value)
    else:
        rdata = socket.inet_pton(family(value), value)
    return encode_name(owner) + struct.pack("!HHIH", TYPE_CODE[rtype], 1, TTL, len(rdata)) + rdata


def encoded(name):
    """The address a name under ip.test, ipp.test or ipq.test spells in its
    first label, as (type, text): 10-1-2-3 is A 10.1.2.3; with x for each
    colon, 64xff9bxxa00x1 is AAAA 64:ff9b::a00:1. None otherwise."""
    label, _, rest = name.partition(".")
    if rest not in ("ip.test", "ipp.test", "ipq.test"):
        return None
    text = label.replace("-", ".") if "x" not in label else label.replace("x", ":")
    for fam, rtype in ((socket.AF_INET, "A"), (socket.AF_INET6, "AAAA")):
        try:
            socket.inet_pton(fam, text)
            return rtype, text
        except OSError:
            pass
    return None


def lookup(name, qtype, d):
    """(rcode, [answer records]) from ZONE, following CNAMEs; names that
    spell an address (encoded()); flag.test once DIR/flag exists."""
    enc = encoded(name)
    if enc:
        return 0, [encode_rr(name, qtype, enc[1])] if enc[0] == qtype else []
    if name == "flag.test":
        return (0, [encode_rr(name, "A", "11.0.2.10")] if qtype == "A" else []) \
            if os.path.exists(os.path.join(d, "flag")) else (3, [])
    if name not in ZONE:
        return 3, []
    answers = []
    for _ in range(8):
        entry = ZONE.get(name, {})
        if "CNAME" in entry:
            answers.append(encode_rr(name, "CNAME", entry["CNAME"]))
            if qtype == "CNAME":
                break
            name = entry["CNAME"]
            continue
        answers += [encode_rr(name, qtype, v) for v in entry.get(qtype, [])]
        break
    return 0, answers


def dns_answer(query, peer, log, d):
    """The response to one query, or None to stay silent."""
    if len(query) < 12 or query[2] & 0x80:
        return None
    qid, flags, qdcount = struct.unpack_from("!HHH", query)
    rd = flags & 0x0100
    try:
        if qdcount != 1:
            raise ValueError("qdcount")
        qname, off = read_qname(query, 12)
        qtype_n, qclass = struct.unpack_from("!HH", query, off)
        question = query[12:off + 4]
    except (ValueError, IndexError, struct.error):
        return struct.pack("!HHHHHH", qid, 0x8000 | rd | 1, 0, 0, 0, 0)   # FORMERR
    qtype = QTYPES.get(qtype_n, f"TYPE{qtype_n}")
    if peer[0] not in PROBE_SOURCES:
        log.line(f"{qname} {qtype} id={qid} port={peer[1]} len={len(query)} t={time.time():.3f}")
    if qclass != 1:
        rcode, answers = 5, []                                        # REFUSED
    else:
        rcode, answers = lookup(qname, qtype, d)
    hdr = struct.pack("!HHHHHH", qid, 0x8400 | rd | 0x0080 | rcode, 1, len(answers), 0, 0)
    return hdr + question + b"".join(answers)


def forgeries(query, qname, how):
    """(from our port?, reply) pairs for a *.forge.test query: a forged reply
    naming FORGED first (wrong ID, question, type; or right ones from another
    port), then the real answer (11.0.2.10); "only": the forgery alone."""
    qid, flags = struct.unpack_from("!HH", query)
    rd = flags & 0x0100
    _, off = read_qname(query, 12)
    qtype_n = struct.unpack_from("!H", query, off)[0]
    question = query[12:off + 4]
    def reply(i, q, addr):
        return struct.pack("!HHHHHH", i, 0x8480 | rd, 1, 1, 0, 0) + q + \
            b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, TTL, 4) + socket.inet_aton(addr)
    real = reply(qid, question, "11.0.2.10") if qtype_n == 1 else \
        struct.pack("!HHHHHH", qid, 0x8480 | rd, 1, 0, 0, 0) + question
    if how == "id":
        return [(True, reply(qid ^ 0x0101, question, FORGED)), (True, real)]
    if how == "q":
        other = encode_name("other.forge.test") + question[-4:]
        return [(True, reply(qid, other, FORGED)), (True, real)]
    if how == "type":
        return [(True, reply(qid, question[:-4] + struct.pack("!HH", 28, 1), FORGED)), (True, real)]
    if how == "port":
        return [(False, reply(qid, question, FORGED)), (True, real)]
    if how == "only":
        return [(True, reply(qid ^ 0x8000, question, FORGED))]
    return [(True, real)]


def dns_udp_loop(sock, log, d, other):
    """other: a socket on another port, for the forgeries "from elsewhere"."""
    while True:
        try:
            query, peer = sock.recvfrom(4096)
            resp = dns_answer(query, peer, log, d)
            try:
                qname = read_qname(query, 12)[0] if len(query) > 12 else ""
            except (ValueError, IndexError):
                qname = ""
            if resp and qname.endswith(".forge.test") and resp[3] & 15 != 1:
                for ours, out in forgeries(query, qname, qname.split(".")[0]):
                    (sock if ours else other).sendto(out, peer)
            elif resp:
                sock.sendto(resp, peer)
        except (OSError, ValueError, IndexError, struct.error):
            time.sleep(0.05)


def dns_tcp_handler_for(log, d):
    """A TCP connection handler: length-prefixed queries until EOF."""
    def handler(conn):
        peer = conn.sock.getpeername()
        buf = b""
        while True:
            while len(buf) < 2 or len(buf) < 2 + struct.unpack_from("!H", buf)[0]:
                data = conn.recv()
                if not data:
                    return
                buf += data
            n = struct.unpack_from("!H", buf)[0]
            resp = dns_answer(buf[2:2 + n], peer, log, d)
            buf = buf[2 + n:]
            if resp:
                conn.sendall(struct.pack("!H", len(resp)) + resp)
    return handler


# --- UDP echo ----------------------------------------------------------------------

def udp_echo_loop(sock, log):
    local_ip = sock.getsockname()[0]
    while True:
        try:
            data, peer = sock.recvfrom(65536)
            if peer[0] not in PROBE_SOURCES:
                log.line(f"udp {hostport(sock.getsockname())} from {hostport(peer)} bytes={len(data)}")
            sock.sendto(f"echo from {local_ip} ".encode() + data, peer)
        except OSError:
            time.sleep(0.05)


# --- setting up ----------------------------------------------------------------------

def bind_host(d):
    """[(thread function, args)] for the host-netns services."""
    jobs, logs = [], {}
    for ip, port, name in HOST_SERVICES:
        logs.setdefault(name, Log(os.path.join(d, name)))
        jobs.append((accept_loop, (tcp_listener(ip, port), line_handler, logs[name])))
    return jobs


def bind_kinet(d):
    """[(thread function, args)] for the fake internet's servers."""
    srv, dns, udp, timing = (Log(os.path.join(d, n))
                             for n in ("srv.log", "dns.log", "udp.log", "timing.log"))
    tls = tls_context(d)
    dns_tcp = dns_tcp_handler_for(dns, d)
    jobs = []
    for ip in ("0.0.0.0", "::"):
        jobs.append((accept_loop, (tcp_listener(ip, 80), http_handler, srv, None, timing)))
        jobs.append((accept_loop, (tcp_listener(ip, 443), http_handler, srv, tls, timing)))
    for ip in DNS_ADDRS:
        jobs.append((dns_udp_loop, (udp_socket(ip, 53), dns, d, udp_socket(ip, 5353))))
        jobs.append((accept_loop, (tcp_listener(ip, 53), dns_tcp, None)))
    for port in LINE_PORTS:
        jobs.append((accept_loop, (tcp_listener(BARE_IP, port), line_handler, srv)))
    for ip in UDP_ADDRS:
        jobs.append((udp_echo_loop, (udp_socket(ip, UDP_PORT), udp)))
    return jobs


# --- the readiness probe (runs in the host netns, through the veth) -----------------

def probe_src(ip):
    return PROBE_LOOP if ip.startswith("127.") else PROBE_V6 if ":" in ip else PROBE_V4


def probe_connect(ip, port):
    s = socket.socket(family(ip), socket.SOCK_STREAM)
    s.settimeout(2)
    s.bind((probe_src(ip), 0))
    s.connect((ip, port))
    return s


def read_all(s):
    out = b""
    while True:
        data = s.recv(65536)
        if not data:
            return out
        out += data


def probe_http(ip, tls_ctx=None):
    s = probe_connect(ip, 443 if tls_ctx else 80)
    if tls_ctx:
        s = tls_ctx.wrap_socket(s, server_hostname="allowed.test")
    with s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n")
        return f"hello from {ip} ".encode() in read_all(s)


def probe_line(ip, port):
    with probe_connect(ip, port) as s:
        return s.recv(100) == f"port {port}\n".encode()


# A query for allowed.test A, and what its answer must hold.
PROBE_QUERY = b"\0\1\1\0\0\1\0\0\0\0\0\0\7allowed\4test\0\0\1\0\1"
PROBE_ANSWER = bytes([11, 0, 2, 10])


def probe_udp(ip, port, payload, want):
    with socket.socket(family(ip), socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.bind((probe_src(ip), 0))
        s.sendto(payload, (ip, port))
        return want in s.recv(4096)


def probe_dns_tcp(ip):
    with probe_connect(ip, 53) as s:
        s.sendall(struct.pack("!H", len(PROBE_QUERY)) + PROBE_QUERY)
        return PROBE_ANSWER in s.recv(4096)


def probes(d):
    """[(description, function, args)]: everything rig_up promises."""
    cafile = os.path.join(d, "ca.pem")
    client = ssl.create_default_context(cafile=cafile)
    checks = [(f"http {ip}", probe_http, (ip,)) for ip in HTTP_ADDRS]
    checks += [(f"https {ip}", probe_http, (ip, client)) for ip in ("11.0.2.10", "2a00:11::10")]
    checks += [(f"dns udp {ip}", probe_udp, (ip, 53, PROBE_QUERY, PROBE_ANSWER)) for ip in DNS_ADDRS]
    checks += [(f"dns tcp {ip}", probe_dns_tcp, (ip,)) for ip in DNS_ADDRS]
    checks += [(f"tcp {BARE_IP}:{p}", probe_line, (BARE_IP, p)) for p in LINE_PORTS]
    checks += [(f"udp {ip}:{UDP_PORT}", probe_udp, (ip, UDP_PORT, b"probe", b"echo from ")) for ip in UDP_ADDRS]
    checks += [(f"tcp {ip}:{p}", probe_line, (ip, p)) for ip, p in HOST_PROBES]
    return checks


def probe_all(d, deadline):
    """None when every server answered, else the first one that did not.
    Notes each round's failures on stderr (DIR/rigd.err)."""
    pending = probes(d)
    for rnd in itertools.count(1):
        failed = []
        for desc, fn, args in pending:
            try:
                good = fn(*args)
                why = "wrong answer"
            except (OSError, ValueError) as e:
                good, why = False, str(e) or type(e).__name__
            if not good:
                failed.append((desc, fn, args, why))
        if not failed:
            return None
        print(f"rigd: probe round {rnd}: {len(failed)} failed, first {failed[0][0]}: {failed[0][3]}",
              file=sys.stderr, flush=True)
        if time.monotonic() > deadline:
            desc, _, _, why = failed[0]
            return f"{desc} does not answer ({why})"
        pending = [(desc, fn, args) for desc, fn, args, _ in failed]
        time.sleep(0.2)


def start(d, wait_s):
    """Binds, serves, probes. Returns None when all is well, else why not."""
    t0 = time.monotonic()
    try:
        jobs = bind_host(d)
        with in_netns(KINET):
            jobs += bind_kinet(d)
    except (OSError, ssl.SSLError) as e:
        return f"cannot start the servers: {e}"
    for fn, args in jobs:
        spawn(fn, *args)
    t1 = time.monotonic()
    err = probe_all(d, t0 + wait_s)
    print(f"rigd: bound in {t1 - t0:.2f} s, probed in {time.monotonic() - t1:.2f} s",
          file=sys.stderr, flush=True)
    return err


def main():
    """stdin: rig_up sends "go" once kinet and the certificates exist (EOF:
    give up). stdout: the verdict, one line: "ok" or "fail: REASON"."""
    if len(sys.argv) != 3:
        sys.exit("usage: rigd.py DIR WAIT_SECONDS")
    d, wait_s = sys.argv[1], float(sys.argv[2])
    if sys.stdin.readline().strip() != "go":
        sys.exit(0)
    try:
        err = start(d, wait_s)
    except Exception as e:                # a bug: still give rig_up a verdict
        err = f"rigd.py: {type(e).__name__}: {e}"
    print(f"fail: {err}" if err else "ok", flush=True)
    with open(os.devnull, "r+b") as null:  # let rig_up close its pipe ends
        os.dup2(null.fileno(), 0)
        os.dup2(null.fileno(), 1)
    if err:
        sys.exit(1)
    threading.Event().wait()              # serve until killed


if __name__ == "__main__":
    main()
