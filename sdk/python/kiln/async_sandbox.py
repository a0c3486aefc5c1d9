"""The asyncio client: :class:`AsyncSandbox`, mirroring :class:`kiln.Sandbox`."""
from __future__ import annotations

import asyncio
import inspect
import time
from typing import (Any, AsyncIterator, Awaitable, Callable, Dict, List, Literal, Optional,
                    Union, overload)

import httpx

from . import _http
from . import exceptions as exc
from .models import CommandResult, EntryInfo, EventAccumulator, ProcessInfo, SandboxInfo, TemplateInfo
from .sandbox import DEFAULT_COMMAND_TIMEOUT, Data, _create_body, _pty_body

AsyncOutputCallback = Callable[[str], Union[Any, Awaitable[Any]]]
_DEFAULT: Any = object()


class _AsyncApi:
    def __init__(self, host: Optional[str], token: Optional[str],
                 request_timeout: Optional[float]) -> None:
        self.request_timeout = request_timeout or _http.REQUEST_TIMEOUT
        self.http = _http.async_client(host, token, self.request_timeout)
        self.where = (host, token, request_timeout)

    async def send(self, method: str, path: str, *, stream: bool = False,
                   read_timeout: Optional[float] = None, ok: tuple = (200, 201, 204),
                   **kw: Any) -> httpx.Response:
        to = _http.timeout(read_timeout or self.request_timeout)
        try:
            req = self.http.build_request(method, path, timeout=to, **kw)
            r = await self.http.send(req, stream=stream)
        except httpx.HTTPError as e:
            raise _http.transport_error(e, f"{method} {path}") from e
        if r.status_code not in ok:
            try:
                body = await r.aread()
            except httpx.HTTPError:
                body = b""
            finally:
                await r.aclose()
            raise _http.api_error(r.status_code, body)
        return r

    async def json(self, method: str, path: str, **kw: Any) -> Any:
        r = await self.send(method, path, **kw)
        return r.json() if r.content else None

    async def close(self) -> None:
        await self.http.aclose()


async def _call(cb: Optional[AsyncOutputCallback], data: bytes) -> None:
    if cb is not None:
        v = cb(data.decode("utf-8", errors="replace"))
        if inspect.isawaitable(v):
            await v


class AsyncCommandHandle:
    """A process running in an :class:`AsyncSandbox`; see :class:`kiln.CommandHandle`."""

    def __init__(self, sandbox: "AsyncSandbox", pid: int, *, after_seq: int = 0,
                 on_stdout: Optional[AsyncOutputCallback] = None,
                 on_stderr: Optional[AsyncOutputCallback] = None, check: bool = True,
                 timeout: Optional[float] = None) -> None:
        self.sandbox = sandbox
        self.pid = pid
        self.on_stdout = on_stdout
        self.on_stderr = on_stderr
        self.check = check
        self._timeout = timeout
        self._acc = EventAccumulator(pid, after_seq)

    def __repr__(self) -> str:
        return f"<AsyncCommandHandle pid={self.pid} sandbox={self.sandbox.id}>"

    @property
    def _base(self) -> str:
        return f"/v1/sandboxes/{self.sandbox.id}/processes/{self.pid}"

    @property
    def stdout(self) -> str:
        return bytes(self._acc.stdout).decode("utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return bytes(self._acc.stderr).decode("utf-8", errors="replace")

    @property
    def seq(self) -> int:
        return self._acc.seq

    async def wait(self, timeout: Optional[float] = _DEFAULT) -> CommandResult:
        """Follows the process to its end; see :meth:`kiln.CommandHandle.wait`."""
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
                r = await self.sandbox._api.send("GET", self._base + "/events",
                                                 params={"after_seq": acc.seq}, stream=True,
                                                 read_timeout=idle)
                try:
                    async for line in r.aiter_lines():
                        out = acc.feed(line)
                        if out:
                            await self._emit(out[0], out[1])
                        if acc.done:
                            break
                        if deadline is not None and time.monotonic() >= deadline:
                            raise exc.TimeoutError(
                                f"process {self.pid} still runs after {timeout} s")
                finally:
                    await r.aclose()
                if not acc.done:
                    # The stream ended without an end event: it ended
                    # before (after_seq past its end), or kilnd cut it.
                    if not acc.end_from_info(await self.sandbox._api.json("GET", self._base)):
                        failures += 1
                        if failures > 5:
                            raise exc.CommandError(f"process {self.pid}: its event stream keeps ending")
                        await asyncio.sleep(min(0.2 * failures, 1.0))
                    continue
                failures = 0
            except (httpx.HTTPError, exc.TimeoutError, exc.ConnectionError) as e:
                failures += 1
                if failures > 5 or (deadline is not None and time.monotonic() >= deadline):
                    if isinstance(e, httpx.HTTPError):
                        raise _http.transport_error(e, f"process {self.pid}") from e
                    raise
                await asyncio.sleep(min(0.2 * failures, 1.0))
        res = acc.result()
        if acc.error is not None:
            if "timed out" in acc.error:
                raise exc.CommandTimeoutError(f"process {self.pid}: {acc.error}")
            raise exc.CommandError(f"process {self.pid}: {acc.error}")
        if self.check and not res.ok:
            raise exc.CommandExitError(res)
        return res

    async def _emit(self, stream: str, data: bytes) -> None:
        await _call(self.on_stdout if stream == "stdout" else self.on_stderr, data)

    async def send_stdin(self, data: Data) -> None:
        """Sends bytes (or text, as UTF-8) to the process's stdin."""
        if hasattr(data, "read"):
            while True:
                chunk = data.read(_http.STDIN_CHUNK)  # type: ignore[union-attr]
                if not chunk:
                    return
                await self._stdin(_http.as_bytes(chunk), False)
        b = _http.as_bytes(data)  # type: ignore[arg-type]
        for i in range(0, len(b), _http.STDIN_CHUNK):
            await self._stdin(b[i:i + _http.STDIN_CHUNK], False)

    async def close_stdin(self) -> None:
        """Closes the process's stdin (EOF)."""
        await self._stdin(b"", True)

    async def _stdin(self, chunk: bytes, eof: bool) -> None:
        deadline = time.monotonic() + self.sandbox._api.request_timeout
        while True:
            try:
                await self.sandbox._api.send("POST", self._base + "/stdin", content=chunk,
                                             params={"eof": "1"} if eof else None)
                return
            except exc.BusyError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def kill(self, signal: Union[str, int] = "KILL", group: bool = True) -> bool:
        """Sends a signal (KILL by default) to the process's group; False if it had ended."""
        try:
            await self.sandbox._api.send("POST", self._base + "/signal",
                                         json={"signal": signal, "group": group})
            return True
        except exc.ConflictError:
            return False

    async def info(self) -> ProcessInfo:
        return ProcessInfo.from_json(await self.sandbox._api.json("GET", self._base))


class AsyncCommands:
    """``sandbox.commands`` of an :class:`AsyncSandbox`; see :class:`kiln.sandbox.Commands`."""

    def __init__(self, sandbox: "AsyncSandbox") -> None:
        self._sb = sandbox

    @overload
    async def run(self, cmd: Union[str, List[str]], *, background: Literal[False] = ...,
                  **kw: Any) -> CommandResult: ...

    @overload
    async def run(self, cmd: Union[str, List[str]], *, background: Literal[True],
                  **kw: Any) -> AsyncCommandHandle: ...

    async def run(self, cmd: Union[str, List[str]], *, cwd: Optional[str] = None,
                  env: Optional[Dict[str, str]] = None, user: Union[str, int, None] = None,
                  timeout: Optional[float] = _DEFAULT,
                  on_stdout: Optional[AsyncOutputCallback] = None,
                  on_stderr: Optional[AsyncOutputCallback] = None,
                  stdin: Union[Data, bool, None] = None, background: bool = False,
                  check: bool = True, tag: Optional[str] = None) -> Any:
        """Runs ``cmd``; see :meth:`kiln.sandbox.Commands.run`. Callbacks may be coroutines."""
        if timeout is _DEFAULT:
            timeout = None if background else DEFAULT_COMMAND_TIMEOUT
        want_stdin = stdin is not None and stdin is not False
        body = _http.process_body(cmd, cwd, env, user, want_stdin, timeout, tag)
        d = await self._sb._api.json("POST", f"/v1/sandboxes/{self._sb.id}/processes",
                                     params={"detach": "1"}, json=body)
        h = AsyncCommandHandle(self._sb, int(d["pid"]), on_stdout=on_stdout,
                               on_stderr=on_stderr, check=check, timeout=timeout)
        if want_stdin and stdin is not True:
            try:
                await h.send_stdin(stdin)  # type: ignore[arg-type]
                await h.close_stdin()
            except exc.ConflictError:
                pass
        if background:
            return h
        return await h.wait()

    async def connect(self, pid: int, *, after_seq: int = 0,
                      on_stdout: Optional[AsyncOutputCallback] = None,
                      on_stderr: Optional[AsyncOutputCallback] = None,
                      check: bool = True) -> AsyncCommandHandle:
        """Reattaches to a process; ``wait()`` replays its events after ``after_seq``."""
        await self._sb._api.json("GET", f"/v1/sandboxes/{self._sb.id}/processes/{int(pid)}")
        return AsyncCommandHandle(self._sb, int(pid), after_seq=after_seq, on_stdout=on_stdout,
                                  on_stderr=on_stderr, check=check)

    async def list(self) -> List[ProcessInfo]:
        d = await self._sb._api.json("GET", f"/v1/sandboxes/{self._sb.id}/processes")
        return [ProcessInfo.from_json(p) for p in d.get("processes", [])]

    async def kill(self, pid: int, signal: Union[str, int] = "KILL") -> bool:
        return await AsyncCommandHandle(self._sb, int(pid)).kill(signal)


AsyncDataCallback = Callable[[bytes], Union[Any, Awaitable[Any]]]


class AsyncPtyHandle(AsyncCommandHandle):
    """A process on a guest terminal of an :class:`AsyncSandbox`; see
    :class:`kiln.sandbox.PtyHandle`. ``on_data`` (a function or a coroutine
    function) runs in a task of the loop that created it."""

    def __init__(self, sandbox: "AsyncSandbox", pid: int,
                 on_data: Optional[AsyncDataCallback] = None) -> None:
        super().__init__(sandbox, pid, check=False)
        self.on_data = on_data
        self._task = asyncio.ensure_future(AsyncCommandHandle.wait(self, timeout=None))
        # wait() hands the task's outcome to its callers; a terminal nobody
        # waits for (its sandbox destroyed under it) must not warn at exit.
        self._task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def __repr__(self) -> str:
        return f"<AsyncPtyHandle pid={self.pid} sandbox={self.sandbox.id}>"

    async def _emit(self, stream: str, data: bytes) -> None:
        if self.on_data is not None:
            v = self.on_data(bytes(data))
            if inspect.isawaitable(v):
                await v

    async def wait(self, timeout: Optional[float] = None) -> CommandResult:  # type: ignore[override]
        """Waits for the process to end; its result (a non-zero exit does not
        raise). :class:`kiln.TimeoutError` after ``timeout`` seconds (it keeps running)."""
        try:
            return await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except asyncio.TimeoutError:
            raise exc.TimeoutError(f"process {self.pid} still runs after {timeout} s") from None

    async def send_input(self, data: Union[str, bytes, bytearray, memoryview]) -> None:
        """Types bytes (or text, as UTF-8) into the terminal."""
        await self.send_stdin(data)

    async def resize(self, rows: int, cols: int) -> None:
        """The terminal's new size (1..4096 each); ConflictError once it ended."""
        await self.sandbox._api.send("POST", self._base + "/resize",
                                     json={"rows": int(rows), "cols": int(cols)})


class AsyncPty:
    """``sandbox.pty`` of an :class:`AsyncSandbox`; see :class:`kiln.sandbox.Pty`."""

    def __init__(self, sandbox: "AsyncSandbox") -> None:
        self._sb = sandbox

    async def create(self, rows: int = 24, cols: int = 80, *,
                     on_data: Optional[AsyncDataCallback] = None, cwd: Optional[str] = None,
                     env: Optional[Dict[str, str]] = None,
                     cmd: Union[str, List[str], None] = None, user: Union[str, int, None] = None,
                     timeout: Optional[float] = None, tag: Optional[str] = None) -> AsyncPtyHandle:
        """Starts ``cmd`` (default ``/bin/sh``) on a new terminal; see :meth:`kiln.sandbox.Pty.create`."""
        body = _pty_body(rows, cols, cmd, cwd, env, user, timeout, tag)
        d = await self._sb._api.json("POST", f"/v1/sandboxes/{self._sb.id}/processes",
                                     params={"detach": "1"}, json=body)
        return AsyncPtyHandle(self._sb, int(d["pid"]), on_data)


class AsyncFiles:
    """``sandbox.files`` of an :class:`AsyncSandbox`; see :class:`kiln.sandbox.Files`."""

    def __init__(self, sandbox: "AsyncSandbox") -> None:
        self._sb = sandbox

    def _p(self, what: str) -> str:
        return f"/v1/sandboxes/{self._sb.id}/{what}"

    async def write(self, path: str, data: Data, *, mode: Union[int, str, None] = None) -> None:
        """Writes a file (parents created); a file object is streamed in 1 MiB chunks."""
        params = {"path": path}
        m = _http.mode_str(mode)
        if m:
            params["mode"] = m
        hdrs: Dict[str, str] = {}
        content: Any
        if hasattr(data, "read") and not inspect.iscoroutinefunction(data.read):  # type: ignore[union-attr]
            # A blocking file object streams from a thread with the sync client
            # (httpx's async client on a Unix socket broke on long streamed bodies).
            from .sandbox import Files, Sandbox, _Api
            sync_sb = Sandbox(self._sb.info, _Api(*self._sb._api.where))
            try:
                await asyncio.get_running_loop().run_in_executor(
                    None, lambda: Files(sync_sb).write(path, data, mode=mode))
            finally:
                sync_sb.close()
            return
        if hasattr(data, "read"):
            f = data
            size = _http.file_size(f)
            if size is not None and not isinstance(f.read(0), str):  # type: ignore[union-attr]
                hdrs["Content-Length"] = str(size)

            async def chunks() -> AsyncIterator[bytes]:
                while True:
                    c = f.read(_http.CHUNK)  # type: ignore[union-attr]
                    if inspect.isawaitable(c):
                        c = await c
                    if not c:
                        return
                    yield _http.as_bytes(c)
            content = chunks()
        else:
            content = _http.as_bytes(data)  # type: ignore[arg-type]
        await self._sb._api.send("PUT", self._p("files"), params=params, content=content,
                                 headers=hdrs, read_timeout=_http.FILE_TIMEOUT)

    @overload
    async def read(self, path: str, format: Literal["text"] = ...) -> str: ...

    @overload
    async def read(self, path: str, format: Literal["bytes"]) -> bytes: ...

    @overload
    async def read(self, path: str, format: Literal["stream"]) -> AsyncIterator[bytes]: ...

    async def read(self, path: str, format: str = "text") -> Any:
        """Reads a file: "text", "bytes", or "stream" (an async iterator of chunks)."""
        if format not in ("text", "bytes", "stream"):
            raise ValueError("format must be 'text', 'bytes' or 'stream'")
        r = await self._sb._api.send("GET", self._p("files"), params={"path": path},
                                     stream=True, read_timeout=_http.FILE_TIMEOUT)
        if format == "stream":
            async def gen() -> AsyncIterator[bytes]:
                try:
                    async for c in r.aiter_bytes(_http.CHUNK):
                        yield c
                except httpx.HTTPError as e:
                    raise _http.transport_error(e, f"reading {path}") from e
                finally:
                    await r.aclose()
            return gen()
        try:
            b = await r.aread()
        except httpx.HTTPError as e:
            raise _http.transport_error(e, f"reading {path}") from e
        finally:
            await r.aclose()
        return b if format == "bytes" else b.decode("utf-8", errors="replace")

    async def get_info(self, path: str) -> EntryInfo:
        d = await self._sb._api.json("GET", self._p("fs/stat"), params={"path": path})
        return EntryInfo.from_json(d, path)

    async def exists(self, path: str) -> bool:
        try:
            await self.get_info(path)
            return True
        except exc.NotFoundError:
            return False

    async def list(self, path: str) -> List[EntryInfo]:
        d = await self._sb._api.json("GET", self._p("fs/list"), params={"path": path})
        base = path.rstrip("/")
        return [EntryInfo.from_json(e, f"{base}/{e.get('name', '')}") for e in d.get("entries", [])]

    async def make_dir(self, path: str, *, parents: bool = True,
                       mode: Optional[int] = None) -> bool:
        body: Dict[str, Any] = {"path": path, "parents": parents}
        if mode is not None:
            body["mode"] = mode
        try:
            await self._sb._api.send("POST", self._p("fs/mkdir"), json=body)
            return True
        except exc.ConflictError:
            return False

    async def remove(self, path: str, *, recursive: bool = True) -> None:
        params = {"path": path}
        if recursive:
            params["recursive"] = "1"
        await self._sb._api.send("DELETE", self._p("fs"), params=params)


class AsyncSandbox:
    """The asyncio twin of :class:`kiln.Sandbox` (``async with`` deletes it)."""

    def __init__(self, info: SandboxInfo, api: _AsyncApi) -> None:
        self._api = api
        self.info = info
        self.id = info.id
        self.commands = AsyncCommands(self)
        self.files = AsyncFiles(self)
        self.pty = AsyncPty(self)

    def __repr__(self) -> str:
        return f"<AsyncSandbox {self.id}>"

    @classmethod
    async def create(cls, image: str = "debian", *, cpus: int = 1, memory_mib: int = 512,
                     disk_mib: Optional[int] = None, timeout: int = 600,
                     allow: Optional[List[str]] = None,
                     metadata: Optional[Dict[str, str]] = None, net_rate: Optional[int] = None,
                     idempotency_key: Optional[str] = None, host: Optional[str] = None,
                     token: Optional[str] = None, request_timeout: Optional[float] = None,
                     boot_timeout: float = _http.CREATE_TIMEOUT,
                     template: Optional[str] = None) -> "AsyncSandbox":
        """Boots a new sandbox (or restores ``template``); see :meth:`kiln.Sandbox.create`."""
        body = _create_body(image, cpus, memory_mib, disk_mib, timeout, allow, metadata,
                            net_rate, template)
        api = _AsyncApi(host, token, request_timeout)
        try:
            d = await api.json("POST", "/v1/sandboxes", json=body, read_timeout=boot_timeout,
                               headers={"Idempotency-Key": idempotency_key}
                               if idempotency_key else None)
        except BaseException:
            await api.close()
            raise
        return cls(SandboxInfo.from_json(d), api)

    @classmethod
    async def connect(cls, sandbox_id: str, *, host: Optional[str] = None,
                      token: Optional[str] = None,
                      request_timeout: Optional[float] = None) -> "AsyncSandbox":
        api = _AsyncApi(host, token, request_timeout)
        try:
            d = await api.json("GET", f"/v1/sandboxes/{sandbox_id}")
        except BaseException:
            await api.close()
            raise
        return cls(SandboxInfo.from_json(d), api)

    @staticmethod
    async def list(*, state: Optional[str] = None, host: Optional[str] = None,
                   token: Optional[str] = None,
                   request_timeout: Optional[float] = None) -> List[SandboxInfo]:
        api = _AsyncApi(host, token, request_timeout)
        try:
            d = await api.json("GET", "/v1/sandboxes", params={"state": state} if state else None)
        finally:
            await api.close()
        return [SandboxInfo.from_json(s) for s in d.get("sandboxes", [])]

    @staticmethod
    async def list_templates(*, host: Optional[str] = None, token: Optional[str] = None,
                             request_timeout: Optional[float] = None) -> List[TemplateInfo]:
        """See :meth:`kiln.Sandbox.list_templates`."""
        api = _AsyncApi(host, token, request_timeout)
        try:
            d = await api.json("GET", "/v1/templates")
        finally:
            await api.close()
        return [TemplateInfo.from_json(t) for t in d.get("templates", [])]

    @staticmethod
    async def delete_template(name: str, *, host: Optional[str] = None,
                              token: Optional[str] = None,
                              request_timeout: Optional[float] = None) -> bool:
        """See :meth:`kiln.Sandbox.delete_template`."""
        api = _AsyncApi(host, token, request_timeout)
        try:
            await api.send("DELETE", f"/v1/templates/{name}")
            return True
        except exc.NotFoundError:
            return False
        finally:
            await api.close()

    async def save_template(self, name: str) -> TemplateInfo:
        """See :meth:`kiln.Sandbox.save_template`."""
        return TemplateInfo.from_json(await self._api.json(
            "POST", f"/v1/sandboxes/{self.id}/template", json={"name": name},
            read_timeout=_http.CREATE_TIMEOUT))

    async def fork(self, count: int = 1, *,
                   boot_timeout: float = _http.CREATE_TIMEOUT) -> List["AsyncSandbox"]:
        """See :meth:`kiln.Sandbox.fork`."""
        d = await self._api.json("POST", f"/v1/sandboxes/{self.id}/fork", json={"count": count},
                                 read_timeout=boot_timeout)
        return [type(self)(SandboxInfo.from_json(s), _AsyncApi(*self._api.where))
                for s in d.get("sandboxes", [])]

    async def get_info(self) -> SandboxInfo:
        self.info = SandboxInfo.from_json(await self._api.json("GET", f"/v1/sandboxes/{self.id}"))
        return self.info

    async def is_running(self) -> bool:
        try:
            return (await self.get_info()).state == "running"
        except exc.NotFoundError:
            return False

    async def set_timeout(self, timeout: int) -> SandboxInfo:
        d = await self._api.json("POST", f"/v1/sandboxes/{self.id}/timeout",
                                 json={"timeout_s": int(timeout)})
        self.info = SandboxInfo.from_json(d)
        return self.info

    async def pause(self) -> SandboxInfo:
        """See :meth:`kiln.Sandbox.pause`."""
        self.info = SandboxInfo.from_json(
            await self._api.json("POST", f"/v1/sandboxes/{self.id}/pause"))
        return self.info

    async def resume(self) -> SandboxInfo:
        """See :meth:`kiln.Sandbox.resume`."""
        self.info = SandboxInfo.from_json(
            await self._api.json("POST", f"/v1/sandboxes/{self.id}/resume"))
        return self.info

    async def kill(self) -> bool:
        try:
            await self._api.send("DELETE", f"/v1/sandboxes/{self.id}")
            return True
        except exc.NotFoundError:
            return False

    async def close(self) -> None:
        await self._api.close()

    async def __aenter__(self) -> "AsyncSandbox":
        return self

    async def __aexit__(self, *a: Any) -> None:
        try:
            await self.kill()
        finally:
            await self.close()
