#!/usr/bin/env bash
# kiln-mcp (sdk/python/kiln/mcp) against a real kilnd: the protocol tests of
# tests/mcp (pytest, no VM), then the official MCP client (tests/mcp/client.mjs,
# @modelcontextprotocol/sdk from build/mcp-client) over stdio and streamable
# HTTP, then examples/agent_loop.py. Six VMs in all (tiny image; run_code's two
# and the example's on the debian image). Runs where /dev/kvm works.
source "$(dirname "$0")/lib.sh"

source "$(dirname "$0")/kilnd.sh"
PY=/usr/bin/python3
CLIENT_DIR="$B/mcp-client"
kilnd_rig t-mcp
hpid=
kilnd_cleanup_more() { [ -n "$hpid" ] && kill -9 "$hpid" 2>/dev/null; }
export PYTHONPATH="$top/sdk/python" PYTHONDONTWRITEBYTECODE=1

if ! $PY -c 'import httpx, pytest' 2>/dev/null; then
    not_ok "python3-httpx and python3-pytest are installed (scripts/install-deps)"
    done_testing
    exit
fi

# 1. The protocol layer alone (no kilnd, no VM).
run_pytest protocol tests/mcp

# 2. A kilnd of our own: the tiny and debian images in an image dir of ours.
ln -s "${KILN_TEST_DEBIAN:-$B/images/debian.img}" "$work/images/debian.img"
TA=mcp-token-$RANDOM$RANDOM$RANDOM
kilnd_tenant mcp "$TA" 4 4 2048 3600
start_kilnd
check "kilnd is listening" test -S "$sock"
export KILN_HOST="unix:$sock" KILN_TOKEN="$TA"
sandboxes() {
    curl -sS --max-time 30 --unix-socket "$sock" -H "Authorization: Bearer $TA" http://kiln/v1/sandboxes |
        $PY -c 'import json,sys; print(len(json.load(sys.stdin)["sandboxes"]))'
}

# 3. The official client. kiln-mcp over HTTP on a port the kernel picks.
if [ ! -f "$CLIENT_DIR/node_modules/@modelcontextprotocol/sdk/package.json" ] || ! command -v node >/dev/null; then
    not_ok "node and @modelcontextprotocol/sdk in build/mcp-client are installed (scripts/install-deps)"
else
    echo "# node $(node --version), @modelcontextprotocol/sdk $(sed -n 's/^ *"version": *"\(.*\)".*/\1/p' \
        "$CLIENT_DIR/node_modules/@modelcontextprotocol/sdk/package.json" | head -n1)"
    $PY -m kiln.mcp --http 127.0.0.1:0 --image tiny --code-image debian 2>"$work/mcp-http.log" &
    hpid=$!
    url=
    for _ in $(seq 300); do
        url=$(sed -n 's/^kiln-mcp: listening on //p' "$work/mcp-http.log")
        [ -n "$url" ] && break
        kill -0 "$hpid" 2>/dev/null || break
        sleep 0.1
    done
    check "kiln-mcp --http listens ($url)" test -n "$url"
    MCP_CLIENT_DIR="$CLIENT_DIR" KILN_MCP_PY=$PY KILN_MCP_ARGS="--image tiny --code-image debian" \
        KILN_MCP_URL="$url" KILN_MCP_PID="$hpid" \
        timeout 900 node "$top/tests/mcp/client.mjs" > "$work/client.out" 2> "$work/client.err"
    crc=$?
    while IFS= read -r line; do
        case "$line" in
        "ok - "*) ok "${line#ok - }" ;;
        "not ok - "*) not_ok "${line#not ok - }" ;;
        "#"*) echo "$line" ;;
        *) echo "# $line" ;;
        esac
    done < "$work/client.out"
    expect_eq "client.mjs exit status" "0" "$crc"
    # The client SIGTERMed the HTTP server at its end: it must be gone by itself.
    for _ in $(seq 300); do kill -0 "$hpid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$hpid" 2>/dev/null; then
        not_ok "kiln-mcp --http ended after SIGTERM"
    else
        wait "$hpid"; hrc=$?; hpid=
        expect_eq "kiln-mcp --http ended after SIGTERM, status 0" "0" "$hrc"
    fi
    echo "# kiln-mcp's stderr (stdio server, then HTTP server):"
    sed 's/^/#   /' "$work/client.err" | tail -n 20
    sed 's/^/#   /' "$work/mcp-http.log" | tail -n 20
    expect_eq "no python or node process of the test is left" "" \
        "$(pgrep -f "kiln\.mcp|tests/mcp/client\.mjs" | grep -vx "$$" | tr '\n' ' ')"
fi
expect_eq "kilnd has no sandbox left after the MCP sessions" "0" "$(sandboxes)"

# 4. examples/agent_loop.py: one sandbox for a whole scripted agent run.
out=$(cd "$top" && timeout 300 $PY examples/agent_loop.py debian 2>&1); rc=$?
echo "$out" | sed 's/^/#   /' | tail -n 30
expect_eq "agent_loop.py exits 0" "0" "$rc"
expect_match "agent_loop.py: every step in one sandbox" "agent run in sandbox sb-[a-z0-9-]+" "$out"
expect_match "agent_loop.py: the program ran after its input was written" "words: 5" "$out"
expect_match "agent_loop.py: 7 tool calls, the sandbox ran to the end and is destroyed" \
    "7 tool calls in one sandbox; it ran to the end: True; destroyed now: True" "$out"
expect_eq "kilnd has no sandbox left after agent_loop.py" "0" "$(sandboxes)"

expect_eq "no VM is left" "0" "$(vmms)"
kill -TERM "$kpid"; wait "$kpid"; krc=$?; kpid=
expect_eq "SIGTERM: kilnd stops with 0" "0" "$krc"
echo "# kilnd log:"; sed 's/^/#   /' "$work/kilnd.log" | tail -n 5
done_testing
