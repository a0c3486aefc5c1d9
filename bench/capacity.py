#!/usr/bin/env python3
"""Per-sandbox host cost, measured (bench/capacity wraps it in scripts/with-kvm):
kilnd's Rss empty and with N idle sandboxes (tiny image, 1 vCPU), each VM's
cgroup memory.current and its VMM processes' Rss (kiln-vmm and its jail's
waiter), the host's MemAvailable before and after. Idle: booted, one exec
done, then 10 s of nothing."""
import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from api import B, call  # noqa: E402  (same directory)


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def meminfo(key):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def pids_named(name):
    out = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def cgroup_of(pid):
    with open(f"/proc/{pid}/cgroup") as f:
        return "/sys/fs/cgroup" + f.read().strip().split("::", 1)[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sandboxes", type=int, default=4)
    ap.add_argument("--mem", type=int, default=256, help="guest MiB per sandbox")
    args = ap.parse_args()
    n = args.sandboxes
    work = tempfile.mkdtemp(prefix="bench-capacity.")
    token = "bench-" + os.urandom(8).hex()
    os.makedirs(os.path.join(work, "images"))
    os.symlink(os.path.join(B, "images/tiny.img"), os.path.join(work, "images/tiny.img"))
    with open(os.path.join(work, "tokens.json"), "w") as f:
        json.dump({"tenants": [{"name": "bench", "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
                                "max_sandboxes": n, "max_vcpus": n, "max_memory_mib": n * args.mem,
                                "max_timeout_s": 3600}]}, f)
    sock = os.path.join(work, "kilnd.sock")
    log = open(os.path.join(work, "kilnd.log"), "w")
    avail0 = meminfo("MemAvailable")
    kd = subprocess.Popen([os.path.join(B, "kilnd"), "--tokens", os.path.join(work, "tokens.json"),
                           "--state-dir", os.path.join(work, "state"), "--listen", "unix:" + sock,
                           "--image-dir", os.path.join(work, "images"), "--max-sandboxes", str(n)],
                          stderr=log)
    try:
        for _ in range(300):
            if os.path.exists(sock):
                break
            time.sleep(0.1)
        time.sleep(1)
        kilnd_empty = rss_kib(kd.pid)
        spec = {"image": "tiny", "cpus": 1, "memory_mib": args.mem, "disk_mib": 64, "timeout_s": 3600}
        for i in range(n):
            st, data = call(sock, token, "POST", "/v1/sandboxes", spec)
            if st != 201:
                sys.exit(f"bench/capacity: create failed: {st} {data[:200]!r}")
            sid = json.loads(data)["id"]
            st, data = call(sock, token, "POST", f"/v1/sandboxes/{sid}/exec", {"cmd": ["true"]})
            if st != 200:
                sys.exit(f"bench/capacity: exec failed: {st} {data[:200]!r}")
            print(f"# sandbox {i + 1} of {n} up", flush=True)
        time.sleep(10)
        kilnd_full = rss_kib(kd.pid)
        vmms = pids_named("kiln-vmm")
        waiters = pids_named("kiln-vmm-wait")
        cg = []
        for p in vmms:
            with open(os.path.join(cgroup_of(p), "memory.current")) as f:
                cg.append(int(f.read()) / 1024)
        vmm_rss = [rss_kib(p) for p in vmms]
        avail1 = meminfo("MemAvailable")
        mib = lambda k: k / 1024
        print(f"\nidle sandboxes on one host: {n} x (tiny image, 1 vCPU, {args.mem} MiB guest)")
        print(f"  kilnd Rss, no sandbox            {mib(kilnd_empty):7.1f} MiB")
        print(f"  kilnd Rss, {n} idle sandboxes      {mib(kilnd_full):7.1f} MiB "
              f"(+{mib(kilnd_full - kilnd_empty) / n:.2f} MiB per sandbox)")
        print(f"  per VM: cgroup memory.current     median {mib(statistics.median(cg)):7.1f} MiB "
              f"(min {mib(min(cg)):.1f}, max {mib(max(cg)):.1f})")
        print(f"  per VM: kiln-vmm Rss              median {mib(statistics.median(vmm_rss)):7.1f} MiB")
        print(f"  per VM: jail waiter Rss           median "
              f"{mib(statistics.median([rss_kib(p) for p in waiters]) if waiters else 0):7.1f} MiB")
        print(f"  host MemAvailable drop            {mib(avail0 - avail1):7.1f} MiB "
              f"({mib(avail0 - avail1) / n:.1f} MiB per sandbox, kilnd included)")
    finally:
        kd.terminate()
        kd.wait(timeout=120)
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
