"""kiln-mcp's tools: sandboxes, commands and files of kilnd, through the SDK.

Every tool answers with text an LLM can read. A failure (a bad argument, an
unknown sandbox, an error from kilnd) is a result with ``isError: true``, not
a protocol error. Output is capped (``Config.output_cap``, 64 KiB): past it
the head and the tail are kept and a note says how much was left out.
"""
from __future__ import annotations

import base64
import binascii
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import httpx

from .. import exceptions as exc
from ..models import EventAccumulator
from ..sandbox import CommandHandle, Sandbox
from .protocol import Session, log


@dataclass
class Config:
    """What an operator sets on the command line (``kiln-mcp --help``)."""

    host: Optional[str] = None            # KILN_HOST when None
    token: Optional[str] = None           # KILN_TOKEN when None
    image: str = "debian"                 # sandbox_create's default image
    code_image: Optional[str] = None      # run_code's image (default: image)
    max_sandboxes: int = 4                # per session
    sandbox_timeout: int = 1800           # seconds a sandbox lives unless said otherwise
    max_command_timeout: int = 600        # the most a foreground command may run
    output_cap: int = 64 * 1024           # bytes of output in one result
    request_timeout: float = 30.0         # each kilnd API call
    boot_timeout: float = 180.0           # a sandbox's create


class ToolError(Exception):
    """A failure to report to the model as an ``isError`` result."""


# -- a small JSON Schema checker (the subset our inputSchemas use) -------------

_TYPES: Dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool))
    or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}


def check(schema: Dict[str, Any], value: Any, where: str = "arguments") -> None:
    """Raises ToolError naming the first place where value breaks schema."""
    t = schema.get("type")
    if t is not None:
        types = t if isinstance(t, list) else [t]
        if not any(_TYPES[x](value) for x in types):
            raise ToolError(f"{where} must be of type {' or '.join(types)}, not {_jtype(value)}")
    if "enum" in schema and value not in schema["enum"]:
        raise ToolError(f"{where} must be one of {', '.join(map(repr, schema['enum']))}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise ToolError(f"{where} must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise ToolError(f"{where} must be at most {schema['maximum']}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            raise ToolError(f"{where} must not be empty" if schema["minLength"] == 1
                            else f"{where} must be at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise ToolError(f"{where} must be at most {schema['maxLength']} characters")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for k in schema.get("required", []):
            if k not in value:
                raise ToolError(f"{where}: {k!r} is required")
        extra = schema.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                check(props[k], v, f"{where}.{k}")
            elif extra is False:
                known = ", ".join(props) or "none"
                raise ToolError(f"{where}: unknown argument {k!r} (known: {known})")
            elif isinstance(extra, dict):
                check(extra, v, f"{where}.{k}")
    if isinstance(value, list) and "items" in schema:
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise ToolError(f"{where} must have at most {schema['maxItems']} items")
        for i, v in enumerate(value):
            check(schema["items"], v, f"{where}[{i}]")


def _jtype(v: Any) -> str:
    for name in ("boolean", "integer", "number", "string", "array", "object"):
        if _TYPES[name](v):
            return name
    return "null" if v is None else type(v).__name__


# -- output ----------------------------------------------------------------------

class CappedOutput(EventAccumulator):
    """An EventAccumulator that keeps at most ``cap`` bytes of each stream:
    the first half as it came and the last half, counting what fell between."""

    def __init__(self, pid: int, after_seq: int = 0, cap: int = 32 * 1024) -> None:
        super().__init__(pid, after_seq)
        self.cap = max(2, cap)
        self.head: Dict[str, Optional[bytes]] = {"stdout": None, "stderr": None}
        self.dropped = {"stdout": 0, "stderr": 0}

    def feed(self, line: str) -> Optional[tuple]:
        out = super().feed(line)
        if out:
            name = out[0]
            buf: bytearray = getattr(self, name)
            half = self.cap // 2
            if self.head[name] is None and len(buf) > self.cap:
                self.head[name] = bytes(buf[:half])
                del buf[:half]
            if self.head[name] is not None and len(buf) > half:
                n = len(buf) - half
                self.dropped[name] += n
                del buf[:n]
        return out

    def text(self, name: str) -> Tuple[str, List[str]]:
        """The stream as text and notes about it (truncation, invalid UTF-8)."""
        tail = bytes(getattr(self, name))
        head = self.head[name]
        notes: List[str] = []
        if head is None:
            s, bad = _decode(tail)
        else:
            h, bad1 = _decode(head)
            t, bad2 = _decode(tail)
            bad = bad1 or bad2
            n = self.dropped[name]
            s = f"{h}\n[... {n} bytes of {name} left out ...]\n{t}"
            notes.append(f"{name} was {len(head) + n + len(tail)} bytes: cut to its first "
                         f"{len(head)} and last {len(tail)} bytes")
        if bad:
            notes.append(f"{name} is not valid UTF-8: invalid bytes are shown as U+FFFD")
        return s, notes


def _decode(b: bytes) -> Tuple[str, bool]:
    try:
        return b.decode("utf-8"), False
    except UnicodeDecodeError:
        return b.decode("utf-8", errors="replace"), True


class _Handle(CommandHandle):
    """A CommandHandle whose output is capped (a process printing without end
    must not fill our memory)."""

    def __init__(self, sb: Sandbox, pid: int, cap: int, *, after_seq: int = 0,
                 timeout: Optional[float] = None) -> None:
        super().__init__(sb, pid, after_seq=after_seq, check=False, timeout=timeout)
        self._acc = CappedOutput(pid, after_seq, cap)

    @property
    def out(self) -> CappedOutput:
        return self._acc  # type: ignore[return-value]


def _ending(acc: EventAccumulator) -> str:
    if acc.error is not None:
        return f"failed: {acc.error}"
    if not acc.done:
        return "still running"
    if acc.signal:
        return f"killed by signal {acc.signal}"
    return f"exit code: {acc.exit_code}"


def _report(acc: CappedOutput, first: str, extra: Optional[List[str]] = None) -> str:
    out, n1 = acc.text("stdout")
    err, n2 = acc.text("stderr")
    parts = [first]
    parts.append("--- stdout ---\n" + out if out else "--- stdout: (empty) ---")
    if err:
        parts.append("--- stderr ---\n" + err)
    notes = n1 + n2 + (extra or [])
    if acc.lost_bytes:
        notes.append(f"{acc.lost_bytes} bytes were lost: kilnd keeps the last 1 MiB of a process's output")
    if notes:
        parts.append("notes: " + "; ".join(notes))
    return "\n".join(parts)


# -- the tools ---------------------------------------------------------------------

_SB = {"type": "string", "minLength": 1,
       "description": "A sandbox id from sandbox_create (this session's only)."}
_PID = {"type": "integer", "minimum": 1, "description": "A process id from run_command with background=true."}


def _obj(props: Dict[str, Any], required: List[str]) -> Dict[str, Any]:
    return {"type": "object", "properties": props, "required": required,
            "additionalProperties": False}


class Tools:
    """The tools of one kiln-mcp process, shared by all its sessions."""

    def __init__(self, config: Optional[Config] = None,
                 sandbox_factory: Optional[Callable[..., Sandbox]] = None) -> None:
        self.config = c = config or Config()
        self._create = sandbox_factory or Sandbox.create
        ctime = {"type": "integer", "minimum": 1, "maximum": c.max_command_timeout}
        self.specs: Dict[str, Tuple[str, str, Dict[str, Any], Callable[..., str]]] = {}

        def add(name: str, title: str, desc: str, schema: Dict[str, Any], fn: Callable[..., str]) -> None:
            self.specs[name] = (title, desc, schema, fn)

        add("sandbox_create", "Create a sandbox",
            "Boots a new sandbox: a fresh Linux microVM (its own kernel) that keeps its files and "
            "processes between calls until sandbox_kill or the end of this session. It has no "
            "network unless `allow` names hosts. Returns its id.",
            _obj({"image": {"type": "string", "minLength": 1,
                            "description": f"Image name (default {c.image!r})."},
                  "cpus": {"type": "integer", "minimum": 1, "maximum": 64},
                  "memory_mib": {"type": "integer", "minimum": 64},
                  "timeout_s": {"type": "integer", "minimum": 1,
                                "description": f"Seconds the sandbox lives (default {c.sandbox_timeout})."},
                  "allow": {"type": "array", "items": {"type": "string"}, "maxItems": 64,
                            "description": "Network egress rules, e.g. 'pypi.org', '*.github.com', '10.0.0.0/8:443'."}},
                 []), self.sandbox_create)
        add("sandbox_list", "List sandboxes", "Lists this session's sandboxes and their state.",
            _obj({}, []), self.sandbox_list)
        add("sandbox_kill", "Destroy a sandbox",
            "Destroys a sandbox and everything in it.", _obj({"sandbox": _SB}, ["sandbox"]),
            self.sandbox_kill)
        add("run_command", "Run a shell command",
            "Runs a command with `sh -c` in a sandbox as root (cwd /root unless `cwd`). In the "
            "foreground it waits for the end and returns stdout, stderr and the exit code; with "
            "background=true it returns a pid at once (read it with process_output, feed it with "
            "send_stdin, stop it with kill_process).",
            _obj({"sandbox": _SB,
                  "command": {"type": "string", "minLength": 1, "description": "Shell command line."},
                  "cwd": {"type": "string", "minLength": 1},
                  "env": {"type": "object", "additionalProperties": {"type": "string"}},
                  "timeout_s": dict(ctime, description="Seconds before the command is killed "
                                    "(default 60 in the foreground, none in the background)."),
                  "background": {"type": "boolean"}},
                 ["sandbox", "command"]), self.run_command)
        add("process_output", "Read a process's output",
            "Returns a background process's state and its output after event `after_seq` "
            "(0: from the start), and the after_seq to pass next time. With wait_s it waits up "
            "to that many seconds for the process to end.",
            _obj({"sandbox": _SB, "pid": _PID,
                  "after_seq": {"type": "integer", "minimum": 0},
                  "wait_s": {"type": "integer", "minimum": 0, "maximum": 50}},
                 ["sandbox", "pid"]), self.process_output)
        add("send_stdin", "Write to a process's stdin",
            "Sends text to a background process's stdin; eof=true closes it afterwards.",
            _obj({"sandbox": _SB, "pid": _PID, "data": {"type": "string"},
                  "eof": {"type": "boolean"}}, ["sandbox", "pid"]), self.send_stdin)
        add("kill_process", "Signal a process",
            "Sends a signal (default KILL) to a process and its process group.",
            _obj({"sandbox": _SB, "pid": _PID,
                  "signal": {"type": "string", "minLength": 1,
                             "description": "A name like TERM, INT, KILL (default KILL)."}},
                 ["sandbox", "pid"]), self.kill_process)
        add("read_file", "Read a file",
            f"Reads a file from a sandbox as text (or base64); at most max_bytes "
            f"(default and limit {c.output_cap // 2}).",
            _obj({"sandbox": _SB, "path": {"type": "string", "minLength": 1},
                  "encoding": {"type": "string", "enum": ["text", "base64"]},
                  "max_bytes": {"type": "integer", "minimum": 1, "maximum": c.output_cap // 2}},
                 ["sandbox", "path"]), self.read_file)
        add("write_file", "Write a file",
            "Writes a file in a sandbox (parent directories are created; an existing file is replaced).",
            _obj({"sandbox": _SB, "path": {"type": "string", "minLength": 1},
                  "content": {"type": "string"},
                  "encoding": {"type": "string", "enum": ["text", "base64"]},
                  "mode": {"type": "string", "description": "Octal permissions, e.g. '0755'."}},
                 ["sandbox", "path", "content"]), self.write_file)
        add("list_files", "List a directory",
            "Lists a directory of a sandbox: type, mode, size and name of each entry.",
            _obj({"sandbox": _SB, "path": {"type": "string", "minLength": 1,
                                           "description": "Directory (default /root)."}},
                 ["sandbox"]), self.list_files)
        add("run_code", "Run code in a fresh sandbox",
            "One shot: boots a fresh sandbox, runs the code (python: python3; bash), returns "
            "stdout, stderr and the exit code, and destroys the sandbox. Nothing is kept.",
            _obj({"language": {"type": "string", "enum": ["python", "bash"]},
                  "code": {"type": "string"},
                  "timeout_s": dict(ctime, description="Seconds before the code is killed (default 60).")},
                 ["language", "code"]), self.run_code)

    # -- the protocol's side -----------------------------------------------------
    def list(self) -> List[Dict[str, Any]]:
        return [{"name": n, "title": t, "description": d, "inputSchema": s}
                for n, (t, d, s, _) in self.specs.items()]

    def has(self, name: str) -> bool:
        return name in self.specs

    def call(self, session: Session, name: str, args: Dict[str, Any]) -> Dict[str, Any]:
        _, _, schema, fn = self.specs[name]
        try:
            check(schema, args)
            text = fn(session, **args)
            is_error = False
        except ToolError as e:
            text, is_error = f"error: {e}", True
        except exc.NotFoundError as e:
            text, is_error = f"error: not found: {e.message}", True
        except exc.KilnError as e:
            text, is_error = f"error: {type(e).__name__}: {e}", True
        except (ValueError, TypeError, UnicodeError) as e:
            text, is_error = f"error: {e}", True
        except Exception as e:
            log(f"tool {name} failed:\n{traceback.format_exc()}")
            text, is_error = f"error: internal error in {name}: {type(e).__name__}: {e}", True
        return {"content": [{"type": "text", "text": text}], "isError": is_error}

    # -- helpers -------------------------------------------------------------------
    def _sandbox(self, session: Session, sid: str) -> Sandbox:
        with session.lock:
            sb = session.sandboxes.get(sid)
        if sb is None:
            raise ToolError(f"no sandbox {sid!r} in this session (sandbox_list shows this "
                            f"session's sandboxes; sandbox_create makes one)")
        return sb

    def _new_sandbox(self, session: Session, image: str, **kw: Any) -> Sandbox:
        c = self.config
        with session.lock:
            if session.closed:
                raise ToolError("the session has ended")
            n = len(session.sandboxes) + session.booting
            if n >= c.max_sandboxes:
                raise ToolError(f"this session already has {n} sandboxes "
                                f"(at most {c.max_sandboxes}): sandbox_kill one first")
            session.booting += 1  # holds the place while it boots
        sb = None
        try:
            sb = self._create(image=image, host=c.host, token=c.token,
                              request_timeout=c.request_timeout, boot_timeout=c.boot_timeout,
                              metadata={"created_by": "kiln-mcp"}, **kw)
        finally:
            with session.lock:
                session.booting -= 1
                closed = session.closed
                if sb is not None and not closed:
                    session.sandboxes[sb.id] = sb
        if closed and sb is not None:  # the session ended while it booted
            try:
                sb.kill()
            finally:
                sb.close()
            raise ToolError("the session has ended")
        return sb  # type: ignore[return-value]

    def _forget(self, session: Session, sb: Sandbox) -> None:
        with session.lock:
            session.sandboxes.pop(sb.id, None)

    def _start(self, sb: Sandbox, command: str, *, cwd: Optional[str], env: Optional[Dict[str, str]],
               timeout: Optional[float], stdin: bool) -> int:
        h = sb.commands.run(command, cwd=cwd, env=env, timeout=timeout, background=True,
                            check=False, stdin=True if stdin else None)
        return h.pid

    def _foreground(self, sb: Sandbox, pid: int, timeout_s: int) -> Tuple[str, CappedOutput]:
        h = _Handle(sb, pid, self.config.output_cap // 2, timeout=timeout_s)
        try:
            h.wait(timeout=timeout_s + 30)
            first = _ending(h.out)
        except exc.CommandTimeoutError:
            first = f"timed out: killed after {timeout_s} s"
        except exc.CommandError as e:
            first = f"failed: {e}"
        except exc.TimeoutError:
            try:
                h.kill()
            except exc.KilnError:
                pass
            first = f"timed out: no end after {timeout_s + 30} s; killed"
        return first, h.out

    # -- tools -----------------------------------------------------------------------
    def sandbox_create(self, session: Session, image: Optional[str] = None,
                       cpus: int = 1, memory_mib: int = 512, timeout_s: Optional[int] = None,
                       allow: Optional[List[str]] = None) -> str:
        image = image or self.config.image
        t = int(timeout_s or self.config.sandbox_timeout)
        sb = self._new_sandbox(session, image, cpus=int(cpus), memory_mib=int(memory_mib),
                               timeout=t, allow=allow or None)
        net = "network: " + ", ".join(allow) if allow else "no network"
        return (f"sandbox {sb.id} is running (image {image}, {cpus} vCPU, {memory_mib} MiB, {net}; "
                f"it ends at {sb.info.expires_at} or when this session ends). Pass "
                f"sandbox={sb.id!r} to run_command, read_file, write_file and list_files.")

    def sandbox_list(self, session: Session) -> str:
        with session.lock:
            sbs = list(session.sandboxes.values())
        if not sbs:
            return "no sandboxes in this session"
        lines = []
        for sb in sbs:
            try:
                i = sb.get_info()
                lines.append(f"{sb.id}  {i.state}  image={i.image}  cpus={i.cpus}  "
                             f"memory_mib={i.memory_mib}  expires_at={i.expires_at}")
            except exc.NotFoundError:
                lines.append(f"{sb.id}  gone (its timeout passed or it was destroyed)")
        return "\n".join(lines)

    def sandbox_kill(self, session: Session, sandbox: str) -> str:
        sb = self._sandbox(session, sandbox)
        self._forget(session, sb)
        try:
            gone = sb.kill()
        finally:
            sb.close()
        return f"sandbox {sandbox} destroyed" if gone else f"sandbox {sandbox} had already ended"

    def run_command(self, session: Session, sandbox: str, command: str, cwd: Optional[str] = None,
                    env: Optional[Dict[str, str]] = None, timeout_s: Optional[int] = None,
                    background: bool = False) -> str:
        sb = self._sandbox(session, sandbox)
        if background:
            pid = self._start(sb, command, cwd=cwd, env=env,
                              timeout=int(timeout_s) if timeout_s else None, stdin=True)
            return (f"started in the background: pid {pid}. process_output(sandbox, pid={pid}) "
                    f"reads its output; send_stdin feeds it; kill_process stops it.")
        t = int(timeout_s or 60)
        pid = self._start(sb, command, cwd=cwd, env=env, timeout=t, stdin=False)
        first, out = self._foreground(sb, pid, t)
        return _report(out, first)

    def process_output(self, session: Session, sandbox: str, pid: int, after_seq: int = 0,
                       wait_s: int = 0) -> str:
        sb = self._sandbox(session, sandbox)
        pid, after_seq = int(pid), int(after_seq)
        info = sb._api.json("GET", f"/v1/sandboxes/{sb.id}/processes/{pid}")
        h = _Handle(sb, pid, self.config.output_cap // 2, after_seq=after_seq)
        acc = h.out
        notes: List[str] = []
        try:
            if info.get("state") != "running" or wait_s:
                try:
                    h.wait(timeout=wait_s if info.get("state") == "running" else 30)
                except exc.TimeoutError:
                    pass
                except exc.CommandError:
                    pass  # its end is in acc (an "error" event)
            else:
                last = int(info.get("next_seq") or 1) - 1
                if last > acc.seq:
                    self._drain(sb, pid, acc, last, notes)
        except exc.KilnError as e:
            notes.append(f"reading its events failed: {e}")
        state = _ending(acc) if acc.done else "running"
        cmd = info.get("cmd") or []
        first = f"process {pid} ({' '.join(map(str, cmd))[:200]}): {state}; output after seq {after_seq}:"
        return _report(acc, first, notes) + f"\nnext after_seq: {acc.seq}"

    def _drain(self, sb: Sandbox, pid: int, acc: CappedOutput, until: int, notes: List[str]) -> None:
        """Reads the events that exist now (up to seq ``until``) without waiting for more."""
        r = sb._api.send("GET", f"/v1/sandboxes/{sb.id}/processes/{pid}/events",
                         params={"after_seq": acc.seq}, stream=True, read_timeout=10)
        try:
            for line in r.iter_lines():
                acc.feed(line)
                if acc.done or acc.seq >= until:
                    break
        except httpx.HTTPError as e:
            notes.append(f"the event stream broke ({type(e).__name__}); pass after_seq to read on")
        finally:
            r.close()

    def send_stdin(self, session: Session, sandbox: str, pid: int, data: str = "",
                   eof: bool = False) -> str:
        sb = self._sandbox(session, sandbox)
        h = CommandHandle(sb, int(pid))
        n = len(data.encode("utf-8"))
        try:
            if data:
                h.send_stdin(data.encode("utf-8"))
        except exc.ConflictError:
            raise ToolError(f"process {pid} has ended or its stdin is closed") from None
        closed = ""
        if eof:
            try:
                h.close_stdin()
                closed = "; stdin closed"
            except exc.ConflictError:
                if not data:
                    raise ToolError(f"process {pid} has ended or its stdin is closed") from None
                # It ended (or closed stdin) after taking the data: nothing left to close.
                closed = "; its stdin was already closed (the process may have ended)"
        return f"sent {n} bytes to process {pid}{closed}"

    def kill_process(self, session: Session, sandbox: str, pid: int, signal: str = "KILL") -> str:
        sb = self._sandbox(session, sandbox)
        sig = signal.upper()
        sig = sig[3:] if sig.startswith("SIG") else sig
        sent = sb.commands.kill(int(pid), sig if not sig.isdigit() else int(sig))
        return f"sent {sig} to process {pid}" if sent else f"process {pid} had already ended"

    def read_file(self, session: Session, sandbox: str, path: str, encoding: str = "text",
                  max_bytes: Optional[int] = None) -> str:
        sb = self._sandbox(session, sandbox)
        cap = int(max_bytes or self.config.output_cap // 2)
        buf = bytearray()
        more = False
        chunks = sb.files.read(path, format="stream")
        try:
            for c in chunks:
                buf.extend(c)
                if len(buf) > cap:
                    more = True
                    break
        finally:
            chunks.close()  # type: ignore[attr-defined]
        data = bytes(buf[:cap])
        notes = []
        if more:
            try:
                size = sb.files.get_info(path).size
                notes.append(f"truncated: showing the first {cap} of {size} bytes")
            except exc.KilnError:
                notes.append(f"truncated: showing the first {cap} bytes")
        if encoding == "base64":
            text = base64.b64encode(data).decode("ascii")
        else:
            text, bad = _decode(data)
            if bad:
                notes.append("not valid UTF-8: invalid bytes are shown as U+FFFD "
                             "(encoding=base64 gives the bytes)")
        return text + ("\n[" + "; ".join(notes) + "]" if notes else "")

    def write_file(self, session: Session, sandbox: str, path: str, content: str,
                   encoding: str = "text", mode: Optional[str] = None) -> str:
        sb = self._sandbox(session, sandbox)
        if encoding == "base64":
            try:
                data = base64.b64decode(content, validate=True)
            except (binascii.Error, ValueError):
                raise ToolError("content is not valid base64") from None
        else:
            data = content.encode("utf-8")
        if mode is not None:
            try:
                if not 0 <= int(mode, 8) <= 0o7777:
                    raise ValueError
            except ValueError:
                raise ToolError(f"mode {mode!r} is not an octal mode like '0644'") from None
        sb.files.write(path, data, mode=mode)
        return f"wrote {len(data)} bytes to {path}"

    def list_files(self, session: Session, sandbox: str, path: str = "/root") -> str:
        sb = self._sandbox(session, sandbox)
        entries = sb.files.list(path)
        if not entries:
            return f"{path}: empty"
        limit = 1000
        lines = [f"{e.type:<7} {e.mode:04o} {e.size:>10}  {e.name}{'/' if e.type == 'dir' else ''}"
                 for e in sorted(entries, key=lambda e: e.name)[:limit]]
        if len(entries) > limit:
            lines.append(f"[... {len(entries) - limit} more entries left out]")
        return f"{path}:\n" + "\n".join(lines)

    def run_code(self, session: Session, language: str, code: str,
                 timeout_s: Optional[int] = None) -> str:
        t = int(timeout_s or 60)
        image = self.config.code_image or self.config.image
        path, argv = {"python": ("/root/main.py", "python3 /root/main.py"),
                      "bash": ("/root/main.sh", "bash /root/main.sh")}[language]
        sb = self._new_sandbox(session, image, cpus=1, memory_mib=512,
                               timeout=min(self.config.sandbox_timeout, t + 120))
        try:
            sb.files.write(path, code)
            pid = self._start(sb, argv, cwd="/root", env=None, timeout=t, stdin=False)
            first, out = self._foreground(sb, pid, t)
            return _report(out, first) + "\n(the sandbox was destroyed)"
        finally:
            self._forget(session, sb)
            try:
                sb.kill()
            except exc.KilnError as e:
                log(f"destroying {sb.id}: {e}")
            finally:
                sb.close()

