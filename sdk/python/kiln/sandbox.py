"""The synchronous client: :class:`Sandbox`, its ``commands`` and ``files``."""
from __future__ import annotations

import threading
import time
from typing import IO, Any, Callable, Dict, Iterator, List, Literal, Optional, Union, overload

import httpx

from . import _http
from . import exceptions as exc
from .models import CommandResult, EntryInfo, EventAccumulator, ProcessInfo, SandboxInfo, TemplateInfo

OutputCallback = Callable[[str], Any]
Data = Union[str, bytes, bytearray, memoryview, IO[bytes], IO[str]]
_DEFAULT: Any = object()
#: A command's default time limit in seconds when it runs in the foreground.
DEFAULT_COMMAND_TIMEOUT = 60.0


class _Api:
    """One httpx client and the request helpers every sync object shares."""

    def __init__(self, host: Optional[str], token: Optional[str],
                 request_timeout: Optional[float]) -> None:
        self.request_timeout = request_timeout or _http.REQUEST_TIMEOUT
        self.http = _http.sync_client(host, token, self.request_timeout)
        self.where = (host, token, request_timeout)

    def send(self, method: str, path: str, *, stream: bool = False,
             read_timeout: Optional[float] = None, ok: tuple = (200, 201, 204),
             **kw: Any) -> httpx.Response:
        """A request; its answer if its status is in ok, else the mapped error."""
        to = _http.timeout(read_timeout or self.request_timeout)
        try:
            req = self.http.build_request(method, path, timeout=to, **kw)
            r = self.http.send(req, stream=stream)
        except httpx.HTTPError as e:
            raise _http.transport_error(e, f"{method} {path}") from e
        if r.status_code not in ok:
            try:
                body = r.read()
            except httpx.HTTPError:
                body = b""
            finally:
                r.close()
            raise _http.api_error(r.status_code, body)
        return r

    def json(self, method: str, path: str, **kw: Any) -> Any:
        r = self.send(method, path, **kw)
        return r.json() if r.content else None

    def close(self) -> None:
        self.http.close()


def _call(cb: Optional[OutputCallback], data: bytes) -> None:
    if cb is not None:
        cb(data.decode("utf-8", errors="replace"))


class CommandHandle:
    """A process running in a sandbox (``commands.run(..., background=True)``,
    ``commands.connect(pid)``).

    ``wait()`` follows its events to its end; a broken stream is resumed
    from the last event seen (``events?after_seq=``), so nothing is lost or
    repeated.
    """

    def __init__(self, sandbox: "Sandbox", pid: int, *, after_seq: int = 0,
                 on_stdout: Optional[OutputCallback] = None,
                 on_stderr: Optional[OutputCallback] = None, check: bool = True,
                 timeout: Optional[float] = None) -> None:
        self.sandbox = sandbox
        self.pid = pid
        self.on_stdout = on_stdout
        self.on_stderr = on_stderr
        self.check = check
        self._timeout = timeout
        self._acc = EventAccumulator(pid, after_seq)

    def __repr__(self) -> str:
        return f"<CommandHandle pid={self.pid} sandbox={self.sandbox.id}>"

    @property
    def _base(self) -> str:
        return f"/v1/sandboxes/{self.sandbox.id}/processes/{self.pid}"

    @property
    def stdout(self) -> str:
        """The stdout seen so far."""
        return bytes(self._acc.stdout).decode("utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        """The stderr seen so far."""
        return bytes(self._acc.stderr).decode("utf-8", errors="replace")

    @property
    def seq(self) -> int:
        """The last event's sequence number seen."""
        return self._acc.seq

    def wait(self, timeout: Optional[float] = _DEFAULT) -> CommandResult:
        """Follows the process to its end and returns its result.

        Raises :class:`CommandExitError` on a non-zero exit (when ``check``),
        :class:`CommandTimeoutError` when kilnd killed it at its timeout,
        :class:`CommandError` when it ended otherwise, and
        :class:`kiln.TimeoutError` when ``timeout`` seconds pass first (the
        process keeps running; call ``wait`` again or ``kill``).
        """
        if timeout is _DEFAULT:
            timeout = self._timeout + 30 if self._timeout else None
        deadline = time.monotonic() + timeout if timeout else None
        acc = self._acc
        failures = 0
        while not acc.done:
            idle = _http.STREAM_IDLE_TIMEOUT
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise exc.TimeoutError(f"process {self.pid} still runs after {timeout} s")
                idle = min(idle, left)
            try:
                r = self.sandbox._api.send("GET", self._base + "/events",
                                           params={"after_seq": acc.seq}, stream=True,
                                           read_timeout=idle)
                try:
                    for line in r.iter_lines():
                        out = acc.feed(line)
                        if out:
                            self._emit(out[0], out[1])
                        if acc.done:
                            break
                        if deadline is not None and time.monotonic() >= deadline:
                            raise exc.TimeoutError(
                                f"process {self.pid} still runs after {timeout} s")
                finally:
                    r.close()
                if not acc.done:
                    # The stream ended without an end event: it ended
                    # before (after_seq past its end), or kilnd cut it.
                    if not acc.end_from_info(self.sandbox._api.json("GET", self._base)):
                        failures += 1
                        if failures > 5:
                            raise exc.CommandError(f"process {self.pid}: its event stream keeps ending")
                        time.sleep(min(0.2 * failures, 1.0))
                    continue
                failures = 0
            except (httpx.HTTPError, exc.TimeoutError, exc.ConnectionError) as e:
                # A stream that broke or went quiet: resume after the last seq.
                failures += 1
                if failures > 5 or (deadline is not None and time.monotonic() >= deadline):
                    if isinstance(e, httpx.HTTPError):
                        raise _http.transport_error(e, f"process {self.pid}") from e
                    raise
                time.sleep(min(0.2 * failures, 1.0))
        return self._finish()

    def _emit(self, stream: str, data: bytes) -> None:
        _call(self.on_stdout if stream == "stdout" else self.on_stderr, data)

    def _finish(self) -> CommandResult:
        acc = self._acc
        res = acc.result()
        if acc.error is not None:
            if "timed out" in acc.error:
                raise exc.CommandTimeoutError(f"process {self.pid}: {acc.error}")
            raise exc.CommandError(f"process {self.pid}: {acc.error}")
        if self.check and not res.ok:
            raise exc.CommandExitError(res)
        return res

    def send_stdin(self, data: Data) -> None:
        """Sends bytes (or text, as UTF-8) to the process's stdin (started with ``stdin=True``)."""
        if hasattr(data, "read"):
            while True:
                chunk = data.read(_http.STDIN_CHUNK)  # type: ignore[union-attr]
                if not chunk:
                    return
                self._stdin(_http.as_bytes(chunk), False)
        b = _http.as_bytes(data)  # type: ignore[arg-type]
        for i in range(0, len(b), _http.STDIN_CHUNK):
            self._stdin(b[i:i + _http.STDIN_CHUNK], False)

    def close_stdin(self) -> None:
        """Closes the process's stdin (EOF)."""
        self._stdin(b"", True)

    def _stdin(self, chunk: bytes, eof: bool) -> None:
        deadline = time.monotonic() + self.sandbox._api.request_timeout
        while True:
            try:
                self.sandbox._api.send("POST", self._base + "/stdin", content=chunk,
                                       params={"eof": "1"} if eof else None)
                return
            except exc.BusyError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self, signal: Union[str, int] = "KILL", group: bool = True) -> bool:
        """Sends a signal (KILL by default) to the process's group; False if it had ended."""
        try:
            self.sandbox._api.send("POST", self._base + "/signal",
                                   json={"signal": signal, "group": group})
            return True
        except exc.ConflictError:
            return False

    def info(self) -> ProcessInfo:
        """The process as kilnd describes it now."""
        return ProcessInfo.from_json(self.sandbox._api.json("GET", self._base))


class Commands:
    """``sandbox.commands``: run processes in the sandbox."""

    def __init__(self, sandbox: "Sandbox") -> None:
        self._sb = sandbox

    @overload
    def run(self, cmd: Union[str, List[str]], *, background: "Literal[False]" = ...,
            **kw: Any) -> CommandResult: ...

    @overload
    def run(self, cmd: Union[str, List[str]], *, background: "Literal[True]",
            **kw: Any) -> CommandHandle: ...

    def run(self, cmd: Union[str, List[str]], *, cwd: Optional[str] = None,
            env: Optional[Dict[str, str]] = None, user: Union[str, int, None] = None,
            timeout: Optional[float] = _DEFAULT, on_stdout: Optional[OutputCallback] = None,
            on_stderr: Optional[OutputCallback] = None, stdin: Union[Data, bool, None] = None,
            background: bool = False, check: bool = True,
            tag: Optional[str] = None) -> Any:
        """Runs ``cmd`` (a string runs with ``sh -c``, a list as argv).

        In the foreground (default) returns its :class:`CommandResult` once
        it ends; ``on_stdout``/``on_stderr`` get its output as it comes.
        ``timeout`` (seconds; 60 in the foreground, none in the background;
        ``None`` or 0 for none) is enforced by kilnd, which kills the process.
        ``stdin``: data for its stdin (then closed), or ``True`` to keep it
        open for ``send_stdin`` on a background handle. ``user``: "UID" or
        "UID:GID". With ``check`` a non-zero exit raises
        :class:`CommandExitError`. ``background=True`` returns a
        :class:`CommandHandle` at once.
        """
        if timeout is _DEFAULT:
            timeout = None if background else DEFAULT_COMMAND_TIMEOUT
        want_stdin = stdin is not None and stdin is not False
        body = _http.process_body(cmd, cwd, env, user, want_stdin, timeout, tag)
        d = self._sb._api.json("POST", f"/v1/sandboxes/{self._sb.id}/processes",
                               params={"detach": "1"}, json=body)
        h = CommandHandle(self._sb, int(d["pid"]), on_stdout=on_stdout, on_stderr=on_stderr,
                          check=check, timeout=timeout)
        if want_stdin and stdin is not True:
            try:
                h.send_stdin(stdin)  # type: ignore[arg-type]
                h.close_stdin()
            except exc.ConflictError:
                pass  # it ended (or closed its stdin) before taking it all
        if background:
            return h
        return h.wait()

    def connect(self, pid: int, *, after_seq: int = 0, on_stdout: Optional[OutputCallback] = None,
                on_stderr: Optional[OutputCallback] = None, check: bool = True) -> CommandHandle:
        """Reattaches to a process; ``wait()`` replays its events after ``after_seq``."""
        ProcessInfo.from_json(self._sb._api.json(
            "GET", f"/v1/sandboxes/{self._sb.id}/processes/{int(pid)}"))
        return CommandHandle(self._sb, int(pid), after_seq=after_seq, on_stdout=on_stdout,
                             on_stderr=on_stderr, check=check)

    def list(self) -> List[ProcessInfo]:
        """The sandbox's processes, running and finished (oldest first)."""
        d = self._sb._api.json("GET", f"/v1/sandboxes/{self._sb.id}/processes")
        return [ProcessInfo.from_json(p) for p in d.get("processes", [])]

    def kill(self, pid: int, signal: Union[str, int] = "KILL") -> bool:
        """Sends a signal to a process's group; False if it had ended."""
        return CommandHandle(self._sb, int(pid)).kill(signal)


DataCallback = Callable[[bytes], Any]



def _create_body(image: str, cpus: int, memory_mib: int, disk_mib: Optional[int], timeout: int,
                 allow: Optional[List[str]], metadata: Optional[Dict[str, str]],
                 net_rate: Optional[int], template: Optional[str]) -> Dict[str, Any]:
    """The body of ``POST /v1/sandboxes``. With a template the machine is the
    template's: kilnd refuses image, cpus, memory, disk and network with it."""
    body: Dict[str, Any] = {"timeout_s": int(timeout)}
    if template is not None:
        if (image, cpus, memory_mib) != ("debian", 1, 512) or disk_mib is not None \
                or allow or net_rate is not None:
            raise ValueError("template fixes the image, cpus, memory and disk, and has no network")
        body["template"] = template
    else:
        body.update({"image": image, "cpus": cpus, "memory_mib": memory_mib})
        if disk_mib is not None:
            body["disk_mib"] = disk_mib
        if allow:
            body["allow"] = list(allow)
        if net_rate is not None:
            body["net_rate"] = net_rate
    if metadata:
        body["metadata"] = {str(k): str(v) for k, v in metadata.items()}
    return body

def _pty_body(rows: int, cols: int, cmd: Union[str, List[str], None], cwd: Optional[str],
              env: Optional[Dict[str, str]], user: Union[str, int, None],
              timeout: Optional[float], tag: Optional[str]) -> Dict[str, Any]:
    body = _http.process_body(cmd if cmd is not None else ["/bin/sh"], cwd, env, user, True,
                              timeout, tag)
    body["pty"] = {"rows": int(rows), "cols": int(cols)}
    return body


class PtyHandle(CommandHandle):
    """A process on a guest terminal (``sandbox.pty.create``).

    Its output (stdout and stderr together, as the terminal shows them, echo
    included) goes to ``on_data`` as bytes from a background thread as it
    comes, and is kept in ``stdout``. ``send_input`` types into the terminal
    (``"\\x03"`` is Ctrl-C), ``resize`` changes its size.
    """

    def __init__(self, sandbox: "Sandbox", pid: int,
                 on_data: Optional[DataCallback] = None) -> None:
        super().__init__(sandbox, pid, check=False)
        self.on_data = on_data
        self._result: Optional[CommandResult] = None
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._follow, name=f"kiln-pty-{pid}",
                                        daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"<PtyHandle pid={self.pid} sandbox={self.sandbox.id}>"

    def _emit(self, stream: str, data: bytes) -> None:
        if self.on_data is not None:
            self.on_data(bytes(data))

    def _follow(self) -> None:
        try:
            self._result = CommandHandle.wait(self, timeout=None)
        except BaseException as e:  # handed to wait()
            self._error = e

    def wait(self, timeout: Optional[float] = None) -> CommandResult:  # type: ignore[override]
        """Waits for the process to end and returns its result (a non-zero exit
        does not raise); :class:`kiln.TimeoutError` if ``timeout`` seconds pass
        first (it keeps running)."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise exc.TimeoutError(f"process {self.pid} still runs after {timeout} s")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def send_input(self, data: Union[str, bytes, bytearray, memoryview]) -> None:
        """Types bytes (or text, as UTF-8) into the terminal."""
        self.send_stdin(data)

    def resize(self, rows: int, cols: int) -> None:
        """The terminal's new size (1..4096 each); ConflictError once it ended."""
        self.sandbox._api.send("POST", self._base + "/resize",
                               json={"rows": int(rows), "cols": int(cols)})


class Pty:
    """``sandbox.pty``: processes on a guest terminal."""

    def __init__(self, sandbox: "Sandbox") -> None:
        self._sb = sandbox

    def create(self, rows: int = 24, cols: int = 80, *, on_data: Optional[DataCallback] = None,
               cwd: Optional[str] = None, env: Optional[Dict[str, str]] = None,
               cmd: Union[str, List[str], None] = None, user: Union[str, int, None] = None,
               timeout: Optional[float] = None, tag: Optional[str] = None) -> PtyHandle:
        """Starts ``cmd`` (default ``/bin/sh``; a string runs with ``sh -c``) on a
        new terminal of ``rows`` x ``cols`` and returns its :class:`PtyHandle` at once.
        ``timeout``: seconds until kilnd kills it (none by default)."""
        body = _pty_body(rows, cols, cmd, cwd, env, user, timeout, tag)
        d = self._sb._api.json("POST", f"/v1/sandboxes/{self._sb.id}/processes",
                               params={"detach": "1"}, json=body)
        return PtyHandle(self._sb, int(d["pid"]), on_data)


class Files:
    """``sandbox.files``: the sandbox's file system."""

    def __init__(self, sandbox: "Sandbox") -> None:
        self._sb = sandbox

    def _p(self, what: str) -> str:
        return f"/v1/sandboxes/{self._sb.id}/{what}"

    def write(self, path: str, data: Data, *, mode: Union[int, str, None] = None) -> None:
        """Writes a file (parents are created): text (UTF-8), bytes or a file object,
        which is streamed in 1 MiB chunks. ``mode``: e.g. ``0o600`` or ``"0600"``."""
        params = {"path": path}
        m = _http.mode_str(mode)
        if m:
            params["mode"] = m
        hdrs: Dict[str, str] = {}
        content: Any
        if hasattr(data, "read"):
            f = data
            size = _http.file_size(f)
            if size is not None and not isinstance(f.read(0), str):  # type: ignore[union-attr]
                hdrs["Content-Length"] = str(size)

            def chunks() -> Iterator[bytes]:
                while True:
                    c = f.read(_http.CHUNK)  # type: ignore[union-attr]
                    if not c:
                        return
                    yield _http.as_bytes(c)
            content = chunks()
        else:
            content = _http.as_bytes(data)  # type: ignore[arg-type]
        self._sb._api.send("PUT", self._p("files"), params=params, content=content,
                           headers=hdrs, read_timeout=_http.FILE_TIMEOUT)

    @overload
    def read(self, path: str, format: "Literal['text']" = ...) -> str: ...

    @overload
    def read(self, path: str, format: "Literal['bytes']") -> bytes: ...

    @overload
    def read(self, path: str, format: "Literal['stream']") -> Iterator[bytes]: ...

    def read(self, path: str, format: str = "text") -> Any:
        """Reads a file: ``"text"`` (UTF-8, invalid bytes replaced), ``"bytes"``, or
        ``"stream"``: an iterator of byte chunks (read it to the end or close it)."""
        if format not in ("text", "bytes", "stream"):
            raise ValueError("format must be 'text', 'bytes' or 'stream'")
        r = self._sb._api.send("GET", self._p("files"), params={"path": path}, stream=True,
                               read_timeout=_http.FILE_TIMEOUT)
        if format == "stream":
            def gen() -> Iterator[bytes]:
                try:
                    for c in r.iter_bytes(_http.CHUNK):
                        yield c
                except httpx.HTTPError as e:
                    raise _http.transport_error(e, f"reading {path}") from e
                finally:
                    r.close()
            return gen()
        try:
            b = r.read()
        except httpx.HTTPError as e:
            raise _http.transport_error(e, f"reading {path}") from e
        finally:
            r.close()
        return b if format == "bytes" else b.decode("utf-8", errors="replace")

    def get_info(self, path: str) -> EntryInfo:
        """Stats a path (following symlinks); NotFoundError if missing."""
        d = self._sb._api.json("GET", self._p("fs/stat"), params={"path": path})
        return EntryInfo.from_json(d, path)

    def exists(self, path: str) -> bool:
        """Whether the path exists."""
        try:
            self.get_info(path)
            return True
        except exc.NotFoundError:
            return False

    def list(self, path: str) -> List[EntryInfo]:
        """The entries of a directory."""
        d = self._sb._api.json("GET", self._p("fs/list"), params={"path": path})
        base = path.rstrip("/")
        return [EntryInfo.from_json(e, f"{base}/{e.get('name', '')}") for e in d.get("entries", [])]

    def make_dir(self, path: str, *, parents: bool = True,
                 mode: Optional[int] = None) -> bool:
        """Creates a directory (and its parents); False if it already existed."""
        body: Dict[str, Any] = {"path": path, "parents": parents}
        if mode is not None:
            body["mode"] = mode
        try:
            self._sb._api.send("POST", self._p("fs/mkdir"), json=body)
            return True
        except exc.ConflictError:
            return False

    def remove(self, path: str, *, recursive: bool = True) -> None:
        """Removes a file or a directory (with what it holds unless ``recursive=False``)."""
        params = {"path": path}
        if recursive:
            params["recursive"] = "1"
        self._sb._api.send("DELETE", self._p("fs"), params=params)


class Sandbox:
    """A kiln sandbox: one microVM that kilnd keeps until ``kill()``, its timeout,
    or the end of a ``with`` block.

    Where kilnd is: ``host`` or ``KILN_HOST`` (``unix:/PATH``, the default
    ``unix:/run/kiln/kilnd.sock``, or ``http://HOST:PORT``); the token:
    ``token`` or ``KILN_TOKEN``. ``request_timeout``: seconds for each
    ordinary API call (30).
    """

    def __init__(self, info: SandboxInfo, api: _Api) -> None:
        self._api = api
        self.info = info
        self.id = info.id
        self.commands = Commands(self)
        self.files = Files(self)
        self.pty = Pty(self)

    def __repr__(self) -> str:
        return f"<Sandbox {self.id}>"

    @classmethod
    def create(cls, image: str = "debian", *, cpus: int = 1, memory_mib: int = 512,
               disk_mib: Optional[int] = None, timeout: int = 600,
               allow: Optional[List[str]] = None, metadata: Optional[Dict[str, str]] = None,
               net_rate: Optional[int] = None, idempotency_key: Optional[str] = None,
               host: Optional[str] = None, token: Optional[str] = None,
               request_timeout: Optional[float] = None,
               boot_timeout: float = _http.CREATE_TIMEOUT,
               template: Optional[str] = None) -> "Sandbox":
        """Boots a new sandbox and returns it once it runs.

        ``timeout``: seconds it lives (``set_timeout`` moves it); ``allow``:
        network rules (no network without them); ``metadata``: strings kept
        with its record; ``idempotency_key``: a retry with the same key gets
        the same sandbox. ``template``: restore that template (``save_template``)
        instead of booting; its image, vCPUs, memory and disk are the sandbox's,
        so those arguments and ``allow``/``net_rate`` must be left out.
        """
        body = _create_body(image, cpus, memory_mib, disk_mib, timeout, allow, metadata,
                            net_rate, template)
        api = _Api(host, token, request_timeout)
        try:
            d = api.json("POST", "/v1/sandboxes", json=body, read_timeout=boot_timeout,
                         headers={"Idempotency-Key": idempotency_key} if idempotency_key else None)
        except BaseException:
            api.close()
            raise
        return cls(SandboxInfo.from_json(d), api)

    @classmethod
    def connect(cls, sandbox_id: str, *, host: Optional[str] = None, token: Optional[str] = None,
                request_timeout: Optional[float] = None) -> "Sandbox":
        """An existing sandbox; NotFoundError if there is none (for this token)."""
        api = _Api(host, token, request_timeout)
        try:
            d = api.json("GET", f"/v1/sandboxes/{sandbox_id}")
        except BaseException:
            api.close()
            raise
        return cls(SandboxInfo.from_json(d), api)

    @staticmethod
    def list(*, state: Optional[str] = None, host: Optional[str] = None,
             token: Optional[str] = None,
             request_timeout: Optional[float] = None) -> List[SandboxInfo]:
        """The token's sandboxes (``state``: "running", "booting" or "ending")."""
        api = _Api(host, token, request_timeout)
        try:
            d = api.json("GET", "/v1/sandboxes", params={"state": state} if state else None)
        finally:
            api.close()
        return [SandboxInfo.from_json(s) for s in d.get("sandboxes", [])]

    @staticmethod
    def list_templates(*, host: Optional[str] = None, token: Optional[str] = None,
                       request_timeout: Optional[float] = None) -> List[TemplateInfo]:
        """The token's templates on this kilnd host, by name."""
        api = _Api(host, token, request_timeout)
        try:
            d = api.json("GET", "/v1/templates")
        finally:
            api.close()
        return [TemplateInfo.from_json(t) for t in d.get("templates", [])]

    @staticmethod
    def delete_template(name: str, *, host: Optional[str] = None, token: Optional[str] = None,
                        request_timeout: Optional[float] = None) -> bool:
        """Removes a template; False if there was none of that name."""
        api = _Api(host, token, request_timeout)
        try:
            api.send("DELETE", f"/v1/templates/{name}")
            return True
        except exc.NotFoundError:
            return False
        finally:
            api.close()

    def save_template(self, name: str) -> TemplateInfo:
        """Saves this sandbox (paused for the moment it takes: registers,
        devices, RAM, scratch disk) as template ``name`` of this token; it runs
        on as it was. ConflictError if the name is taken or the sandbox has
        network rules."""
        return TemplateInfo.from_json(self._api.json(
            "POST", f"/v1/sandboxes/{self.id}/template", json={"name": name},
            read_timeout=_http.CREATE_TIMEOUT))

    def fork(self, count: int = 1, *, boot_timeout: float = _http.CREATE_TIMEOUT) -> List["Sandbox"]:
        """``count`` (1 to 16) clones of this sandbox as it is now: its files,
        memory and processes, each with its own id, hostname, entropy and
        disk; this sandbox runs on (or stays paused). All or none: a quota
        refusal (:class:`kiln.QuotaError`) or a failure leaves no clone.
        ConflictError if it has network rules."""
        d = self._api.json("POST", f"/v1/sandboxes/{self.id}/fork", json={"count": count},
                           read_timeout=boot_timeout)
        return [type(self)(SandboxInfo.from_json(s), _Api(*self._api.where))
                for s in d.get("sandboxes", [])]

    def get_info(self) -> SandboxInfo:
        """The sandbox as kilnd describes it now (also kept in ``info``)."""
        self.info = SandboxInfo.from_json(self._api.json("GET", f"/v1/sandboxes/{self.id}"))
        return self.info

    def is_running(self) -> bool:
        """Whether the sandbox still runs."""
        try:
            return self.get_info().state == "running"
        except exc.NotFoundError:
            return False

    def set_timeout(self, timeout: int) -> SandboxInfo:
        """The sandbox now ends ``timeout`` seconds from now."""
        d = self._api.json("POST", f"/v1/sandboxes/{self.id}/timeout",
                           json={"timeout_s": int(timeout)})
        self.info = SandboxInfo.from_json(d)
        return self.info

    def pause(self) -> SandboxInfo:
        """Stops the sandbox's vCPUs (state ``paused``): its processes wait,
        calls that reach its guest raise :class:`kiln.SandboxPausedError`
        until :meth:`resume`; its timeout runs on."""
        self.info = SandboxInfo.from_json(self._api.json("POST", f"/v1/sandboxes/{self.id}/pause"))
        return self.info

    def resume(self) -> SandboxInfo:
        """Lets a paused sandbox run again."""
        self.info = SandboxInfo.from_json(self._api.json("POST", f"/v1/sandboxes/{self.id}/resume"))
        return self.info

    def kill(self) -> bool:
        """Destroys the sandbox; False if it was already gone."""
        try:
            self._api.send("DELETE", f"/v1/sandboxes/{self.id}")
            return True
        except exc.NotFoundError:
            return False

    def close(self) -> None:
        """Closes the HTTP client (the sandbox lives on)."""
        self._api.close()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *a: Any) -> None:
        try:
            self.kill()
        finally:
            self.close()

