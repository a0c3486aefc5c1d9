#!/usr/bin/env python3
"""kiln-router's overhead, measured: one kilnd (tiny image, one sandbox) and
one kiln-router in front of it (a hosts file naming that kilnd). Each round
sends the same request through the router and straight to kilnd, in
alternating order, on a new connection each (as curl would): GET
/v1/sandboxes/{id} and POST .../exec of `echo hi`. Prints p50 and p99 of each
and the difference. Needs /dev/kvm: bench/router wraps it in scripts/with-kvm."""
import argparse
import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B = os.path.join(ROOT, "build")


class UnixConn(http.client.HTTPConnection):
    def __init__(self, path, timeout=300):
        super().__init__("kiln", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def call(sock, token, method, path, body=None):
    c = UnixConn(sock)
    c.request(method, path, body=json.dumps(body) if body is not None else None,
              headers={"Authorization": "Bearer " + token})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def pct(xs, p):
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def wait_sock(path, proc):
    for _ in range(300):
        if os.path.exists(path):
            return
        if proc.poll() is not None:
            sys.exit(f"bench/router: {proc.args[0]} exited {proc.returncode}")
        time.sleep(0.1)
    sys.exit(f"bench/router: {path} never appeared")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300, help="requests of each kind, each way")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-router.")
    token = "bench-" + os.urandom(8).hex()
    os.makedirs(os.path.join(work, "images"))
    os.symlink(os.path.join(B, "images/tiny.img"), os.path.join(work, "images/tiny.img"))
    with open(os.path.join(work, "tokens.json"), "w") as f:
        json.dump({"tenants": [{"name": "bench", "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
                                "max_sandboxes": 4, "max_vcpus": 4, "max_memory_mib": 2048,
                                "max_timeout_s": 3600}]}, f)
    ksock = os.path.join(work, "kilnd.sock")
    rsock = os.path.join(work, "router.sock")
    with open(os.path.join(work, "hosts"), "w") as f:
        f.write(f"b1 unix:{ksock}\n")
    klog = open(os.path.join(work, "kilnd.log"), "w")
    rlog = open(os.path.join(work, "router.log"), "w")
    kd = subprocess.Popen([os.path.join(B, "kilnd"), "--tokens", os.path.join(work, "tokens.json"),
                           "--state-dir", os.path.join(work, "state"), "--listen", "unix:" + ksock,
                           "--image-dir", os.path.join(work, "images"), "--host-id", "b1"], stderr=klog)
    rt = None
    try:
        wait_sock(ksock, kd)
        rt = subprocess.Popen([os.path.join(B, "kiln-router"), "--listen", "unix:" + rsock,
                               "--hosts-file", os.path.join(work, "hosts"),
                               "--tokens", os.path.join(work, "tokens.json"),
                               "--upstream-token", token], stderr=rlog)
        wait_sock(rsock, rt)
        st, data = call(rsock, token, "POST", "/v1/sandboxes", {"image": "tiny", "memory_mib": 128, "disk_mib": 0})
        if st != 201:
            sys.exit(f"bench/router: create failed: {st} {data[:200]!r}")
        sid = json.loads(data)["id"]
        kinds = {
            "GET /v1/sandboxes/{id}": ("GET", f"/v1/sandboxes/{sid}", None, b'"state":"running"'),
            "POST .../exec (echo hi)": ("POST", f"/v1/sandboxes/{sid}/exec", {"cmd": ["echo", "hi"]}, b'"code":0'),
        }
        res = {k: {"router": [], "direct": []} for k in kinds}
        for i in range(args.n):
            for name, (m, p, body, want) in kinds.items():
                order = [("router", rsock), ("direct", ksock)]
                if i % 2:
                    order.reverse()
                for way, s in order:
                    t0 = time.monotonic()
                    st, data = call(s, token, m, p, body)
                    res[name][way].append((time.monotonic() - t0) * 1000)
                    if st != 200 or want not in data:
                        sys.exit(f"bench/router: {way} {name}: {st} {data[:200]!r}")
            if (i + 1) % 100 == 0:
                print(f"# {i + 1} rounds", flush=True)
        print(f"\nkiln-router overhead, one kilnd on a unix socket, tiny image ({args.n} requests of each kind each way, alternating):")
        for name in kinds:
            r, d = res[name]["router"], res[name]["direct"]
            print(f"  {name:26s} direct p50 {pct(d, 50):7.2f} ms p99 {pct(d, 99):7.2f} | "
                  f"router p50 {pct(r, 50):7.2f} ms p99 {pct(r, 99):7.2f} | "
                  f"overhead p50 {pct(r, 50) - pct(d, 50):+.2f} ms p99 {pct(r, 99) - pct(d, 99):+.2f} ms")
        call(rsock, token, "DELETE", f"/v1/sandboxes/{sid}")
    finally:
        if rt:
            rt.terminate()
            rt.wait(timeout=60)
        kd.terminate()
        kd.wait(timeout=120)
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
