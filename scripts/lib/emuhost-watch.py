#!/usr/bin/env python3
"""scripts/with-kvm's watcher of the emulated KVM host (issue 17).

Follows the emulated host's console; when its kernel reports an RCU stall
(an emulated CPU that stopped answering: seen stuck for good under QEMU's
multi-threaded TCG), asks QEMU over QMP where every emulated CPU is, three
times a second apart, writes that to OUT, and ends QEMU: a stuck emulated host
never recovers, and waiting for the job's timeout only wastes the run.
with-kvm then names the stall, and scripts/run-tests runs the test again.

usage: emuhost-watch.py CONSOLE QMP_SOCKET OUT QEMU_PID
"""
import json
import os
import re
import signal
import socket
import sys
import time

STALL = re.compile(rb"rcu: INFO: rcu_\w+ (self-)?detected (expedited )?stalls?")
REG = re.compile(r"^(RIP|RAX|RSP|CR0|EFER|CS |HLT)=?")


def follow(path, qemu_pid):
    """Blocks until the console shows a stall (True) or QEMU is gone (False)."""
    fd = None
    buf = b""
    while True:
        if fd is None:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                pass
        if fd is not None:
            chunk = os.read(fd, 65536)
            if chunk:
                buf = (buf + chunk)[-4096:]
                if STALL.search(buf):
                    return True
                continue
        try:
            os.kill(qemu_pid, 0)
        except ProcessLookupError:
            return False
        time.sleep(1)  # a file has no readiness to wait on; the console is slow


def hmp(sock, f, cmd):
    req = {"execute": "human-monitor-command", "arguments": {"command-line": cmd}}
    sock.sendall(json.dumps(req).encode() + b"\n")
    while True:
        line = f.readline()
        if not line:
            return ""
        msg = json.loads(line)
        if "return" in msg:
            return msg["return"]
        if "error" in msg:
            return "error: " + msg["error"].get("desc", "")


def main():
    console, qmp, out, qemu_pid = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    if not follow(console, qemu_pid):
        return 0
    time.sleep(2)
    lines = []
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(20)
        s.connect(qmp)
        f = s.makefile("r")
        f.readline()  # greeting
        s.sendall(b'{"execute":"qmp_capabilities"}\n')
        f.readline()
        for i in range(3):
            regs = hmp(s, f, "info registers -a")
            for l in regs.splitlines():
                if l.startswith("CPU#") or REG.match(l):
                    lines.append(f"sample {i + 1}: {l.strip()}")
            time.sleep(1)
        s.close()
    except (OSError, ValueError) as e:
        lines.append(f"could not ask QEMU: {e}")
    with open(out, "w") as o:
        o.write("\n".join(lines) + "\n")
    try:
        os.kill(qemu_pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
