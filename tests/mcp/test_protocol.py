"""kiln-mcp's protocol layer without kilnd or a VM: JSON-RPC framing and errors,
the lifecycle, tool argument checks, session ownership and clean-up (with a
fake sandbox), output caps, and both transports as subprocesses.

    PYTHONPATH=sdk/python /usr/bin/python3 -m pytest tests/mcp
"""
import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SDK = os.path.join(HERE, "..", "..", "sdk", "python")
sys.path.insert(0, SDK)

from kiln.mcp import PROTOCOL_VERSIONS, Config, Session, Tools, make_server  # noqa: E402
from kiln.mcp.protocol import LATEST, Server  # noqa: E402
from kiln.mcp.tools import CappedOutput  # noqa: E402

TOOLS = {"sandbox_create", "sandbox_list", "sandbox_kill", "run_command", "process_output",
         "send_stdin", "kill_process", "read_file", "write_file", "list_files", "run_code"}


class FakeSandbox:
    n = 0

    def __init__(self, **kw):
        FakeSandbox.n += 1
        self.id = f"sb-fake{FakeSandbox.n}"
        self.kw = kw
        self.killed = False
        self.info = type("I", (), {"expires_at": "later"})()

    def kill(self):
        self.killed = True
        return True

    def close(self):
        pass


def server(**cfg):
    made = []

    def factory(**kw):
        sb = FakeSandbox(**kw)
        made.append(sb)
        return sb
    s = Server(Tools(Config(**cfg), sandbox_factory=factory))
    return s, made


def req(method, params=None, id=1):
    m = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        m["params"] = params
    return m


def init(s, sess, version="2025-06-18"):
    r = s.handle_parsed(sess, req("initialize", {"protocolVersion": version, "capabilities": {},
                                                  "clientInfo": {"name": "t", "version": "1"}}))
    assert "result" in r, r
    s.handle_parsed(sess, {"jsonrpc": "2.0", "method": "notifications/initialized"})
    return r["result"]


def call(s, sess, name, args, id=7):
    r = s.handle_parsed(sess, req("tools/call", {"name": name, "arguments": args}, id))
    return r


def text(r):
    return r["result"]["content"][0]["text"]


# -- JSON-RPC framing ----------------------------------------------------------------

def test_parse_error():
    s, _ = server()
    r = s.handle_payload(Session(), b'{"jsonrpc": "2.0", "id": 1, "method": ')
    assert r["error"]["code"] == -32700 and r["id"] is None
    r = s.handle_payload(Session(), b"\xff\xfe")
    assert r["error"]["code"] == -32700


@pytest.mark.parametrize("msg", [
    42, "x", {"id": 1, "method": "ping"}, {"jsonrpc": "1.0", "id": 1, "method": "ping"},
    {"jsonrpc": "2.0", "id": 1}, {"jsonrpc": "2.0", "id": 1, "method": 5},
    {"jsonrpc": "2.0", "id": True, "method": "ping"}, {"jsonrpc": "2.0", "id": None, "method": "ping"},
    {"jsonrpc": "2.0", "id": [1], "method": "ping"},
])
def test_invalid_request(msg):
    s, _ = server()
    r = s.handle_parsed(Session(), msg)
    assert r["error"]["code"] == -32600, r


def test_batch():
    s, _ = server()
    sess = Session()
    assert s.handle_parsed(sess, [])["error"]["code"] == -32600
    r = s.handle_parsed(sess, [req("ping", id=1), {"jsonrpc": "2.0", "method": "notifications/x"},
                               req("nope", id=2)])
    assert [x["id"] for x in r] == [1, 2] and r[0]["result"] == {} and r[1]["error"]["code"] == -32601
    assert s.handle_parsed(sess, [{"jsonrpc": "2.0", "method": "notifications/x"}]) is None
    r = s.handle_parsed(sess, [req("initialize", {"protocolVersion": LATEST})])
    assert r[0]["error"]["code"] == -32600


def test_method_not_found_and_params():
    s, _ = server()
    sess = Session()
    init(s, sess)
    assert s.handle_parsed(sess, req("resources/list"))["error"]["code"] == -32601
    assert s.handle_parsed(sess, req("tools/list", [1]))["error"]["code"] == -32602
    assert s.handle_parsed(sess, req("tools/call", {"arguments": {}}))["error"]["code"] == -32602
    assert s.handle_parsed(sess, req("tools/call", {"name": "sandbox_list", "arguments": [1]}))[
        "error"]["code"] == -32602
    r = s.handle_parsed(sess, req("tools/call", {"name": "no_such_tool"}))
    assert r["error"]["code"] == -32602 and "no_such_tool" in r["error"]["message"]


def test_responses_and_notifications_get_no_answer():
    s, _ = server()
    sess = Session()
    assert s.handle_parsed(sess, {"jsonrpc": "2.0", "id": 5, "result": {}}) is None
    assert s.handle_parsed(sess, {"jsonrpc": "2.0", "method": "notifications/cancelled",
                                  "params": {"requestId": 1}}) is None


# -- lifecycle ------------------------------------------------------------------------

def test_requests_before_initialize():
    s, _ = server()
    sess = Session()
    assert s.handle_parsed(sess, req("ping"))["result"] == {}
    assert s.handle_parsed(sess, req("tools/list"))["error"]["code"] == -32600
    assert s.handle_parsed(sess, req("initialize", {}))["error"]["code"] == -32602


@pytest.mark.parametrize("v", list(PROTOCOL_VERSIONS) + ["1999-01-01", "2025-13-99"])
def test_version_negotiation(v):
    s, _ = server()
    sess = Session()
    res = init(s, sess, v)
    assert res["protocolVersion"] == (v if v in PROTOCOL_VERSIONS else LATEST)
    assert res["serverInfo"]["name"] == "kiln-mcp" and "tools" in res["capabilities"]
    assert sess.ready
    assert s.handle_parsed(sess, req("initialize", {"protocolVersion": v}))["error"]["code"] == -32600


def test_versions_we_promise():
    for v in ("2025-06-18", "2025-03-26", "2024-11-05"):
        assert v in PROTOCOL_VERSIONS


def test_tools_list_schemas():
    s, _ = server()
    sess = Session()
    init(s, sess)
    tools = s.handle_parsed(sess, req("tools/list"))["result"]["tools"]
    assert {t["name"] for t in tools} == TOOLS
    for t in tools:
        sch = t["inputSchema"]
        assert sch["type"] == "object" and isinstance(sch["properties"], dict) and t["description"]
        assert set(sch.get("required", [])) <= set(sch["properties"])
        json.dumps(sch)
    rc = next(t for t in tools if t["name"] == "run_command")["inputSchema"]
    assert {"sandbox", "command", "cwd", "env", "timeout_s", "background"} <= set(rc["properties"])
    code = next(t for t in tools if t["name"] == "run_code")["inputSchema"]
    assert code["properties"]["language"]["enum"] == ["python", "bash"]


# -- tool arguments and errors -------------------------------------------------------------

@pytest.mark.parametrize("name,args,want", [
    ("run_command", {"sandbox": "sb-x", "command": "ls"}, "no sandbox 'sb-x' in this session"),
    ("run_command", {"sandbox": "sb-x"}, "'command' is required"),
    ("run_command", {"sandbox": "sb-x", "command": 42}, "command must be of type string"),
    ("run_command", {"sandbox": "sb-x", "command": "ls", "timeout_s": 10 ** 9}, "timeout_s must be at most"),
    ("run_command", {"sandbox": "sb-x", "command": "ls", "env": {"A": 1}}, "env.A must be of type string"),
    ("run_command", {"sandbox": "sb-x", "command": "ls", "bogus": 1}, "unknown argument 'bogus'"),
    ("run_command", {"sandbox": "", "command": "ls"}, "sandbox must not be empty"),
    ("process_output", {"sandbox": "sb-x", "pid": True}, "pid must be of type integer"),
    ("run_code", {"language": "ruby", "code": "1"}, "language must be one of"),
    ("write_file", {"sandbox": "sb-x", "path": "/x"}, "'content' is required"),
    ("sandbox_create", {"cpus": "two"}, "cpus must be of type integer"),
    ("sandbox_create", {"allow": "x"}, "allow must be of type array"),
])
def test_bad_arguments_are_tool_errors(name, args, want):
    s, made = server()
    sess = Session()
    init(s, sess)
    r = call(s, sess, name, args)
    assert r["result"]["isError"] is True, r
    assert want in text(r), text(r)
    assert not made


def test_sessions_own_their_sandboxes_and_close_them():
    s, made = server(max_sandboxes=2)
    a, b = Session(), Session()
    init(s, a)
    init(s, b)
    r = call(s, a, "sandbox_create", {"image": "tiny", "timeout_s": 99})
    assert r["result"]["isError"] is False and made[0].id in text(r)
    assert made[0].kw["image"] == "tiny" and made[0].kw["timeout"] == 99
    # Another session: "no sandbox", not listed, cannot kill it.
    for name, args in (("run_command", {"sandbox": made[0].id, "command": "true"}),
                       ("sandbox_kill", {"sandbox": made[0].id}),
                       ("read_file", {"sandbox": made[0].id, "path": "/etc/passwd"})):
        r = call(s, b, name, args)
        assert r["result"]["isError"] is True and "no sandbox" in text(r)
    assert "no sandboxes" in text(call(s, b, "sandbox_list", {}))
    assert not made[0].killed
    # The cap per session.
    call(s, a, "sandbox_create", {})
    r = call(s, a, "sandbox_create", {})
    assert r["result"]["isError"] is True and "at most 2" in text(r)
    assert len(made) == 2
    # sandbox_kill forgets it; closing the session kills the rest.
    r = call(s, a, "sandbox_kill", {"sandbox": made[1].id})
    assert r["result"]["isError"] is False and made[1].killed
    assert sorted(a.close()) == [made[0].id]
    assert made[0].killed
    r = call(s, a, "sandbox_create", {})
    assert r["result"]["isError"] is True and "ended" in text(r)


def test_kilnd_unreachable_is_a_tool_error(tmp_path):
    cfg = Config(host=f"unix:{tmp_path}/no.sock", token="x")
    s = Server(Tools(cfg))
    sess = Session()
    init(s, sess)
    for name, args in (("sandbox_create", {}), ("run_code", {"language": "bash", "code": "true"})):
        r = call(s, sess, name, args)
        assert r["result"]["isError"] is True and "cannot reach kilnd" in text(r), text(r)
    assert sess.booting == 0 and not sess.sandboxes


# -- output caps -----------------------------------------------------------------------

def ev(seq, t, data):
    return json.dumps({"seq": seq, "type": t, "data": base64.b64encode(data).decode()})


def test_capped_output_keeps_head_and_tail():
    acc = CappedOutput(1, 0, cap=1000)
    seq = 0
    for i in range(300):
        seq += 1
        acc.feed(ev(seq, "stdout", b"%05d-------\n" % i))
    acc.feed(json.dumps({"seq": seq + 1, "type": "exit", "exit_code": 0, "signal": 0}))
    out, notes = acc.text("stdout")
    assert out.startswith("00000-") and out.rstrip().endswith("00299-------")
    assert "bytes of stdout left out" in out and len(out) < 1200
    assert notes and "3900 bytes" in notes[0]
    assert len(acc.stdout) <= 500 and acc.done


def test_capped_output_small_and_invalid_utf8():
    acc = CappedOutput(1, 0, cap=1000)
    acc.feed(ev(1, "stdout", b"ok\xff\xfe\n"))
    acc.feed(ev(2, "stderr", b"fine\n"))
    out, notes = acc.text("stdout")
    assert out == "ok\ufffd\ufffd\n" and "not valid UTF-8" in notes[0]
    assert acc.text("stderr") == ("fine\n", [])


# -- transports as processes -----------------------------------------------------------------

def env(tmp_path):
    e = dict(os.environ, PYTHONPATH=SDK, PYTHONDONTWRITEBYTECODE="1",
             KILN_HOST=f"unix:{tmp_path}/no-kilnd.sock", KILN_TOKEN="t")
    return e


def test_stdio(tmp_path):
    lines = [
        json.dumps(req("initialize", {"protocolVersion": "2025-03-26", "capabilities": {},
                                      "clientInfo": {"name": "t", "version": "1"}}, 1)),
        json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        "",
        "this is not json",
        json.dumps(req("tools/list", id="two")),
        json.dumps(req("tools/call", {"name": "sandbox_create", "arguments": {}}, 3)),
        json.dumps(req("ping", id=4)),
    ]
    data = ("\n".join(lines) + "\n").encode() + b"\xff\xfe\n"
    p = subprocess.run([sys.executable, "-m", "kiln.mcp"], input=data, capture_output=True,
                       env=env(tmp_path), timeout=60)
    assert p.returncode == 0, p.stderr
    out = [json.loads(x) for x in p.stdout.decode().splitlines()]
    by = {m.get("id"): m for m in out}
    assert by[1]["result"]["protocolVersion"] == "2025-03-26"
    assert len(by["two"]["result"]["tools"]) == len(TOOLS)
    assert by[3]["result"]["isError"] is True and "cannot reach kilnd" in by[3]["result"]["content"][0]["text"]
    assert by[4]["result"] == {}
    errs = [m for m in out if m.get("id") is None]
    assert [m["error"]["code"] for m in errs] == [-32700, -32700]
    assert len(out) == 6
    assert b"stdio session" in p.stderr


def test_stdio_sigterm(tmp_path):
    p = subprocess.Popen([sys.executable, "-m", "kiln.mcp"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(tmp_path))
    try:
        p.stdin.write((json.dumps(req("ping")) + "\n").encode())
        p.stdin.flush()
        assert json.loads(p.stdout.readline())["result"] == {}
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 0
    finally:
        p.kill()
        p.wait()
        for f in (p.stdin, p.stdout, p.stderr):
            f.close()


@pytest.fixture
def http_server(tmp_path):
    p = subprocess.Popen([sys.executable, "-m", "kiln.mcp", "--http", "127.0.0.1:0"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env(tmp_path))
    try:
        line = p.stderr.readline().decode()
        assert "listening on http://127.0.0.1:" in line, line
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        yield p, port
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()
        p.stderr.close()


def post(port, body, headers=None, method="POST"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    h.update(headers or {})
    if not isinstance(body, (bytes, type(None))):
        body = json.dumps(body).encode()
    c.request(method, "/mcp", body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, dict((k.lower(), v) for k, v in r.getheaders()), \
        (json.loads(data) if data else None)


def test_http(http_server):
    p, port = http_server
    init_msg = req("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                  "clientInfo": {"name": "t", "version": "1"}})
    st, h, b = post(port, init_msg)
    assert st == 200 and h["content-type"] == "application/json"
    sid = h["mcp-session-id"]
    assert len(sid) >= 32 and b["result"]["protocolVersion"] == "2025-06-18"
    ok = {"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18"}
    assert post(port, {"jsonrpc": "2.0", "method": "notifications/initialized"}, ok)[0] == 202
    st, _, b = post(port, req("tools/list", id=2), ok)
    assert st == 200 and len(b["result"]["tools"]) == len(TOOLS)
    st, _, b = post(port, req("tools/call", {"name": "run_command",
                                             "arguments": {"sandbox": "sb-1", "command": "x"}}), ok)
    assert st == 200 and b["result"]["isError"] is True
    # Session header: missing 400, unknown 404, bad protocol version 400.
    assert post(port, req("ping"))[0] == 400
    assert post(port, req("ping"), {"Mcp-Session-Id": "nope"})[0] == 404
    assert post(port, req("ping"), {"Mcp-Session-Id": sid, "MCP-Protocol-Version": "1999-01-01"})[0] == 400
    # Bodies: not JSON 400 (-32700), wrong type 415.
    st, _, b = post(port, b"{nope", ok)
    assert st == 400 and b["error"]["code"] == -32700
    assert post(port, req("ping"), dict(ok, **{"Content-Type": "text/plain"}))[0] == 415
    # Origin: a foreign page is refused, a local one is fine. Host: loopback only.
    assert post(port, req("ping"), dict(ok, Origin="http://evil.example"))[0] == 403
    assert post(port, req("ping"), dict(ok, Origin=f"http://localhost:{port}"))[0] == 200
    assert post(port, req("ping"), dict(ok, Host="evil.example"))[0] == 403
    # GET: no SSE stream (405); other paths 404.
    st, h, _ = post(port, None, ok, method="GET")
    assert st == 405 and "POST" in h["allow"]
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("POST", "/other", body=b"{}", headers={"Content-Type": "application/json"})
    assert c.getresponse().status == 404
    c.close()
    # DELETE ends it.
    assert post(port, None, {"Mcp-Session-Id": sid}, method="DELETE")[0] == 204
    assert post(port, req("ping"), ok)[0] == 404
    assert post(port, None, {"Mcp-Session-Id": sid}, method="DELETE")[0] == 404
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=30) == 0


def test_http_bad_initialize(http_server):
    p, port = http_server
    st, h, b = post(port, req("initialize", {}))
    assert st == 400 and b["error"]["code"] == -32602 and "mcp-session-id" not in h
    st, _, b = post(port, [req("initialize", {"protocolVersion": LATEST})])
    assert st == 400


def test_cli_errors(tmp_path):
    p = subprocess.run([sys.executable, "-m", "kiln.mcp", "--http", "x:y"], capture_output=True,
                       env=env(tmp_path), timeout=30)
    assert p.returncode == 2 and b"want PORT or HOST:PORT" in p.stderr
    p = subprocess.run([sys.executable, "-m", "kiln.mcp", "--max-sandboxes", "0"],
                       capture_output=True, env=env(tmp_path), timeout=30)
    assert p.returncode == 2
