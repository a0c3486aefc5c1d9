#!/usr/bin/env python3
"""Stress: kiln-vmm against QEMU's microvm machine, same kernel, same guest
workload, alternated run by run, every guest death classified.

The guest (bench/stress-init + bench/stress-guest, one initramfs for both VMMs)
runs: a floating-point child checking its own results throughout, 4 MiB onto
the scratch disk with fsync after each 64 KiB and read back with O_DIRECT,
100 TCP connections with 4 KiB echoed each to a peer in this host, and 4 MiB
echoed over one vsock stream. Every step compares its data.

What differs between the VMMs (the host side of the same guest devices):
  net    both reach the same tap device in this host and the same TCP echo
         server; QEMU holds the tap fd itself (-netdev tap,fd=), kiln-vmm's
         --net socket is relayed to the tap by this script (kiln-vmm takes
         only a SOCK_SEQPACKET socket)
  vsock  kiln-vmm: its own device, guest connections reach <uds>_7001;
         QEMU: vhost-vsock-device (the host kernel's vhost), reaching an
         AF_VSOCK listener on port 7001
  disk   both: a raw file, virtio-blk; QEMU with its default cache
  rng    both have a virtio-rng device
Classification of each run, first match wins:
  ok            the guest printed KILN-STRESS-OK (its console)
  hang          no end within --timeout (the VMM is killed)
  panic         "Kernel panic" on the console, kiln-vmm exit 5, QEMU GUEST_PANICKED
  triple-fault  kiln-vmm exit 4; QEMU: a SHUTDOWN event with reason
                guest-reset (our guest never reboots; on microvm, which has no
                i8042, Linux's restart ends in a triple fault anyway)
  check         kiln-vmm exit 7 (--check-writes found a bad device write)
  workload      the guest ran to its end but a step failed (data or I/O)
  host-error    anything else (the VMM failed to start, died of a signal, ...)
Console text matching Oops/BUG:/general protection is counted separately.
Needs /dev/kvm: run it through scripts/with-kvm (bench/stress is the wrapper).
"""
import argparse
import fcntl
import json
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_CMDLINE = "console=ttyS0 reboot=k panic=-1 pci=off io_delay=none quiet"
KINDS = ("ok", "triple-fault", "panic", "hang", "check", "workload", "host-error")
MAC = "02:6b:6c:6e:00:01"
TAP = "kstress0"
GUEST_CID = 3


def log(msg):
    print(msg, flush=True)


# ---- host-side peers ---------------------------------------------------------

def echo_conn(c):
    try:
        while True:
            b = c.recv(65536)
            if not b:
                break
            c.sendall(b)
    except OSError:
        pass
    finally:
        c.close()


def echo_server(sock):
    """Accept until the socket is closed; echo each connection in a thread."""
    def loop():
        while True:
            try:
                c, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=echo_conn, args=(c,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()


def open_tap():
    """A fresh tap device with the host side of the guest's subnet, or raise."""
    fd = os.open("/dev/net/tun", os.O_RDWR)
    IFF_TAP, IFF_NO_PI, TUNSETIFF = 0x0002, 0x1000, 0x400454ca
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", TAP.encode(), IFF_TAP | IFF_NO_PI))
    subprocess.run(["ip", "addr", "add", "10.0.2.2/24", "dev", TAP], check=True)
    subprocess.run(["ip", "link", "set", TAP, "up"], check=True)
    return fd


def relay(tap, sock, stop):
    """kiln-vmm's SEQPACKET frames <-> the tap device, until stop is set."""
    while not stop.is_set():
        try:
            r, _, _ = select.select([tap, sock], [], [], 0.5)
            if tap in r:
                sock.send(os.read(tap, 65536))
            if sock in r:
                b = sock.recv(65536)
                if not b:
                    return
                os.write(tap, b)
        except OSError:
            if stop.is_set():
                return
            time.sleep(0.01)  # a full socket or a frame the tap refused: dropped


def setup_host(want_vsock):
    """Modules and peers that live for the whole session. Returns (qemu_vsock_ok)."""
    for m in ("tun", "vhost_vsock"):
        subprocess.run(["modprobe", m], stderr=subprocess.DEVNULL)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("0.0.0.0", 7000))
    tcp.listen(64)
    echo_server(tcp)
    vs_ok = False
    if want_vsock and os.path.exists("/dev/vhost-vsock"):
        try:
            vs = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
            vs.bind((socket.VMADDR_CID_ANY, 7001))
            vs.listen(8)
            echo_server(vs)
            vs_ok = True
        except OSError as e:
            log(f"# QEMU vsock: AF_VSOCK listener failed: {e}")
    return vs_ok


# ---- QEMU's QMP events -------------------------------------------------------

def qmp_watch(path, events, deadline):
    """Collect QMP events (SHUTDOWN reason, GUEST_PANICKED) into the list."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    while time.monotonic() < deadline:
        try:
            s.connect(path)
            break
        except OSError:
            time.sleep(0.05)
    else:
        return
    try:
        f = s.makefile("rwb")
        f.readline()
        f.write(b'{"execute":"qmp_capabilities"}\n')
        f.flush()
        for line in f:
            try:
                m = json.loads(line)
            except ValueError:
                continue
            if "event" in m:
                events.append(m)
    except OSError:
        pass
    finally:
        s.close()


# ---- one run -----------------------------------------------------------------

def run_one(kind, args, steps, work):
    disk = os.path.join(work, "disk.img")
    console = os.path.join(work, "console.log")
    with open(disk, "wb") as f:
        f.truncate(64 << 20)
    if os.path.exists(console):
        os.unlink(console)
    cmdline = f"{BASE_CMDLINE} kiln.stress={','.join(steps)}"
    tap = sock_vmm = sock_ours = None
    stop = threading.Event()
    relay_t = None
    uds_listen = None
    events = []
    pass_fds = []
    if "net" in steps:
        tap = open_tap()
    if kind == "kiln":
        cmd = [os.path.join(ROOT, "build/kiln-vmm"), "--kernel", args.kernel, "--initrd", args.initrd,
               "--cpus", str(args.cpus), "--mem", str(args.mem), "--console", console,
               "--cmdline", cmdline, "--drive", f"path={disk}"]
        if args.check_writes:
            cmd.append("--check-writes")
        if tap is not None:
            sock_ours, sock_vmm = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            pass_fds.append(sock_vmm.fileno())
            cmd += ["--net", f"fd={sock_vmm.fileno()},mac={MAC}"]
            relay_t = threading.Thread(target=relay, args=(tap, sock_ours, stop), daemon=True)
            relay_t.start()
        if "vsock" in steps:
            uds = os.path.join(work, "v.sock")
            for stale in (uds, uds + "_7001"):  # the last run's (kiln-vmm leaves its own)
                if os.path.exists(stale):
                    os.unlink(stale)
            uds_listen = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            uds_listen.bind(uds + "_7001")
            os.chmod(uds + "_7001", 0o777)  # the jailed VMM runs as nobody
            uds_listen.listen(8)
            echo_server(uds_listen)
            cmd += ["--vsock", uds, "--cid", str(GUEST_CID)]
    else:
        qmp = os.path.join(work, "qmp.sock")
        if os.path.exists(qmp):
            os.unlink(qmp)
        cmd = [args.qemu, "-M", "microvm,x-option-roms=off,rtc=off", "-accel", "kvm", "-cpu", "host",
               "-smp", str(args.cpus), "-m", str(args.mem), "-nodefaults", "-no-user-config",
               "-nographic", "-no-reboot", "-kernel", args.kernel, "-initrd", args.initrd,
               "-append", cmdline, "-serial", f"file:{console}",
               "-drive", f"id=d0,file={disk},format=raw,if=none",
               "-device", "virtio-blk-device,drive=d0", "-device", "virtio-rng-device",
               "-qmp", f"unix:{qmp},server=on,wait=off",
               "-d", "guest_errors", "-D", os.path.join(work, "qemu-debug.log")]
        if tap is not None:
            pass_fds.append(tap)
            cmd += ["-netdev", f"tap,id=n0,fd={tap}", "-device", f"virtio-net-device,netdev=n0,mac={MAC}"]
        if "vsock" in steps:
            cmd += ["-device", f"vhost-vsock-device,guest-cid={GUEST_CID}"]
    errf = open(os.path.join(work, "stderr.log"), "wb")
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=errf, stderr=errf, pass_fds=pass_fds)
    if sock_vmm is not None:
        sock_vmm.close()
    if kind == "qemu":
        threading.Thread(target=qmp_watch, args=(qmp, events, t0 + 30), daemon=True).start()
    hung = False
    done_at = None
    while True:
        try:
            p.wait(timeout=1)
            break
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if done_at is None:
            try:
                with open(console, "rb") as f:
                    if b"KILN-STRESS-END" in f.read():
                        done_at = now
            except OSError:
                pass
        # The workload is over; power-off that does not end the VMM is no death.
        if done_at is not None and now - done_at > 15:
            break
        if now - t0 > args.timeout:
            hung = True
            break
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    secs = time.monotonic() - t0
    errf.close()
    stop.set()
    if relay_t:
        relay_t.join(timeout=5)
    for s in (sock_ours, uds_listen):
        if s is not None:
            s.close()
    if tap is not None:
        os.close(tap)
    time.sleep(0.2)  # let QMP's last event arrive
    con = open(console, "rb").read().decode("utf-8", "replace") if os.path.exists(console) else ""
    err = open(os.path.join(work, "stderr.log"), "rb").read().decode("utf-8", "replace")
    rc = p.returncode
    shut = [e for e in events if e.get("event") == "SHUTDOWN"]
    reason = shut[0].get("data", {}).get("reason", "?") if shut else None
    panicked = any(e.get("event") == "GUEST_PANICKED" for e in events)
    if "KILN-STRESS-OK" in con:
        what, detail = "ok", ""
    elif hung:
        what, detail = "hang", "no end in %.0f s; last console line: %s" % (args.timeout, last_line(con))
    elif "Kernel panic" in con or (kind == "kiln" and rc == 5) or panicked:
        m = re.search(r"Kernel panic[^\n]*", con)
        what, detail = "panic", m.group(0) if m else f"exit {rc}"
    elif (kind == "kiln" and rc == 4) or (kind == "qemu" and reason == "guest-reset"):
        what, detail = "triple-fault", f"exit {rc}" + (f", QMP reason {reason}" if reason else "")
    elif kind == "kiln" and rc == 7:
        m = re.search(r"kiln-vmm: virtio check:[^\n]*", err)
        what, detail = "check", m.group(0) if m else "exit 7"
    elif "KILN-STRESS-FAIL" in con or "KILN-STRESS-END" in con:
        what, detail = "workload", "; ".join(re.findall(r"KILN-STRESS \w+ FAIL[^\n]*", con))[:300]
    else:
        what, detail = "host-error", f"exit {rc}" + (f", QMP {reason}" if reason else "") + \
            "; " + last_line(err)
    oops = bool(re.search(r"Oops|BUG:|general protection|WARNING:", con))
    if what != "ok" or oops:
        keep = os.path.join(args.evidence, time.strftime("%Y%m%dT%H%M%S") + f"-{kind}-{what}")
        os.makedirs(keep, exist_ok=True)
        for name in ("console.log", "stderr.log", "qemu-debug.log"):
            src = os.path.join(work, name)
            if os.path.exists(src):
                shutil.copy(src, keep)
    return what, secs, detail.replace("\t", " ").replace("\n", " "), oops, con


def last_line(text):
    lines = [l for l in text.strip().splitlines() if l.strip()]
    return lines[-1][:200] if lines else "(empty)"


# ---- report ------------------------------------------------------------------

def report(path):
    rows = []
    l1_panics = []
    if os.path.exists(path):
        for line in open(path):
            f = line.rstrip("\n").split("\t")
            if len(f) >= 2 and f[1] == "L1-PANIC":
                l1_panics.append(f)
            elif len(f) >= 6:
                rows.append(f)
    groups = {}
    for ts, vmm, variant, what, secs, oops, *_ in rows:
        for key in ((vmm, variant), (vmm, "all")):
            g = groups.setdefault(key, {k: 0 for k in KINDS} | {"runs": 0, "oops": 0, "secs": []})
            g["runs"] += 1
            g[what] = g.get(what, 0) + 1
            g["oops"] += oops == "1"
            g["secs"].append(float(secs))
    print(f"stress results from {path}:")
    print(f"{'vmm':5s} {'variant':28s} {'runs':>5s} {'deaths':>6s} {'/100':>6s}  "
          + " ".join(f"{k:>12s}" for k in KINDS[1:]) + f" {'oops':>5s} {'med s':>6s}")
    for (vmm, variant) in sorted(groups, key=lambda k: (k[1] != "all", k[1], k[0])):
        g = groups[(vmm, variant)]
        deaths = g["runs"] - g["ok"]
        s = sorted(g["secs"])
        print(f"{vmm:5s} {variant:28s} {g['runs']:5d} {deaths:6d} {100.0 * deaths / g['runs']:6.1f}  "
              + " ".join(f"{g[k]:12d}" for k in KINDS[1:])
              + f" {g['oops']:5d} {s[len(s) // 2]:6.1f}")
    print(f"emulated host (L1) kernel panics: {len(l1_panics)}"
          + "".join(f"\n  {' '.join(f)}" for f in l1_panics))


# ---- main --------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=40, help="runs per VMM (alternated)")
    ap.add_argument("--vmm", default="kiln,qemu", help="kiln,qemu (default), kiln or qemu")
    ap.add_argument("--no-net", action="store_true", help="no network device, no TCP step")
    ap.add_argument("--no-vsock", action="store_true", help="no vsock device, no vsock step")
    ap.add_argument("--check-writes", action="store_true", help="kiln-vmm --check-writes")
    ap.add_argument("--mix", action="store_true",
                    help="cycle run by run: all devices, all + --check-writes, --no-net, --no-vsock")
    ap.add_argument("--cpuid", action="store_true", help="one run each dumping CPUID/XSAVE/flags")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--mem", type=int, default=256)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--kernel", default=os.path.join(ROOT, "build/guest/vmlinux"))
    ap.add_argument("--initrd", default=os.path.join(ROOT, "build/bench/stress-initrd.cpio"))
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--results", default=os.path.join(ROOT, "build/bench/stress/results.tsv"))
    ap.add_argument("--evidence", default=os.path.join(ROOT, "build/bench/stress/deaths"))
    ap.add_argument("--report", action="store_true", help="only summarise --results")
    ap.add_argument("--note-l1-panic", metavar="TEXT", help="record an emulated-host panic")
    args = ap.parse_args()
    if args.report:
        report(args.results)
        return 0
    os.makedirs(os.path.dirname(args.results), exist_ok=True)
    if args.note_l1_panic is not None:
        with open(args.results, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\tL1-PANIC\t{args.note_l1_panic}\n")
        return 0
    if not 1 <= args.runs <= 10000:
        sys.exit("bench/stress: --runs must be 1..10000")
    vmms = [v for v in args.vmm.split(",") if v]
    if not vmms or any(v not in ("kiln", "qemu") for v in vmms):
        sys.exit("bench/stress: --vmm takes kiln, qemu or kiln,qemu")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        sys.exit("bench/stress: /dev/kvm is not usable: run it through scripts/with-kvm")
    # Variants: (steps, check-writes). --mix cycles through four, run by run.
    if args.mix:
        variants = [(["cpu", "disk", "net", "vsock"], False), (["cpu", "disk", "net", "vsock"], True),
                    (["cpu", "disk", "vsock"], False), (["cpu", "disk", "net"], False)]
    else:
        variants = [(["cpu", "disk"] + ([] if args.no_net else ["net"])
                     + ([] if args.no_vsock else ["vsock"]), args.check_writes)]
    if args.cpuid:
        variants = [(["cpuid"] + variants[0][0], variants[0][1])]
        args.runs = 1
    want_vsock = any("vsock" in v[0] for v in variants)
    qemu_vsock = setup_host(want_vsock)
    if "qemu" in vmms and want_vsock and not qemu_vsock:
        sys.exit("bench/stress: no /dev/vhost-vsock in this host: QEMU cannot run the vsock step "
                 "(use --no-vsock)")
    work = tempfile.mkdtemp(prefix="kiln-stress.")
    os.chmod(work, 0o755)
    counts = {v: {} for v in vmms}
    try:
        for i in range(args.runs):
            order = vmms if i % 2 == 0 else list(reversed(vmms))
            steps, args.check_writes = variants[i % len(variants)]
            variant = "+".join(s for s in steps if s != "cpuid") + ("+check" if args.check_writes else "")
            for kind in order:
                # --check-writes is kiln-vmm's; QEMU's runs count as the plain variant.
                v = variant if kind == "kiln" else variant.replace("+check", "")
                try:
                    what, secs, detail, oops, con = run_one(kind, args, steps, work)
                except Exception as e:  # the harness's own failure is counted, not fatal
                    what, secs, detail, oops, con = "host-error", 0.0, f"harness: {e!r}", False, ""
                    subprocess.run(["ip", "link", "del", TAP], stderr=subprocess.DEVNULL)
                counts[kind][what] = counts[kind].get(what, 0) + 1
                log(f"# run {i + 1} {kind} {v}: {what} {secs:.1f} s"
                    + (" (oops on the console)" if oops else "") + (f": {detail}" if detail else ""))
                if args.cpuid:
                    for line in con.splitlines():
                        if line.startswith(("KILN-CPUID", "KILN-XCR0", "KILN-FLAGS", "KILN-BUGS",
                                            "KILN-DMESG")):
                            log(f"{kind} {line.strip()}")
                    continue
                with open(args.results, "a") as f:
                    f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\t{kind}\t{v}\t{what}\t"
                            f"{secs:.1f}\t{int(oops)}\t{detail}\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for kind in vmms:
        c = counts[kind]
        deaths = sum(n for k, n in c.items() if k != "ok")
        log(f"{kind}: {sum(c.values())} runs, {deaths} deaths "
            + " ".join(f"{k}={n}" for k, n in sorted(c.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
