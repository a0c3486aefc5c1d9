"""Transport: where kilnd is, the token, httpx clients and error mapping."""
from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List, Optional, Tuple, Union

import httpx

from . import exceptions as exc

DEFAULT_HOST = "unix:/run/kiln/kilnd.sock"
#: Seconds for an ordinary API call.
REQUEST_TIMEOUT = 30.0
#: Seconds for a create (the sandbox boots before kilnd answers).
CREATE_TIMEOUT = 180.0
#: Seconds without a byte on a file transfer before giving up.
FILE_TIMEOUT = 300.0
#: Seconds without a line on an event stream (kilnd sends a keepalive every 15 s).
STREAM_IDLE_TIMEOUT = 60.0
#: Chunk size for uploads and stdin.
CHUNK = 1 << 20
STDIN_CHUNK = 64 * 1024

Timeout = Optional[float]


def resolve(host: Optional[str], token: Optional[str]) -> Tuple[str, Optional[str], Optional[str]]:
    """(base_url, unix socket path or None, token) from arguments or KILN_HOST/KILN_TOKEN."""
    host = host or os.environ.get("KILN_HOST") or DEFAULT_HOST
    if token is None:
        token = os.environ.get("KILN_TOKEN")
    if host.startswith("unix:"):
        path = host[5:]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ValueError(f"KILN_HOST {host!r}: no socket path")
        return "http://kiln", path, token
    if host.startswith("tcp:"):
        return "http://" + host[4:], None, token
    if host.startswith(("http://", "https://")):
        return host.rstrip("/"), None, token
    if host.startswith("/"):
        return "http://kiln", host, token
    raise ValueError(f"KILN_HOST {host!r}: want unix:/PATH, tcp:HOST:PORT or http(s)://HOST:PORT")


def headers(token: Optional[str]) -> Dict[str, str]:
    h = {"User-Agent": "kiln-python/0.1"}
    if token:
        h["Authorization"] = f"Bearer {token}"
    return h


def timeout(read: Timeout, connect: float = 10.0) -> httpx.Timeout:
    return httpx.Timeout(connect=connect, read=read, write=read, pool=connect)


def sync_client(host: Optional[str], token: Optional[str], request_timeout: float) -> httpx.Client:
    base, uds, tok = resolve(host, token)
    transport = httpx.HTTPTransport(uds=uds) if uds else httpx.HTTPTransport()
    return httpx.Client(base_url=base, transport=transport, headers=headers(tok),
                        timeout=timeout(request_timeout))


def async_client(host: Optional[str], token: Optional[str],
                 request_timeout: float) -> httpx.AsyncClient:
    base, uds, tok = resolve(host, token)
    transport = httpx.AsyncHTTPTransport(uds=uds) if uds else httpx.AsyncHTTPTransport()
    return httpx.AsyncClient(base_url=base, transport=transport, headers=headers(tok),
                             timeout=timeout(request_timeout))


def api_error(status: int, body: bytes) -> exc.APIError:
    code, message = None, ""
    try:
        err = json.loads(body)["error"]
        code, message = err.get("code"), err.get("message", "")
    except Exception:
        message = body[:500].decode("utf-8", "replace").strip()
    return exc.error_for(status, code, message or f"HTTP {status}")


def transport_error(e: Exception, what: str) -> exc.KilnError:
    """An httpx failure as ours."""
    if isinstance(e, httpx.TimeoutException):
        return exc.TimeoutError(f"{what}: timed out ({type(e).__name__})")
    return exc.ConnectionError(f"{what}: cannot reach kilnd: {e}")


def process_body(cmd: Union[str, List[str]], cwd: Optional[str], env: Optional[Dict[str, str]],
                 user: Union[str, int, None], stdin: bool, timeout_s: Timeout,
                 tag: Optional[str]) -> Dict[str, Any]:
    if isinstance(cmd, str):
        argv = ["sh", "-c", cmd]
    else:
        argv = [str(a) for a in cmd]
        if not argv:
            raise ValueError("cmd must not be empty")
    body: Dict[str, Any] = {"cmd": argv}
    if env:
        body["env"] = {str(k): str(v) for k, v in env.items()}
    if cwd:
        body["cwd"] = cwd
    if user is not None:
        body["user"] = {"root": "0:0"}.get(str(user), str(user))
    if stdin:
        body["stdin"] = True
    if timeout_s:
        body["timeout_s"] = max(1, int(math.ceil(timeout_s)))
    if tag:
        body["tag"] = tag
    return body


def mode_str(mode: Union[int, str, None]) -> Optional[str]:
    if mode is None:
        return None
    return format(mode, "o") if isinstance(mode, int) else str(mode)


def as_bytes(data: Union[str, bytes, bytearray, memoryview]) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else bytes(data)


def file_size(f: Any) -> Optional[int]:
    """Bytes left in a seekable file object, or None."""
    try:
        pos = f.tell()
        end = f.seek(0, os.SEEK_END)
        f.seek(pos)
        return int(end - pos)
    except Exception:
        return None
