#!/usr/bin/env python3
"""Network benchmark: kiln (kiln-vmm + kiln-net) against QEMU's microvm with
user networking (-netdev user, also libslirp), same kernel, same initramfs,
same guest commands, same test server, same host, alternated run by run.

The guest (tests/guest/init, mode netbench) configures 10.0.2.15/24 via
10.0.2.2 (both sides use that plan), fetches BIG bytes once with busybox wget
(download throughput), then fetches a tiny page N times in a row (connection
set-up, request and teardown: the per-connection latency). Times come from the
guest's own clock (/proc/uptime, 10 ms resolution). kiln-net runs as in
production (jail, seccomp, an IP rule for the server, audit to /dev/null);
the server is the test rig's HTTP server (tests/integration/netrig), which
bench/net starts. Needs /dev/kvm: run it through bench/net (scripts/with-kvm).
"""
import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile

from boot import summary  # bench/boot.py: median, min, max of one series

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_CMDLINE = "console=ttyS0 reboot=k panic=-1 pci=off io_delay=none quiet kiln.test=netbench"
SERVER = "192.0.2.10"


def cmdline(args):
    big = f"http://{SERVER}/bytes/{args.bytes}"
    return f"{BASE_CMDLINE} kiln.bench={big},http://{SERVER}/,{args.conns}"


def run_kiln(args, console):
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    net = subprocess.Popen([os.path.join(ROOT, "build/kiln-net"), "--fd", str(ours.fileno()),
                            "--allow", f"{SERVER}:80"], pass_fds=[ours.fileno()],
                           stdin=subprocess.DEVNULL)
    vmm = subprocess.Popen([os.path.join(ROOT, "build/kiln-vmm"), "--kernel", args.kernel,
                            "--initrd", args.initrd, "--cpus", "1", "--mem", str(args.mem),
                            "--console", console, "--cmdline", cmdline(args),
                            "--net", f"fd={theirs.fileno()}"], pass_fds=[theirs.fileno()],
                           stdin=subprocess.DEVNULL)
    ours.close()
    theirs.close()
    try:
        vmm.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        vmm.kill()
        vmm.wait()
    try:
        net.wait(timeout=10)
    except subprocess.TimeoutExpired:
        net.kill()
        net.wait()


def run_qemu(args, console):
    p = subprocess.Popen([args.qemu, "-M", "microvm,x-option-roms=off,rtc=off", "-accel", "kvm",
                          "-cpu", "host", "-smp", "1", "-m", str(args.mem), "-nodefaults",
                          "-no-user-config", "-nographic", "-no-reboot", "-kernel", args.kernel,
                          "-initrd", args.initrd, "-append", cmdline(args),
                          "-serial", f"file:{console}",
                          "-netdev", "user,id=n0", "-device", "virtio-net-device,netdev=n0"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        p.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def run_one(kind, args):
    with tempfile.TemporaryDirectory() as d:
        console = os.path.join(d, "console")
        (run_kiln if kind == "kiln" else run_qemu)(args, console)
        try:
            text = open(console, errors="replace").read()
        except OSError:
            text = ""
    m = re.search(r"KILN-NETBENCH bytes (\d+) big_cs (\d+) conns (\d+) conns_cs (\d+)", text)
    if not m:
        keep = tempfile.mkstemp(prefix=f"bench-net-{kind}-", suffix=".console", dir=os.path.join(ROOT, "build"))[1]
        with open(keep, "w") as f:
            f.write(text)
        tail = "\n".join(text.splitlines()[-5:])
        sys.stderr.write(f"bench/net: {kind}: no result from the guest (console kept in {keep}); "
                         f"it ended:\n{tail}\n")
        return None, None
    nbytes, big_cs, conns, conns_cs = (int(x) for x in m.groups())
    if nbytes != args.bytes or conns != args.conns:
        sys.stderr.write(f"bench/net: {kind}: got {nbytes} bytes, {conns} connections\n")
        return None, None
    return nbytes / max(big_cs, 1) * 100 / 1e6, conns_cs * 10 / conns


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--bytes", type=int, default=64 << 20)
    ap.add_argument("--conns", type=int, default=20)
    ap.add_argument("--mem", type=int, default=256)
    ap.add_argument("--kernel", default=os.path.join(ROOT, "build/guest/vmlinux"))
    ap.add_argument("--initrd", default=os.path.join(ROOT, "build/guest/test-initrd.cpio"))
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        sys.exit("bench/net: /dev/kvm is not usable: run it through bench/net")

    res = {"kiln": ([], []), "qemu": ([], [])}
    for i in range(args.runs):
        for kind in (("kiln", "qemu") if i % 2 == 0 else ("qemu", "kiln")):
            tput, lat = run_one(kind, args)
            res[kind][0].append(tput)
            res[kind][1].append(lat)
            print(f"# run {i + 1} {kind}: download {'%.2f MB/s' % tput if tput else 'failed'}, "
                  f"connection {'%.1f ms' % lat if lat else '?'}", flush=True)
    print(f"\nTCP download of {args.bytes >> 20} MiB from the test server ({args.runs} runs each, alternated):")
    kt = summary("kiln", res["kiln"][0], "MB/s")
    qt = summary("qemu", res["qemu"][0], "MB/s")
    for kind in ("kiln", "qemu"):
        if not any(res[kind][0]):
            print(f"  {kind:6s} no result")
    print(f"one HTTP fetch on a new connection ({args.conns} in a row, per fetch):")
    kl = summary("kiln", res["kiln"][1], "ms")
    ql = summary("qemu", res["qemu"][1], "ms")
    if kt and qt:
        print(f"ratio throughput kiln/qemu: {kt / qt:.3f} (goal >= 1)")
    if kl and ql:
        print(f"ratio latency    kiln/qemu: {kl / ql:.3f}")
    sys.exit(0 if kt and qt else 1)


if __name__ == "__main__":
    main()
