#!/usr/bin/env bash
# kiln's client verbs (create, exec, ps, rm, cp, attach, timeout) against a
# real kilnd on its Unix socket: output on the right streams, exit statuses,
# stdin, Ctrl-C, files both ways, and one-line errors. One VM (tiny image).
# Runs where /dev/kvm works.
source "$(dirname "$0")/lib.sh"

KILN="$B/kiln"
source "$(dirname "$0")/kilnd.sh"
kilnd_rig t-client
TA=client-token-$RANDOM$RANDOM
kilnd_tenant alpha "$TA" 2 2 1024 3600
start_kilnd
check "kilnd is listening" test -S "$sock"

export KILN_HOST="unix:$sock" KILN_TOKEN="$TA"
# run_k NAME ARGS...: kiln's stdout in $work/NAME.out, stderr in NAME.err, status in $rc.
run_k() { local n=$1; shift; "$KILN" "$@" > "$work/$n.out" 2> "$work/$n.err"; rc=$?; }
out() { cat "$work/$1.out"; }
err() { cat "$work/$1.err"; }
lines() { wc -l < "$work/$1.err" | tr -d ' '; }
# one_line_error NAME DESC WANT_RC REGEX: run NAME's exit status, one stderr line, what it says.
one_line_error() {
    expect_eq "$2: exit $3" "$3" "$rc"
    expect_eq "$2: one line on stderr" "1" "$(lines "$1")"
    expect_match "$2: says why" "$4" "$(err "$1")"
}
# lap: a TAP comment with the seconds since the last one (the emulated host is slow).
t_lap=$SECONDS
lap() { echo "# $1: $((SECONDS - t_lap)) s"; t_lap=$SECONDS; }

# --- bad usage and unreachable kilnd: nothing boots ------------------------------
run_k help help
expect_eq "help: exit 0" "0" "$rc"
expect_match "help lists the client verbs" 'kiln exec .*ID -- CMD' "$(out help)"
run_k noid exec
one_line_error noid "exec without an id" 2 '^kiln exec: no sandbox id'
run_k nocmd exec sb-0123
one_line_error nocmd "exec without a command" 2 '^kiln exec: no command'
run_k flag ps --bogus
one_line_error flag "an unknown flag" 2 "unknown option '--bogus'"
run_k badid rm 'x/../y'
one_line_error badid "an id that is no id" 2 "is not a sandbox id"
run_k cpus create --cpus 0
one_line_error cpus "create --cpus 0" 2 '^kiln create: --cpus must be'
run_k cpboth cp a b
one_line_error cpboth "cp without a sandbox side" 2 '^kiln cp: one side must be ID:/'
run_k tout timeout sb-0123 abc
one_line_error tout "timeout of no number" 2 '^kiln timeout: SECONDS must be'
KILN_HOST="unix:$work/nowhere.sock" run_k nohost ps
one_line_error nohost "KILN_HOST pointing nowhere" 125 "^kiln: cannot reach kilnd at unix:$work/nowhere.sock: No such file"
KILN_HOST="http://127.0.0.1:1" run_k nohost2 ps
one_line_error nohost2 "KILN_HOST on a closed port" 125 '^kiln: cannot reach kilnd at http://127.0.0.1:1: Connection refused'
KILN_HOST="ftp://x" run_k badhost ps
one_line_error badhost "KILN_HOST of another scheme" 2 '^kiln ps: KILN_HOST must be unix:/PATH'
KILN_TOKEN=wrong run_k badtok ps
one_line_error badtok "a wrong token" 2 "^kiln: a valid 'Authorization: Bearer TOKEN' is required$"
KILN_TOKEN= run_k notok ps
one_line_error notok "no token" 2 'KILN_TOKEN is not set'
run_k nosb exec sb-0123 -- true
one_line_error nosb "exec in no such sandbox" 2 '^kiln: no sandbox sb-0123$'
expect_eq "bad usage started no VM" "0" "$(vmms)"

lap "before create"
# --- create ------------------------------------------------------------------
run_k create create --image tiny --mem 256 --disk 64 --timeout 1800 --meta job=t-client
expect_eq "create: exit 0" "0" "$rc"
A=$(out create)
expect_match "create prints the id" '^sb-[a-z0-9][a-z0-9-]*-[0-9a-f]{32}$' "$A"
expect_eq "create: nothing on stderr" "" "$(err create)"
expect_eq "one VM runs" "1" "$(vmms)"
# kilnd's sandbox id is the guest's identity (docs/protocol.md, IDENTITY).
h0=$(date +%s)
run_k ident exec "$A" -- sh -c 'hostname; cat /run/kiln/sandbox-id; stat -c %a /run/kiln/sandbox-id; date +%s'
h1=$(date +%s)
expect_eq "the guest's hostname, /run/kiln/sandbox-id (0444) are kilnd's id" \
    "sb-${A: -32:12} $A 444" "$(head -n3 "$work/ident.out" | tr '\n' ' ' | sed 's/ $//')"
g=$(sed -n 4p "$work/ident.out")
if [ -n "$g" ] && [ "$g" -ge $((h0 - 2)) ] && [ "$g" -le $((h1 + 2)) ]; then
    ok "the guest's wall clock is the host's within 2 s (guest $g, host $h0..$h1)"
else
    not_ok "the guest's wall clock is the host's within 2 s (guest '$g', host $h0..$h1)"
fi

lap "before exec"
# --- exec --------------------------------------------------------------------
run_k ex exec "$A" -- sh -c 'echo hi; echo err >&2; exit 7'
expect_eq "exec: stdout" "hi" "$(out ex)"
expect_eq "exec: stderr" "err" "$(err ex)"
expect_eq "exec: the process's exit status" "7" "$rc"
run_k ex2 exec "$A" -- echo with args 'and  spaces'
expect_eq "exec without '--' after the id; arguments kept" "with args and  spaces/0" "$(out ex2)/$rc"
r=$(printf 'a\nb\n' | "$KILN" exec -i "$A" -- cat); rc=$?
expect_eq "exec -i passes stdin" "a
b/0" "$r/$rc"
head -c $((300 << 10)) /dev/urandom > "$work/in300k"
r=$("$KILN" exec -i "$A" -- sha256sum < "$work/in300k" | cut -d' ' -f1)
expect_eq "exec -i: 300 KiB of stdin arrive whole, in chunks" "$(sha256sum < "$work/in300k" | cut -d' ' -f1)" "$r"
lap "exec -i"
r=$("$KILN" exec "$A" -- cat < "$work/in300k"); rc=$?
expect_eq "exec without -i: the process reads no stdin" "/0" "$r/$rc"
run_k envcwd exec -e FOO=bar --cwd /tmp "$A" -- sh -c 'echo $FOO $(pwd)'
expect_eq "exec -e and --cwd" "bar /tmp/0" "$(out envcwd)/$rc"
run_k sig exec "$A" -- sh -c 'kill -KILL $$'
expect_eq "exec: killed by SIGKILL exits 137" "137" "$rc"
run_k nf exec "$A" -- /no/such/program
one_line_error nf "exec of a missing program" 127 'cannot run /no/such/program'
run_k to exec --timeout 2 "$A" -- sleep 100
one_line_error to "exec --timeout" 124 '^kiln: the process timed out after 2 s'
lap "exec --timeout"
"$KILN" exec "$A" -- sh -c 'echo first; sleep 4; echo second' > "$work/stream.out" &
kp=$!
for _ in $(seq 30); do grep -q first "$work/stream.out" && break; sleep 0.1; done
expect_eq "exec streams output as it comes (not when the process ends)" "first" "$(cat "$work/stream.out")"
wait "$kp"
expect_eq "... and then the rest" "first
second" "$(cat "$work/stream.out")"

lap "streaming"
# wait_kiln PID: its exit status in $rc; a kiln still there after 180 s is
# reported with what kilnd and the guest say about its process, then killed
# (so a lost signal fails one check instead of hanging the whole test).
wait_kiln() {
    local i
    for i in $(seq 1800); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$1" 2>/dev/null; then
        echo "# kiln (pid $1) still runs 180 s later; processes of $A:"
        "$KILN" ps "$A" 2>&1 | sed 's/^/#   /'
        echo "# kilnd log:"; tail -n 20 "$work/kilnd.log" | sed 's/^/#   /'
        kill -9 "$1"
    fi
    wait "$1"; rc=$?
}
# Ctrl-C: INT to the process group, the process dies of it.
"$KILN" exec "$A" -- sh -c 'echo ready; sleep 100' > "$work/int.out" 2> "$work/int.err" &
kp=$!
for _ in $(seq 100); do grep -q ready "$work/int.out" && break; sleep 0.1; done
kill -INT "$kp"
wait_kiln "$kp"
expect_eq "Ctrl-C: INT reaches the process, exit 130" "130" "$rc"
lap "Ctrl-C"
# A process that ignores INT: a second Ctrl-C leaves it running.
"$KILN" exec "$A" -- sh -c 'trap "" INT; echo ready; sleep 60' > "$work/int2.out" 2> "$work/int2.err" &
kp=$!
for _ in $(seq 100); do grep -q ready "$work/int2.out" && break; sleep 0.1; done
kill -INT "$kp"; sleep 2
check "one Ctrl-C: kiln still follows a process that ignores INT" kill -0 "$kp"
kill -INT "$kp"
wait_kiln "$kp"
expect_eq "a second Ctrl-C: exit 130" "130" "$rc"
expect_match "a second Ctrl-C: says how to reattach" 'may still run in sb-.* \(kiln attach sb-[a-z0-9-]+ [0-9]+ --after [0-9]+\)' "$(cat "$work/int2.err")"
IP=$(sed -n 's/.*kiln attach sb-[a-z0-9-]* \([0-9]*\) .*/\1/p' "$work/int2.err")
expect_eq "KILL it through the API: 204" "204" "$(curl -sS -m 30 --unix-socket "$sock" \
    -H "Authorization: Bearer $TA" -o /dev/null -w '%{http_code}' -d '{"signal":"KILL"}' \
    "http://kiln/v1/sandboxes/$A/processes/${IP:-0}/signal")"
timeout 90 "$KILN" attach "$A" "${IP:-0}" --after 2 > "$work/att0.out" 2> "$work/att0.err"; rc=$?
expect_eq "attach to it after a KILL: 137" "137" "$rc"
[ "$rc" = 137 ] || { echo "# ps after the KILL:"; "$KILN" ps "$A" 2>&1 | sed 's/^/#   /'; }

lap "Ctrl-C twice"
# --- exec -t: a guest terminal, kiln on a host pty ---------------------------------
ptyrun() { /usr/bin/python3 "$top/tests/integration/ptyrun.py" "$@"; }
r=$(ptyrun --rows 24 --cols 80 --out "$work/tty1" --expect '24 80\r\n' --winsize 33x101 --send 'hello\r' \
    --expect '\[hello\]' --send '\x03' -- \
    "$KILN" exec -it "$A" -- sh -c 'tty; stty size; read x; stty size; echo "[$x]"; sleep 300; echo after')
expect_eq "exec -it: Ctrl-C (a 0x03 byte) interrupts sleep: 130; the host terminal is restored" \
    "rc=130 restored=yes steps=done" "$r"
expect_match "exec -it: a guest pty of the host's size, resized on SIGWINCH; typed input echoed by the guest" \
    $'^/dev/pts/[0-9]+\r\n24 80\r\nhello\r\n33 101\r\n\\[hello\\]\r\n' "$(cat "$work/tty1")"
check "exec -it: the command did not go on after Ctrl-C" test -z "$(grep -a after "$work/tty1")"
r=$(ptyrun --out "$work/tty2" --expect ready --signal TERM -- "$KILN" exec -it "$A" -- sh -c 'echo ready; sleep 300')
expect_eq "exec -it and SIGTERM: 143, the host terminal is restored" "rc=143 restored=yes steps=done" "$r"
expect_match "exec -it and SIGTERM: says how to reattach, after the terminal is back" \
    $'kiln attach sb-[a-z0-9-]+ [0-9]+ --after [0-9]+\\)\r$' "$(cat "$work/tty2")"
expect_match "exec -it with a piped stdin: its end is a ^D typed into the guest terminal" '\[hi\]$' \
    "$(printf 'hi\n' | timeout 120 "$KILN" exec -it "$A" -- sh -c 'cat > /tmp/in; printf "[%s]" "$(cat /tmp/in)"')"
run_k attt attach -t "$A" 1
one_line_error attt "attach -t (no terminal to attach)" 2 "unknown option '-t'"

lap "before attach a detached"
# --- attach a detached process ----------------------------------------------
r=$(curl -sS -m 30 --unix-socket "$sock" -H "Authorization: Bearer $TA" \
    -d '{"cmd":["sh","-c","echo one; sleep 1; echo two >&2; exit 3"],"tag":"bg"}' \
    "http://kiln/v1/sandboxes/$A/processes?detach=1")
DP=$(echo "$r" | sed -n 's/.*"pid":\([0-9]*\).*/\1/p')
run_k att attach "$A" "${DP:-0}"
expect_eq "attach: its stdout" "one" "$(out att)"
expect_eq "attach: its stderr" "two" "$(err att)"
expect_eq "attach: its exit status" "3" "$rc"
run_k att2 attach "$A" "${DP:-0}" --after 2
expect_eq "attach --after 2: from the third event on" "/two/3" "$(out att2)/$(err att2)/$rc"
run_k att3 attach "$A" 99999
one_line_error att3 "attach to no such process" 2 '^kiln: no process 99999 in sandbox'
run_k att4 attach "$A"
one_line_error att4 "attach without a pid" 2 '^kiln attach: wants ID and PID'

lap "before ps"
# --- ps ----------------------------------------------------------------------
run_k ps ps
expect_eq "ps: exit 0" "0" "$rc"
expect_match "ps: a header" '^ID +STATE +IMAGE +EXPIRES' "$(out ps | head -n1)"
expect_match "ps lists the sandbox, running, its image and expiry" "$A +running +tiny +20[0-9-]+T" "$(out ps)"
run_k psid ps "$A"
expect_match "ps ID: a header" '^PID +STATE +EXIT +TAG +CMD' "$(out psid | head -n1)"
expect_match "ps ID lists an exited process with its status and cmd" \
    "exited +7 +- +sh -c echo hi; echo err >&2; exit 7" "$(out psid)"
check "ps ID lists the detached one with its tag" grep -qE "^${DP:-x} +exited +3 +bg +sh -c" "$work/psid.out"
expect_match "ps ID: a signal death" 'exited +sig9 ' "$(out psid)"

lap "before cp"
# --- cp ----------------------------------------------------------------------
head -c $((5 << 20)) /dev/urandom > "$work/f5"
chmod 0750 "$work/f5"
run_k up cp "$work/f5" "$A:/root/new/deep/f5"
expect_eq "cp up 5 MiB into missing directories (created, as the API does): exit 0" "0/" "$rc/$(err up)"
expect_eq "cp up: the size and mode in the sandbox" "$((5 << 20)) 750" \
    "$("$KILN" exec "$A" -- stat -c '%s %a' /root/new/deep/f5)"
mkdir "$work/dl"
run_k down cp "$A:/root/new/deep/f5" "$work/dl/back"
expect_eq "cp down: exit 0" "0" "$rc"
check "cp both ways: byte-exact" cmp -s "$work/f5" "$work/dl/back"
run_k down2 cp "$A:/root/new/deep/f5" "$work/dl"
check "cp down into a directory takes the file's name" cmp -s "$work/f5" "$work/dl/f5"
run_k up2 cp "$work/in300k" "$A:/tmp/"
expect_eq "cp up to a directory path takes the local name" "$((300 << 10))" \
    "$("$KILN" exec "$A" -- stat -c %s /tmp/in300k)"
before=$(ls -A "$work/dl" | sort | tr '\n' ' ')
run_k miss cp "$A:/root/no/such/file" "$work/dl/missing"
one_line_error miss "cp down of a missing file" 2 '^kiln: cannot read the file'
expect_eq "a failed download leaves no file beside its target" "$before" "$(ls -A "$work/dl" | sort | tr '\n' ' ')"
run_k miss2 cp "$A:/root" "$work/dl/dir"
expect_eq "cp down of a directory fails (non-zero)" "yes" "$([ "$rc" != 0 ] && echo yes)"
expect_eq "... and leaves no file either" "$before" "$(ls -A "$work/dl" | sort | tr '\n' ' ')"
run_k nolocal cp "$work/no-such-file" "$A:/root/x"
one_line_error nolocal "cp up of a missing local file" 2 '^kiln cp: cannot open .*no-such-file: No such file'
run_k rel cp "$work/f5" "$A:root/x"
one_line_error rel "cp to a relative sandbox path" 2 '^kiln cp: one side must be'
run_k nodir cp "$A:/root/new/deep/f5" "$work/no/such/dir/f"
one_line_error nodir "cp down into a missing local directory" 2 '^kiln cp: cannot create a file beside'

lap "before timeout"
# --- timeout -----------------------------------------------------------------
exp1=$(out ps | awk -v id="$A" '$1 == id {print $4}')
sleep 1
run_k tmo timeout "$A" 1800
expect_eq "timeout: exit 0" "0" "$rc"
expect_match "timeout prints the new expiry" '^20[0-9-]+T[0-9:.]+Z$' "$(out tmo)"
check "timeout moves the expiry later ($exp1 -> $(out tmo))" test "$(out tmo)" \> "$exp1"
run_k tmo2 timeout "$A" 999999
one_line_error tmo2 "timeout over the tenant's most" 2 'timeout_s must be an integer from 1 to 3600'

# --- pause, resume ------------------------------------------------------------
run_k pz pause "$A"
expect_eq "pause: exit 0, prints the id" "0 $A" "$rc $(out pz)"
run_k pzps ps
expect_match "ps shows it paused" "$A +paused" "$(out pzps)"
run_k pzx exec "$A" -- true
one_line_error pzx "exec in a paused sandbox" 2 'paused'
run_k rz resume "$A"
expect_eq "resume: exit 0, prints the id" "0 $A" "$rc $(out rz)"
run_k rzx exec "$A" -- echo back
expect_eq "exec after resume" "0 back" "$rc $(out rzx)"
run_k pznone pause
one_line_error pznone "pause without an id" 2 '^kiln pause: no sandbox id'

lap "before rm"
# --- rm ----------------------------------------------------------------------
run_k rm rm sb-00000000000000000000000000000000 "$A"
expect_eq "rm of a missing and a real sandbox: non-zero" "2" "$rc"
expect_eq "rm: the real one is removed and printed" "$A" "$(out rm)"
expect_eq "rm: one line for the missing one" "kiln: no sandbox sb-00000000000000000000000000000000" "$(err rm)"
run_k gone exec "$A" -- true
one_line_error gone "exec in a removed sandbox" 2 "^kiln: no sandbox $A\$"
run_k ps2 ps
expect_eq "ps after rm: only the header" "1" "$(out ps2 | wc -l | tr -d ' ')"
expect_eq "no VM is left" "0" "$(vmms)"

kill -TERM "$kpid"; wait "$kpid"; kpid=
lap "the end"
echo "# kilnd log:"; sed 's/^/#   /' "$work/kilnd.log" | tail -n 8
done_testing
