#!/usr/bin/python3
"""kiln-vmm's control channel (src/common/ctl.h) end to end, for t-vmm.sh.

usage: vmmctl.py CONSOLE_FILE VMM ARGS...
Starts the VMM with --control-fd on a SOCK_SEQPACKET pair (the guest runs
the test initramfs's kiln.test=tick: a numbered line every 0.2 s), then
pauses, resumes, sends bad messages and stops it while paused. Prints one
"PASS desc" or "FAIL desc" line per check."""
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time

FMT = "<IHHIiQQ128s"
MAGIC = 0x314C434B
PAUSE, RESUME, STATUS, REPLY, EV_BOOTED, EV_EXIT = 1, 2, 3, 0x80, 0x81, 0x82
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


def main():
    console, argv = sys.argv[1], sys.argv[2:]
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


main()
