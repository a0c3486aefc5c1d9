#!/usr/bin/python3
"""kiln-vmm's control channel (src/common/ctl.h) end to end, for t-vmm.sh.

usage: vmmctl.py CONSOLE_FILE VMM ARGS...
       vmmctl.py restore DIR VMM ARGS...   (snapshot/restore, see restore_main)
Starts the VMM with --control-fd on a SOCK_SEQPACKET pair (the guest runs
the test initramfs's kiln.test=tick: a numbered line every 0.2 s), then
pauses, resumes, snapshots (state and memory files, read back with
kiln-vmm --inspect-snapshot), sends bad messages and stops it while paused. Prints one
"PASS desc" or "FAIL desc" line per check."""
import hashlib
import os
import re
import select
import signal
import shutil
import socket
import struct
import subprocess
import sys
import time

FMT = "<IHHIiQQ128s"
MAGIC = 0x314C434B
PAUSE, RESUME, STATUS, SNAPSHOT, REPLY, EV_BOOTED, EV_EXIT = 1, 2, 3, 4, 0x80, 0x81, 0x82
EINVAL, EBADMSG = 22, 74


def check(desc, cond, detail=""):
    print(("PASS " if cond else "FAIL ") + desc + ("" if cond or not detail else f" ({detail})"),
          flush=True)
    return cond


def msg(typ, mid, magic=MAGIC):
    return struct.pack(FMT, magic, typ, 0, mid, 0, 0, 0, b"")


def recv(sock, timeout):
    r, _, _ = select.select([sock], [], [], timeout)
    if not r:
        return None
    data = sock.recv(4096)
    if not data:
        return "eof"
    if len(data) != struct.calcsize(FMT):
        return ("short", len(data))
    m, typ, _, mid, res, a, b, text = struct.unpack(FMT, data)
    return {"magic": m, "type": typ, "id": mid, "result": res, "a": a, "b": b,
            "text": text.split(b"\0")[0].decode(errors="replace")}


def until(sock, typ, timeout, events):
    """The next message of typ; events of other types are kept in events."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        m = recv(sock, end - time.monotonic())
        if m is None or m == "eof" or isinstance(m, tuple):
            return m
        if m["type"] == typ:
            return m
        events.append(m)
    return None


def ticks(path):
    try:
        with open(path, "rb") as f:
            return f.read().count(b"KILN-TICK")
    except OSError:
        return 0


def wait_ticks(path, above, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if ticks(path) > above:
            return True
        time.sleep(0.1)
    return False


def inspect(vmm, path):
    p = subprocess.run([vmm, "--inspect-snapshot", path], capture_output=True, text=True,
                       timeout=60)
    return p.returncode, p.stdout, p.stderr


def snapshots(vmm, ncpus, ndrives, req, send_fds, console):
    """Snapshot checks on a running VM; returns with it running."""
    d = os.path.dirname(os.path.abspath(console))
    state, mem = os.path.join(d, "snap.state"), os.path.join(d, "snap.mem")
    sf = os.open(state, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    mf = os.open(mem, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    ro = os.open(state, os.O_RDONLY)
    try:
        r = send_fds(SNAPSHOT, 20, [sf, mf])
        check("snapshot: refused while the VM runs",
              r and r["id"] == 20 and r["result"] == -EINVAL and "pause" in r["text"], r)
        r = req(PAUSE, 21)
        check("snapshot: PAUSE first", r and r["result"] == 0, r)
        r = req(SNAPSHOT, 22)
        check("snapshot: refused without fds, saying so",
              r and r["result"] == -EINVAL and "two fds" in r["text"], r)
        r = send_fds(SNAPSHOT, 23, [ro, mf])
        check("snapshot: refused with a read-only state fd, saying so",
              r and r["result"] == -EINVAL and "not open for writing" in r["text"], r)
        r = send_fds(STATUS, 24, [sf])
        check("snapshot: fds on another request are refused",
              r and r["result"] == -EINVAL and "no fds" in r["text"], r)
        t0 = time.monotonic()
        snap = send_fds(SNAPSHOT, 25, [sf, mf])
        took = int((time.monotonic() - t0) * 1000)
        ok = bool(check(f"snapshot: SNAPSHOT while paused answers 0 with the sizes ({took} ms)",
                        snap and snap["id"] == 25 and snap["result"] == 0 and snap["a"] > 0
                        and snap["b"] > 0, snap))
        n0 = ticks(console)
        r = req(RESUME, 26)
        check("snapshot: RESUME after it", r and r["result"] == 0, r)
        check("snapshot: the guest ticks on after the snapshot", wait_ticks(console, n0, 60),
              f"{ticks(console)} ticks")
        st = os.stat(state)
        check(f"snapshot: the state file has the reported size ({st.st_size} bytes)",
              ok and st.st_size == snap["a"], f"{st.st_size} vs {snap}")
        rc, out, err = inspect(vmm, state)
        check("snapshot: --inspect-snapshot accepts the state file", rc == 0 and not err,
              f"{rc} {err.strip()}")
        lines = out.splitlines()
        secs = [l.split()[1:3] for l in lines if l.startswith("section ")]
        per = ("regs", "sregs", "lapic", "msrs", "mp-state", "vcpu-events")
        have = all([t, str(c)] in secs for t in per for c in range(ncpus))
        fpu = all(["xsave", str(c)] in secs or ["fpu", str(c)] in secs for c in range(ncpus))
        check(f"snapshot: one vCPU section set per vCPU ({ncpus})",
              have and fpu and not any(s[0] == "regs" and int(s[1]) >= ncpus for s in secs), secs)
        check("snapshot: irqchips (PIC master, slave, IOAPIC), PIT, clock, memory sections",
              all(x in secs for x in (["irqchip", "0"], ["irqchip", "1"], ["irqchip", "2"],
                                       ["pit", "0"], ["clock", "0"], ["memory", "0"])), secs)
        vm = [l for l in lines if l.startswith("vm ")]
        ndev = int(vm[0].split()[6]) if vm else -1
        virtio = [l for l in lines if l.startswith("section virtio ")]
        check(f"snapshot: one section per device ({1 + ndrives}: rng, blk), queues running, blk's own state",
              ndev == 1 + ndrives and len(virtio) == ndev and "device-id 4 " in out
              and ("device-id 2 " in out) == (ndrives > 0)
              and all("q0=ready" in l for l in virtio)
              and all(("dev-state 0 " in l) == ("device-id 4 " in l) for l in virtio), virtio)
        check("snapshot: the MSRs include kvmclock's",
              all("kvmclock-msr yes" in l for l in lines if l.startswith("section msrs")), out)
        memsize = int(vm[0].split()[4]) if vm else -1
        ms = os.stat(mem)
        check("snapshot: the memory file is the guest RAM's size",
              memsize > 0 and ms.st_size == memsize, f"{ms.st_size} vs {memsize}")
        alloc = ms.st_blocks * 512
        check(f"snapshot: the memory file is sparse ({alloc >> 20} MiB of {ms.st_size >> 20} MiB "
              "allocated)", 0 < alloc < ms.st_size // 2, f"{alloc} of {ms.st_size} bytes")
        with open(mem, "rb") as f:
            banner = b"Linux version" in f.read()
        check("snapshot: the memory file holds the guest's RAM (the kernel's banner is there)",
              banner)
        written = snap["b"] if ok else -1
        check("snapshot: the RAM bytes written are what is allocated (within 10 %)",
              abs(alloc - written) <= max(alloc, written) // 10 + (1 << 20),
              f"{alloc} allocated, {written} written")
        with open(state, "rb") as f:
            data = bytearray(f.read())
        data[len(data) // 2] ^= 0x40
        bad = state + ".bad"
        with open(bad, "wb") as f:
            f.write(data)
        rc, out, err = inspect(vmm, bad)
        check("snapshot: a flipped byte: --inspect-snapshot exits 2 naming the checksum",
              rc == 2 and not out and len(err.splitlines()) == 1 and "checksum" in err,
              f"{rc} {err.strip()}")
    finally:
        for fd in (sf, mf, ro):
            os.close(fd)


def main():
    console, argv = sys.argv[1], sys.argv[2:]
    ncpus = int(argv[argv.index("--cpus") + 1]) if "--cpus" in argv else 1
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fd = theirs.fileno()
    with open(console + ".err", "wb") as err:
        proc = subprocess.Popen(argv + ["--control-fd", str(fd), "--console", console],
                                pass_fds=(fd,), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)
    theirs.close()
    events = []
    try:
        ev = until(ours, EV_BOOTED, 180, events)
        check("control: a BOOTED event with the boot time", isinstance(ev, dict) and ev["a"] > 0, ev)
        check("control: the guest ticks", wait_ticks(console, 0, 120))

        def req(typ, mid):
            ours.send(msg(typ, mid))
            return until(ours, REPLY, 30, events)

        r = req(STATUS, 7)
        check("control: STATUS answers running with the boot time, same id",
              r and r["id"] == 7 and r["result"] == 0 and r["a"] == 0 and r["b"] == ev["a"], r)
        r = req(PAUSE, 8)
        check("control: PAUSE answers 0", r and r["id"] == 8 and r["result"] == 0, r)
        time.sleep(0.5)
        n0 = ticks(console)
        time.sleep(3)
        n1 = ticks(console)
        check("control: a paused guest prints nothing for 3 s", n1 == n0, f"{n0} -> {n1}")
        r = req(STATUS, 9)
        check("control: STATUS says paused", r and r["a"] == 1, r)
        r = req(PAUSE, 10)
        check("control: a second PAUSE is 0 too", r and r["id"] == 10 and r["result"] == 0, r)
        r = req(RESUME, 11)
        check("control: RESUME answers 0", r and r["id"] == 11 and r["result"] == 0, r)
        check("control: the guest ticks again after RESUME", wait_ticks(console, n1, 60),
              f"{ticks(console)} ticks")
        r = req(STATUS, 12)
        check("control: STATUS says running again", r and r["a"] == 0, r)

        def send_fds(typ, mid, fds):
            socket.send_fds(ours, [msg(typ, mid)], fds)
            return until(ours, REPLY, 120, events)

        snapshots(argv[0], ncpus, argv.count("--drive"), req, send_fds, console)

        for desc, data, want in (("a short message", b"\x01" * 10, -EBADMSG),
                                 ("a long message", msg(STATUS, 1) + b"x", -EBADMSG),
                                 ("a bad magic", msg(STATUS, 1, magic=0xdeadbeef), -EBADMSG),
                                 ("an unknown type", msg(99, 1), -EBADMSG),
                                 ("an event sent to the VMM", msg(EV_EXIT, 13), -EINVAL)):
            ours.send(data)
            r = until(ours, REPLY, 30, events)
            check(f"control: {desc} is refused ({want})", r and r["result"] == want and r["text"], r)
        n2 = ticks(console)
        check("control: the guest still runs after bad messages", wait_ticks(console, n2, 60))

        r = req(PAUSE, 14)
        check("control: PAUSE again", r and r["result"] == 0, r)
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        check("control: SIGTERM stops a paused VM with 143", rc == 143, rc)
        ev = until(ours, EV_EXIT, 10, events)
        check("control: an EXIT event with the status and the reason",
              isinstance(ev, dict) and ev["result"] == 143 and "stopped by" in ev["text"], ev)
        check("control: then the channel ends", recv(ours, 10) == "eof")
        check("control: no unexpected message", not events, events)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- restore: kiln.test=compute saved mid-way and brought back ---------------

STEPS = 60


def expected_steps():
    """What tests/guest/init's compute mode prints: (step, value) and the result."""
    s, out = 1, []
    for i in range(1, STEPS + 1):
        for j in range(1, 201):
            s = (s * 31 + i * j) % 1000000007
        out.append((i, s))
    return out, s


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def steps_in(text):
    return [(int(a), int(b)) for a, b in re.findall(r"^KILN-STEP (\d+) (\d+)\r?$", text, re.M)]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def leftovers(tag):
    """Processes whose command line names tag (never this one's)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if tag.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def fix_crc(data):
    """The state file's trailing crc32 made right again after an edit."""
    import zlib
    body = bytes(data[:-4])
    return body + struct.pack("<I", zlib.crc32(body) & 0xffffffff)


def with_device(data, dev_id):
    """The state file with its last virtio device's id set to dev_id, in the
    header (struct snap_header: magic, version, header_size, a 120-byte
    snap_cpu, then snap_vm: cpus, ndevices, mem_size, device_ids[]) and in
    that device's section (type 0x200, payload starts with the id)."""
    b = bytearray(data)
    vm = 16 + 120
    ndev = struct.unpack_from("<I", b, vm + 4)[0]
    struct.pack_into("<I", b, vm + 16 + 4 * (ndev - 1), dev_id)
    off = struct.unpack_from("<I", b, 12)[0]
    while off + 16 <= len(b) - 4:
        typ, _flags, index, length = struct.unpack_from("<IIII", b, off)
        if typ == 0x200 and index == ndev - 1:
            struct.pack_into("<I", b, off + 16, dev_id)
        off += 16 + length
    return b


def opt(argv, name, default):
    return argv[argv.index(name) + 1] if name in argv else default


def vsock_refused(path, proc):
    """Connect to a restored VMM's vsock socket and ask for a guest port
    nothing listens on: True once the VMM closes the connection (the guest's
    reset), else what went wrong."""
    end = time.monotonic() + 120
    while not os.path.exists(path) and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.05)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(60)
        s.connect(path)
        s.sendall(b"CONNECT 5000\n")
        data = s.recv(64)
        return True if data == b"" else f"got {data!r}"
    except ConnectionResetError:
        return True
    except OSError as e:
        return f"{type(e).__name__}: {e}"
    finally:
        s.close()


def restore_main():
    d, vmm, argv = sys.argv[2], sys.argv[3], sys.argv[4:]
    snap = os.path.join(d, "snap")
    os.makedirs(snap, exist_ok=True)
    state, mem = os.path.join(snap, "state"), os.path.join(snap, "mem")
    orig = os.path.join(d, "orig.out")
    want_steps, want = expected_steps()
    # The flags that describe the VM (not how it boots): a clone gets them too,
    # and a vsock device of its own when the saved VM had one.
    shape, i = [], 0
    vsock = opt(argv, "--vsock", None)
    while i < len(argv):
        if argv[i] in ("--cpus", "--mem", "--drive"):
            shape += argv[i:i + 2]
        i += 2 if argv[i] in ("--kernel", "--initrd", "--cmdline", "--cpus", "--mem",
                              "--drive", "--vsock") else 1

    def with_vsock(flags, name):
        return flags + (["--vsock", os.path.join(d, name + ".vsock")] if vsock else [])

    def own_disks(flags, name):
        """flags with each writable drive a copy of its own, as libkiln gives
        each clone a copy of the template's scratch disk taken with it."""
        out = []
        for j, a in enumerate(flags):
            fields = a.split(",")
            if j and flags[j - 1] == "--drive" and fields[0].startswith("path=") and \
                    "ro" not in fields[1:]:
                copy = f"{fields[0][5:]}.{name}"
                shutil.copyfile(fields[0][5:], copy)
                a = ",".join([f"path={copy}"] + fields[1:])
            out.append(a)
        return out
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fd = theirs.fileno()
    with open(orig + ".err", "wb") as err:
        proc = subprocess.Popen([vmm] + argv + ["--control-fd", str(fd), "--console", orig],
                                pass_fds=(fd,), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)
    theirs.close()
    events, ok = [], False
    try:
        end = time.monotonic() + 240
        while time.monotonic() < end and len(steps_in(read(orig))) < 8:
            time.sleep(0.1)
        check("restore: the compute guest reaches step 8", len(steps_in(read(orig))) >= 8,
              read(orig)[-300:])
        ours.send(msg(PAUSE, 1))
        r = until(ours, REPLY, 30, events)
        check("restore: PAUSE mid-way", r and r["result"] == 0, r)
        sf = os.open(state, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        mf = os.open(mem, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        socket.send_fds(ours, [msg(SNAPSHOT, 2)], [sf, mf])
        os.close(sf)
        os.close(mf)
        r = until(ours, REPLY, 120, events)
        ok = bool(r and r["result"] == 0)
        check("restore: SNAPSHOT of the paused guest", ok, r)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
    check("restore: the saved VM is stopped (SIGTERM, 143)", rc == 143, rc)
    before = steps_in(read(orig))
    check(f"restore: the saved VM stopped mid-way (step {len(before)} of {STEPS}, no result)",
          0 < len(before) < STEPS and "KILN-RESULT" not in read(orig), before[-3:])
    mem_hash = sha256(mem)

    # Two clones of the same files at once: each continues the computation.
    clones = []
    for name in ("a", "b"):
        out = os.path.join(d, f"clone-{name}.out")
        err = open(out + ".err", "wb")
        t0 = time.monotonic()
        p = subprocess.Popen([vmm, "--restore", snap, "--console", out, "--print-boot-time"]
                             + with_vsock(own_disks(shape, f"clone-{name}"), f"clone-{name}"),
                             stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=err)
        clones.append((name, out, p, err, t0))
    refused = vsock and vsock_refused(os.path.join(d, "clone-a.vsock"), clones[0][2])
    for name, out, p, err, t0 in clones:
        try:
            rc = p.wait(240)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
        took = time.monotonic() - t0
        err.close()
        text, errtext = read(out), read(out + ".err")
        m = re.search(r"boot-time-us=(\d+)", errtext)
        run_us = int(m.group(1)) if m else -1
        check(f"restore: clone {name} runs to the guest's reboot, exit 0 ({took:.1f} s)",
              rc == 0 and run_us > 0, f"rc {rc}: {errtext.strip()[-300:]}")
        # A figure, not an assertion: the emulated host is slow and noisy.
        print(f"# restore took {run_us / 1000:.1f} ms (clone {name}: kiln-vmm start to its "
              f"vCPUs running, two clones at once)", flush=True)
        check(f"restore: clone {name} did not boot (no kernel banner on its console)",
              "Linux version" not in text and "KILN-MODE" not in text, text[:200])
        joined = steps_in(read(orig) + text)
        check(f"restore: clone {name}'s console continues where the saved VM stopped: "
              f"steps 1..{STEPS} once each, values right",
              joined == want_steps, f"{len(joined)} steps, first differing: "
              f"{next((x for x in zip(joined, want_steps) if x[0] != x[1]), None)}")
        first = steps_in(text)[:1]
        check(f"restore: clone {name}'s first whole step follows the saved VM's last "
              f"({before[-1][0] if before else '?'} -> {first[0][0] if first else '?'})",
              before and first and first[0][0] in (before[-1][0] + 1, before[-1][0] + 2), first)
        m = re.search(r"^KILN-RESULT (\d+)", text, re.M)
        check(f"restore: clone {name}'s result is the uninterrupted computation's ({want})",
              m is not None and int(m.group(1)) == want, m and m.group(0))
        if vsock and name == "a":
            check("restore: clone a's vsock takes a host CONNECT on its own socket; the "
                  "guest (no listener on the port) refuses it and the VMM closes it, "
                  "no fault", refused is True and "kiln-vmm: vsock:" not in errtext,
                  f"{refused}: {errtext.strip()[-300:]}")
    check("restore: the memory file is unchanged after the clones wrote guest RAM "
          "(MAP_PRIVATE)", sha256(mem) == mem_hash)

    # Rejections: exit 2, one line, nothing left running.
    with open(state, "rb") as f:
        good = f.read()
    cases = []

    def case(tag, state_bytes=None, mem_size=None, extra=None, pattern=""):
        dd = os.path.join(d, "rej-" + tag)
        os.makedirs(dd, exist_ok=True)
        with open(os.path.join(dd, "state"), "wb") as f:
            f.write(good if state_bytes is None else state_bytes)
        if mem_size is None:
            os.link(mem, os.path.join(dd, "mem"))
        else:
            with open(os.path.join(dd, "mem"), "wb") as f:
                f.truncate(mem_size)
        cases.append((tag, dd, extra or shape, pattern))

    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0x40
    case("flip", bytes(flipped), pattern="checksum")
    ver = bytearray(good)
    ver[8:12] = struct.pack("<I", 99)
    case("version", fix_crc(ver), pattern="version")
    case("truncated", mem_size=os.stat(mem).st_size - 4096, pattern="memory file")
    cpus = int(opt(shape, "--cpus", "1"))
    mib = int(opt(shape, "--mem", "128"))
    other = [a for a in shape]
    other[other.index("--cpus") + 1] = str(cpus + 1)
    case("cpus", extra=other, pattern=f"{cpus} vCPUs")
    other = [a for a in shape]
    other[other.index("--mem") + 1] = str(mib * 2)
    case("mem", extra=other, pattern=f"{mib} MiB")
    nodrive = [a for j, a in enumerate(shape) if a != "--drive" and
               (j == 0 or shape[j - 1] != "--drive")]
    case("devices", extra=nodrive, pattern="virtio-blk")
    # A state that holds virtio-net (not restorable yet): the last device made
    # one in the header and its section, the checksum made right, so only the
    # restore's own check can refuse it.
    case("net", fix_crc(with_device(good, 1)), pattern="has virtio-net (device")
    if vsock:
        # The snapshot's vsock device, none in the new VM.
        case("no-vsock", extra=shape, pattern="virtio-vsock in the snapshot")
    else:
        case("vsock", fix_crc(with_device(good, 19)), pattern="virtio-vsock in the snapshot")
    rw = [j for j, a in enumerate(shape) if j and shape[j - 1] == "--drive" and
          "ro" not in a.split(",")[1:]]
    if rw:
        # The saved writable disk offered read-only: the device's features
        # differ, refused at the device's restore.
        other = [a + ",ro" if j == rw[0] else a for j, a in enumerate(shape)]
        case("rw-as-ro", extra=other, pattern="virtio-blk: the new device offers other "
             "features")
    for tag, dd, flags, pattern in cases:
        if tag != "no-vsock":
            flags = with_vsock(flags, "rej")
        p = subprocess.run([vmm, "--restore", dd, "--console", "none"] + flags,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        lines = p.stderr.strip().splitlines()
        check(f"restore refused: {tag} -> exit 2, one line naming it",
              p.returncode == 2 and len(lines) == 1 and pattern in lines[0],
              f"{p.returncode} {p.stderr.strip()}")
    time.sleep(0.5)
    left = leftovers(os.path.join(d, "rej-"))
    check("restore refused: no process left behind", not left, left)


if len(sys.argv) > 1 and sys.argv[1] == "restore":
    restore_main()
else:
    main()
