"""The Python SDK against a real kilnd and real microVMs (tests/integration/t-sdk.sh
starts kilnd and sets KILN_HOST/KILN_TOKEN). Three VMs in all: one sync sandbox
for most tests, one for the context manager, one for the async client."""
import asyncio
import hashlib
import io
import os
import re
import threading
import time

import pytest
import pytest_asyncio

import kiln
from kiln import AsyncSandbox, Sandbox

IMAGE = os.environ.get("KILN_SDK_IMAGE", "tiny")
UNKNOWN = "sb-" + "0" * 32


@pytest.fixture(scope="module")
def sb():
    s = Sandbox.create(image=IMAGE, cpus=1, memory_mib=128, disk_mib=48, timeout=900,
                       metadata={"job": "t-sdk"})
    try:
        yield s
    finally:
        s.kill()
        s.close()


# --- commands -------------------------------------------------------------------

def test_create_info(sb):
    assert sb.id.startswith("sb-")
    assert sb.info.state == "running"
    assert sb.info.metadata == {"job": "t-sdk"}
    assert sb.info.memory_mib == 128
    assert sb.is_running()


def test_run_stdout_stderr_exit_code(sb):
    r = sb.commands.run("echo out; echo err >&2")
    assert (r.stdout, r.stderr, r.exit_code) == ("out\n", "err\n", 0)
    assert r.stdout_bytes == b"out\n"
    r = sb.commands.run(["echo", "a  b", "$HOME"])  # argv: no shell
    assert r.stdout == "a  b $HOME\n"


def test_non_utf8_output(sb):
    r = sb.commands.run(["printf", "\\377ok"])
    assert r.stdout_bytes == b"\xffok"
    assert r.stdout == "\ufffdok"


def test_command_exit_error(sb):
    with pytest.raises(kiln.CommandExitError) as ei:
        sb.commands.run("echo partial; echo bad >&2; exit 3")
    assert ei.value.exit_code == 3
    assert ei.value.stdout == "partial\n"
    assert ei.value.stderr == "bad\n"
    r = sb.commands.run("exit 5", check=False)
    assert r.exit_code == 5 and not r.ok


def test_missing_program(sb):
    with pytest.raises(kiln.NotFoundError):
        sb.commands.run(["/no/such/program"])


def test_on_stdout_streams(sb):
    chunks, stamps = [], []
    errs = []

    def on_out(s):
        chunks.append(s)
        stamps.append(time.monotonic())

    t0 = time.monotonic()
    r = sb.commands.run("for i in 1 2 3; do echo line$i; sleep 0.5; done; echo e >&2",
                        on_stdout=on_out, on_stderr=errs.append)
    t1 = time.monotonic()
    assert "".join(chunks) == r.stdout == "line1\nline2\nline3\n"
    assert len(chunks) >= 2, chunks
    assert stamps[0] < t1 - 0.5, "the first line came only at the end"
    assert stamps[0] - t0 < t1 - t0
    assert "".join(errs) == "e\n"


def test_env_and_cwd(sb):
    r = sb.commands.run("echo $FOO $(pwd)", env={"FOO": "bar baz"}, cwd="/tmp")
    assert r.stdout == "bar baz /tmp\n"


def test_stdin(sb):
    assert sb.commands.run("cat", stdin="hello\nworld").stdout == "hello\nworld"
    data = bytes(range(256)) * 1000
    r = sb.commands.run(["cat"], stdin=io.BytesIO(data))
    assert r.stdout_bytes == data


def test_command_timeout(sb):
    t0 = time.monotonic()
    with pytest.raises(kiln.CommandTimeoutError):
        sb.commands.run("sleep 60", timeout=2)
    assert time.monotonic() - t0 < 30


def test_background_list_connect_kill(sb):
    h = sb.commands.run("echo started; sleep 1000", background=True, tag="bg")
    assert h.pid > 0
    procs = {p.pid: p for p in sb.commands.list()}
    assert procs[h.pid].state == "running"
    assert procs[h.pid].tag == "bg"
    assert procs[h.pid].cmd == ["sh", "-c", "echo started; sleep 1000"]
    # Reattach and read what it printed so far, from the start.
    h2 = sb.commands.connect(h.pid, check=False)
    for _ in range(100):  # wait for its "started" (events: start, stdout)
        if h.info().next_seq > 2:
            break
        time.sleep(0.1)
    assert h.kill() is True
    r = h2.wait(timeout=30)
    assert r.stdout == "started\n"
    assert r.signal == 9 and r.exit_code == -1
    with pytest.raises(kiln.CommandExitError) as ei:
        h.wait(timeout=30)
    assert ei.value.signal == 9
    assert h.kill() is False  # it has ended
    # Reattach after its last event: nothing more to read, the same end.
    h3 = sb.commands.connect(h.pid, after_seq=h2.seq, check=False)
    r3 = h3.wait(timeout=30)
    assert r3.stdout == "" and r3.signal == 9
    # Reattach in the middle: only what came after that event.
    h4 = sb.commands.connect(h.pid, after_seq=2, check=False)
    assert h4.wait(timeout=30).stdout == ""
    h5 = sb.commands.connect(h.pid, after_seq=1, check=False)
    assert h5.wait(timeout=30).stdout == "started\n"
    info = h.info()
    assert info.state == "exited" and info.signal == 9


def test_background_stdin_and_wait(sb):
    h = sb.commands.run("cat; echo end", background=True, stdin=True)
    h.send_stdin("abc")
    h.send_stdin(b"def\n")
    h.close_stdin()
    assert h.wait(timeout=30).stdout == "abcdef\nend\n"
    with pytest.raises(kiln.ConflictError):
        h.send_stdin("late")


def test_background_on_stdout(sb):
    got = []
    h = sb.commands.run("echo a; sleep 0.3; echo b", background=True, on_stdout=got.append)
    r = h.wait(timeout=30)
    assert "".join(got) == r.stdout == "a\nb\n"


# --- terminals ----------------------------------------------------------------------

def until(pred, limit=60.0):
    """Waits (bounded) for a condition the test then asserts; no timed assertion."""
    end = time.monotonic() + limit
    while not pred() and time.monotonic() < end:
        time.sleep(0.05)
    return pred()


PTY_SCRIPT = 'tty; echo "$A $(pwd)"; stty size; read x; stty size; echo "[$x]"'
PTY_WANT = rb"^/dev/pts/\d+\r\n1 /tmp\r\n24 80\r\nhello\r\n33 101\r\n\[hello\]\r\n$"


def test_pty_create_resize_input(sb):
    got = bytearray()
    lock = threading.Lock()

    def on_data(b):
        assert isinstance(b, bytes)
        with lock:
            got.extend(b)

    def seen():
        with lock:
            return bytes(got)
    h = sb.pty.create(24, 80, on_data=on_data, cmd=["sh", "-c", PTY_SCRIPT], cwd="/tmp",
                      env={"A": "1"})
    assert isinstance(h.pid, int) and h.pid > 0
    assert until(lambda: b"24 80\r\n" in seen())  # the first size came before the resize
    h.resize(33, 101)
    h.send_input("hello\n")
    r = h.wait(timeout=60)
    assert r.exit_code == 0
    assert re.match(PTY_WANT, seen()), seen()
    assert r.stdout == seen().decode() and r.stderr == ""
    assert h.info().raw["pty"] == {"rows": 33, "cols": 101}
    with pytest.raises(kiln.ConflictError):
        h.resize(5, 5)


def test_pty_ctrl_c_kill_and_bad_size(sb):
    h = sb.pty.create(cmd=["sh", "-c", "echo go; sleep 1001; echo after"])
    assert until(lambda: "go" in h.stdout or h.info().next_seq > 1)
    h.send_input(b"\x03")
    r = h.wait(timeout=60)
    assert (r.exit_code, r.signal) == (-1, 2) and "after" not in r.stdout
    h2 = sb.pty.create(40, 120, cmd=["sleep", "1002"])
    assert h2.kill() is True
    assert h2.wait(timeout=60).signal == 9
    for rows, cols in ((0, 80), (24, 4097)):
        with pytest.raises(kiln.BadRequestError):
            sb.pty.create(rows, cols)
    # A process without a terminal cannot be resized.
    h3 = sb.commands.run("sleep 1003", background=True)
    with pytest.raises(kiln.ConflictError):
        h3.sandbox._api.send("POST", h3._base + "/resize", json={"rows": 5, "cols": 5})
    h3.kill()


def test_unknown_process(sb):
    with pytest.raises(kiln.NotFoundError):
        sb.commands.connect(999999)


# --- sandbox ----------------------------------------------------------------------

def test_set_timeout(sb):
    before = sb.get_info().expires_at
    time.sleep(1.1)
    info = sb.set_timeout(1200)
    assert info.expires_at and before and info.expires_at > before
    assert sb.info.expires_at == info.expires_at


def test_pause_resume(sb):
    h = sb.commands.run("while :; do echo t; sleep 0.2; done", background=True)
    try:
        assert sb.pause().state == "paused"
        assert sb.get_info().state == "paused"
        with pytest.raises(kiln.SandboxPausedError) as ei:
            sb.commands.run("true")
        assert isinstance(ei.value, kiln.ConflictError) and ei.value.status == 409
        with pytest.raises(kiln.SandboxPausedError):
            sb.files.exists("/")
        assert sb.resume().state == "running"
        assert sb.commands.run("echo back").stdout == "back\n"
    finally:
        h.kill()


def test_templates(sb):
    t = sb.save_template("sdk-tpl")
    assert (t.name, t.cpus, t.mem_mib, t.disk_mib, t.stale) == ("sdk-tpl", 1, 128, 48, False)
    assert t.state_bytes > 0 and 0 < t.ram_bytes <= 128 << 20
    assert sb.get_info().state == "running"
    assert sb.commands.run("echo after").stdout == "after\n"
    with pytest.raises(kiln.ConflictError):
        sb.save_template("sdk-tpl")
    with pytest.raises(kiln.BadRequestError):
        sb.save_template("../x")
    assert [x.name for x in Sandbox.list_templates()] == ["sdk-tpl"]
    # A sandbox restored from it: the template's machine, an identity of its own.
    sb.commands.run("echo mine > /root/own.txt")
    c = Sandbox.create(template="sdk-tpl", timeout=300)
    try:
        info = c.get_info()
        assert (info.template, info.cpus, info.memory_mib, info.disk_mib) == ("sdk-tpl", 1, 128, 48)
        assert c.id != sb.id
        assert c.commands.run("cat /run/kiln/sandbox-id").stdout == c.id + "\n"
        assert not c.files.exists("/root/own.txt")  # written after the save
    finally:
        c.kill()
        c.close()
    with pytest.raises(kiln.NotFoundError):
        Sandbox.create(template="no-such-tpl")
    with pytest.raises(ValueError):
        Sandbox.create(template="sdk-tpl", cpus=2)
    assert Sandbox.delete_template("sdk-tpl") is True
    assert Sandbox.delete_template("sdk-tpl") is False
    assert Sandbox.list_templates() == []


def test_fork(sb):
    # One clone at a time: through kiln-router a host may hold only two
    # sandboxes (t-fleet), and a fork lands on its source's host.
    sb.commands.run("echo before > /root/fork.txt")
    [c] = sb.fork()
    try:
        assert (c.info.forked_from, c.info.template, c.info.state) == (sb.id, None, "running")
        assert c.id != sb.id
        assert c.commands.run("cat /root/fork.txt").stdout == "before\n"
        assert c.commands.run("cat /run/kiln/sandbox-id").stdout == c.id + "\n"
        c.files.write("/root/fork.txt", "mine\n")
        assert c.files.read("/root/fork.txt") == "mine\n"
        assert sb.files.read("/root/fork.txt") == "before\n"
    finally:
        c.kill()
        c.close()
    with pytest.raises(kiln.BadRequestError):
        sb.fork(0)
    with pytest.raises(kiln.BadRequestError):
        sb.fork(17)
    assert sb.commands.run("echo on").stdout == "on\n"

    async def forked_async():
        a = await AsyncSandbox.connect(sb.id)
        try:
            [ac] = await a.fork()
            try:
                assert ac.info.forked_from == sb.id and ac.id != sb.id
                assert (await ac.commands.run("cat /run/kiln/sandbox-id")).stdout == ac.id + "\n"
            finally:
                await ac.kill()
                await ac.close()
        finally:
            await a.close()
    asyncio.run(forked_async())


def test_list_and_connect(sb):
    assert sb.id in [s.id for s in Sandbox.list()]
    assert sb.id in [s.id for s in Sandbox.list(state="running")]
    other = Sandbox.connect(sb.id)
    try:
        assert other.commands.run("echo again").stdout == "again\n"
    finally:
        other.close()


# --- files --------------------------------------------------------------------------

def test_files_20mib_streamed(sb, tmp_path):
    data = os.urandom(20 << 20)
    src = tmp_path / "f20"
    src.write_bytes(data)
    with open(src, "rb") as f:
        sb.files.write("/root/big/f20", f, mode=0o600)
    st = sb.files.get_info("/root/big/f20")
    assert st.size == len(data) and st.type == "file" and st.mode == 0o600
    h = hashlib.sha256()
    n = 0
    for chunk in sb.files.read("/root/big/f20", format="stream"):
        h.update(chunk)
        n += len(chunk)
    assert n == len(data)
    assert h.hexdigest() == hashlib.sha256(data).hexdigest()
    assert sb.files.read("/root/big/f20", format="bytes") == data
    r = sb.commands.run("head -c 1048576 /root/big/f20 | cat > /root/big/head")
    assert r.exit_code == 0
    assert sb.files.read("/root/big/head", format="bytes") == data[:1 << 20]
    sb.files.remove("/root/big")
    assert not sb.files.exists("/root/big/f20")


def test_files_text_list_exists_remove_mkdir(sb):
    sb.files.write("/root/t/a.txt", "héllo\n")
    sb.files.write("/root/t/b.bin", b"\x00\x01")
    assert sb.files.read("/root/t/a.txt") == "héllo\n"
    assert sb.commands.run("cat /root/t/a.txt").stdout == "héllo\n"
    assert sb.files.exists("/root/t/a.txt")
    assert not sb.files.exists("/root/t/nope")
    assert sb.files.make_dir("/root/t/d/e") is True
    entries = {e.name: e for e in sb.files.list("/root/t")}
    assert set(entries) == {"a.txt", "b.bin", "d"}
    assert entries["d"].type == "dir" and entries["a.txt"].type == "file"
    assert entries["b.bin"].size == 2 and entries["b.bin"].path == "/root/t/b.bin"
    assert sb.files.get_info("/root/t/d/e").type == "dir"
    sb.files.remove("/root/t/a.txt")
    assert not sb.files.exists("/root/t/a.txt")
    sb.files.remove("/root/t")
    assert not sb.files.exists("/root/t")
    with pytest.raises(kiln.NotFoundError):
        sb.files.read("/root/t/b.bin")
    with pytest.raises(kiln.BadRequestError):
        sb.files.read("relative/path")


def test_file_written_by_command_is_read(sb):
    sb.commands.run("printf 'from the guest' > /root/g.txt")
    assert sb.files.read("/root/g.txt") == "from the guest"


# --- errors -------------------------------------------------------------------------

def test_bad_token_is_authentication_error(sb):
    with pytest.raises(kiln.AuthenticationError) as ei:
        Sandbox.list(token="not-the-token")
    assert ei.value.status == 401 and ei.value.code == "unauthorized"
    with pytest.raises(kiln.AuthenticationError):
        Sandbox.connect(sb.id, token="not-the-token")


def test_unknown_sandbox_is_not_found():
    with pytest.raises(kiln.NotFoundError) as ei:
        Sandbox.connect(UNKNOWN)
    assert ei.value.status == 404 and ei.value.code == "not_found"


def test_quota_and_bad_request_boot_nothing():
    with pytest.raises(kiln.QuotaError):
        Sandbox.create(image=IMAGE, cpus=16, memory_mib=128)
    with pytest.raises(kiln.BadRequestError) as ei:
        Sandbox.create(image="../etc", memory_mib=128)
    assert "image" in ei.value.message


def test_unreachable_kilnd_is_connection_error(tmp_path):
    with pytest.raises(kiln.ConnectionError):
        Sandbox.list(host=f"unix:{tmp_path}/no.sock")


def test_bad_host_is_value_error():
    with pytest.raises(ValueError):
        Sandbox.list(host="ftp://x")


def test_context_manager_deletes():
    with Sandbox.create(image=IMAGE, memory_mib=128, disk_mib=0, timeout=300) as s:
        sid = s.id
        assert s.commands.run("echo inside").stdout == "inside\n"
        assert sid in [x.id for x in Sandbox.list()]
    with pytest.raises(kiln.NotFoundError):
        Sandbox.connect(sid)
    assert sid not in [x.id for x in Sandbox.list()]


# --- async --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def event_loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest_asyncio.fixture(scope="module")
async def asb():
    s = await AsyncSandbox.create(image=IMAGE, memory_mib=128, disk_mib=32, timeout=600)
    try:
        yield s
    finally:
        try:  # the last async test deletes it and closes its client itself
            await s.kill()
            await s.close()
        except Exception:
            pass


@pytest.mark.asyncio
async def test_async_create_run(asb):
    assert asb.info.state == "running"
    r = await asb.commands.run("echo out; echo err >&2")
    assert (r.stdout, r.stderr, r.exit_code) == ("out\n", "err\n", 0)
    with pytest.raises(kiln.CommandExitError) as ei:
        await asb.commands.run("exit 4")
    assert ei.value.exit_code == 4
    got = []

    async def on_out(s):
        got.append(s)
    r = await asb.commands.run("echo x; sleep 0.3; echo y", on_stdout=on_out,
                               env={"A": "1"}, cwd="/tmp")
    assert "".join(got) == "x\ny\n"
    assert (await asb.commands.run("echo $A $(pwd)", env={"A": "1"}, cwd="/tmp")).stdout == "1 /tmp\n"
    assert (await asb.commands.run("cat", stdin=b"in")).stdout == "in"


@pytest.mark.asyncio
async def test_async_templates(asb):
    t = await asb.save_template("sdk-atpl")
    assert (t.name, t.mem_mib) == ("sdk-atpl", 128)
    assert [x.name for x in await AsyncSandbox.list_templates()] == ["sdk-atpl"]
    assert (await asb.commands.run("echo on")).stdout == "on\n"
    assert await AsyncSandbox.delete_template("sdk-atpl") is True
    assert await AsyncSandbox.delete_template("sdk-atpl") is False


@pytest.mark.asyncio
async def test_async_background_connect_kill(asb):
    h = await asb.commands.run("echo up; sleep 1000", background=True)
    assert h.pid in [p.pid for p in await asb.commands.list()]
    h2 = await asb.commands.connect(h.pid, check=False)
    for _ in range(100):
        if (await h.info()).next_seq > 2:
            break
        await asyncio.sleep(0.1)
    assert await h.kill() is True
    r = await h2.wait(timeout=30)
    assert r.stdout == "up\n" and r.signal == 9
    h3 = await asb.commands.run("cat", background=True, stdin=True)
    await h3.send_stdin("zz")
    await h3.close_stdin()
    assert (await h3.wait(timeout=30)).stdout == "zz"


@pytest.mark.asyncio
async def test_async_pty(asb):
    got = bytearray()

    async def on_data(b):
        got.extend(b)
    h = await asb.pty.create(24, 80, on_data=on_data, cmd=["sh", "-c", PTY_SCRIPT], cwd="/tmp",
                             env={"A": "1"})
    for _ in range(1200):
        if b"24 80\r\n" in got:
            break
        await asyncio.sleep(0.05)
    assert b"24 80\r\n" in got
    await h.resize(33, 101)
    await h.send_input(b"hello\n")
    r = await h.wait(timeout=60)
    assert r.exit_code == 0
    assert re.match(PTY_WANT, bytes(got)), bytes(got)
    h2 = await asb.pty.create(cmd=["sleep", "1004"], on_data=lambda b: None)
    assert await h2.kill() is True
    assert (await h2.wait(timeout=60)).signal == 9
    # wait() gives up at its timeout; the process runs on, and a kill ends it.
    h3 = await asb.pty.create(cmd=["sleep", "1005"])
    with pytest.raises(kiln.TimeoutError):
        await h3.wait(timeout=0.5)
    assert (await h3.info()).state == "running"
    assert await h3.kill() is True
    assert (await h3.wait(timeout=60)).signal == 9


@pytest.mark.asyncio
async def test_async_files(asb, tmp_path):
    data = os.urandom(3 << 20)
    p = tmp_path / "f3"
    p.write_bytes(data)
    with open(p, "rb") as f:
        await asb.files.write("/root/a/f3", f)
    assert await asb.files.read("/root/a/f3", format="bytes") == data
    buf = bytearray()
    async for c in await asb.files.read("/root/a/f3", format="stream"):
        buf.extend(c)
    assert bytes(buf) == data
    await asb.files.write("/root/a/t.txt", "text")
    assert await asb.files.read("/root/a/t.txt") == "text"
    assert await asb.files.exists("/root/a/t.txt")
    assert await asb.files.make_dir("/root/a/sub")
    assert {e.name for e in await asb.files.list("/root/a")} == {"f3", "t.txt", "sub"}
    await asb.files.remove("/root/a")
    assert not await asb.files.exists("/root/a")
    with pytest.raises(kiln.NotFoundError):
        await asb.files.read("/root/a/t.txt")


@pytest.mark.asyncio
async def test_async_errors_and_timeout(asb):
    with pytest.raises(kiln.AuthenticationError):
        await AsyncSandbox.list(token="wrong")
    with pytest.raises(kiln.NotFoundError):
        await AsyncSandbox.connect(UNKNOWN)
    assert asb.id in [s.id for s in await AsyncSandbox.list()]
    info = await asb.set_timeout(900)
    assert info.expires_at


@pytest.mark.asyncio
async def test_async_context_manager_deletes(asb):
    sid = asb.id
    async with asb as s:
        assert (await s.commands.run("echo last")).stdout == "last\n"
    with pytest.raises(kiln.NotFoundError):
        await AsyncSandbox.connect(sid)


# --- last: kill -----------------------------------------------------------------------

def test_zz_kill(sb):
    assert sb.kill() is True
    assert sb.is_running() is False
    assert sb.kill() is False
    with pytest.raises(kiln.NotFoundError):
        sb.commands.run("true")
