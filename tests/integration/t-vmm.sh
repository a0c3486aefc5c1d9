#!/usr/bin/env bash
# kiln-vmm end to end: boots the guest kernel with the test initramfs
# (tests/guest/init) and checks SMP, memory, every way a VM can end, signals,
# and bad input. Runs where /dev/kvm works.
source "$(dirname "$0")/lib.sh"

VMM="$B/kiln-vmm"
KERNEL="$B/guest/vmlinux"
INITRD="$B/guest/test-initrd.cpio"
BASE="console=ttyS0 reboot=k panic=-1 pci=off io_delay=none"
work=$(mktemp -d /tmp/t-vmm.XXXXXX)
trap 'rm -rf "$work"' EXIT

# boot NAME ARGS... : runs the VMM, console in $work/NAME.out, stderr in NAME.err, status in $rc
# The emulated KVM host sometimes stalls a VM for good (README, with-kvm): a
# boot our timeout had to kill (137) is tried once more, and says so.
boot_cmd=("$VMM")   # what boot runs: the VMM, or a harness around it
boot() {
    local name=$1; shift
    for attempt in 1 2; do
        timeout -s KILL 150 "${boot_cmd[@]}" "$@" > "$work/$name.out" 2> "$work/$name.err" < /dev/null
        rc=$?
        [ "$rc" = 137 ] || break
        echo "# $name: the VM stalled and was killed after 150 s (attempt $attempt)"
    done
}
bad() {
    local desc=$1 pattern=$2; shift 2
    local out
    out=$(timeout 60 "$VMM" "$@" 2>&1 < /dev/null)
    local st=$?
    if [ $st -eq 2 ] && [ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] && [[ "$out" =~ $pattern ]]; then
        ok "bad input: $desc"
    else
        not_ok "bad input: $desc (status $st, output '$out')"
    fi
}
field() { sed -n "s/.*$2 \([0-9a-z]*\).*/\1/p" "$work/$1.out" | head -n1; }

# --- 1 vCPU, 128 MiB, reboot -> 0; boot timer --------------------------------
boot small --kernel "$KERNEL" --initrd "$INITRD" --cpus 1 --mem 128 --print-boot-time
expect_eq "1 vCPU guest exits 0 on reboot" 0 "$rc"
expect_eq "guest sees 1 CPU" 1 "$(field small KILN-NPROC)"
mem=$(field small KILN-MEMTOTAL-KB)
check "guest sees about 128 MiB (MemTotal ${mem:-?} kB)" test "${mem:-0}" -gt 100000 -a "${mem:-0}" -le 131072
check "userspace output arrives through the UART's interrupt path" grep -q '^tty: KILN-NPROC 1 ' "$work/small.out"
expect_match "boot timer records guest userspace start" 'boot-time-us=[0-9]+' "$(cat "$work/small.err")"
expect_match "reset reason on stderr" 'kiln-vmm: guest reset \(exit 0\)' "$(tail -n1 "$work/small.err")"

# --- SMP, 2 GiB (RAM above the 32-bit hole too) ------------------------------------
# 4 vCPUs, as the issue asks (KILN_TEST_SMP=N checks another count).
NCPUS=${KILN_TEST_SMP:-4}
boot big --kernel "$KERNEL" --initrd "$INITRD" --cpus "$NCPUS" --mem 2048
expect_eq "$NCPUS-vCPU guest exits 0" 0 "$rc"
expect_eq "guest sees $NCPUS CPUs" "$NCPUS" "$(field big KILN-NPROC)"
mem=$(field big KILN-MEMTOTAL-KB)
check "guest sees about 2 GiB (MemTotal ${mem:-?} kB)" test "${mem:-0}" -gt 1900000 -a "${mem:-0}" -le 2097152

# --- SMP, 512 MiB from a JSON config file -------------------------------------------
cat > "$work/vm.json" <<JSON
{"kernel": "$KERNEL", "initrd": "$INITRD", "cpus": $NCPUS, "mem_mib": 512,
 "cmdline": "$BASE", "console": "stdio"}
JSON
boot json --config "$work/vm.json"
expect_eq "JSON-configured guest exits 0" 0 "$rc"
expect_eq "JSON config: $NCPUS CPUs" "$NCPUS" "$(field json KILN-NPROC)"
mem=$(field json KILN-MEMTOTAL-KB)
check "JSON config: about 512 MiB (MemTotal ${mem:-?} kB)" test "${mem:-0}" -gt 450000 -a "${mem:-0}" -le 524288

# --- virtio-blk (read-only and writable) and virtio-rng ------------------------------
head -c 1048576 /dev/urandom > "$work/ro.img"
truncate -s 1M "$work/rw.img"
cp "$work/ro.img" "$work/ro.orig"
boot dev --kernel "$KERNEL" --initrd "$INITRD" --cmdline "$BASE kiln.test=devices" \
    --drive "path=$work/ro.img,ro,serial=base-image" --drive "path=$work/rw.img"
expect_eq "guest with two drives exits 0" 0 "$rc"
expect_match "guest sees vda and vdb" 'KILN-DISKS vda vdb' "$(cat "$work/dev.out")"
expect_eq "read-only drive reported read-only" 1 "$(field dev KILN-VDA-RO)"
expect_eq "guest reads the image byte-exact" "$(head -c 65536 "$work/ro.img" | sha256sum | cut -c1-16)" "$(field dev KILN-VDA-SHA)"
expect_eq "drive serial (GET_ID) visible" "base-image" "$(sed -n 's/.*KILN-VDA-SERIAL \([^ ]*\).*/\1/p' "$work/dev.out" | head -n1)"
expect_eq "write to the read-only drive fails in the guest" refused "$(field dev KILN-VDA-WRITE)"
check "read-only image unchanged on the host" cmp -s "$work/ro.img" "$work/ro.orig"
expect_eq "write to the writable drive succeeds" 0 "$(field dev KILN-VDB-WRITE)"
expect_eq "guest's write reached the host file" "written-by-guest" "$(dd if="$work/rw.img" bs=512 skip=8 count=1 2>/dev/null | head -c 16)"
expect_match "virtio-rng is the guest's hwrng" 'KILN-RNG virtio_rng' "$(cat "$work/dev.out")"
expect_eq "guest reads entropy from /dev/hwrng" 32 "$(field dev KILN-RNG-BYTES)"
bad "missing drive" 'cannot open drive' --kernel "$KERNEL" --drive "path=$work/nope"
bad "drive spec without a source" 'needs path' --kernel "$KERNEL" --drive ro
bad "drive fd that is not open" 'not open' --kernel "$KERNEL" --drive fd=987

# --- virtio-net against a test peer (ARP + ICMP echo at 10.0.2.2) -------------------
boot_cmd=(python3 "$(dirname "$0")/vnet_peer.py" "$VMM")
boot net --kernel "$KERNEL" --initrd "$INITRD" --cmdline "$BASE kiln.test=net" --print-boot-time
boot_cmd=("$VMM")
expect_eq "guest with a network device powers off (3)" 3 "$rc"
expect_eq "guest's MAC is the VMM's default" 02:6b:6c:6e:00:01 "$(sed -n 's/.*KILN-NET-MAC \([0-9a-f:]*\).*/\1/p' "$work/net.out" | head -n1)"
expect_eq "guest's MTU from the device" 1500 "$(field net KILN-NET-MTU)"
expect_eq "ping through virtio-net: 3 of 3 answered" 3 "$(field net KILN-NET-PING)"
expect_eq "1400-byte pings through virtio-net: 2 of 2" 2 "$(field net KILN-NET-BIGPING)"
expect_match "the peer answered ARP and ICMP" 'PEER frames=[0-9]+ arp=[1-9][0-9]* icmp=5 bad=0' "$(cat "$work/net.err")"
exec 5<"$KERNEL"
bad "--net with a file, not a socket" 'not a connected SOCK_SEQPACKET' --kernel "$KERNEL" --net fd=5
exec 5<&-
bad "--net with a bad MAC" 'unicast' --kernel "$KERNEL" --net fd=3,mac=01:00:00:00:00:01
bad "--net without fd" 'needs fd' --kernel "$KERNEL" --net mac=02:00:00:00:00:01

# --- every way a guest ends ---------------------------------------------------------
boot off --kernel "$KERNEL" --initrd "$INITRD" --cmdline "$BASE kiln.test=poweroff"
expect_eq "guest power-off (ACPI S5) exits 3" 3 "$rc"
expect_match "power-off reason" 'powered off' "$(tail -n1 "$work/off.err")"

boot panic --kernel "$KERNEL" --initrd "$INITRD" --cmdline "$BASE kiln.test=panic"
expect_eq "guest kernel panic (pvpanic) exits 5" 5 "$rc"
expect_match "panic reason" 'panic' "$(tail -n1 "$work/panic.err")"

boot triple --kernel "$KERNEL" --initrd "$INITRD" --cmdline "console=ttyS0 reboot=t panic=-1 pci=off"
expect_eq "triple fault exits 4" 4 "$rc"
expect_match "triple fault reason" 'triple fault' "$(tail -n1 "$work/triple.err")"
expect_match "triple fault report: the vCPU's last exits" \
    'kiln-vmm: vCPU [0-9]+ shut down \(triple fault\) after [1-9][0-9]* exits; the last, oldest first:( (io|mmio):[a-z]+:0x[0-9a-f]+/[0-9]+| exit:[0-9]+)+' \
    "$(grep 'shut down (triple fault)' "$work/triple.err")"
expect_match "triple fault report: the vCPU's registers" 'kiln-vmm: vCPU [0-9]+ registers.*rip=0x[0-9a-f]+ .*cr3=0x' \
    "$(grep 'registers' "$work/triple.err")"

# --- signals stop the guest promptly -----------------------------------------------
for sig in TERM INT; do
    "$VMM" --kernel "$KERNEL" --initrd "$INITRD" --cmdline "$BASE kiln.test=sleep" \
        > "$work/sig.out" 2> "$work/sig.err" < /dev/null &
    pid=$!
    for _ in $(seq 600); do grep -q 'KILN-MODE sleep' "$work/sig.out" 2>/dev/null && break; sleep 0.1; done
    kill -s "$sig" "$pid"
    # Bounded: a VMM that ignored the signal must fail the test, not hang the suite.
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    wait "$pid"
    rc=$?
    want=$((128 + $(kill -l "$sig")))
    expect_eq "SIG$sig stops the VMM with status $want" "$want" "$rc"
    check "no thread of the VMM survives SIG$sig" bash -c "! kill -0 $pid 2>/dev/null"
done

# --- the control channel: pause, resume, status, snapshot, events, bad messages ---
nctl=0
timeout -s KILL 400 /usr/bin/python3 "$top/tests/integration/vmmctl.py" "$work/ctl.out" \
    "$VMM" --kernel "$KERNEL" --initrd "$INITRD" --cmdline "$BASE kiln.test=tick" --cpus 2 \
    --drive "path=$work/ro.img,ro" > "$work/ctl.tap" 2>&1
while read -r res desc; do
    nctl=$((nctl + 1))
    [ "$res" = PASS ] && ok "$desc" || not_ok "$res $desc"
done < "$work/ctl.tap"
expect_eq "control: every check of vmmctl.py ran" 40 "$nctl"
echo "# control: VMM stderr:"; sed 's/^/#   /' "$work/ctl.out.err" 2>/dev/null | tail -n 3

# --- snapshot mid-computation, then --restore: two clones of the same files -------
# vmmctl.py restore: kiln.test=compute (with a writable disk and a vsock device,
# as a template has) paused at step 8 or later, saved, the VMM stopped; two
# clones restored at once from the files, each with its own copy of the
# writable disk (console continues, the uninterrupted result, memory file
# unchanged; clone a's vsock refuses a host CONNECT to a port nothing listens
# on and stays up), then nine refusals (exit 2).
nrest=0
mkdir -p "$work/restore"
truncate -s 4M "$work/restore/rw.img"
timeout -s KILL 600 /usr/bin/python3 "$top/tests/integration/vmmctl.py" restore "$work/restore" \
    "$VMM" --kernel "$KERNEL" --initrd "$INITRD" --cmdline "$BASE kiln.test=compute" --cpus 2 \
    --mem 256 --drive "path=$work/ro.img,ro" --drive "path=$work/restore/rw.img" \
    --vsock "$work/restore/orig.vsock" > "$work/restore.tap" 2>&1
while read -r res desc; do
    [ "$res" = "#" ] && { echo "# $desc"; continue; }
    nrest=$((nrest + 1))
    [ "$res" = PASS ] && ok "$desc" || not_ok "$res $desc"
done < "$work/restore.tap"
expect_eq "restore: every check of vmmctl.py restore ran" 27 "$nrest"
for f in orig.out.err clone-a.out.err; do
    echo "# restore: $f:"; sed 's/^/#   /' "$work/restore/$f" 2>/dev/null | tail -n 3
done

# --- bad input: exit 2, one line on stderr, before any guest runs -------------------
printf 'not an elf file\n' > "$work/notelf"
truncate -s 200M "$work/huge.cpio"
echo '{"cpus": 2, "oops": 1}' > "$work/unknown.json"
echo '{"cpus": ' > "$work/broken.json"
bad "missing kernel" 'cannot open kernel' --kernel "$work/nope"
bad "kernel is not ELF" 'not an ELF file' --kernel "$work/notelf"
bad "kernel without PVH note" 'no PVH entry note' --kernel "$B/guest/kiln-mark"
bad "initrd larger than guest RAM allows" 'does not fit' --kernel "$KERNEL" --initrd "$work/huge.cpio" --mem 64
bad "missing initrd" 'cannot open initrd' --kernel "$KERNEL" --initrd "$work/nope"
bad "--cpus 0" 'cpus' --kernel "$KERNEL" --cpus 0
bad "--cpus 1000" 'cpus' --kernel "$KERNEL" --cpus 1000
bad "--mem 0" 'mem' --kernel "$KERNEL" --mem 0
bad "--mem larger than the host" 'more than this host' --kernel "$KERNEL" --mem 60000
bad "--mem not a number" 'mem' --kernel "$KERNEL" --mem 12abc
bad "no kernel" 'no kernel' --cpus 2
bad "unknown option" 'unknown option' --kernel "$KERNEL" --frobnicate
bad "unknown JSON key" 'unknown key' --config "$work/unknown.json"
bad "--inspect-snapshot of a file that is not one" 'bad magic' --inspect-snapshot "$work/notelf"
bad "--inspect-snapshot of a missing file" 'No such file' --inspect-snapshot "$work/nope"
bad "malformed JSON" 'line' --config "$work/broken.json"
bad "--restore with --kernel" 'no --kernel' --restore "$work" --kernel "$KERNEL"
bad "--restore of a directory without a snapshot" 'cannot open .*/state' --restore "$work/nope"

done_testing
