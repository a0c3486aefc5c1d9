"""The Model Context Protocol's JSON-RPC 2.0 layer, independent of transport.

A :class:`Server` answers messages for :class:`Session` objects: the
lifecycle (``initialize``, ``notifications/initialized``, ``ping``) and the
tools (``tools/list``, ``tools/call``). Transports (``kiln.mcp.transports``)
turn bytes into calls of :meth:`Server.handle_payload` and back.
"""
from __future__ import annotations

import json
import sys
import threading
import time
import traceback
import uuid
from typing import Any, Callable, Dict, List, Optional, Union

#: Protocol revisions we speak, newest first. ``initialize`` answers with the
#: client's revision when it is one of these, else with the newest.
PROTOCOL_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
LATEST = PROTOCOL_VERSIONS[0]

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

SERVER_NAME = "kiln-mcp"


class RPCError(Exception):
    """A JSON-RPC error answer."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> Dict[str, Any]:
        e: Dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            e["data"] = self.data
        return e


def error_response(req_id: Any, err: RPCError) -> Dict[str, Any]:
    return {"jsonrpc": "2.0", "id": req_id, "error": err.to_json()}


def encode(msg: Any) -> bytes:
    """One message as compact JSON (ASCII only, so it is valid UTF-8 whatever
    the strings held)."""
    return json.dumps(msg, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def log(*a: Any) -> None:
    """Diagnostics go to stderr: stdout is the stdio transport's channel."""
    print("kiln-mcp:", *a, file=sys.stderr, flush=True)


class Session:
    """One MCP session: its negotiated revision and the sandboxes it created.

    The sandboxes are the session's alone (another session's ids are "not
    found" here) and :meth:`close` destroys them.
    """

    def __init__(self, sid: Optional[str] = None) -> None:
        self.id = sid or uuid.uuid4().hex
        self.protocol_version: Optional[str] = None
        self.client_info: Dict[str, Any] = {}
        self.initialized = False      # initialize answered
        self.ready = False            # notifications/initialized received
        self.closed = False
        self.sandboxes: Dict[str, Any] = {}   # id -> kiln.Sandbox
        self.booting = 0                      # sandbox_create calls still booting
        self.lock = threading.Lock()
        self.active = 0               # requests in flight (HTTP reaper)
        self.last_used = time.monotonic()

    def close(self) -> List[str]:
        """Destroys every sandbox the session created (in parallel); returns their ids.
        Idempotent."""
        with self.lock:
            self.closed = True
            sbs = list(self.sandboxes.values())
            self.sandboxes.clear()
        threads = [threading.Thread(target=_kill_quietly, args=(sb,), daemon=True) for sb in sbs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        return [sb.id for sb in sbs]


def _kill_quietly(sb: Any) -> None:
    try:
        sb.kill()
    except Exception as e:  # kilnd gone, the sandbox ended on its own, ...
        log(f"destroying {sb.id}: {e}")
    finally:
        try:
            sb.close()
        except Exception:
            pass


class Server:
    """Dispatches MCP messages to the lifecycle handlers and to ``tools``
    (an object with ``list()`` -> tool descriptions and ``has(name)`` and
    ``call(session, name, arguments)`` -> a ``tools/call`` result)."""

    def __init__(self, tools: Any, *, name: str = SERVER_NAME, version: str = "0.1.0",
                 instructions: Optional[str] = None) -> None:
        self.tools = tools
        self.name = name
        self.version = version
        self.instructions = instructions
        self.methods: Dict[str, Callable[[Session, Dict[str, Any]], Any]] = {
            "initialize": self._initialize,
            "ping": lambda s, p: {},
            "tools/list": self._tools_list,
            "tools/call": self._tools_call,
        }

    # -- payloads ----------------------------------------------------------
    def parse(self, data: Union[bytes, str]) -> Any:
        """JSON text -> a message or a batch; RPCError(PARSE_ERROR) if it is not JSON."""
        try:
            if isinstance(data, bytes):
                data = data.decode("utf-8")
            return json.loads(data)
        except (UnicodeDecodeError, ValueError) as e:
            raise RPCError(PARSE_ERROR, f"Parse error: {e}") from None

    def handle_payload(self, session: Session, data: Union[bytes, str]) -> Any:
        """Answers one payload (a message or a batch): the response(s), or None
        when nothing is to be answered (notifications, responses)."""
        try:
            msg = self.parse(data)
        except RPCError as e:
            return error_response(None, e)
        return self.handle_parsed(session, msg)

    def handle_parsed(self, session: Session, msg: Any) -> Any:
        if isinstance(msg, list):
            if not msg:
                return error_response(None, RPCError(INVALID_REQUEST, "Invalid Request: empty batch"))
            out = [r for r in (self.handle_message(session, m, in_batch=True) for m in msg)
                   if r is not None]
            return out or None
        return self.handle_message(session, msg)

    # -- one message -------------------------------------------------------
    def handle_message(self, session: Session, msg: Any, in_batch: bool = False) -> Optional[Dict[str, Any]]:
        if not isinstance(msg, dict):
            return error_response(None, RPCError(INVALID_REQUEST, "Invalid Request: not an object"))
        req_id = msg.get("id")
        has_id = "id" in msg
        id_ok = isinstance(req_id, (str, int)) and not isinstance(req_id, bool)
        if msg.get("jsonrpc") != "2.0":
            return error_response(req_id if id_ok else None,
                                  RPCError(INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"'))
        if "method" not in msg:
            if has_id and ("result" in msg or "error" in msg):
                return None  # a response to a request of ours: we send none, ignore it
            return error_response(req_id if id_ok else None,
                                  RPCError(INVALID_REQUEST, 'Invalid Request: no "method"'))
        method = msg["method"]
        if not isinstance(method, str):
            return error_response(req_id if id_ok else None,
                                  RPCError(INVALID_REQUEST, 'Invalid Request: "method" must be a string'))
        if has_id and not id_ok:
            return error_response(None, RPCError(INVALID_REQUEST,
                                                 'Invalid Request: "id" must be a string or an integer'))
        params = msg.get("params", {})
        if params is None:
            params = {}
        if not has_id:
            self._notification(session, method, params)
            return None
        try:
            if not isinstance(params, dict):
                raise RPCError(INVALID_PARAMS, 'Invalid params: "params" must be an object')
            if method == "initialize" and in_batch:
                raise RPCError(INVALID_REQUEST, "Invalid Request: initialize cannot be batched")
            fn = self.methods.get(method)
            if fn is None:
                raise RPCError(METHOD_NOT_FOUND, f"Method not found: {method}")
            if method not in ("initialize", "ping") and not session.initialized:
                raise RPCError(INVALID_REQUEST, "Invalid Request: send initialize first")
            result = fn(session, params)
            return {"jsonrpc": "2.0", "id": req_id, "result": result}
        except RPCError as e:
            return error_response(req_id, e)
        except Exception as e:  # a bug of ours: an answer all the same
            log(f"internal error in {method}:\n{traceback.format_exc()}")
            return error_response(req_id, RPCError(INTERNAL_ERROR, f"Internal error: {e}"))

    def _notification(self, session: Session, method: str, params: Any) -> None:
        if method == "notifications/initialized":
            session.ready = True
        # notifications/cancelled, progress, roots/list_changed...: nothing to do.

    # -- methods -----------------------------------------------------------
    def _initialize(self, session: Session, params: Dict[str, Any]) -> Dict[str, Any]:
        want = params.get("protocolVersion")
        if not isinstance(want, str):
            raise RPCError(INVALID_PARAMS, 'Invalid params: "protocolVersion" (a string) is required')
        if session.initialized:
            raise RPCError(INVALID_REQUEST, "Invalid Request: the session is already initialized")
        info = params.get("clientInfo")
        session.client_info = info if isinstance(info, dict) else {}
        session.protocol_version = want if want in PROTOCOL_VERSIONS else LATEST
        session.initialized = True
        result: Dict[str, Any] = {
            "protocolVersion": session.protocol_version,
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": self.name, "version": self.version},
        }
        if self.instructions:
            result["instructions"] = self.instructions
        return result

    def _tools_list(self, session: Session, params: Dict[str, Any]) -> Dict[str, Any]:
        cursor = params.get("cursor")
        if cursor is not None and not isinstance(cursor, str):
            raise RPCError(INVALID_PARAMS, 'Invalid params: "cursor" must be a string')
        return {"tools": self.tools.list()}

    def _tools_call(self, session: Session, params: Dict[str, Any]) -> Dict[str, Any]:
        name = params.get("name")
        if not isinstance(name, str):
            raise RPCError(INVALID_PARAMS, 'Invalid params: "name" (a string) is required')
        args = params.get("arguments", {})
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise RPCError(INVALID_PARAMS, 'Invalid params: "arguments" must be an object')
        if not self.tools.has(name):
            raise RPCError(INVALID_PARAMS, f"Unknown tool: {name}")
        return self.tools.call(session, name, args)
