"""kiln-mcp's tools through the real SDK against tests/mcp/fake_kilnd.py (no
VM): the wording of results, output caps, background processes, files,
timeouts and clean-up. tests/mcp/client.mjs does the same against a real kilnd."""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "sdk", "python"))
sys.path.insert(0, HERE)

import fake_kilnd  # noqa: E402
from kiln.mcp import Config, Session, Tools  # noqa: E402
from kiln.mcp.protocol import Server  # noqa: E402


@pytest.fixture
def mcp(tmp_path):
    srv = fake_kilnd.start(str(tmp_path / "kilnd.sock"))
    tools = Tools(Config(host=f"unix:{tmp_path}/kilnd.sock", token="t", max_command_timeout=60))
    server = Server(tools)
    sess = Session()
    server.handle_parsed(sess, {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                                "params": {"protocolVersion": "2025-06-18"}})
    n = [0]

    def call(name, **args):
        n[0] += 1
        r = server.handle_parsed(sess, {"jsonrpc": "2.0", "id": n[0], "method": "tools/call",
                                        "params": {"name": name, "arguments": args}})
        res = r["result"]
        return res["isError"], res["content"][0]["text"]
    call.session = sess
    call.kilnd = srv
    yield call
    sess.close()
    srv.stop()


def new(call):
    err, t = call("sandbox_create", image="tiny")
    assert not err, t
    return t.split()[1]


def test_commands_and_state(mcp):
    sb = new(mcp)
    err, t = mcp("run_command", sandbox=sb, command="echo kept > state.txt && echo written")
    assert not err and "exit code: 0" in t and "written" in t
    err, t = mcp("run_command", sandbox=sb, command="cat /root/state.txt; echo oops >&2; exit 3")
    assert not err and t.startswith("exit code: 3") and "--- stdout ---\nkept" in t and "--- stderr ---\noops" in t
    err, t = mcp("run_command", sandbox=sb, command='echo "$A-$B"', env={"A": "1", "B": "2"})
    assert "1-2" in t
    err, t = mcp("run_command", sandbox=sb, command="yes 0123456789abcdef | head -c 400000; echo; echo END")
    assert not err and len(t) < 70000 and "bytes of stdout left out" in t and t.rstrip().endswith(
        "first 16384 and last 16384 bytes"), t[-300:]
    assert "END" in t
    err, t = mcp("run_command", sandbox=sb, command="printf 'ok\\377\\n'")
    assert "ok\ufffd" in t and "not valid UTF-8" in t
    err, t = mcp("run_command", sandbox=sb, command="sleep 30", timeout_s=1)
    assert not err and t.startswith("timed out: killed after 1 s"), t


def test_background(mcp):
    sb = new(mcp)
    err, t = mcp("run_command", sandbox=sb, command='read l; echo "got:$l"; read m; echo "then:$m"', background=True)
    assert not err and "pid" in t
    pid = int(t.split("pid ")[1].split(".")[0])
    err, t = mcp("send_stdin", sandbox=sb, pid=pid, data="one\n")
    assert not err and "sent 4 bytes" in t
    err, t = mcp("process_output", sandbox=sb, pid=pid, wait_s=2)
    assert "got:one" in t and ": running;" in t
    seq = int(t.rsplit("next after_seq: ", 1)[1])
    mcp("send_stdin", sandbox=sb, pid=pid, data="two\n", eof=True)
    err, t = mcp("process_output", sandbox=sb, pid=pid, after_seq=seq, wait_s=20)
    assert "then:two" in t and "got:one" not in t and "exit code: 0" in t, t
    err, t = mcp("send_stdin", sandbox=sb, pid=pid, data="late")
    assert err and "ended" in t
    err, t = mcp("run_command", sandbox=sb, command="echo started; sleep 100", background=True)
    pid = int(t.split("pid ")[1].split(".")[0])
    err, t = mcp("process_output", sandbox=sb, pid=pid)  # no wait: what is there now
    assert ": running;" in t
    err, t = mcp("kill_process", sandbox=sb, pid=pid, signal="SIGTERM")
    assert not err and "sent TERM" in t
    err, t = mcp("process_output", sandbox=sb, pid=pid, wait_s=20)
    assert "killed by signal 15" in t and "started" in t
    err, t = mcp("kill_process", sandbox=sb, pid=pid)
    assert not err and "already ended" in t
    err, t = mcp("process_output", sandbox=sb, pid=999999)
    assert err and "not found" in t


def test_files(mcp):
    sb = new(mcp)
    err, t = mcp("write_file", sandbox=sb, path="/root/d/a.txt", content="h\u00e9llo\n")
    assert not err and "wrote 7 bytes" in t
    assert mcp("read_file", sandbox=sb, path="/root/d/a.txt") == (False, "h\u00e9llo\n")
    err, t = mcp("list_files", sandbox=sb, path="/root/d")
    assert not err and "a.txt" in t
    err, t = mcp("write_file", sandbox=sb, path="/root/b.bin", content="AAEC/w==", encoding="base64")
    assert "wrote 4 bytes" in t
    assert mcp("read_file", sandbox=sb, path="/root/b.bin", encoding="base64") == (False, "AAEC/w==")
    err, t = mcp("read_file", sandbox=sb, path="/root/b.bin")
    assert "not valid UTF-8" in t
    mcp("write_file", sandbox=sb, path="/root/big", content="x" * 100000)
    err, t = mcp("read_file", sandbox=sb, path="/root/big", max_bytes=1000)
    assert t.startswith("x" * 1000 + "\n[truncated: showing the first 1000 of 100000 bytes")
    err, t = mcp("read_file", sandbox=sb, path="/root/nope")
    assert err and "not found" in t
    err, t = mcp("write_file", sandbox=sb, path="/root/x", content="!!", encoding="base64")
    assert err and "base64" in t
    err, t = mcp("write_file", sandbox=sb, path="/root/x", content="", mode="99")
    assert err and "octal" in t


def test_run_code_and_cleanup(mcp):
    kilnd = mcp.kilnd
    err, t = mcp("run_code", language="python", code="print(6 * 7)")
    assert not err and "--- stdout ---\n42\n" in t and "exit code: 0" in t and "destroyed" in t
    err, t = mcp("run_code", language="bash", code="echo $((6 * 7)) >&2; exit 4")
    assert not err and "exit code: 4" in t and "--- stderr ---\n42" in t
    assert len(kilnd.deleted) == 2 and not kilnd.sandboxes
    a, b = new(mcp), new(mcp)
    err, t = mcp("sandbox_list")
    assert a in t and b in t and "running" in t
    err, t = mcp("sandbox_kill", sandbox=a)
    assert not err and "destroyed" in t and a in kilnd.deleted
    err, t = mcp("run_command", sandbox=a, command="true")
    assert err and "no sandbox" in t
    mcp.session.close()
    assert b in kilnd.deleted and not kilnd.sandboxes
