"""A stand-in for kilnd's API (docs/daemon.md), enough for kiln-mcp's tools
to be tested without a VM: a "sandbox" is a temporary directory, a process a
local `sh -c` in it, and the API's answers have kilnd's shapes (sandboxes,
detached processes with numbered base64 events, stdin, signals, files).
Not a sandbox at all: tests only, with commands the tests choose.
"""
import base64
import json
import os
import shutil
import signal
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit


class Proc:
    def __init__(self, sb, body):
        self.cmd = body["cmd"]
        # Absolute paths under /root mean the sandbox's own /root here.
        argv = [c.replace("/root", os.path.join(sb.root, "root")) for c in self.cmd]
        self.events = []
        self.cond = threading.Condition()
        self.next_seq = 1
        self.ended = False
        self.exit_code = None
        self.sig = None
        self.p = subprocess.Popen(argv, cwd=os.path.join(sb.root, body.get("cwd", "/root").lstrip("/")),
                                  env=dict(os.environ, **body.get("env", {})),
                                  stdin=subprocess.PIPE if body.get("stdin") else subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self.pid = self.p.pid
        self.add({"type": "start", "pid": self.pid})
        self.readers = [threading.Thread(target=self.pump, args=(f, n), daemon=True)
                        for f, n in ((self.p.stdout, "stdout"), (self.p.stderr, "stderr"))]
        for t in self.readers:
            t.start()
        self.timeout = body.get("timeout_s")
        threading.Thread(target=self.reap, daemon=True).start()

    def add(self, ev):
        with self.cond:
            ev["seq"] = self.next_seq
            self.next_seq += 1
            self.events.append(ev)
            self.cond.notify_all()

    def pump(self, f, name):
        while True:
            b = f.read1(4096)
            if not b:
                return
            self.add({"type": name, "data": base64.b64encode(b).decode()})

    def reap(self):
        timed_out = False
        try:
            self.p.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(self.pid, signal.SIGKILL)
            self.p.wait()
        for t in self.readers:
            t.join()
        rc = self.p.returncode
        self.exit_code, self.sig = (rc, 0) if rc >= 0 else (-1, -rc)
        if timed_out:
            self.add({"type": "error", "message": f"timed out after {self.timeout} s"})
        else:
            self.add({"type": "exit", "exit_code": self.exit_code, "signal": self.sig})
        with self.cond:
            self.ended = True
            self.cond.notify_all()

    def info(self):
        return {"pid": self.pid, "cmd": self.cmd, "state": "exited" if self.ended else "running",
                "exit_code": self.exit_code, "signal": self.sig, "next_seq": self.next_seq}


class Sb:
    def __init__(self, body):
        self.id = "sb-" + uuid.uuid4().hex
        self.root = tempfile.mkdtemp(prefix="fake-kilnd-")
        os.makedirs(os.path.join(self.root, "root"))
        self.procs = {}
        self.body = body

    def json(self):
        return {"id": self.id, "state": "running", "image": self.body.get("image", "debian"),
                "cpus": self.body.get("cpus", 1), "memory_mib": self.body.get("memory_mib", 512),
                "expires_at": "2099-01-01T00:00:00Z"}

    def path(self, p):
        return os.path.join(self.root, p.lstrip("/"))


class FakeKilnd(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path):
        self.sandboxes = {}
        self.deleted = []
        self.lock = threading.Lock()
        super().__init__(path, Handler)

    def handle_error(self, request, client_address):
        # A client that hung up (it read what it wanted of an event stream) is normal.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)

    def stop(self):
        self.shutdown()
        self.server_close()
        for sb in list(self.sandboxes.values()):
            kill_all(sb)


def kill_all(sb):
    for p in sb.procs.values():
        if not p.ended:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
    shutil.rmtree(sb.root, ignore_errors=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *a):
        pass

    def address_string(self):
        return "unix"

    def send(self, status, obj=None, raw=None):
        body = raw if raw is not None else (json.dumps(obj).encode() if obj is not None else b"")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def err(self, status, code, msg):
        self.send(status, {"error": {"code": code, "message": msg}})

    def body(self):
        return self._body

    def read_body(self):
        # Always read it: a body left unread makes the close a reset.
        n = int(self.headers.get("Content-Length") or 0)
        self._body = self.rfile.read(n) if n else b""

    def route(self, method):
        self.read_body()
        u = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        parts = u.path.strip("/").split("/")[2:]  # after v1/sandboxes
        srv = self.server
        if not u.path.startswith("/v1/sandboxes"):
            return self.err(404, "not_found", "no route")
        if not parts:
            if method == "POST":
                sb = Sb(json.loads(self.body() or b"{}"))
                with srv.lock:
                    srv.sandboxes[sb.id] = sb
                return self.send(201, sb.json())
            return self.send(200, {"sandboxes": [s.json() for s in srv.sandboxes.values()]})
        sb = srv.sandboxes.get(parts[0])
        if sb is None:
            return self.err(404, "not_found", f"no sandbox {parts[0]}")
        rest = parts[1:]
        if not rest:
            if method == "DELETE":
                with srv.lock:
                    srv.sandboxes.pop(sb.id, None)
                    srv.deleted.append(sb.id)
                kill_all(sb)
                return self.send(204)
            return self.send(200, sb.json())
        if rest == ["processes"] and method == "POST":
            p = Proc(sb, json.loads(self.body()))
            sb.procs[p.pid] = p
            return self.send(201, {"pid": p.pid})
        if rest[0] == "processes" and len(rest) >= 2:
            p = sb.procs.get(int(rest[1]))
            if p is None:
                return self.err(404, "not_found", "no process")
            if len(rest) == 2:
                return self.send(200, p.info())
            if rest[2] == "events":
                return self.events(p, int(q.get("after_seq", 0)))
            if rest[2] == "stdin":
                data = self.body()
                if p.ended or p.p.stdin is None or p.p.stdin.closed:
                    return self.err(409, "conflict", "stdin closed")
                p.p.stdin.write(data)
                p.p.stdin.flush()
                if q.get("eof"):
                    p.p.stdin.close()
                return self.send(204)
            if rest[2] == "signal":
                if p.ended:
                    return self.err(409, "conflict", "ended")
                s = json.loads(self.body())["signal"]
                os.killpg(p.pid, getattr(signal, "SIG" + s) if isinstance(s, str) else s)
                return self.send(204)
        if rest == ["files"]:
            path = sb.path(q["path"])
            if method == "PUT":
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(self.body())
                return self.send(204)
            if not os.path.isfile(path):
                return self.err(404, "not_found", f"no such file: {q['path']}")
            with open(path, "rb") as f:
                return self.send(200, raw=f.read())
        if rest == ["fs", "stat"]:
            path = sb.path(q["path"])
            if not os.path.exists(path):
                return self.err(404, "not_found", "no such file")
            return self.send(200, {"type": "file", "mode": "0644", "size": os.path.getsize(path), "mtime": 0})
        if rest == ["fs", "list"]:
            path = sb.path(q["path"])
            if not os.path.isdir(path):
                return self.err(404, "not_found", "no such directory")
            ents = [{"name": n, "type": "dir" if os.path.isdir(os.path.join(path, n)) else "file",
                     "mode": "0644", "size": os.path.getsize(os.path.join(path, n)), "mtime": 0}
                    for n in os.listdir(path)]
            return self.send(200, {"entries": ents})
        return self.err(404, "not_found", "no route")

    def events(self, p, after):
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.end_headers()
        i = 0
        while True:
            with p.cond:
                while i < len(p.events) and p.events[i]["seq"] <= after:
                    i += 1
                if i >= len(p.events):
                    if p.ended:
                        return
                    p.cond.wait(1)
                    continue
                ev = p.events[i]
            self.wfile.write(json.dumps(ev).encode() + b"\n")
            self.wfile.flush()
            after = ev["seq"]

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def do_PUT(self):
        self.route("PUT")

    def do_DELETE(self):
        self.route("DELETE")


def start(path):
    srv = FakeKilnd(path)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    time.sleep(0.05)
    return srv
