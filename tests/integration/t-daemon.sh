#!/usr/bin/env bash
# kilnd end to end, with curl on its Unix socket: sandboxes that live across
# many execs, files both ways, tenants, quotas, timeouts, records, metrics,
# and kill -9 of kilnd. Three VMs in all (tiny image). Runs where /dev/kvm works.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/kilnd.sh"
kilnd_rig t-daemon
TA=alpha-token-$RANDOM$RANDOM
TB=beta-token-$RANDOM$RANDOM
kilnd_tenant alpha "$TA" 3 4 2048 3600
kilnd_tenant beta "$TB" 1 1 512 60

start_kilnd
check "kilnd is listening" test -S "$sock"

# --- auth and bad input: nothing boots ------------------------------------------
expect_eq "health answers without a token" "200" "$(api "" GET /v1/health | code)"
expect_eq "no token: 401" "401" "$(api "" GET /v1/sandboxes | code)"
expect_eq "unknown token: 401" "401" "$(api "nope" GET /v1/sandboxes | code)"
expect_eq "a token differing in its last byte: 401" "401" "$(api "${TA%?}x" GET /v1/sandboxes | code)"
r=$(api "$TA" POST /v1/sandboxes -d '{"cpus": 2, "memry_mib": 5}')
expect_eq "unknown field: 400" "400" "$(echo "$r" | code)"
expect_match "unknown field: named" "unknown field 'memry_mib'" "$r"
expect_match "malformed JSON: 400 with where" 'malformed JSON at line 1' "$(api "$TA" POST /v1/sandboxes -d '{"cpus":')"
expect_match "wrong type: 400 naming the field" 'cpus must be an integer' "$(api "$TA" POST /v1/sandboxes -d '{"cpus":"2"}')"
expect_match "image with a path: 400" 'image must be a name' "$(api "$TA" POST /v1/sandboxes -d '{"image":"../../etc/passwd"}')"
expect_match "bad allow rule: 400" 'allow\[0\]' "$(api "$TA" POST /v1/sandboxes -d '{"allow":["a b"]}')"
expect_match "timeout over the tenant's max: 400" 'timeout_s must be an integer from 1 to 60' "$(api "$TB" POST /v1/sandboxes -d '{"timeout_s":61}')"
head -c 70000 /dev/zero | tr '\0' ' ' > "$work/big.json"
expect_eq "oversized JSON body: 413" "413" "$(api "$TA" POST /v1/sandboxes --data-binary @"$work/big.json" | code)"
r=$(api "$TB" POST /v1/sandboxes -d '{"cpus":2,"image":"tiny"}')
expect_eq "over the tenant's vCPU quota: 429" "429" "$(echo "$r" | code)"
expect_eq "unknown endpoint: 404" "404" "$(api "$TA" GET /v1/nothing | code)"
expect_eq "wrong method: 405" "405" "$(api "$TA" PATCH /v1/sandboxes | code)"
expect_eq "bad input started no VM" "0" "$(vmms)"

# --- a sandbox across many execs -----------------------------------------------
abody='{"image":"tiny","cpus":1,"memory_mib":256,"disk_mib":64,"timeout_s":600,"metadata":{"job":"t-daemon"}}'
r=$(api "$TA" POST /v1/sandboxes -H "Idempotency-Key: run-42" -d "$abody")
expect_eq "create: 201" "201" "$(echo "$r" | code)"
A=$(echo "$r" | body | jget '["id"]' 2>/dev/null)
r=$(api "$TA" POST /v1/sandboxes -H "Idempotency-Key: run-42" -d "$abody" -D "$work/hdr")
expect_eq "a retry with the same Idempotency-Key: the same sandbox" "201 $A" "$(echo "$r" | code) $(echo "$r" | body | jget '["id"]' 2>/dev/null)"
check "the retry is marked Idempotent-Replayed" grep -qi '^Idempotent-Replayed: true' "$work/hdr"
expect_eq "the retry booted no second VM" "1" "$(vmms)"
expect_eq "the same key with another body: 422" "422" "$(api "$TA" POST /v1/sandboxes -H "Idempotency-Key: run-42" -d '{"image":"tiny"}' | code)"
expect_eq "an Idempotency-Key with a space: 400" "400" "$(api "$TA" POST /v1/sandboxes -H "Idempotency-Key: a b" -d '{}' | code)"
expect_match "create: an unguessable id" '^sb-[a-z0-9][a-z0-9-]*-[0-9a-f]{32}$' "$A"
expect_eq "create: running" "running" "$(echo "$r" | body | jget '["state"]' 2>/dev/null)"
exp1=$(echo "$r" | body | jget '["expires_at"]' 2>/dev/null)

expect_eq "exec echo hi streams hi, exit 0" "hi
|exit=0" "$(exec_events "$A" '{"cmd":["echo","hi"]}' | stdout_of)"
exec_events "$A" '{"cmd":["sh","-c","echo kept > /root/state"]}' > /dev/null
expect_eq "a file written in one exec is read in the next" "kept
|exit=0" "$(exec_events "$A" '{"cmd":["cat","/root/state"]}' | stdout_of)"
expect_eq "exit status comes back" "|exit=3" "$(exec_events "$A" '{"cmd":["sh","-c","exit 3"]}' | stdout_of)"
expect_eq "env and cwd are applied" "bar /tmp
|exit=0" "$(exec_events "$A" '{"cmd":["sh","-c","echo $FOO $(pwd)"],"env":{"FOO":"bar"},"cwd":"/tmp"}' | stdout_of)"
expect_eq "stdin reaches the process" "abc|exit=0" "$(exec_events "$A" '{"cmd":["cat"],"stdin":"abc"}' | stdout_of)"
ev=$(exec_events "$A" '{"cmd":["sh","-c","echo out; echo err >&2"]}')
expect_match "stderr is its own event" '"type":"stderr","data":"err\\n"' "$ev"
expect_match "exec of a missing program: 404 command_not_found" '"code":"command_not_found"' "$(api "$TA" POST "/v1/sandboxes/$A/exec" -d '{"cmd":["/no/such"]}')"
expect_match "a process of a missing program: 404 command_not_found" '"code":"command_not_found"' "$(api "$TA" POST "/v1/sandboxes/$A/processes" -d '{"cmd":["/no/such"]}')"
expect_match "exec of a file that is not runnable: 403 command_not_runnable" '"code":"command_not_runnable"' "$(api "$TA" POST "/v1/sandboxes/$A/exec" -d '{"cmd":["/etc/hostname"]}')"
expect_match "exec timeout_s kills the process" 'error=the process timed out after 2 s' "$(exec_events "$A" '{"cmd":["sleep","100"],"timeout_s":2}' | stdout_of)"
expect_match "non-UTF-8 output comes as base64" '"data_b64":"/w=="' "$(exec_events "$A" '{"cmd":["printf","\\377"]}')"
expect_match "exec: empty cmd is 400" 'cmd must be an array' "$(api "$TA" POST "/v1/sandboxes/$A/exec" -d '{"cmd":[]}')"
# A client that goes away mid-stream ends its process.
timeout 3 curl -sS -N --unix-socket "$sock" -H "Authorization: Bearer $TA" \
    -d '{"cmd":["sh","-c","while :; do echo tick; sleep 0.2; done & echo $! > /root/ticker; wait"]}' \
    "http://kiln/v1/sandboxes/$A/exec" > "$work/ticks" 2>/dev/null
check "a streaming client got output before it left" grep -q tick "$work/ticks"
sleep 1
expect_eq "the process of a client that left is gone" "gone|exit=0" \
    "$(exec_events "$A" '{"cmd":["sh","-c","kill -0 $(cat /root/ticker) 2>/dev/null && echo alive || echo gone"]}' | stdout_of | tr -d '\n')"

# --- files ----------------------------------------------------------------------
head -c $((20 << 20)) /dev/urandom > "$work/f20"
expect_eq "PUT 20 MiB: 204" "204" "$(api "$TA" PUT "/v1/sandboxes/$A/files?path=/root/d/e/f20&mode=0600" --data-binary @"$work/f20" | code)"
api "$TA" GET "/v1/sandboxes/$A/files?path=/root/d/e/f20" -o "$work/f20.back" > /dev/null
check "GET 20 MiB back: byte-exact" cmp -s "$work/f20" "$work/f20.back"
st=$(api "$TA" GET "/v1/sandboxes/$A/fs/stat?path=/root/d/e/f20" | body)
expect_eq "stat: size" "$((20 << 20))" "$(echo "$st" | jget '["size"]' 2>/dev/null)"
expect_eq "stat: the mode asked for" "0600" "$(echo "$st" | jget '["mode"]' 2>/dev/null)"
expect_eq "mkdir: 204" "204" "$(api "$TA" POST "/v1/sandboxes/$A/fs/mkdir" -d '{"path":"/root/x/y","parents":true}' | code)"
expect_match "list shows files and dirs" '"name":"e","type":"dir"' "$(api "$TA" GET "/v1/sandboxes/$A/fs/list?path=/root/d")"
expect_eq "delete recursively: 204" "204" "$(api "$TA" DELETE "/v1/sandboxes/$A/fs?path=/root/d&recursive=1" | code)"
expect_eq "GET of a removed file: 404" "404" "$(api "$TA" GET "/v1/sandboxes/$A/files?path=/root/d/e/f20" -o /dev/null | tail -n1)"
expect_match "relative path: 400" 'path must be absolute' "$(api "$TA" GET "/v1/sandboxes/$A/files?path=etc/passwd")"
expect_match "NUL in a path: 400" 'without NUL' "$(api "$TA" GET "/v1/sandboxes/$A/fs/stat?path=/etc/passwd%00.txt")"

# --- processes that outlive their client ----------------------------------------
# pout: the events of a process stream as "stdout|stderr text, |exit=C/S, |error=".
pout() {
    python3 -c '
import json, sys, base64
out = ""
for line in sys.stdin:
    line = line.strip()
    if not line: continue
    e = json.loads(line)
    t = e["type"]
    if t in ("stdout", "stderr"): out += base64.b64decode(e["data"]).decode()
    elif t == "exit": out += "|exit=%d/%d" % (e["exit_code"], e["signal"])
    elif t == "error": out += "|error=" + e["message"]
    elif t == "lost": out += "|lost"
print(out, end="")'
}
P="/v1/sandboxes/$A/processes"
ev=$(api "$TA" POST "$P" -d '{"cmd":["sh","-c","echo one; echo two >&2; exit 3"]}' | body)
expect_eq "processes: a stream of stdout, stderr and exit" "one
two
|exit=3/0" "$(echo "$ev" | pout)"
expect_eq "processes: events are numbered from 1" "1 2 3 4" \
    "$(echo "$ev" | python3 -c 'import json,sys; print(*[json.loads(l)["seq"] for l in sys.stdin if l.strip()])')"
r=$(api "$TA" POST "$P?detach=1" -d '{"cmd":["sh","-c","sleep 1000 & echo child=$!; wait"],"tag":"bg"}')
expect_eq "detach=1: 201 at once" "201" "$(echo "$r" | code)"
BG=$(echo "$r" | body | jget '["pid"]' 2>/dev/null)
sleep 1
ls_=$(api "$TA" GET "$P" | body)
expect_eq "the detached process is listed as running, with its tag" "running bg" \
    "$(echo "$ls_" | python3 -c 'import json,sys; p=[x for x in json.load(sys.stdin)["processes"] if x["pid"]=='"${BG:-0}"']; print(p[0]["state"], p[0]["tag"]) if p else print("missing")')"
# Reattach after the start event, then kill the whole group: the stream ends with the signal.
curl -sS -N --unix-socket "$sock" -H "Authorization: Bearer $TA" \
    "http://kiln$P/$BG/events?after_seq=1" > "$work/reattach" 2>/dev/null &
rpid=$!
sleep 2
expect_eq "signal TERM to the group: 204" "204" "$(api "$TA" POST "$P/$BG/signal" -d '{"signal":"TERM"}' | code)"
timeout 30 tail --pid=$rpid -f /dev/null
expect_match "reattached with after_seq: output from seq 2 on, then the signal" '^child=[0-9]+
\|exit=-1/15$' "$(pout < "$work/reattach")"
check "after_seq=1 skipped the start event" test -z "$(grep '"type":"start"' "$work/reattach")"
child=$(pout < "$work/reattach" | sed -n 's/^child=//p')
expect_eq "the group's children died too" "gone" \
    "$(exec_events "$A" '{"cmd":["sh","-c","kill -0 '"${child:-1}"' 2>/dev/null && echo alive || echo gone"]}' | stdout_of | head -n1)"
# A client that leaves does not end the process; its output waits for a reattach.
timeout 2 curl -sS -N --unix-socket "$sock" -H "Authorization: Bearer $TA" \
    -d '{"cmd":["sh","-c","sleep 3; echo late > /root/late; echo done"]}' "http://kiln$P" > "$work/left" 2>/dev/null
LP=$(head -n1 "$work/left" | jget '["pid"]' 2>/dev/null)
sleep 4
expect_eq "the process of a client that left ran to its end" "late
|exit=0" "$(exec_events "$A" '{"cmd":["cat","/root/late"]}' | stdout_of)"
expect_eq "its events wait for a reattach" "done
|exit=0/0" "$(api "$TA" GET "$P/$LP/events?after_seq=0" | body | pout)"
r=$(api "$TA" POST "$P?detach=1" -d '{"cmd":["cat"],"stdin":true}')
CP=$(echo "$r" | body | jget '["pid"]' 2>/dev/null)
expect_eq "stdin: 204" "204" "$(api "$TA" POST "$P/$CP/stdin" --data-binary 'hello
' | code)"
expect_eq "stdin with eof=1: 204" "204" "$(api "$TA" POST "$P/$CP/stdin?eof=1" --data-binary 'bye' | code)"
expect_eq "stdin reaches the detached process, eof ends it" "hello
bye|exit=0/0" "$(api "$TA" GET "$P/$CP/events" | body | pout)"
expect_eq "stdin after it ended: 409" "409" "$(api "$TA" POST "$P/$CP/stdin" --data-binary x | code)"
expect_eq "GET one process: exited with its code" "exited 0" \
    "$(api "$TA" GET "$P/$CP" | body | python3 -c 'import json,sys; p=json.load(sys.stdin); print(p["state"], p["exit_code"])')"
expect_eq "a bad signal name: 400" "400" "$(api "$TA" POST "$P/$CP/signal" -d '{"signal":"NOPE"}' | code)"
expect_eq "an unknown process: 404" "404" "$(api "$TA" GET "$P/999999" | code)"
expect_eq "pid 0 is no process path: 404" "404" "$(api "$TA" GET "$P/0/events" | code)"
expect_eq "another tenant's process: 404" "404" "$(api "$TB" GET "$P/$CP/events" | code)"
expect_eq "resize without a terminal: 409" "409" "$(api "$TA" POST "$P/$CP/resize" -d '{"rows":24,"cols":80}' | code)"
# --- terminals: a process on a guest pty -----------------------------------------
expect_match "pty: zero rows is 400 naming the field" '"bad_request".*pty.rows must be an integer from 1 to 4096' \
    "$(api "$TA" POST "$P" -d '{"cmd":["sh"],"pty":{"rows":0,"cols":80}}')"
expect_match "pty: huge cols is 400 naming the field" 'pty.cols must be an integer from 1 to 4096' \
    "$(api "$TA" POST "$P" -d '{"cmd":["sh"],"pty":{"rows":24,"cols":99999}}')"
expect_match "pty: a missing size is 400" 'pty.cols must be' "$(api "$TA" POST "$P" -d '{"cmd":["sh"],"pty":{"rows":24}}')"
expect_match "pty: not an object is 400" 'pty must be an object' "$(api "$TA" POST "$P" -d '{"cmd":["sh"],"pty":"yes"}')"
expect_match "pty: an unknown field is 400" "unknown field 'pty.x'" \
    "$(api "$TA" POST "$P" -d '{"cmd":["sh"],"pty":{"rows":24,"cols":80,"x":1}}')"
r=$(api "$TA" POST "$P?detach=1" -d '{"cmd":["sh","-c","tty; echo err >&2; stty size; read x; stty size; echo \"[$x]\""],"pty":{"rows":24,"cols":80}}')
expect_eq "pty: detached start 201" "201" "$(echo "$r" | code)"
TP=$(echo "$r" | body | jget '["pid"]' 2>/dev/null)
# The first size must be printed before the resize (else it would print the new one).
for _ in $(seq 120); do
    [[ "$(curl -sS -m 2 --unix-socket "$sock" -H "Authorization: Bearer $TA" \
        "http://kiln$P/$TP/events?after_seq=0" 2>/dev/null | pout)" == *"24 80"* ]] && break
    sleep 0.5
done
expect_eq "pty: resize 204" "204" "$(api "$TA" POST "$P/$TP/resize" -d '{"rows":33,"cols":101}' | code)"
expect_match "pty: resize with zero rows is 400 naming the field" 'rows must be an integer from 1 to 4096' \
    "$(api "$TA" POST "$P/$TP/resize" -d '{"rows":0,"cols":101}')"
expect_match "pty: resize with an unknown field is 400" "unknown field 'depth'" \
    "$(api "$TA" POST "$P/$TP/resize" -d '{"rows":3,"cols":3,"depth":1}')"
expect_match "pty: the process shows its terminal and size" '"pty":\{"rows":33,"cols":101\}' "$(api "$TA" GET "$P/$TP" | body)"
expect_eq "pty: stdin is typed into the terminal" "204" "$(api "$TA" POST "$P/$TP/stdin" --data-binary 'hello
' | code)"
ev=$(api "$TA" GET "$P/$TP/events?after_seq=0" | body)
expect_match "pty: tty, stderr merged, the size, the resize, the echo and the line, as stdout" \
    $'^/dev/pts/[0-9]+\r\nerr\r\n24 80\r\nhello\r\n33 101\r\n\\[hello\\]\r\n\\|exit=0/0$' "$(echo "$ev" | pout)"
check "pty: no stderr events" test -z "$(echo "$ev" | grep '"type":"stderr"')"
expect_eq "pty: resize after it ended: 409" "409" "$(api "$TA" POST "$P/$TP/resize" -d '{"rows":5,"cols":5}' | code)"
r=$(api "$TA" POST "$P?detach=1" -d '{"cmd":["sleep","1000"],"pty":{"rows":24,"cols":80}}')
SP=$(echo "$r" | body | jget '["pid"]' 2>/dev/null)
expect_eq "pty: a Ctrl-C byte as stdin: 204" "204" "$(printf '\003' | api "$TA" POST "$P/$SP/stdin" --data-binary @- | code)"
expect_match "pty: Ctrl-C interrupts sleep (SIGINT)" '\|exit=-1/2$' "$(api "$TA" GET "$P/$SP/events" -m 60 | body | pout)"
# A chatty process keeps only the last MiB: an early reattach is told what it lost.
r=$(api "$TA" POST "$P?detach=1" -d '{"cmd":["sh","-c","i=0; while [ $i -lt 3000 ]; do printf \"%01000d\\n\" $i; i=$((i+1)); done"]}')
FP=$(echo "$r" | body | jget '["pid"]' 2>/dev/null)
for _ in $(seq 120); do
    [ "$(api "$TA" GET "$P/$FP" | body | jget '["state"]' 2>/dev/null)" = exited ] && break
    sleep 0.5
done
ev=$(api "$TA" GET "$P/$FP/events?after_seq=0" -m 60 | body)
expect_match "over 1 MiB of output: the first event says what was lost" '^\{"type":"lost"' "$(echo "$ev" | head -n1)"
check "over 1 MiB of output: kept at most about 1.4 MiB" test "$(echo "$ev" | wc -c)" -lt 1500000
expect_match "over 1 MiB of output: the exit is still there" '"type":"exit","exit_code":0' "$(echo "$ev" | tail -n1)"

# --- tenants --------------------------------------------------------------------
expect_eq "another tenant's sandbox: GET 404" "404" "$(api "$TB" GET "/v1/sandboxes/$A" | code)"
expect_eq "another tenant's sandbox: exec 404" "404" "$(api "$TB" POST "/v1/sandboxes/$A/exec" -d '{"cmd":["id"]}' | code)"
expect_eq "another tenant's sandbox: DELETE 404" "404" "$(api "$TB" DELETE "/v1/sandboxes/$A" | code)"
expect_eq "another tenant's list is empty" '{"sandboxes":[]}' "$(api "$TB" GET /v1/sandboxes | body)"
expect_eq "the owner's list has it" "$A" "$(api "$TA" GET /v1/sandboxes | body | jget '["sandboxes"][0]["id"]' 2>/dev/null)"

# --- 1000 idle connections -------------------------------------------------------
# Half say nothing, half stop mid-header: kilnd keeps serving everyone else,
# and once they go, its threads and descriptors are back where they were.
nthreads() { awk '/^Threads:/ {print $2}' "/proc/$kpid/status"; }
nfds() { ls "/proc/$kpid/fd" | wc -l; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$kpid/status"; }
th0=$(nthreads); fd0=$(nfds)
python3 - "$sock" 1000 "$work/idle" <<'PY' &
import os, socket, sys, time
path, n, flag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
held = []
for i in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    if i % 2:
        s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: kiln\r\nX-Slow: ")
    held.append(s)
open(flag + ".held", "w").write("%d\n" % len(held))
while not os.path.exists(flag + ".release"):
    time.sleep(0.2)
for s in held:
    s.close()
PY
idlepid=$!
for _ in $(seq 600); do [ -e "$work/idle.held" ] && break; kill -0 $idlepid 2>/dev/null || break; sleep 0.2; done
expect_eq "1000 idle connections opened" "1000" "$(cat "$work/idle.held" 2>/dev/null)"
th1=$(nthreads); fd1=$(nfds)
echo "# kilnd with 1000 idle connections: $th1 threads (was $th0), $fd1 fds (was $fd0), RSS $(rss_kib) KiB"
expect_eq "with 1000 idle connections: health answers" "200" "$(api "" GET /v1/health | code)"
expect_eq "with 1000 idle connections: exec in a sandbox works" "ok|exit=0" "$(exec_events "$A" '{"cmd":["echo","ok"]}' | stdout_of | tr -d '\n')"
check "kilnd holds them (fds $fd1 >= $((fd0 + 900)))" test "$fd1" -ge $((fd0 + 900))
touch "$work/idle.release"
wait "$idlepid"
for _ in $(seq 100); do [ "$(nfds)" -le $((fd0 + 2)) ] && [ "$(nthreads)" -le $((th0 + 2)) ] && break; sleep 0.2; done
check "after they close: threads back ($(nthreads), was $th0)" test "$(nthreads)" -le $((th0 + 2))
check "after they close: descriptors back ($(nfds), was $fd0)" test "$(nfds)" -le $((fd0 + 2))

# --- timeouts -------------------------------------------------------------------
sleep 1
r=$(api "$TA" POST "/v1/sandboxes/$A/timeout" -d '{"timeout_s":1200}')
expect_eq "set-timeout: 200" "200" "$(echo "$r" | code)"
exp2=$(echo "$r" | body | jget '["expires_at"]' 2>/dev/null)
check "set-timeout moves expires_at later ($exp1 -> $exp2)" test "$exp2" \> "$exp1"
r=$(api "$TA" POST /v1/sandboxes -d '{"image":"tiny","memory_mib":128,"disk_mib":0,"timeout_s":5}')
S=$(echo "$r" | body | jget '["id"]' 2>/dev/null)
expect_eq "a 5 s sandbox boots" "201" "$(echo "$r" | code)"
gone=no
for _ in $(seq 60); do
    [ "$(api "$TA" GET "/v1/sandboxes/$S" | code)" = 404 ] && { gone=yes; break; }
    sleep 1
done
expect_eq "a timeout_s 5 sandbox is gone after its timeout" "yes" "$gone"
expect_eq "its record says timeout" "timeout" "$(api "$TA" GET "/v1/runs/$S" | body | jget '["end_reason"]' 2>/dev/null)"

# --- pause and resume --------------------------------------------------------------
# A ticker prints every 0.2 s; kilnd's record of it (next_seq) stands still while
# the VM's vCPUs are stopped and moves again after resume.
r=$(api "$TA" POST "/v1/sandboxes/$A/processes?detach=1" -d '{"cmd":["sh","-c","while :; do echo t; sleep 0.2; done"]}')
TP=$(echo "$r" | body | jget '["pid"]' 2>/dev/null)
seq_of() { api "$TA" GET "/v1/sandboxes/$A/processes/$TP" | body | jget '["next_seq"]' 2>/dev/null; }
for _ in $(seq 100); do [ "$(seq_of)" -gt 3 ] 2>/dev/null && break; sleep 0.2; done
r=$(api "$TA" POST "/v1/sandboxes/$A/pause")
expect_eq "pause: 200" "200" "$(echo "$r" | code)"
expect_eq "pause: the sandbox says paused" "paused" "$(echo "$r" | body | jget '["state"]' 2>/dev/null)"
expect_eq "GET says paused" "paused" "$(api "$TA" GET "/v1/sandboxes/$A" | body | jget '["state"]' 2>/dev/null)"
expect_eq "?state=paused lists it" "1" "$(api "$TA" GET "/v1/sandboxes?state=paused" | body | jget '["sandboxes"].__len__()' 2>/dev/null)"
expect_eq "pause again: 200" "200" "$(api "$TA" POST "/v1/sandboxes/$A/pause" | code)"
r=$(api "$TA" POST "/v1/sandboxes/$A/exec" -d '{"cmd":["true"]}')
expect_eq "exec while paused: 409" "409" "$(echo "$r" | code)"
expect_match "exec while paused: sandbox_paused" '"sandbox_paused"' "$(echo "$r" | body)"
expect_eq "files while paused: 409" "409" "$(api "$TA" GET "/v1/sandboxes/$A/fs/stat?path=/" | code)"
sleep 0.5; s0=$(seq_of); sleep 3; s1=$(seq_of)
expect_eq "the ticker stands still for 3 s while paused" "$s0" "$s1"
r=$(api "$TA" POST "/v1/sandboxes/$A/resume")
expect_eq "resume: 200, running" "200 running" "$(echo "$r" | code) $(echo "$r" | body | jget '["state"]' 2>/dev/null)"
moved=no
for _ in $(seq 120); do [ "$(seq_of)" -gt "$s1" ] 2>/dev/null && { moved=yes; break; }; sleep 0.5; done
expect_eq "the ticker moves again after resume" "yes" "$moved"
expect_eq "exec after resume" "ok|exit=0" "$(exec_events "$A" '{"cmd":["echo","ok"]}' | stdout_of | tr -d '\n')"
expect_eq "pause: an unknown sandbox is 404" "404" "$(api "$TA" POST "/v1/sandboxes/sb-00000000000000000000000000000000/pause" | code)"
expect_eq "pause: another tenant's sandbox is 404" "404" "$(api "$TB" POST "/v1/sandboxes/$A/pause" | code)"
# --- templates (issue 14): the running sandbox saved, per tenant ---------------------
r=$(api "$TA" POST "/v1/sandboxes/$A/template" -d '{"name":"tpl1"}')
expect_eq "template: 201" "201" "$(echo "$r" | code)"
expect_eq "template: its name, vCPUs, memory" "tpl1 1 256" "$(echo "$r" | body | jget '["name"], d["cpus"], d["mem_mib"]' 2>/dev/null | tr -d '(),'"'")"
tdir="$state/templates/t-alpha/tpl1"
for f in state mem scratch template.json; do check "template: $f written" test -s "$tdir/$f"; done
expect_match "template: the state file passes kiln-vmm's reader" "vm cpus 1 mem 268435456" "$("$B/kiln-vmm" --inspect-snapshot "$tdir/state" 2>&1)"
expect_eq "template: the sandbox runs on" "running" "$(api "$TA" GET "/v1/sandboxes/$A" | body | jget '["state"]' 2>/dev/null)"
expect_eq "template: exec afterwards" "ok|exit=0" "$(exec_events "$A" '{"cmd":["echo","ok"]}' | stdout_of | tr -d '\n')"
r=$(api "$TA" POST "/v1/sandboxes/$A/template" -d '{"name":"tpl1"}')
expect_eq "template: the same name again: 409 template_exists" "409 template_exists" "$(echo "$r" | code) $(echo "$r" | body | jget '["error"]["code"]' 2>/dev/null)"
expect_eq "template: a bad name: 400" "400" "$(api "$TA" POST "/v1/sandboxes/$A/template" -d '{"name":"../x"}' | code)"
expect_eq "template: no name: 400" "400" "$(api "$TA" POST "/v1/sandboxes/$A/template" -d '{}' | code)"
expect_eq "template: another tenant's sandbox: 404" "404" "$(api "$TB" POST "/v1/sandboxes/$A/template" -d '{"name":"x"}' | code)"
expect_eq "GET /v1/templates: the tenant's, not stale" "tpl1 False" "$(api "$TA" GET /v1/templates | body | jget '["templates"][0]["name"], d["templates"][0]["stale"]' 2>/dev/null | tr -d '(),'"'")"
expect_eq "GET /v1/templates: another tenant sees none" "0" "$(api "$TB" GET /v1/templates | body | jget '["templates"].__len__()' 2>/dev/null)"
# A sandbox restored from tpl1 (no boot): A's files at the save, its own
# identity, and its writes stay its own.
r=$(api "$TA" POST /v1/sandboxes -d '{"template":"tpl1","timeout_s":300}')
expect_eq "create from template tpl1: 201, running, 1 vCPU, 256 MiB, its template" "201 running 1 256 tpl1" "$(echo "$r" | code) $(echo "$r" | body | jget '["state"], d["cpus"], d["memory_mib"], d["template"]' 2>/dev/null | tr -d '(),'"'")"
C=$(echo "$r" | body | jget '["id"]' 2>/dev/null)
[ "$(echo "$r" | code)" = 201 ] || echo "$r" | sed 's/^/# /'
expect_eq "the clone has A's file from before the save" "kept|exit=0" "$(exec_events "$C" '{"cmd":["cat","/root/state"]}' | stdout_of | tr -d '\n')"
expect_eq "the clone's sandbox id is its own" "$C|exit=0" "$(exec_events "$C" '{"cmd":["cat","/run/kiln/sandbox-id"]}' | stdout_of | tr -d '\n')"
exec_events "$C" '{"cmd":["sh","-c","echo clone > /root/state && sync"]}' > /dev/null
expect_eq "the clone's write reads back in it" "clone|exit=0" "$(exec_events "$C" '{"cmd":["cat","/root/state"]}' | stdout_of | tr -d '\n')"
expect_eq "the clone's write does not reach A" "kept|exit=0" "$(exec_events "$A" '{"cmd":["cat","/root/state"]}' | stdout_of | tr -d '\n')"
expect_eq "DELETE the clone: 204" "204" "$(api "$TA" DELETE "/v1/sandboxes/$C" | code)"
expect_eq "create from a template that is not there: 404" "404" "$(api "$TA" POST /v1/sandboxes -d '{"template":"nope"}' | code)"
expect_eq "create from a template with cpus: 400" "400" "$(api "$TA" POST /v1/sandboxes -d '{"template":"tpl1","cpus":2}' | code)"
expect_eq "another tenant cannot start alpha's template: 404" "404" "$(api "$TB" POST /v1/sandboxes -d '{"template":"tpl1"}' | code)"
expect_eq "pause, template while paused: 201" "200 201" "$(api "$TA" POST "/v1/sandboxes/$A/pause" | code) $(api "$TA" POST "/v1/sandboxes/$A/template" -d '{"name":"tpl2"}' | code)"
expect_eq "a paused sandbox stays paused" "paused" "$(api "$TA" GET "/v1/sandboxes/$A" | body | jget '["state"]' 2>/dev/null)"
expect_eq "resume after it" "200" "$(api "$TA" POST "/v1/sandboxes/$A/resume" | code)"
expect_eq "DELETE another tenant's template: 404" "404" "$(api "$TB" DELETE /v1/templates/tpl1 | code)"
expect_eq "DELETE /v1/templates/tpl1: 204" "204" "$(api "$TA" DELETE /v1/templates/tpl1 | code)"
expect_eq "DELETE it again: 404" "404" "$(api "$TA" DELETE /v1/templates/tpl1 | code)"
expect_eq "DELETE tpl2: 204, none left" "204 0" "$(api "$TA" DELETE /v1/templates/tpl2 | code) $(api "$TA" GET /v1/templates | body | jget '["templates"].__len__()' 2>/dev/null)"
check "no template files left" test -z "$(ls -A "$state/templates/t-alpha")"

api "$TA" POST "/v1/sandboxes/$A/processes/$TP/signal" -d '{"signal":"KILL"}' > /dev/null
expect_eq "pause a second time, then DELETE a paused sandbox: 200" "200" "$(api "$TA" POST "/v1/sandboxes/$A/pause" | code)"

# --- delete ---------------------------------------------------------------------
expect_eq "DELETE: 204" "204" "$(api "$TA" DELETE "/v1/sandboxes/$A" | code)"
expect_eq "exec in a deleted sandbox: 404" "404" "$(api "$TA" POST "/v1/sandboxes/$A/exec" -d '{"cmd":["true"]}' | code)"
rec=$(api "$TA" GET "/v1/runs/$A" | body)
expect_eq "the record says deleted" "deleted" "$(echo "$rec" | jget '["end_reason"]' 2>/dev/null)"
check "the record lists its processes" test "$(echo "$rec" | jget '["processes"].__len__()' 2>/dev/null)" -ge 10
expect_eq "no VM is left after delete and timeout" "0" "$(vmms)"

# --- metrics --------------------------------------------------------------------
m=$(api "$TA" GET /metrics | body)
bad=$(echo "$m" | grep -v '^#' | grep -v -E '^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? [0-9.e+-]+$' | head -n1)
expect_eq "metrics parse as Prometheus text" "" "$bad"
expect_match "metrics count the creates (A, B and the clone of tpl1)" 'kiln_sandbox_creates_total 3' "$m"
expect_match "metrics count the timeout" 'kiln_limit_hits_total\{kind="timeout"\} 1' "$m"
expect_match "metrics count the deletes (the clone, then A)" 'kiln_sandbox_deletes_total 2' "$m"
expect_match "metrics count the quota refusal" 'kiln_quota_refusals_total 1' "$m"
check "metrics count the execs" test "$(echo "$m" | sed -n 's/^kiln_execs_total //p')" -ge 10

# --- kill -9 kilnd: no VM outlives it; a restart starts clean -----------------
r=$(api "$TA" POST /v1/sandboxes -d '{"image":"tiny","memory_mib":128,"disk_mib":0}')
C=$(echo "$r" | body | jget '["id"]' 2>/dev/null)
expect_eq "one more sandbox runs" "1" "$(vmms)"
kill -9 "$kpid"; wait "$kpid" 2>/dev/null; kpid=
left=1
for _ in $(seq 50); do left=$(vmms); [ "$left" = 0 ] && break; sleep 0.1; done
expect_eq "kill -9 kilnd: no VMM survives" "0" "$left"
start_kilnd
expect_match "restart: the earlier record is marked" '1 earlier records marked daemon-stopped' "$(cat "$work/kilnd.log")"
expect_eq "restart: no sandbox runs" '{"sandboxes":[]}' "$(api "$TA" GET /v1/sandboxes | body)"
expect_eq "restart: the record says daemon-stopped" "daemon-stopped" "$(api "$TA" GET "/v1/runs/$C" | body | jget '["end_reason"]' 2>/dev/null)"
check "restart: no run directory left" test -z "$(ls "${TMPDIR:-/tmp}/kiln-$(id -u)" 2>/dev/null | grep '^run\.')"
kill -TERM "$kpid"; wait "$kpid"; rc=$?; kpid=
expect_eq "SIGTERM: kilnd stops with 0" "0" "$rc"
check "SIGTERM: the socket is removed" test ! -e "$sock"
echo "# kilnd log:"; sed 's/^/#   /' "$work/kilnd.log" | tail -n 5
done_testing
