#!/usr/bin/env python3
"""Boot benchmark: kiln-vmm against QEMU's microvm machine, same kernel, same
initramfs, same host, alternated run by run.

Measured per run, the same way for both VMMs, by this harness:
  boot   time from spawning the VMM to the guest's "userspace started" mark
         (the guest writes a magic value to I/O port 0x440: kiln-vmm's boot
         timer reports it on stderr; QEMU gets an isa-debugcon on that port)
  rss    the VMM's resident memory (with its children: a jailed kiln-vmm is a
         waiter plus the VMM) once the guest idles, minus the resident
         part of its guest-RAM mapping (what the VMM itself costs)
Needs /dev/kvm: run it through scripts/with-kvm (bench/boot is the wrapper).
"""
import argparse
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_CMDLINE = "console=ttyS0 reboot=k panic=-1 pci=off io_delay=none kiln.test=sleep quiet"


def guest_ram_rss_kb(pid, mem_mib):
    """(total Rss, Rss of the guest RAM mapping) in KiB from /proc/PID/smaps."""
    total = guest = 0
    size_kb = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and "-" in parts[0] and ":" not in parts[0]:
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                size_kb = (hi - lo) // 1024
            elif parts and parts[0] == "Rss:":
                rss = int(parts[1])
                total += rss
                # Guest RAM is the one anonymous mapping at least as large as the guest.
                if size_kb is not None and size_kb >= mem_mib * 1024:
                    guest += rss
    return total, guest


def tree(pid):
    """pid and its descendants: a jailed kiln-vmm is a waiter plus the VMM."""
    out = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            for child in f.read().split():
                out += tree(int(child))
    except OSError:
        pass
    return out


def run_one(kind, args):
    mem = args.mem
    if kind == "kiln":
        cmd = [os.path.join(ROOT, "build/kiln-vmm"), "--kernel", args.kernel, "--initrd", args.initrd,
               "--cpus", str(args.cpus), "--mem", str(mem), "--console", "none",
               "--cmdline", BASE_CMDLINE, "--print-boot-time"]
    else:
        cmd = [args.qemu, "-M", "microvm,x-option-roms=off,rtc=off", "-accel", "kvm", "-cpu", "host",
               "-smp", str(args.cpus), "-m", str(mem), "-nodefaults", "-no-user-config", "-nographic",
               "-no-reboot", "-kernel", args.kernel, "-initrd", args.initrd, "-append", BASE_CMDLINE,
               "-serial", "null", "-chardev", "stdio,id=bt", "-device", "isa-debugcon,iobase=0x440,chardev=bt"]
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watch = p.stderr if kind == "kiln" else p.stdout
    buf = b""
    boot = None
    deadline = t0 + args.timeout
    while boot is None and time.monotonic() < deadline:
        r, _, _ = select.select([watch], [], [], 0.5)
        if not r:
            if p.poll() is not None:
                break
            continue
        chunk = os.read(watch.fileno(), 4096)
        if not chunk:
            break
        buf += chunk
        if (kind == "kiln" and b"boot-time-us=" in buf) or (kind == "qemu" and len(buf) >= 1):
            boot = time.monotonic() - t0
    rss = None
    if boot is not None:
        time.sleep(args.settle)
        try:
            total = guest = 0
            for pid in tree(p.pid):
                t, g = guest_ram_rss_kb(pid, mem)
                total, guest = total + t, guest + g
            rss = (total - guest) / 1024.0
        except OSError:
            pass
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        sys.stderr.write(f"bench/boot: {kind} ignored SIGTERM for 10 s; killing it\n")
        p.kill()
        p.wait(timeout=10)
    p.stdout.close()
    p.stderr.close()
    if boot is None:
        sys.stderr.write(f"bench/boot: {kind} did not reach userspace within {args.timeout:.0f} s "
                         f"(status {p.returncode})\n")
    return boot, rss


def summary(name, xs, unit, scale=1.0):
    xs = [x * scale for x in xs if x is not None]
    if not xs:
        return None
    med = statistics.median(xs)
    print(f"  {name:6s} median {med:8.1f} {unit}  min {min(xs):8.1f}  max {max(xs):8.1f}  (n={len(xs)})")
    return med


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--cpus", type=int, default=1)
    ap.add_argument("--mem", type=int, default=128)
    ap.add_argument("--kernel", default=os.path.join(ROOT, "build/guest/vmlinux"))
    ap.add_argument("--initrd", default=os.path.join(ROOT, "build/guest/test-initrd.cpio"))
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--settle", type=float, default=1.0, help="seconds to idle before sampling RSS")
    args = ap.parse_args()
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        sys.exit("bench/boot: /dev/kvm is not usable: run it through scripts/with-kvm")

    res = {"kiln": ([], []), "qemu": ([], [])}
    for i in range(args.runs):
        for kind in (("kiln", "qemu") if i % 2 == 0 else ("qemu", "kiln")):
            b, r = run_one(kind, args)
            res[kind][0].append(b)
            res[kind][1].append(r)
            print(f"# run {i + 1} {kind}: boot {'%.1f ms' % (b * 1000) if b else 'failed'}, "
                  f"rss overhead {'%.1f MiB' % r if r is not None else '?'}", flush=True)

    print(f"\nboot to guest userspace ({args.cpus} vCPU, {args.mem} MiB, {args.runs} runs each, alternated):")
    kb = summary("kiln", res["kiln"][0], "ms", 1000)
    qb = summary("qemu", res["qemu"][0], "ms", 1000)
    print("VMM resident memory beyond guest RAM:")
    kr = summary("kiln", res["kiln"][1], "MiB")
    qr = summary("qemu", res["qemu"][1], "MiB")
    if kb and qb:
        print(f"ratio boot kiln/qemu: {kb / qb:.3f}")
    if kr and qr:
        print(f"ratio rss  kiln/qemu: {kr / qr:.3f}")
    failed = sum(1 for k in res for b in res[k][0] if b is None)
    sys.exit(1 if failed or not kb else 0)


if __name__ == "__main__":
    main()
