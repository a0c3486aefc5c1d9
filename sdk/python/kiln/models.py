"""Plain data returned by the SDK."""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


def _decode(b: bytes) -> str:
    return b.decode("utf-8", errors="replace")


@dataclass
class CommandResult:
    """What a finished command left: its output and how it ended.

    ``stdout``/``stderr`` are the output decoded as UTF-8 (invalid bytes
    replaced); ``stdout_bytes``/``stderr_bytes`` are the raw bytes.
    ``exit_code`` is -1 and ``signal`` non-zero when a signal killed it.
    ``lost_bytes`` counts output that kilnd's 1 MiB ring dropped before it
    was read.
    """

    stdout_bytes: bytes
    stderr_bytes: bytes
    exit_code: int
    signal: int = 0
    pid: int = 0
    lost_bytes: int = 0

    @property
    def stdout(self) -> str:
        return _decode(self.stdout_bytes)

    @property
    def stderr(self) -> str:
        return _decode(self.stderr_bytes)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.signal


@dataclass
class SandboxInfo:
    """A sandbox as kilnd describes it (``raw`` holds every field)."""

    id: str
    state: str
    image: str = ""
    cpus: int = 0
    memory_mib: int = 0
    disk_mib: int = 0
    timeout_s: int = 0
    created_at: Optional[str] = None
    expires_at: Optional[str] = None
    metadata: Dict[str, str] = field(default_factory=dict)
    allow: List[str] = field(default_factory=list)
    template: Optional[str] = None
    forked_from: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "SandboxInfo":
        return cls(id=d["id"], state=d.get("state", ""), image=d.get("image", ""),
                   cpus=d.get("cpus", 0), memory_mib=d.get("memory_mib", 0),
                   disk_mib=d.get("disk_mib", 0), timeout_s=d.get("timeout_s", 0),
                   created_at=d.get("created_at"), expires_at=d.get("expires_at"),
                   metadata=d.get("metadata") or {}, allow=d.get("allow") or [],
                   template=d.get("template"), forked_from=d.get("forked_from"), raw=d)


@dataclass
class TemplateInfo:
    """A saved sandbox (kilnd's template.json; ``raw`` holds every field):
    ``stale`` when its kernel, initramfs or image changed since."""

    name: str
    cpus: int = 0
    mem_mib: int = 0
    disk_mib: int = 0
    created: int = 0
    state_bytes: int = 0
    ram_bytes: int = 0
    snapshot_ms: int = 0
    stale: bool = False
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "TemplateInfo":
        return cls(name=d["name"], cpus=d.get("cpus", 0), mem_mib=d.get("mem_mib", 0),
                   disk_mib=d.get("disk_mib", 0), created=d.get("created", 0),
                   state_bytes=d.get("state_bytes", 0), ram_bytes=d.get("ram_bytes", 0),
                   snapshot_ms=d.get("snapshot_ms", 0), stale=bool(d.get("stale", False)),
                   raw=d)


@dataclass
class ProcessInfo:
    """A process kilnd runs (or ran) in a sandbox."""

    pid: int
    cmd: List[str]
    state: str  # "running", "exited" or "failed"
    tag: Optional[str] = None
    exit_code: Optional[int] = None
    signal: Optional[int] = None
    next_seq: int = 0
    started_at: Optional[str] = None
    ended_at: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "ProcessInfo":
        return cls(pid=d["pid"], cmd=d.get("cmd") or [], state=d.get("state", ""),
                   tag=d.get("tag"), exit_code=d.get("exit_code"), signal=d.get("signal"),
                   next_seq=d.get("next_seq", 0), started_at=d.get("started_at"),
                   ended_at=d.get("ended_at"), raw=d)


@dataclass
class EntryInfo:
    """A file system entry: ``type`` is "file", "dir", "symlink" or "other"."""

    name: str
    path: str
    type: str
    mode: int
    size: int
    mtime: int

    @classmethod
    def from_json(cls, d: Dict[str, Any], path: str) -> "EntryInfo":
        return cls(name=d.get("name", ""), path=path, type=d.get("type", ""),
                   mode=int(d.get("mode", "0"), 8), size=d.get("size", 0),
                   mtime=d.get("mtime", 0))


class EventAccumulator:
    """Folds a process's event stream (NDJSON) into its output and its end."""

    def __init__(self, pid: int, after_seq: int = 0) -> None:
        self.pid = pid
        self.seq = after_seq
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.lost_bytes = 0
        self.done = False
        self.exit_code: Optional[int] = None
        self.signal = 0
        self.error: Optional[str] = None

    def feed(self, line: str) -> Optional[tuple]:
        """Takes one line; returns ("stdout"|"stderr", bytes) for output, else None."""
        line = line.strip()
        if not line:
            return None
        ev = json.loads(line)
        t = ev.get("type")
        seq = ev.get("seq")
        if t != "keepalive" and isinstance(seq, int):
            if seq <= self.seq:
                return None  # already seen (a replay after a reconnect)
            self.seq = seq
        if t in ("stdout", "stderr"):
            data = base64.b64decode(ev.get("data") or "")
            (self.stdout if t == "stdout" else self.stderr).extend(data)
            return (t, data)
        if t == "start":
            self.pid = ev.get("pid", self.pid)
        elif t == "exit":
            self.done = True
            self.exit_code = int(ev.get("exit_code", -1))
            self.signal = int(ev.get("signal") or 0)
        elif t == "error":
            self.done = True
            self.error = str(ev.get("message", "the process failed"))
        elif t == "lost":
            self.lost_bytes += int(ev.get("bytes") or 0)
        return None

    def end_from_info(self, d: Dict[str, Any]) -> bool:
        """After a stream ended without an end event: the process's end from
        ``GET .../processes/{pid}``. False if it still runs."""
        state = d.get("state")
        if state == "running" or int(d.get("next_seq") or 0) > self.seq + 1:
            return False  # still runs, or it has events this reader has not seen yet
        self.done = True
        if state == "exited":
            self.exit_code = int(d.get("exit_code", -1))
            self.signal = int(d.get("signal") or 0)
        else:
            self.error = "the process ended without an exit status"
        return True

    def result(self) -> CommandResult:
        return CommandResult(bytes(self.stdout), bytes(self.stderr),
                             self.exit_code if self.exit_code is not None else -1,
                             self.signal, self.pid, self.lost_bytes)
