#!/usr/bin/env bash
# kilnd's POST /v1/sandboxes/{id}/fork (issue 14): clones of a running sandbox
# while a process in it streams output, each with its own identity, disk and
# memory; all or none; 20 snapshot/restore cycles in a row, each clone execs.
# One boot (tiny image); every clone is a restore. Runs where /dev/kvm works.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/kilnd.sh"
kilnd_rig t-fork
TA=alpha-token-$RANDOM$RANDOM
TB=beta-token-$RANDOM$RANDOM
kilnd_tenant alpha "$TA" 3 4 2048 7200
kilnd_tenant beta "$TB" 1 1 512 60

start_kilnd
check "kilnd is listening" test -S "$sock"
expect_eq "fork of an unknown sandbox: 404" "404" "$(api "$TA" POST "/v1/sandboxes/sb-00000000000000000000000000000000/fork" -d '{}' | code)"

r=$(api "$TA" POST /v1/sandboxes -d '{"image":"tiny","cpus":1,"memory_mib":128,"disk_mib":64,"timeout_s":3600,"metadata":{"job":"t-fork"}}')
expect_eq "create A: 201" "201" "$(echo "$r" | code)"
A=$(echo "$r" | body | jget '["id"]' 2>/dev/null)
[ -n "$A" ] || { echo "$r" | sed 's/^/# /'; done_testing; exit 1; }
exec_events "$A" '{"cmd":["sh","-c","echo kept > /root/state && sync"]}' > /dev/null
# A ticker prints every 0.5 s for as long as A runs; kilnd's record of it
# (next_seq) says whether it still streams.
r=$(api "$TA" POST "/v1/sandboxes/$A/processes?detach=1" -d '{"cmd":["sh","-c","while :; do echo t; sleep 0.5; done"]}')
TP=$(echo "$r" | body | jget '["pid"]' 2>/dev/null)
# No Python in the loops (each start costs seconds in an emulated host).
seq_of() { api "$TA" GET "/v1/sandboxes/$A/processes/$TP" | grep -o '"next_seq": *[0-9]*' | grep -o '[0-9]*$'; }
streams() {
    local s0 _
    s0=$(seq_of)
    for _ in $(seq 60); do [ "$(seq_of)" -gt "$s0" ] 2>/dev/null && { echo yes; return; }; sleep 0.5; done
    echo no
}
expect_eq "A's ticker streams" "yes" "$(streams)"

# --- two clones -----------------------------------------------------------------
r=$(api "$TA" POST "/v1/sandboxes/$A/fork" -d '{"count":2}')
expect_eq "fork count 2: 201" "201" "$(echo "$r" | code)"
[ "$(echo "$r" | code)" = 201 ] || echo "$r" | sed 's/^/# /'
F1=$(echo "$r" | body | jget '["sandboxes"][0]["id"]' 2>/dev/null)
F2=$(echo "$r" | body | jget '["sandboxes"][1]["id"]' 2>/dev/null)
expect_eq "fork: two running clones of A, no template named" "running $A None running $A None" "$(echo "$r" | body | jget '["sandboxes"][0]["state"], d["sandboxes"][0]["forked_from"], d["sandboxes"][0]["template"], d["sandboxes"][1]["state"], d["sandboxes"][1]["forked_from"], d["sandboxes"][1]["template"]' 2>/dev/null | tr -d '(),'"'")"
check "fork: the clones' ids differ from each other and from A" test -n "$F1" -a -n "$F2" -a "$F1" != "$F2" -a "$F1" != "$A"
for f in "$F1" "$F2"; do
    expect_eq "fork $f: A's file from before the fork" "kept|exit=0" "$(exec_events "$f" '{"cmd":["cat","/root/state"]}' | stdout_of | tr -d '\n')"
    expect_eq "fork $f: its own sandbox id" "$f|exit=0" "$(exec_events "$f" '{"cmd":["cat","/run/kiln/sandbox-id"]}' | stdout_of | tr -d '\n')"
done
h=$(for f in "$A" "$F1" "$F2"; do exec_events "$f" '{"cmd":["hostname"]}' | stdout_of | tr -d '\n'; echo; done | sort -u | wc -l)
expect_eq "fork: A and its two clones have three hostnames" "3" "$h"
u1=$(exec_events "$F1" '{"cmd":["sh","-c","cat /proc/sys/kernel/random/boot_id; head -c 16 /dev/urandom | od -An -tx1"]}' | stdout_of | tr -d '\n ')
u2=$(exec_events "$F2" '{"cmd":["sh","-c","cat /proc/sys/kernel/random/boot_id; head -c 16 /dev/urandom | od -An -tx1"]}' | stdout_of | tr -d '\n ')
check "fork: boot id and random bytes differ between the clones" test -n "$u1" -a "$u1" != "$u2"
exec_events "$F1" '{"cmd":["sh","-c","echo f1 > /root/state && sync"]}' > /dev/null
expect_eq "fork: a clone's write stays its own" "kept|exit=0 f1|exit=0" "$(exec_events "$F2" '{"cmd":["cat","/root/state"]}' | stdout_of | tr -d '\n') $(exec_events "$F1" '{"cmd":["cat","/root/state"]}' | stdout_of | tr -d '\n')"

expect_eq "fork: A's ticker streams on" "yes" "$(streams)"
expect_eq "fork: DELETE both clones" "204 204" "$(api "$TA" DELETE "/v1/sandboxes/$F1" | code) $(api "$TA" DELETE "/v1/sandboxes/$F2" | code)"
r=$(api "$TA" POST "/v1/sandboxes/$A/fork" -d '{"count":3}')
expect_eq "fork count 3: over alpha's 3 sandboxes: 429 before any work" "429 quota 1" "$(echo "$r" | code) $(echo "$r" | body | jget '["error"]["code"]' 2>/dev/null) $(vmms)"
expect_eq "fork count 0: 400" "400" "$(api "$TA" POST "/v1/sandboxes/$A/fork" -d '{"count":0}' | code)"
expect_eq "fork count 17: 400" "400" "$(api "$TA" POST "/v1/sandboxes/$A/fork" -d '{"count":17}' | code)"
expect_eq "fork count as a string: 400" "400" "$(api "$TA" POST "/v1/sandboxes/$A/fork" -d '{"count":"2"}' | code)"
expect_eq "fork with an unknown field: 400" "400" "$(api "$TA" POST "/v1/sandboxes/$A/fork" -d '{"n":2}' | code)"
expect_eq "fork of another tenant's sandbox: 404" "404" "$(api "$TB" POST "/v1/sandboxes/$A/fork" -d '{}' | code)"
# 20 snapshot/restore cycles while the ticker streams: each clone execs as
# itself. No Python in the loop (each start costs seconds in an emulated
# host): the id and the exec's output are read with grep.
cycles=${KILN_FORK_CYCLES:-20}
good=0
t0=$(date +%s)
for i in $(seq "$cycles"); do
    r=$(api "$TA" POST "/v1/sandboxes/$A/fork" -d '{}')
    f=$(printf '%s' "$r" | grep -o '"id":"sb-[a-z0-9-]*"' | head -n1 | cut -d'"' -f4)
    out=$(exec_events "$f" "{\"cmd\":[\"sh\",\"-c\",\"echo cycle-$i \$(cat /run/kiln/sandbox-id)\"]}")
    if [ -n "$f" ] && printf '%s' "$out" | grep -q "cycle-$i $f" &&
        printf '%s' "$out" | grep -q '"type":"exit","code":0'; then
        good=$((good + 1))
    else
        echo "# cycle $i: fork answered $(printf '%s' "$r" | tr '\n' ' ' | cut -c1-300); exec: $(printf '%s' "$out" | tr '\n' ' ' | cut -c1-300)"
    fi
    [ -n "$f" ] && api "$TA" DELETE "/v1/sandboxes/$f" > /dev/null
done
echo "# $cycles fork cycles (fork, exec, delete) in $(( $(date +%s) - t0 )) s"
expect_eq "fork: $cycles cycles while A streams, every clone execs as itself" "$cycles" "$good"
[ "$good" = "$cycles" ] || { echo "# kilnd log:"; tail -n 20 "$work/kilnd.log" | sed 's/^/#   /'; }

expect_eq "fork: A's ticker still streams after $cycles forks" "yes" "$(streams)"
expect_eq "fork: A execs after them" "ok|exit=0" "$(exec_events "$A" '{"cmd":["echo","ok"]}' | stdout_of | tr -d '\n')"
check "fork: no fork template left" test -z "$(ls -A "$state/forks")"
expect_eq "fork: only A runs" "1" "$(vmms)"

# --- a paused sandbox: forked, it stays paused ------------------------------------
expect_eq "pause A" "200" "$(api "$TA" POST "/v1/sandboxes/$A/pause" | code)"
r=$(api "$TA" POST "/v1/sandboxes/$A/fork" -d '{"count":1}')
f=$(echo "$r" | body | jget '["sandboxes"][0]["id"]' 2>/dev/null)
expect_eq "fork of a paused A: 201, the clone runs" "201 running" "$(echo "$r" | code) $(echo "$r" | body | jget '["sandboxes"][0]["state"]' 2>/dev/null)"
expect_eq "the paused A's clone execs" "ok|exit=0" "$(exec_events "$f" '{"cmd":["echo","ok"]}' | stdout_of | tr -d '\n')"
expect_eq "A stays paused" "paused" "$(api "$TA" GET "/v1/sandboxes/$A" | body | jget '["state"]' 2>/dev/null)"
expect_eq "resume A, DELETE the clone" "200 204" "$(api "$TA" POST "/v1/sandboxes/$A/resume" | code) $(api "$TA" DELETE "/v1/sandboxes/$f" | code)"

m=$(api "$TA" GET /metrics | body)
expect_match "metrics count the creates (A and $((cycles + 3)) clones)" "kiln_sandbox_creates_total $((cycles + 4))" "$m"
expect_match "metrics count the deletes ($((cycles + 3)) clones)" "kiln_sandbox_deletes_total $((cycles + 3))" "$m"
expect_match "metrics count the fork refused by quota" 'kiln_quota_refusals_total 1' "$m"

# --- a fork's leftovers (kilnd killed mid-fork) are removed at start ---------------
kill -9 "$kpid"; wait "$kpid" 2>/dev/null; kpid=
mkdir -p "$state/forks/f-0123456789abcdef"
for f in state mem scratch template.json; do echo x > "$state/forks/f-0123456789abcdef/$f"; done
start_kilnd
check "restart: the dead fork's template is removed" test -z "$(ls -A "$state/forks")"
kill -TERM "$kpid"; wait "$kpid"; kpid=
for _ in $(seq 50); do [ "$(vmms)" = 0 ] && break; sleep 0.1; done
expect_eq "no VMM left" "0" "$(vmms)"
done_testing
