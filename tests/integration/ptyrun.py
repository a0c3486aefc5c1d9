#!/usr/bin/python3
"""Run a command on a fresh host pseudo-terminal, as a user at a terminal would.

    ptyrun.py [--rows R --cols C] [--out FILE] [STEP...] -- CMD [ARGS...]

STEPs run in order while the command's output is read:
    --expect REGEX   wait until the output so far matches (bytes regex)
    --winsize RxC    resize the terminal (the kernel sends SIGWINCH)
    --send TEXT      type TEXT (Python escapes: \\r, \\x03, ...)
    --signal NAME    send the signal to the command
Then it waits for the command to end. Prints one line:
    rc=N restored=yes|no steps=done|stuck
(restored: the terminal's mode after the command is the one before it).
Every wait is bounded by --limit seconds (default 300): then the command is
killed and steps=stuck.
"""
import fcntl
import os
import re
import select
import signal
import struct
import sys
import termios
import time


def winsize(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def main(argv):
    rows, cols, out_path, limit = 24, 80, None, 300.0
    steps = []
    i = 0
    while i < len(argv) and argv[i] != "--":
        a, v = argv[i], argv[i + 1]
        if a == "--rows":
            rows = int(v)
        elif a == "--cols":
            cols = int(v)
        elif a == "--out":
            out_path = v
        elif a == "--limit":
            limit = float(v)
        elif a in ("--expect", "--winsize", "--send", "--signal"):
            steps.append((a, v))
        else:
            sys.exit("ptyrun: unknown option " + a)
        i += 2
    cmd = argv[i + 1:]
    master, slave = os.openpty()
    winsize(master, rows, cols)
    before = termios.tcgetattr(slave)

    def child_setup():
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    pid = os.fork()
    if pid == 0:
        try:
            for fd in (0, 1, 2):
                os.dup2(slave, fd)
            child_setup()
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)
    out = b""
    deadline = time.monotonic() + limit
    status = None
    stuck = False

    def pump(wait):
        nonlocal out
        r, _, _ = select.select([master], [], [], wait)
        if r:
            try:
                data = os.read(master, 65536)
            except OSError:
                data = b""
            out += data

    for kind, val in steps:
        if kind == "--expect":
            pat = re.compile(val.encode(), re.S)
            while not pat.search(out) and time.monotonic() < deadline:
                if os.waitpid(pid, os.WNOHANG) != (0, 0):
                    break
                pump(0.2)
            if not pat.search(out):
                stuck = True
                break
        elif kind == "--winsize":
            r_, c_ = val.split("x")
            winsize(master, int(r_), int(c_))
        elif kind == "--send":
            os.write(master, val.encode().decode("unicode_escape").encode("latin-1"))
        elif kind == "--signal":
            os.kill(pid, getattr(signal, "SIG" + val))
    while status is None:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = st
            break
        if time.monotonic() >= deadline:
            stuck = True
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            break
        pump(0.2)
    # What is still buffered.
    while select.select([master], [], [], 0)[0]:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        out += data
    after = termios.tcgetattr(slave)
    if out_path:
        with open(out_path, "wb") as f:
            f.write(out)
    rc = os.waitstatus_to_exitcode(status)
    rc = 128 - rc if rc < 0 else rc
    print("rc=%d restored=%s steps=%s" % (rc, "yes" if after == before else "no",
                                         "stuck" if stuck else "done"))


if __name__ == "__main__":
    main(sys.argv[1:])
