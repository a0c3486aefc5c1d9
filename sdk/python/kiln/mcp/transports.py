"""MCP transports: stdio (newline-delimited JSON) and streamable HTTP."""
from __future__ import annotations

import ipaddress
import json
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from .protocol import (INVALID_REQUEST, PARSE_ERROR, PROTOCOL_VERSIONS, RPCError, Server,
                       Session, encode, error_response, log)

#: The longest message we take (a write_file of a few MiB fits).
MAX_MESSAGE = 16 << 20
#: Tool calls of one stdio session that run at once (more wait for a place).
MAX_CONCURRENT = 16


# -- stdio -------------------------------------------------------------------------

def serve_stdio(server: Server, rfile: Optional[IO[bytes]] = None,
                wfile: Optional[IO[bytes]] = None) -> int:
    """One session over stdin/stdout until stdin ends (or SIGTERM/SIGINT/SIGHUP);
    then the session's sandboxes are destroyed."""
    rfile = rfile or sys.stdin.buffer
    wfile = wfile or sys.stdout.buffer
    session = Session()
    wlock = threading.Lock()
    places = threading.BoundedSemaphore(MAX_CONCURRENT)
    workers: List[threading.Thread] = []
    broken = threading.Event()

    def send(msg: Any) -> None:
        if msg is None or broken.is_set():
            return
        data = encode(msg) + b"\n"
        with wlock:
            try:
                wfile.write(data)
                wfile.flush()
            except (BrokenPipeError, OSError, ValueError):
                broken.set()

    def work(msg: Any) -> None:
        try:
            send(server.handle_parsed(session, msg))
        finally:
            places.release()

    def stop(signo: int, frame: Any) -> None:
        raise SystemExit(0)

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)} \
        if threading.current_thread() is threading.main_thread() else {}
    log(f"stdio session {session.id[:8]} open")
    try:
        while not broken.is_set():
            line = rfile.readline(MAX_MESSAGE + 1)
            if not line:
                break
            if len(line) > MAX_MESSAGE and not line.endswith(b"\n"):
                # Too long: drop the rest of the line, answer a parse error.
                while True:
                    more = rfile.readline(1 << 20)
                    if not more or more.endswith(b"\n"):
                        break
                send(error_response(None, RPCError(PARSE_ERROR,
                                                   f"Parse error: message over {MAX_MESSAGE} bytes")))
                continue
            if not line.strip():
                continue
            try:
                msg = server.parse(line)
            except RPCError as e:
                send(error_response(None, e))
                continue
            if isinstance(msg, dict) and msg.get("method") == "tools/call" and "id" in msg:
                # Tool calls may take long: one thread each, so pings and other
                # calls are answered meanwhile.
                places.acquire()
                t = threading.Thread(target=work, args=(msg,), daemon=True)
                workers = [w for w in workers if w.is_alive()]
                workers.append(t)
                t.start()
            else:
                send(server.handle_parsed(session, msg))
    except KeyboardInterrupt:
        pass
    finally:
        for s in old:
            signal.signal(s, signal.SIG_IGN)  # the clean-up must not be cut short
        booting = session.booting
        killed = session.close()
        log(f"stdio session {session.id[:8]} closed; destroyed {len(killed)} sandbox(es)")
        # A sandbox_create still booting destroys its sandbox when the boot
        # ends (the session is closed): wait for it, or it would outlive us.
        deadline = time.monotonic() + (server.tools.config.boot_timeout + 30 if booting else 10)
        for w in workers:
            w.join(max(0.0, deadline - time.monotonic()))
    return 0


# -- streamable HTTP ---------------------------------------------------------------

_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class MCPHTTPServer(ThreadingHTTPServer):
    """The streamable HTTP transport: one endpoint (``path``) where POST takes
    JSON-RPC messages and answers application/json, DELETE ends a session and
    GET is 405 (we send no server-initiated messages)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: Tuple[str, int], server: Server, *, path: str = "/mcp",
                 allowed_origins: Optional[List[str]] = None, session_idle: float = 3600,
                 max_sessions: int = 100, verbose: bool = False) -> None:
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        super().__init__(addr, _Handler)
        self.mcp = server
        self.path = path
        self.allowed_origins = set(allowed_origins or [])
        self.session_idle = session_idle
        self.max_sessions = max_sessions
        self.verbose = verbose
        self.loopback = _is_loopback(addr[0])
        self.sessions: Dict[str, Session] = {}
        self.slock = threading.Lock()
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap, daemon=True)
        self._reaper.start()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}{self.path}"

    def origin_ok(self, origin: Optional[str]) -> bool:
        """No Origin (not a browser) or a local page's, or one named by --allow-origin."""
        if origin is None:
            return True
        if origin in self.allowed_origins or "*" in self.allowed_origins:
            return True
        try:
            u = urlsplit(origin)
            return u.scheme in ("http", "https") and _is_loopback(u.hostname or "")
        except ValueError:
            return False

    def host_ok(self, host: Optional[str]) -> bool:
        """Bound to loopback: only loopback Host headers (DNS rebinding)."""
        if not self.loopback:
            return True
        if not host:
            return False
        try:
            return _is_loopback(urlsplit("//" + host).hostname or "")
        except ValueError:
            return False

    def new_session(self) -> Optional[Session]:
        with self.slock:
            if len(self.sessions) >= self.max_sessions:
                return None
            s = Session()
            return s

    def keep(self, s: Session) -> None:
        with self.slock:
            self.sessions[s.id] = s
        log(f"http session {s.id[:8]} open")

    def end(self, sid: str) -> bool:
        with self.slock:
            s = self.sessions.pop(sid, None)
        if s is None:
            return False
        killed = s.close()
        log(f"http session {sid[:8]} closed; destroyed {len(killed)} sandbox(es)")
        return True

    def _reap(self) -> None:
        while not self._stop.wait(min(30.0, max(1.0, self.session_idle / 4))):
            now = time.monotonic()
            with self.slock:
                idle = [sid for sid, s in self.sessions.items()
                        if s.active == 0 and now - s.last_used > self.session_idle]
            for sid in idle:
                log(f"http session {sid[:8]} idle for {self.session_idle:.0f} s")
                self.end(sid)

    def close_all(self) -> None:
        self._stop.set()
        with self.slock:
            sids = list(self.sessions)
        threads = [threading.Thread(target=self.end, args=(sid,), daemon=True) for sid in sids]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kiln-mcp"
    timeout = 120  # seconds a connection may sit idle or send a body slowly
    server: MCPHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            log("http:", format % args)

    # -- answers -------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", ctype: Optional[str] = None,
              headers: Optional[Dict[str, str]] = None) -> None:
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, msg: Any, headers: Optional[Dict[str, str]] = None) -> None:
        self._send(status, encode(msg), "application/json", headers)

    def _rpc_error(self, status: int, code: int, message: str) -> None:
        self._json(status, error_response(None, RPCError(code, message)))

    def _checks(self) -> bool:
        """Path, Host and Origin; False when an answer was already sent."""
        if urlsplit(self.path).path != self.server.path:
            self._rpc_error(404, INVALID_REQUEST, f"Not found: the MCP endpoint is {self.server.path}")
            return False
        if not self.server.host_ok(self.headers.get("Host")):
            self._rpc_error(403, INVALID_REQUEST, "Forbidden: Host is not a loopback name")
            return False
        if not self.server.origin_ok(self.headers.get("Origin")):
            self._rpc_error(403, INVALID_REQUEST, "Forbidden: Origin not allowed")
            return False
        return True

    def _session(self) -> Optional[Session]:
        sid = self.headers.get("Mcp-Session-Id")
        if not sid:
            self._rpc_error(400, INVALID_REQUEST, "Bad Request: Mcp-Session-Id header is required")
            return None
        with self.server.slock:
            s = self.server.sessions.get(sid)
        if s is None or s.closed:
            self._rpc_error(404, INVALID_REQUEST, "Session not found (it ended): initialize again")
            return None
        v = self.headers.get("MCP-Protocol-Version")
        if v is not None and v not in PROTOCOL_VERSIONS:
            self._rpc_error(400, INVALID_REQUEST, f"Bad Request: unsupported MCP-Protocol-Version {v}")
            return None
        return s

    # -- methods ---------------------------------------------------------------------
    def do_POST(self) -> None:
        if not self._checks():
            return
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._rpc_error(411, INVALID_REQUEST, "Length Required: send Content-Length")
            return
        try:
            n = int(self.headers.get("Content-Length", ""))
            if n < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            self._rpc_error(411, INVALID_REQUEST, "Length Required: send Content-Length")
            return
        if n > MAX_MESSAGE:
            self.close_connection = True
            self._rpc_error(413, INVALID_REQUEST, f"Payload Too Large: at most {MAX_MESSAGE} bytes")
            return
        body = self.rfile.read(n)
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            self._rpc_error(415, INVALID_REQUEST, "Unsupported Media Type: send application/json")
            return
        accept = (self.headers.get("Accept") or "*/*").lower()
        if not any(a in accept for a in ("application/json", "application/*", "*/*")):
            self._rpc_error(406, INVALID_REQUEST, "Not Acceptable: the answer is application/json")
            return
        try:
            msg = self.server.mcp.parse(body)
        except RPCError as e:
            self._json(400, error_response(None, e))
            return
        if isinstance(msg, dict) and msg.get("method") == "initialize":
            s = self.server.new_session()
            if s is None:
                self._rpc_error(503, INVALID_REQUEST, "Service Unavailable: too many sessions")
                return
            ans = self.server.mcp.handle_parsed(s, msg)
            if ans is not None and "result" in ans:
                self.server.keep(s)
                self._json(200, ans, {"Mcp-Session-Id": s.id})
            elif ans is None:
                self._rpc_error(400, INVALID_REQUEST, "Bad Request: initialize must be a request (with an id)")
            else:
                self._json(400, ans)
            return
        s = self._session()
        if s is None:
            return
        with s.lock:
            s.active += 1
        try:
            ans = self.server.mcp.handle_parsed(s, msg)
        finally:
            with s.lock:
                s.active -= 1
                s.last_used = time.monotonic()
        if ans is None:
            self._send(202)
        else:
            self._json(200, ans)

    def do_GET(self) -> None:
        if not self._checks():
            return
        # No server-initiated messages: no SSE stream to offer.
        self._send(405, b"", None, {"Allow": "POST, DELETE"})

    def do_DELETE(self) -> None:
        if not self._checks():
            return
        sid = self.headers.get("Mcp-Session-Id")
        if not sid:
            self._rpc_error(400, INVALID_REQUEST, "Bad Request: Mcp-Session-Id header is required")
            return
        if not self.server.end(sid):
            self._rpc_error(404, INVALID_REQUEST, "Session not found")
            return
        self._send(204)

    def do_PUT(self) -> None:
        if self._checks():
            self._send(405, b"", None, {"Allow": "POST, GET, DELETE"})

    do_PATCH = do_PUT


def parse_listen(s: str) -> Tuple[str, int]:
    """'PORT', 'HOST:PORT' or '[V6]:PORT'; the host defaults to 127.0.0.1."""
    host = "127.0.0.1"
    if s.startswith("["):
        h, _, p = s[1:].partition("]:")
        host, port = h, p
    elif ":" in s:
        host, _, port = s.rpartition(":")
    else:
        port = s
    try:
        n = int(port)
        if not 0 <= n <= 65535:
            raise ValueError
    except ValueError:
        raise ValueError(f"--http {s!r}: want PORT or HOST:PORT") from None
    return host or "127.0.0.1", n


def serve_http(server: Server, listen: str, *, path: str = "/mcp",
               allowed_origins: Optional[List[str]] = None, session_idle: float = 3600,
               verbose: bool = False) -> int:
    """Serves until SIGTERM/SIGINT; then every session's sandboxes are destroyed."""
    httpd = MCPHTTPServer(parse_listen(listen), server, path=path,
                          allowed_origins=allowed_origins, session_idle=session_idle,
                          verbose=verbose)

    def stop(signo: int, frame: Any) -> None:
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, stop)
    log(f"listening on {httpd.url}")
    try:
        httpd.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(s, signal.SIG_IGN)
        n = len(httpd.sessions)
        httpd.close_all()
        httpd.server_close()
        log(f"stopped; closed {n} session(s)")
    return 0
