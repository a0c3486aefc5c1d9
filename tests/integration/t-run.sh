#!/usr/bin/env bash
# kiln run end to end: one fresh microVM per run, through our own VMM and the
# guest agent. Uses the tiny busybox image for speed and the default Debian
# image where the issue asks for it (python3). Runs where /dev/kvm works.
source "$(dirname "$0")/lib.sh"

KILN="$B/kiln"
TINY="${KILN_TEST_TINY:-$B/images/tiny.img}"
DEBIAN="${KILN_TEST_DEBIAN:-$B/images/debian.img}"
work=$(mktemp -d /tmp/t-run.XXXXXX)
trap 'rm -rf "$work"' EXIT
run_dir="${TMPDIR:-/tmp}/kiln-$(id -u)"
# A guest that triple-faulted while booting (seen twice in many rehearsals,
# only inside the emulated host's nested SVM; cause not proven) is run once
# more; every such retry is listed at the end. Nothing else is retried.
krun() {
    local e rc
    e=$(mktemp "$work/krun.XXXXXX")
    timeout -s KILL 300 "$KILN" run --image "$TINY" "$@" 2>"$e"; rc=$?
    if [ $rc = 125 ] && grep -q 'ended while booting.*triple fault' "$e"; then
        echo "$* :: $(tail -n1 "$e")" >> "$work/retries"
        timeout -s KILL 300 "$KILN" run --image "$TINY" "$@" 2>"$e"; rc=$?
    fi
    cat "$e" >&2
    rm -f "$e"
    return $rc
}
leftovers() { ls -d "$run_dir"/run.* 2>/dev/null | wc -l; }
vmms() { pgrep -x kiln-vmm | wc -l; }

# The sandbox's identity as the guest sees it, one key=value a line
# (docs/protocol.md, IDENTITY): read right after the start.
IDENT='echo "hostname=$(hostname)"; echo "id=$(cat /run/kiln/sandbox-id)";
echo "mode=$(stat -c %a /run/kiln/sandbox-id)"; echo "date=$(date +%s)";
echo "urandom=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d " \n")";
echo "boot_id=$(cat /proc/sys/kernel/random/boot_id)"'
# kv FILE KEY: KEY's value in FILE.
kv() { sed -n "s/^$2=//p" "$1" | head -n1; }

# --- exit codes, stdout/stderr separation, JSON ----------------------------------
out=$(krun --cpus 2 --mem 256 --json -- sh -c "echo out; echo err >&2; nproc; { $IDENT; } >&2; exit 7" \
    2>"$work/err")
rc=$?
expect_eq "exit code 7 comes back" 7 "$rc"
expect_eq "stdout carries only stdout" "out
2" "$out"
expect_eq "stderr carries only stderr (then the JSON line)" "err" "$(head -n1 "$work/err")"
json=$(tail -n1 "$work/err")
expect_match "--json: exit status and durations" '"exit_status":7.*"durations_ms":\{"boot":[0-9.]+' "$json"
expect_match "--json: bytes counted" "\"stdout\":6,\"stderr\":$(head -n -1 "$work/err" | wc -c)," "$json"
# Each line of this run's stdout stamped with the host's clock as it arrives.
krun --json -- sh -c "$IDENT" 2>"$work/id2.err" |
    while IFS= read -r l; do echo "$l"; echo "host_${l%%=*}=$(date +%s)"; done > "$work/id2"
expect_eq "exit code 0" 0 "${PIPESTATUS[0]}"

# --- identity: the host's hostname, sandbox id, clock and entropy in each guest ---------------
sed -n '2,/^{/p' "$work/err" | grep -v '^{' > "$work/id1"
for r in 1 2; do
    f=$work/id$r
    [ $r = 1 ] && j=$(tail -n1 "$work/err") || j=$(tail -n1 "$work/id2.err")
    id=$(kv "$f" id)
    expect_match "run $r: /run/kiln/sandbox-id holds a sandbox id" '^sb-[a-z0-9][a-z0-9-]*-[0-9a-f]{32}$' "$id"
    expect_match "run $r: the id is the one kiln run gave it (--json)" "\"sandbox_id\":\"$id\"" "$j"
    expect_eq "run $r: the guest's hostname is the one sent: sb- and the id's first 12 hex digits" \
        "sb-${id: -32:12}" "$(kv "$f" hostname)"
    expect_match "run $r: --json names the hostname" "\"hostname\":\"sb-${id: -32:12}\"" "$j"
    expect_eq "run $r: the id file is read-only for everyone (0444)" 444 "$(kv "$f" mode)"
    expect_match "run $r: 32 bytes of /dev/urandom read" '^[0-9a-f]{64}$' "$(kv "$f" urandom)"
done
g=$(kv "$work/id2" date); h=$(kv "$work/id2" host_date)
if [ -n "$g" ] && [ -n "$h" ] && [ $((g - h)) -le 2 ] && [ $((h - g)) -le 2 ]; then
    ok "the guest's wall clock is within 2 s of the host's (guest $g, host $h)"
else
    not_ok "the guest's wall clock is within 2 s of the host's (guest '$g', host '$h')"
fi
check "two runs: different sandbox ids" test "$(kv "$work/id1" id)" != "$(kv "$work/id2" id)"
check "two runs: different hostnames" test "$(kv "$work/id1" hostname)" != "$(kv "$work/id2" hostname)"
check "two runs: different first 32 bytes of /dev/urandom" \
    test "$(kv "$work/id1" urandom)" != "$(kv "$work/id2" urandom)"
check "two runs: different boot_id" test "$(kv "$work/id1" boot_id)" != "$(kv "$work/id2" boot_id)"
krun -- sh -c 'kill -9 $$'; expect_eq "killed by SIGKILL exits 137" 137 "$?"
krun -- /no/such/program 2>"$work/err"; rc=$?
expect_eq "missing program exits 127" 127 "$rc"
expect_match "missing program: one clear line" 'cannot run /no/such/program' "$(cat "$work/err")"

# --- stdin, a large binary stdout, files ----------------------------------------------
expect_eq "stdin piped through" "hello stdin" "$(printf 'hello stdin' | krun -- cat)"
head -c 5242880 /dev/urandom > "$work/in5"
expect_eq "5 MiB of stdin byte-exact" "$(sha256sum < "$work/in5" | cut -c1-64)" \
    "$(krun -- sha256sum < "$work/in5" | cut -c1-64)"
krun --mem 512 -- sh -c 'head -c 52428800 /dev/urandom > /tmp/r && sha256sum < /tmp/r >&2 && cat /tmp/r' \
    2>"$work/sum" | sha256sum | cut -c1-64 > "$work/got"
expect_eq "50 MiB of binary stdout byte-exact" "$(cut -c1-64 "$work/sum")" "$(cat "$work/got")"
head -c 3000000 /dev/urandom > "$work/put.bin"
krun --put "$work/put.bin:/root/in/put.bin" --get "/root/out.bin:$work/got.bin" -- \
    sh -c 'cp /root/in/put.bin /root/out.bin'
check "--put/--get round trip byte-exact" cmp -s "$work/put.bin" "$work/got.bin"
expect_eq "-e and -w reach the command" "v1 /tmp" "$(krun -e K1=v1 -w /tmp -- sh -c 'echo $K1 $(pwd)')"
expect_eq "--user NAME: uid, gid, HOME from the image's passwd; its home missing, cwd /" \
    "65534 65534 /nonexistent /" "$(krun --user nobody -- sh -c 'echo $(id -u) $(id -g) $HOME $(pwd)')"

# --- ephemeral storage ------------------------------------------------------------------
krun -- sh -c 'echo secret > /root/marker && test -s /root/marker'
expect_eq "a run can write its disk" 0 "$?"
krun -- test -e /root/marker
expect_eq "what a run wrote is gone in the next run" 1 "$?"

# --- limits -----------------------------------------------------------------------------
out=$(krun --timeout 30 -- sh -c 'echo started; sleep 300; echo finished' 2>"$work/err"); rc=$?
expect_eq "--timeout kills the VM and exits 124" 124 "$rc"
expect_eq "--timeout: the command was cut short, not waited for" "started" "$out"
expect_match "--timeout: one-line message" 'timed out after 30 s' "$(cat "$work/err")"
krun --mem 128 --json -- awk 'BEGIN { s = "x"; while (1) s = s s }' 2>"$work/err"; rc=$?
expect_eq "memory bomb is killed inside the guest (137)" 137 "$rc"
expect_match "memory bomb reported as the guest's OOM kill" 'ran out of memory' "$(cat "$work/err")"
expect_match "--json: limit_hit memory" '"limit_hit":"memory"' "$(tail -n1 "$work/err")"
# A slow grower thrashes instead: every allocation is met by dropping the file
# pages its own program runs from and reading them back. Without the multi-gen
# LRU's min_ttl_ms it ran for minutes (300 s, the test's cap, 2026-12-07).
krun --mem 128 -- awk 'BEGIN { while (1) a[n++] = sprintf("%4000d", n) }' 2>"$work/err"; rc=$?
expect_eq "a thrashing grower is killed inside the guest (137)" 137 "$rc"
expect_match "the thrashing grower reported as the guest's OOM kill" 'ran out of memory' "$(cat "$work/err")"
krun --disk 32 -- dd if=/dev/zero of=/root/fill bs=1M count=64 2>"$work/err"; rc=$?
expect_eq "a full scratch disk fails the write" 1 "$rc"
expect_match "full scratch disk: ENOSPC in the guest" 'No space left on device' "$(cat "$work/err")"
# A fork bomb is contained by its own VM: a neighbour VM still runs, the bomb's
# VM ends at its deadline like any other.
# (the bomb's own shell then spins on a builtin, so the run lasts until the deadline)
krun --timeout 40 -- sh -c 'b() { b | b & }; b; while :; do :; done' > /dev/null 2>&1 &
bomb=$!
sleep 5
expect_eq "a fork bomb leaves a neighbour VM working" "alive" "$(krun -- echo alive)"
wait "$bomb"
expect_eq "the fork bomb's VM ends at its deadline (124)" 124 "$?"

# --- four runs at once ------------------------------------------------------------------
for i in 1 2 3 4; do krun -- sh -c "echo run-$i" > "$work/par$i" 2>&1 & done
wait
got=$(cat "$work/par1" "$work/par2" "$work/par3" "$work/par4" | tr '\n' ' ')
expect_eq "four concurrent runs each answer" "run-1 run-2 run-3 run-4 " "$got"

# --- interruptions clean up -------------------------------------------------------------
"$KILN" run --image "$TINY" -- sh -c 'echo ready; sleep 300' > "$work/int.out" 2>"$work/int.err" &
kpid=$!
for _ in $(seq 1200); do grep -q ready "$work/int.out" && break; sleep 0.1; done
kill -INT "$kpid"; wait "$kpid"; rc=$?
expect_eq "Ctrl-C (SIGINT) ends kiln run with 130" 130 "$rc"
"$KILN" run --image "$TINY" -- sh -c 'echo ready; sleep 300' > "$work/k.out" 2>"$work/k.err" &
kpid=$!
for _ in $(seq 1200); do grep -q ready "$work/k.out" && break; sleep 0.1; done
# The VMM proper: the child of the jail's waiter (kiln -> kiln-vmm-wait -> kiln-vmm).
pkill -KILL -x kiln-vmm -P "$(pgrep -x -P "$kpid" kiln-vmm-wait)"; wait "$kpid"; rc=$?
expect_eq "SIGKILL of the VMM: kiln run reports failure (125)" 125 "$rc"
expect_match "SIGKILL of the VMM: clear message" 'lost the microVM' "$(cat "$work/k.err")"
sleep 1
expect_eq "no VMM process left behind" 0 "$(vmms)"
expect_eq "no run directory left in $run_dir" 0 "$(leftovers)"

# --- a guest terminal (-t), driven from a host pty -----------------------------------------
# ptyrun: kiln on a fresh host terminal of 24 x 80, as a user at it; prints "rc=N restored=yes|no steps=done|stuck".
ptyrun() { /usr/bin/python3 "$top/tests/integration/ptyrun.py" "$@"; }
r=$(ptyrun --rows 24 --cols 80 --out "$work/tty1" --expect '24 80\r\n' --winsize 33x101 --send 'hello\r' \
    --expect '\[hello\]' --send '\x03' -- \
    "$KILN" run -it --image "$TINY" -- sh -c 'tty; stty size; read x; stty size; echo "[$x]"; sleep 300; echo after')
expect_eq "-it: Ctrl-C (a 0x03 byte) interrupts sleep: 130; the host terminal is restored" \
    "rc=130 restored=yes steps=done" "$r"
expect_match "-it: a guest pty of the host's size, resized on SIGWINCH; typed input echoed by the guest" \
    $'^/dev/pts/[0-9]+\r\n24 80\r\nhello\r\n33 101\r\n\\[hello\\]\r\n' "$(cat "$work/tty1")"
check "-it: the command did not go on after Ctrl-C" test -z "$(grep -a after "$work/tty1")"
r=$(ptyrun --expect ready -- "$KILN" run -t --timeout 30 --image "$TINY" -- sh -c 'echo ready; sleep 300' 2>&1)
expect_eq "-t --timeout: 124, the host terminal is restored" "rc=124 restored=yes steps=done" "$r"
r=$(ptyrun --out "$work/tty3" --expect ready --signal TERM -- "$KILN" run -t --image "$TINY" -- sh -c 'echo ready; sleep 300')
expect_eq "-t and SIGTERM: 143, the host terminal is restored" "rc=143 restored=yes steps=done" "$r"
expect_match "-t and SIGTERM: the message comes after the terminal is back (its newline made CR LF again)" \
    $'kiln run: interrupted by Terminated[^\r\n]*\r$' "$(cat "$work/tty3")"
expect_match "-t with a piped stdin: its end is a ^D typed into the guest terminal" '\[hi\]$' \
    "$(printf 'hi\n' | krun -t -- sh -c 'cat > /tmp/in; printf "[%s]" "$(cat /tmp/in)"')"

# --- bad input: one line, exit 2, nothing started ----------------------------------------
bad() {
    local desc=$1 pattern=$2; shift 2
    local out st
    out=$("$KILN" run "$@" 2>&1 < /dev/null); st=$?
    if [ $st -eq 2 ] && [ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] && [[ "$out" =~ $pattern ]]; then
        ok "bad input: $desc"
    else
        not_ok "bad input: $desc (status $st, output '$out')"
    fi
}
bad "unknown image" 'unknown image' --image no-such-image -- true
bad "unreadable --put file" 'cannot read --put file' --image "$TINY" --put "$work/missing:/x" -- true
bad "--mem smaller than a guest needs" 'less than the 64 MiB' --image "$TINY" --mem 32 -- true
bad "no command" 'no command' --image "$TINY"
bad "--cpus 0" 'cpus' --image "$TINY" --cpus 0 -- true
bad "relative --put target" 'must be absolute' --image "$TINY" --put "$work/put.bin:rel" -- true
bad "--get-max 0" 'get-max must be bytes' --image "$TINY" --get-max 0 -- true
bad "--get-max beyond 1T" 'get-max must be bytes' --image "$TINY" --get-max 2T -- true
bad "--tty takes no value" "unknown option '--tty=5'" --image "$TINY" --tty=5 -- true
expect_eq "bad input started no VMM" 0 "$(vmms)"

# --- the default Debian image --------------------------------------------------------------
if [ -s "$DEBIAN" ]; then
    expect_eq "python3 in the Debian image sees 2 vCPUs" 2 \
        "$(krun --image "$DEBIAN" --cpus 2 --mem 512 -- python3 -c 'import os; print(os.cpu_count())')"
    krun --image "$DEBIAN" -- sh -c 'exit 7'
    expect_eq "Debian image: exit 7" 7 "$?"
    expect_match "Debian image has curl, git and ps" 'curl.*git.*ps' \
        "$(krun --image "$DEBIAN" -- sh -c 'for c in curl git ps; do command -v $c; done | tr "\n" " "')"
else
    not_ok "the Debian image $DEBIAN is missing (make image)"
fi

expect_eq "nothing left in $run_dir at the end" 0 "$(leftovers)"
[ -s "$work/retries" ] && sed 's/^/# retried after a boot-time triple fault: /' "$work/retries"
done_testing
