# A real kilnd for a test (sourced after lib.sh): a work dir of its own, the
# tiny image under the name "tiny", a tokens file, start and stop.
# shellcheck shell=bash

KILND="$B/kilnd"
kpid=

# kilnd_rig NAME: $work (removed on exit, with kilnd killed first), $sock,
# $state and an image dir. A test that needs more on exit defines
# kilnd_cleanup_more.
kilnd_rig() {
    work=$(mktemp -d "/tmp/$1.XXXXXX")
    sock="$work/kilnd.sock"
    state="$work/state"
    mkdir -p "$work/images"
    ln -s "${KILN_TEST_TINY:-$B/images/tiny.img}" "$work/images/tiny.img"
    : > "$work/tenants"
    trap kilnd_cleanup EXIT
}
kilnd_cleanup() {
    declare -F kilnd_cleanup_more > /dev/null && kilnd_cleanup_more
    [ -n "$kpid" ] && kill -9 "$kpid" 2>/dev/null
    rm -rf "$work"
}

# kilnd_tenant NAME TOKEN MAX_SANDBOXES MAX_VCPUS MAX_MIB MAX_TIMEOUT_S: one
# more tenant in $work/tokens.json (only the token's SHA-256 is kept).
kilnd_tenant() {
    local sum
    sum=$(printf %s "$2" | sha256sum | cut -d' ' -f1)
    printf '{"name": "%s", "token_sha256": "%s", "max_sandboxes": %s, "max_vcpus": %s, "max_memory_mib": %s, "max_timeout_s": %s}\n' \
        "$1" "$sum" "$3" "$4" "$5" "$6" >> "$work/tenants"
    { echo '{"tenants": ['; paste -sd, "$work/tenants"; echo ']}'; } > "$work/tokens.json"
}

# start_kilnd [ARGS...]: starts kilnd in the background ($kpid) and waits for
# this start's "ready" line (an earlier kilnd's socket may linger).
start_kilnd() {
    local before
    before=$(grep -c 'kilnd: ready' "$work/kilnd.log" 2>/dev/null)
    "$KILND" --tokens "$work/tokens.json" --state-dir "$state" --listen "unix:$sock" \
        --image-dir "$work/images" "$@" 2>>"$work/kilnd.log" &
    kpid=$!
    for _ in $(seq 300); do
        [ "$(grep -c 'kilnd: ready' "$work/kilnd.log" 2>/dev/null)" -gt "${before:-0}" ] && break
        kill -0 "$kpid" 2>/dev/null || break
        sleep 0.1
    done
}

# VMM processes (not their jail's waiters, kiln-vmm-wait).
vmms() { pgrep -x kiln-vmm | wc -l; }

# The API from a test, with curl on kilnd's Unix socket ($sock):
# api TOKEN METHOD PATH [curl args...]: the body, then the status code on a
# line of its own (body, code); jget EXPR: a field of the JSON on stdin;
# exec_events SB JSON: tenant $TA's exec events; stdout_of: those events as
# "STDOUT|exit=N".
api() {
    local tok=$1 m=$2 p=$3
    shift 3
    curl -sS -m 300 --unix-socket "$sock" -X "$m" ${tok:+-H "Authorization: Bearer $tok"} \
        -w '\n%{http_code}' "$@" "http://kiln$p"
}
body() { sed '$d'; }
code() { tail -n1; }
jget() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval("d"+sys.argv[1]))' "$1"; }
exec_events() { api "$TA" POST "/v1/sandboxes/$1/exec" -d "$2" | body; }
stdout_of() {
    "${PY:-python3}" -c '
import json, sys, base64
out = ""
for line in sys.stdin:
    line = line.strip()
    if not line: continue
    e = json.loads(line)
    if e.get("type") == "stdout": out += e.get("data") or base64.b64decode(e["data_b64"]).decode()
    if e.get("type") == "exit": out += "|exit=%s" % (e["code"] if e["code"] >= 0 else "sig%d" % e["signal"])
    if e.get("type") == "error": out += "|error=" + e["message"]
print(out, end="")'
}
