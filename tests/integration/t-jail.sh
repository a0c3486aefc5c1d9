#!/usr/bin/env bash
# Defence in depth around the VMM (issue 5): while a `kiln run` is alive, look
# at its VMM from outside (jail, namespaces, credentials, seccomp, rlimits,
# cgroup limits); make a test build of the VMM break its seccomp policy; kill
# kiln with SIGKILL and check the next run sweeps what it left; the escape
# hatches; an unprivileged caller (user namespace). Runs as root where
# /dev/kvm works (inside scripts/with-kvm here).
source "$(dirname "$0")/lib.sh"

KILN="$B/kiln"
TINY="${KILN_TEST_TINY:-$B/images/tiny.img}"
work=$(mktemp -d /tmp/t-jail.XXXXXX)
chmod 755 "$work"
kpid=
cleanup() { [ -n "$kpid" ] && kill -KILL "$kpid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
krun() { timeout -s KILL 300 "$KILN" run --image "$TINY" "$@"; }
cgbase=/sys/fs/cgroup/kiln
leftover_cgroups() { ls -d "$cgbase"/run-* 2>/dev/null | wc -l; }

# start_sleeper OUT ARGS...: a run that prints "ready" and sleeps; sets kpid,
# vmm (the VMM, PID 1 of its namespace) and waiter (the jail's waiter).
start_sleeper() {
    local out=$1; shift
    "$KILN" run --image "$TINY" "$@" -- sh -c 'echo ready; exec sleep 120' > "$out" 2>"$out.err" &
    kpid=$!
    vmm= waiter=
    for _ in $(seq 300); do
        grep -q ready "$out" 2>/dev/null && break
        kill -0 "$kpid" 2>/dev/null || break
        sleep 0.5
    done
    vmm=$(pgrep -x -P "$(pgrep -x -P "$kpid" kiln-vmm-wait)" kiln-vmm)
    waiter=$(pgrep -x -P "$kpid" kiln-vmm-wait)
}
status_field() { sed -n "s/^$2:[[:space:]]*//p" "/proc/$1/status" | tr -s '\t' ' '; }

# --- a live VM, seen from outside ---------------------------------------------------------
start_sleeper "$work/live" --cpus 2 --mem 256
if [ -z "$vmm" ] || [ -z "$waiter" ]; then
    not_ok "a jailed run starts (kiln: $(cat "$work/live.err"))"
else
    ok "a jailed run starts: kiln -> waiter $waiter -> VMM $vmm"
    expect_eq "VMM: seccomp filter mode" 2 "$(status_field "$vmm" Seccomp)"
    expect_eq "VMM: no_new_privs" 1 "$(status_field "$vmm" NoNewPrivs)"
    expect_eq "VMM: runs as nobody (uid 65534)" "65534 65534 65534 65534" "$(status_field "$vmm" Uid)"
    expect_eq "VMM: gid nogroup" "65534 65534 65534 65534" "$(status_field "$vmm" Gid)"
    expect_eq "VMM: no supplementary groups" "" "$(status_field "$vmm" Groups | tr -d ' ')"
    for c in CapEff CapPrm CapInh CapBnd CapAmb; do
        expect_eq "VMM: $c empty" 0000000000000000 "$(status_field "$vmm" $c)"
    done
    expect_match "VMM: PID 1 of its own PID namespace" "^$vmm 1$" "$(status_field "$vmm" NSpid)"
    for ns in mnt pid net ipc uts; do
        check "VMM: own $ns namespace" test "$(readlink /proc/$vmm/ns/$ns)" != "$(readlink /proc/self/ns/$ns)"
    done
    expect_eq "VMM: environment wiped" 0 "$(tr -d '\0' < /proc/$vmm/environ | wc -c)"
    expect_match "VMM: open-file limit" 'Max open files +512 +512' "$(cat /proc/$vmm/limits)"
    expect_match "VMM: no core dumps" 'Max core file size +0 +0' "$(cat /proc/$vmm/limits)"
    # Its root: an empty tmpfs with only the run directory (for the vsock socket).
    run_dir=$(ls -d /tmp/kiln-0/run.* | head -n1)
    expect_eq "jail root holds only the path to the run directory" "tmp" "$(ls -A /proc/$vmm/root/)"
    expect_eq "jail: /tmp holds only kiln-0" "kiln-0" "$(ls -A /proc/$vmm/root/tmp)"
    check "jail: no host files (/etc, /dev, /proc, /usr)" \
        test ! -e /proc/$vmm/root/etc -a ! -e /proc/$vmm/root/dev -a ! -e /proc/$vmm/root/proc -a ! -e /proc/$vmm/root/usr
    check "jail: its vsock socket is there" test -S "/proc/$vmm/root$run_dir/v.sock"
    check "jail: the root is read-only" sh -c "! touch /proc/$vmm/root/x 2>/dev/null"
    links=$(nsenter --net=/proc/$vmm/ns/net ip -o link 2>&1)
    expect_match "net namespace: only a loopback device" '^1: lo: <LOOPBACK> [^
]*state DOWN' "$links"
    expect_eq "net namespace: one device" 1 "$(printf '%s\n' "$links" | wc -l)"
    # The waiter is jailed and filtered too.
    expect_eq "waiter: seccomp filter mode" 2 "$(status_field "$waiter" Seccomp)"
    expect_eq "waiter: no_new_privs" 1 "$(status_field "$waiter" NoNewPrivs)"
    expect_eq "waiter: runs as nobody" "65534 65534 65534 65534" "$(status_field "$waiter" Uid)"
    expect_eq "waiter: CapEff empty" 0000000000000000 "$(status_field "$waiter" CapEff)"
    check "waiter: in the VMM's mount namespace" test "$(readlink /proc/$waiter/ns/mnt)" = "$(readlink /proc/$vmm/ns/mnt)"
    # The cgroup: 2 vCPUs, 256 MiB.
    cg=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/$vmm/cgroup)
    expect_match "VMM: in its own cgroup under kiln/" "^/sys/fs/cgroup/kiln/run-$kpid-[0-9a-f]{8}$" "$cg"
    expect_eq "cgroup: cpu.max is 2 vCPUs' worth" "200000 100000" "$(cat "$cg/cpu.max" 2>&1)"
    expect_eq "cgroup: memory.max is guest RAM + overhead" 340914176 "$(cat "$cg/memory.max" 2>&1)"
    expect_eq "cgroup: pids.max" 34 "$(cat "$cg/pids.max" 2>&1)"
    check "cgroup: the waiter is in it too" grep -qx "$waiter" "$cg/cgroup.procs"
    wait "$kpid"; rc=$?; kpid=
    expect_eq "the sleeping run still ends normally" 0 "$rc"
    check "cgroup removed when the VM ends" test ! -e "$cg"
fi

# --- seccomp: a test build of the VMM breaks its policy on purpose ----------------------
out=$(krun --vmm "$B/hooks/kiln-vmm" --test-hooks --json --put "$B/guest/kiln-mark:/root/km" \
    -- sh -c 'chmod +x /root/km && /root/km 0x4ff 1; sleep 5; echo survived' 2>"$work/sc.err"); rc=$?
expect_eq "forbidden syscall: kiln exits 125" 125 "$rc"
expect_eq "forbidden syscall: the command did not go on" "" "$out"
expect_match "forbidden syscall: kiln names the violation and the syscall" \
    'sandbox monitor violated its seccomp policy.*syscall 41 \(vcpu thread\)' "$(cat "$work/sc.err")"
expect_match "forbidden syscall: --json says so" '"limit_hit":"seccomp"' "$(tail -n1 "$work/sc.err")"
check "forbidden syscall: the allowed path never ran" sh -c "! grep -q 'was allowed' '$work/sc.err'"
expect_eq "forbidden syscall: no VMM left" 0 "$(pgrep -x kiln-vmm | wc -l)"
expect_eq "forbidden syscall: no cgroup left" 0 "$(leftover_cgroups)"

# --- SIGKILL of kiln: the VMM dies with it; the next run sweeps the rest -------------------
start_sleeper "$work/killed" --mem 128
killed=$kpid
if [ -n "$vmm" ]; then
    kill -KILL "$kpid"; wait "$kpid" 2>/dev/null; kpid=
    for _ in $(seq 100); do kill -0 "$vmm" 2>/dev/null || break; sleep 0.1; done
    check "SIGKILL of kiln takes the VMM down" sh -c "! kill -0 $vmm 2>/dev/null"
    check "... and its waiter" sh -c "! kill -0 $waiter 2>/dev/null"
    expect_eq "a SIGKILLed kiln leaves its cgroup for the sweep" 1 "$(ls -d "$cgbase"/run-"$killed"-* 2>/dev/null | wc -l)"
    krun -- true; expect_eq "next run works" 0 "$?"
    expect_eq "next run swept the dead run's cgroup" 0 "$(ls -d "$cgbase"/run-"$killed"-* 2>/dev/null | wc -l)"
    expect_eq "next run swept the dead run's directory" 0 "$(ls -d /tmp/kiln-0/run.* 2>/dev/null | wc -l)"
else
    not_ok "SIGKILL case: the run did not start ($(cat "$work/killed.err"))"
fi

# --- escape hatches ----------------------------------------------------------------------
out=$(krun --no-jail --no-seccomp --no-cgroup -- echo hi 2>"$work/hatch.err"); rc=$?
expect_eq "--no-jail --no-seccomp --no-cgroup still runs" "0 hi" "$rc $out"
expect_eq "each escape hatch warns" 3 "$(grep -c 'warning: --no-' "$work/hatch.err")"
krun --cpu-quota 0 -- true 2>"$work/q.err"; rc=$?
expect_eq "--cpu-quota 0 is bad usage" 2 "$rc"
expect_match "--cpu-quota 0: one line" '^kiln run: --cpu-quota must be' "$(cat "$work/q.err")"

# --- an unprivileged caller: user namespace, no cgroup without delegation ---------------------
if [ "$(id -u)" = 0 ]; then
    chmod 666 /dev/kvm   # the emulated host is throwaway; a real host uses the kvm group
    # Root's cache (kernel, images) is not readable by others: copies.
    mkdir "$work/nb" && chown 65534:65534 "$work/nb"
    cp "$TINY" "$work/tiny.img" && cp "$B/guest/vmlinux" "$work/vmlinux" && chmod 644 "$work/tiny.img" "$work/vmlinux"
    asnobody() { setpriv --reuid 65534 --regid 65534 --clear-groups env TMPDIR="$work/nb" "$@"; }
    nbrun() { asnobody timeout -s KILL 300 "$KILN" run --image "$work/tiny.img" --kernel "$work/vmlinux" "$@"; }
    nbrun -- true 2>"$work/nb.err"; rc=$?
    expect_eq "unprivileged without a delegated cgroup: kiln exits 125" 125 "$rc"
    expect_match "... and says how to go on" 'cgroup.*pass --no-cgroup' "$(cat "$work/nb.err")"
    # Not through the function: $! must be kiln itself (setpriv and env exec).
    setpriv --reuid 65534 --regid 65534 --clear-groups env TMPDIR="$work/nb" \
        "$KILN" run --image "$work/tiny.img" --kernel "$work/vmlinux" --no-cgroup \
        -- sh -c 'echo ready; exec sleep 120' > "$work/nb.out" 2>"$work/nb.err" &
    kpid=$!
    for _ in $(seq 300); do grep -q ready "$work/nb.out" 2>/dev/null && break; kill -0 "$kpid" 2>/dev/null || break; sleep 0.5; done
    vmm=$(pgrep -x -u 65534 kiln-vmm | head -n1)
    if [ -n "$vmm" ]; then
        ok "unprivileged run starts"
        check "unprivileged VMM: own user namespace" test "$(readlink /proc/$vmm/ns/user)" != "$(readlink /proc/self/ns/user)"
        expect_eq "unprivileged VMM: maps only its own uid" "65534 65534 1" "$(awk '{print $1, $2, $3}' /proc/$vmm/uid_map)"
        expect_eq "unprivileged VMM: seccomp" 2 "$(status_field "$vmm" Seccomp)"
        expect_eq "unprivileged VMM: CapEff empty" 0000000000000000 "$(status_field "$vmm" CapEff)"
        expect_eq "unprivileged VMM: CapBnd empty" 0000000000000000 "$(status_field "$vmm" CapBnd)"
        expect_eq "unprivileged jail root holds only the path to the run directory" tmp "$(ls -A /proc/$vmm/root/)"
    else
        not_ok "unprivileged run starts ($(cat "$work/nb.err"))"
    fi
    kill -TERM "$kpid" 2>/dev/null; wait "$kpid"; rc=$?; kpid=
    expect_eq "unprivileged run: SIGTERM ends it (143)" 143 "$rc"
    chmod 660 /dev/kvm
fi
ps -eo pid,ppid,pgid,stat,user,comm | grep '[k]iln' | sed 's/^/# /'
expect_eq "no VMM left at the end" 0 "$(pgrep -x kiln-vmm | wc -l)"
expect_eq "no cgroup left at the end" 0 "$(leftover_cgroups)"
done_testing
