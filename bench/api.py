#!/usr/bin/env python3
"""kilnd's API, measured: create to first exec, and `echo hi` per exec through
the API (POST .../exec and POST .../processes, a new connection each, as curl
would) next to libkiln directly (build/bench/kiln-exec-direct: a new agent
connection per exec, as kilnd makes). Needs /dev/kvm: bench/api wraps it in
scripts/with-kvm."""
import argparse
import hashlib
import http.client
import json
import os
import socket
import statistics
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


def show(name, xs):
    med = statistics.median(xs)
    print(f"  {name:34s} median {med:8.1f} ms  min {min(xs):8.1f}  max {max(xs):8.1f}  (n={len(xs)})")
    return med


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=4, help="sandboxes created (create to first exec)")
    ap.add_argument("--execs", type=int, default=30, help="execs per block")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-api.")
    token = "bench-" + os.urandom(8).hex()
    os.makedirs(os.path.join(work, "images"))
    os.symlink(os.path.join(B, "images/tiny.img"), os.path.join(work, "images/tiny.img"))
    with open(os.path.join(work, "tokens.json"), "w") as f:
        json.dump({"tenants": [{"name": "bench", "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
                                "max_sandboxes": 4, "max_vcpus": 4, "max_memory_mib": 2048,
                                "max_timeout_s": 3600}]}, f)
    sock = os.path.join(work, "kilnd.sock")
    log = open(os.path.join(work, "kilnd.log"), "w")
    kd = subprocess.Popen([os.path.join(B, "kilnd"), "--tokens", os.path.join(work, "tokens.json"),
                           "--state-dir", os.path.join(work, "state"), "--listen", "unix:" + sock,
                           "--image-dir", os.path.join(work, "images")], stderr=log)
    try:
        for _ in range(300):
            if os.path.exists(sock):
                break
            time.sleep(0.1)
        spec = {"image": "tiny", "memory_mib": 128, "disk_mib": 0}
        creates, ready = [], []
        for i in range(args.runs):
            t0 = time.monotonic()
            st, data = call(sock, token, "POST", "/v1/sandboxes", spec)
            t1 = time.monotonic()
            if st != 201:
                sys.exit(f"bench/api: create failed: {st} {data[:200]!r}")
            sid = json.loads(data)["id"]
            st, data = call(sock, token, "POST", f"/v1/sandboxes/{sid}/exec", {"cmd": ["echo", "hi"]})
            t2 = time.monotonic()
            if st != 200 or b'"exit"' not in data:
                sys.exit(f"bench/api: first exec failed: {st} {data[:200]!r}")
            creates.append((t1 - t0) * 1000)
            ready.append((t2 - t0) * 1000)
            print(f"# sandbox {i + 1}: created in {creates[-1]:.1f} ms, first exec done at {ready[-1]:.1f} ms",
                  flush=True)
            if i < args.runs - 1:
                call(sock, token, "DELETE", f"/v1/sandboxes/{sid}")
        api_exec, api_proc, direct = [], [], []
        for rnd in range(2):
            for _ in range(args.execs):
                t0 = time.monotonic()
                st, data = call(sock, token, "POST", f"/v1/sandboxes/{sid}/exec", {"cmd": ["echo", "hi"]})
                api_exec.append((time.monotonic() - t0) * 1000)
                assert st == 200 and b'"code":0' in data, data
                t0 = time.monotonic()
                st, data = call(sock, token, "POST", f"/v1/sandboxes/{sid}/processes", {"cmd": ["echo", "hi"]})
                api_proc.append((time.monotonic() - t0) * 1000)
                assert st == 200 and b'"exit_code":0' in data, data
            p = subprocess.run([os.path.join(B, "bench/kiln-exec-direct"), os.path.join(B, "kiln-vmm"),
                                os.path.join(B, "guest/vmlinux"), os.path.join(B, "guest/kiln-initrd.cpio"),
                                os.path.join(B, "images/tiny.img"), str(args.execs)],
                               capture_output=True, timeout=600)
            if p.returncode:
                sys.exit("bench/api: kiln-exec-direct failed: " + p.stderr.decode(errors="replace"))
            direct += json.loads(p.stdout)["exec_ms"]
            print(f"# round {rnd + 1} done", flush=True)
        print(f"\nkilnd API, tiny image, 1 vCPU, 128 MiB ({args.runs} sandboxes, {2 * args.execs} execs each way):")
        show("POST /v1/sandboxes (201)", creates)
        show("create + first exec done", ready)
        m_exec = show("echo via POST .../exec", api_exec)
        m_proc = show("echo via POST .../processes", api_proc)
        m_dir = show("echo via libkiln directly", direct)
        print(f"  ratio API/direct: exec {m_exec / m_dir:.2f}, processes {m_proc / m_dir:.2f} (goal <= 1.2)")
        print(f"  API overhead per exec: exec {m_exec - m_dir:+.1f} ms, processes {m_proc - m_dir:+.1f} ms")
    finally:
        kd.terminate()
        kd.wait(timeout=120)
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
