#!/usr/bin/env bash
# kiln run against a hostile guest agent (tests/guest/fake-agent.c, its own
# initramfs): once the command has exited, an agent that streams forever,
# floods empty frames, trickles a byte a second, goes silent, hangs in the
# HELLO or answers with terminal escape sequences can neither keep kiln past
# its --timeout, nor make it use more than a bounded amount of memory, nor
# leave anything behind; SIGINT/SIGTERM end it at once. Runs where /dev/kvm
# works. No timed assertions: generous outer kills only detect hangs.
source "$(dirname "$0")/lib.sh"

KILN="$B/kiln"
TINY="${KILN_TEST_TINY:-$B/images/tiny.img}"
FAKE="$B/guest/fake-initrd.cpio"
# Downloads land in the tree (the emulated host's /tmp lives in its RAM).
work=$(mktemp -d "$B/t-hostile.XXXXXX")
cgbase="/sys/fs/cgroup/t-hostile-$$"
cleanup() {
    rm -rf "$work"
    rmdir "$cgbase"-* 2>/dev/null
}
trap cleanup EXIT
run_dir="${TMPDIR:-/tmp}/kiln-$(id -u)"
MEM_BOUND_KB=$((64 * 1024)) # kiln's own memory, whatever the guest streams

for f in "$KILN" "$TINY" "$FAKE" "$B/guest/vmlinux"; do
    [ -e "$f" ] || { not_ok "missing $f (make && make kernel image-tiny)"; done_testing; exit 1; }
done

# The hello-hang variant: a second cpio archive appended, holding /fake-mode.
mkdir -p "$work/mode" && echo hello-hang > "$work/mode/fake-mode"
(cd "$work/mode" && echo fake-mode | cpio -o -H newc --quiet) > "$work/mode.cpio"
cat "$FAKE" "$work/mode.cpio" > "$work/hang.cpio"

# A cgroup of its own for every kiln under test (a child of the root, so the
# VM's cgroup goes elsewhere): memory.peak is kiln's memory alone, including
# what RSS does not show (a memfd, page cache).
echo +memory > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
# peak_ok NAME: kiln's memory.peak in that run below the bound (a run that
# writes a --get file is judged by VmHWM only: its page cache counts here).
peak_ok() {
    local f="$cgbase-$1/memory.peak"
    [ -r "$f" ] || { echo "# no memory.peak for $1"; return 0; }
    peak=$(( $(cat "$f") / 1024 ))
    check "$1: kiln's cgroup memory.peak ${peak} kB < ${MEM_BOUND_KB} kB" test "$peak" -lt "$MEM_BOUND_KB"
}

# krun NAME [kiln run options and command]: runs kiln in the background in
# $cg with stdout/stderr to $work/NAME.{out,err}, --disk 0 (no mkfs) and the
# fake agent; sets $kpid. Outer kill after 240 s: a hang, not a timing check.
krun_bg() {
    local name=$1; shift
    local initrd=$FAKE
    if [ "$1" = --hang ]; then initrd="$work/hang.cpio"; shift; fi
    mkdir -p "$cgbase-$name" 2>/dev/null
    (
        echo $BASHPID > "$cgbase-$name/cgroup.procs" 2>/dev/null
        exec timeout -s KILL 240 "$KILN" run --image "$TINY" --initrd "$initrd" --disk 0 \
            --mem 128 --console "$work/$name.console" "$@"
    ) > "$work/$name.out" 2> "$work/$name.err" < /dev/null &
    kpid=$!
}
# wait_rc: the status of $kpid, while recording its highest VmHWM in $hwm (kB).
wait_rc() {
    hwm=0
    local h
    while kill -0 "$kpid" 2>/dev/null; do
        for p in $(kiln_pid); do
            h=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$p/status" 2>/dev/null)
            [ -n "$h" ] && [ "$h" -gt "$hwm" ] && hwm=$h
        done
        sleep 0.2
    done
    wait "$kpid"
}
krun() { local name=$1; krun_bg "$@"; wait_rc; }
# The kiln process itself: $kpid's timeout's child (or $kpid's, when the
# subshell exec'd timeout itself).
kiln_pid() { local t; t=$(pgrep -x -P "$kpid" timeout); pgrep -x -P "${t:-$kpid}" kiln; }
wait_ready() { for _ in $(seq 1200); do grep -q ready "$work/$1.out" 2>/dev/null && return 0; kill -0 "$kpid" 2>/dev/null || return 1; sleep 0.1; done; return 1; }
no_raw_controls() { ! LC_ALL=C grep -q $'[\x01-\x09\x0b-\x1f\x7f]' "$1" && ! LC_ALL=C grep -q $'\x9b' "$1"; }
left() { ls -d "$run_dir"/run.* 2>/dev/null | wc -l; }
vmms() { pgrep -x kiln-vmm | wc -l; }
cgroups() { ls -d /sys/fs/cgroup/kiln/run-* 2>/dev/null | wc -l; }

# --- a well-behaved fake first: the misbehaviour below is the only difference
krun ok --get "/x:$work/ok.got" -- ok; rc=$?
expect_eq "fake agent, behaving: exit 0" 0 "$rc"
expect_eq "fake agent, behaving: ready on stdout" "ready" "$(cat "$work/ok.out")"
expect_eq "fake agent, behaving: --get works" "fake file" "$(cat "$work/ok.got" 2>/dev/null)"
# IDENTITY goes out with the greeting, before HELLO_OK says what the agent
# takes: one that never offered it refuses it, and the run goes on (above).
check "fake agent without PROTO_CAP_IDENTITY: the greeting's IDENTITY reached it and was refused" \
    grep -q 'IDENTITY received' "$work/ok.console"

# --- (a) endless /proc/vmstat with data: cut at its 64 KiB cap -----------------
krun vmstat -- vmstat-forever; rc=$?
expect_eq "(a) endless vmstat: exit 125 at the byte cap" 125 "$rc"
expect_match "(a) endless vmstat: one clear line" 'sent more than kiln accepts while reading /proc/vmstat' "$(cat "$work/vmstat.err")"
check "(a) endless vmstat: kiln's VmHWM ${hwm} kB < ${MEM_BOUND_KB} kB" test "$hwm" -gt 0 -a "$hwm" -lt "$MEM_BOUND_KB"
peak_ok vmstat

# --- (a') endless empty frames: bytes keep coming, no cap is reached -----------
krun empty --timeout 40 --json -- vmstat-empty; rc=$?
expect_eq "(a') empty-frame flood after exit: --timeout ends it with 124" 124 "$rc"
expect_match "(a') empty-frame flood: timed out after the command had exited" 'timed out after 40 s \(after the command had exited\)' "$(cat "$work/empty.err")"
check "(a') empty-frame flood: kiln's VmHWM ${hwm} kB < ${MEM_BOUND_KB} kB" test "$hwm" -gt 0 -a "$hwm" -lt "$MEM_BOUND_KB"
peak_ok empty
mib=$(sed -n 's/.*fake-agent: streamed \([0-9]*\) MiB.*/\1/p' "$work/empty.console" | tail -n1)
echo "# (a') the fake agent streamed ${mib:-<16} MiB of empty frames before the deadline"
expect_match "(a') --json says limit_hit timeout" '"limit_hit":"timeout"' "$(tail -n1 "$work/empty.err")"

# --- (b) endless --get: over --get-max, and at the deadline ------------------
krun getmax --get-max 8M --get "/big:$work/big" -- get-forever; rc=$?
expect_eq "(b) --get beyond --get-max: exit 125" 125 "$rc"
expect_match "(b) --get beyond --get-max: one clear line" 'cannot download /big: the guest sent more than --get-max 8388608 bytes; nothing was written' "$(cat "$work/getmax.err")"
check "(b) --get beyond --get-max: no file, no partial file" test -z "$(ls "$work" | grep '^big')"
# --get-max 1T: the deadline must be the only limit (a quiet host streams
# the default 1 GiB cap in under 40 s).
krun getto --timeout 40 --get-max 1T --get "/big:$work/big2" -- get-forever; rc=$?
# Seen under emulation, rarely: the stream is reset mid-way (the same hours
# in which the emulated host's own kernel panicked under heavy vsock traffic;
# issue 17). Then the guest's console is shown as evidence and the case runs
# once more, reported; any other failure counts at once.
if [ "$rc" = 125 ] && grep -q 'Connection reset by peer' "$work/getto.err"; then
    echo "# RETRY (b): the --get stream was reset: $(tail -n1 "$work/getto.err")"
    tail -n 15 "$work/getto.console" 2>/dev/null | sed 's/^/#   console: /'
    rm -f "$work/big2"
    krun getto --timeout 40 --get-max 1T --get "/big:$work/big2" -- get-forever; rc=$?
fi
expect_eq "(b) endless --get under --timeout: 124" 124 "$rc"
expect_match "(b) endless --get: timed out after the command had exited" 'timed out after 40 s \(after the command had exited\)' "$(cat "$work/getto.err")"
check "(b) endless --get: kiln's VmHWM ${hwm} kB < ${MEM_BOUND_KB} kB" test "$hwm" -gt 0 -a "$hwm" -lt "$MEM_BOUND_KB"
check "(b) endless --get at the deadline: no file, no partial file" test -z "$(ls "$work" | grep '^big2')"
mib=$(sed -n 's/.*fake-agent: streamed \([0-9]*\) MiB.*/\1/p' "$work/getto.console" | tail -n1)
echo "# (b) the fake agent streamed ${mib:-<16} MiB into the --get before the deadline"

# --- (c) silent after the exit event, (d) one byte a second ---------------------
krun silent --timeout 30 -- silent; rc=$?
expect_eq "(c) silent after exit: --timeout ends it with 124" 124 "$rc"
expect_match "(c) silent after exit: after the command" 'after the command had exited' "$(cat "$work/silent.err")"
peak_ok silent
krun trickle --timeout 30 -- trickle; rc=$?
expect_eq "(d) one byte a second: --timeout ends it with 124" 124 "$rc"
expect_match "(d) trickle: after the command" 'after the command had exited' "$(cat "$work/trickle.err")"

# --- (e) error texts full of escape sequences ------------------------------------
krun escape -- escape; rc=$?
expect_eq "(e) exec refused with an escape-laden error: 127" 127 "$rc"
expect_match "(e) the error is shown, escaped" 'cannot run escape: \\x1b\]0;pwned-title\\x07' "$(cat "$work/escape.err")"
krun escget --get "/f:$work/escget" -- escape-get; rc=$?
expect_eq "(e) --get refused with an escape-laden error: 125" 125 "$rc"
expect_match "(e) --get error shown, escaped, one line" 'cannot download /f: .*\\x1b\[2J.*\\xc2\\x9b6n' "$(cat "$work/escget.err")"
for f in escape escget vmstat empty getmax getto silent trickle; do
    check "(e) no raw control bytes in kiln's stderr ($f)" no_raw_controls "$work/$f.err"
done

# --- (f) a HELLO that is never answered ------------------------------------------
krun hang --hang --timeout 20 -- ok; rc=$?
expect_eq "(f) hello never answered: --timeout ends it with 124" 124 "$rc"
expect_match "(f) hello never answered: while booting" 'timed out after 20 s while booting' "$(cat "$work/hang.err")"
expect_match "(f) the fake agent did see the connection" 'hello-hang: not answering' "$(cat "$work/hang.console")"

# --- signals win at every step, without --timeout ----------------------------------
sig_case() { # NAME SIGNAL WANT [--hang] CMD: signal once the guest is past booting (or in the HELLO)
    local name=$1 sig=$2 want=$3; shift 3
    if [ "$1" = --hang ]; then krun_bg "$name" --hang --json "${@:2}"; else krun_bg "$name" --json "$@"; fi
    if [ "$1" = --hang ]; then
        for _ in $(seq 1200); do grep -q 'not answering' "$work/$name.console" 2>/dev/null && break; sleep 0.1; done
    else
        wait_ready "$name"
    fi
    sleep 1
    local t0; t0=$(date +%s%N)
    kill -"$sig" "$(kiln_pid)"
    wait_rc; rc=$?
    echo "# SIG$sig during '$*': kiln ended $(( ($(date +%s%N) - t0) / 1000000 )) ms after the signal; of that, tearing the VM down: $(sed -n 's/.*"teardown":\([0-9]*\).*/\1/p' "$work/$name.err") ms"
    expect_eq "SIG$sig during '$*' ends kiln run with $want" "$want" "$rc"
    expect_match "SIG$sig during '$*': one line" 'interrupted by' "$(cat "$work/$name.err")"
}
sig_case int-stream INT 130 --get-max 1T --get "/big:$work/big3" -- get-forever
check "SIGINT during an endless --get: no partial file" test -z "$(ls "$work" | grep '^big3')"
sig_case term-silent TERM 143 -- silent
sig_case int-trickle INT 130 -- trickle
sig_case hup-hello HUP 129 --hang -- ok

# --- nothing left behind ----------------------------------------------------------
sleep 1
expect_eq "no kiln-vmm process left" 0 "$(vmms)"
expect_eq "no run directory left in $run_dir" 0 "$(left)"
expect_eq "no VM cgroup left" 0 "$(cgroups)"
done_testing
