#!/usr/bin/env bash
# kiln-net (issue 6) without a VM: tests/integration/knet_fuzz.py plays the
# guest on the VMM end of kiln-net's socket. Sanity (ARP, neighbour discovery,
# DNS REFUSED, TCP resets), then thousands of random and mutated frames, then
# sanity again; kiln-net must stay up, exit 0 on the hang-up with one status
# line and well-formed audit lines, and never trip its seccomp filter.
#
# Every run is in a fresh network namespace (unshare -n), so nothing leaves
# the machine: first the plain configuration (--allow 203.0.113.7:80,
# resolver 127.0.0.1:1, nothing reachable), where every kind of dropped frame
# must leave an audit line and a flood of 100k a bounded number; then with
# servers (in a namespace of their own behind a veth) and a fake resolver
# (whole TCP connections, Host/SNI checks, DNS pinning, UDP relay; 300
# addresses given to kiln-net's namespace while it runs, host, private and
# translated answers withheld, forged resolver replies ignored, random
# query IDs and ports, the DNS query cap), once as is and once without
# seccomp and with --rate.
# Needs root (kiln-net's jail, unshare) and python3; no KVM.
#
#   KNET=path          kiln-net to test (default build/kiln-net)
#   KNET_ASAN=path     also test this kiln-net, e.g. one built with
#                      make SANITIZE=1 B=/tmp/asan /tmp/asan/kiln-net
#   KNET_SEED=N        fixed seed (printed either way)
#   KNET_FRAMES=N      fuzz frames per run (default 10000)
source "$(dirname "$0")/lib.sh"

KNET=${KNET:-$B/kiln-net}
FUZZ="$top/tests/integration/knet_fuzz.py"
FRAMES=${KNET_FRAMES:-10000}
SEED=${KNET_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY=python3; fi
start=$(date +%s)

echo "# t-knet: seed $SEED (KNET_SEED=$SEED to repeat), $FRAMES frames per run"

if [ ! -x "$KNET" ]; then
    not_ok "kiln-net is built ($KNET)"
    done_testing; exit
fi

netns=(unshare -n)
if ! unshare -n true 2>/dev/null; then
    echo "# unshare -n does not work here: running in this network namespace, without servers"
    netns=()
fi
have_ip=1
command -v ip > /dev/null || have_ip=0

work=$(mktemp -d /tmp/t-knet.XXXXXX)
trap 'rm -rf "$work"' EXIT

# fuzz LABEL BINARY ARGS...: one knet_fuzz.py run, its PASS/FAIL lines as TAP.
fuzz() {
    local label=$1 bin=$2 line rc
    shift 2
    timeout -s KILL 300 "${netns[@]}" "$PY" "$FUZZ" "$bin" --frames "$FRAMES" "$@" \
        > "$work/$label.out" 2>&1
    rc=$?
    while IFS= read -r line; do
        case "$line" in
        "PASS "*) ok "$label: ${line#PASS }" ;;
        "FAIL "*) not_ok "$label: ${line#FAIL }" ;;
        *) echo "# $label: ${line#\# }" ;;
        esac
    done < "$work/$label.out"
    # knet_fuzz.py exits 1 when a check failed (reported above); any other
    # status is the script itself going wrong (a traceback, or the timeout).
    case $rc in
    0|1) ;;
    *) not_ok "$label: knet_fuzz.py ended with status $rc" ;;
    esac
}

servers=0
[ ${#netns[@]} -gt 0 ] && [ $have_ip = 1 ] && servers=1
fuzz plain "$KNET" --seed "$SEED" --drop-flood 100000
if [ $servers = 1 ]; then
    fuzz servers "$KNET" --seed $((SEED + 1)) --netns --dns-rate 100
    fuzz servers-no-seccomp-rate "$KNET" --seed $((SEED + 2)) --netns --no-seccomp --rate 20000
else
    echo "# skipped the runs with servers: they need unshare -n and ip"
fi
# Unjailed (diagnosis), still filtered: its socket lives in a temporary
# directory that it must remove at exit without tripping its filter.
left_before=$(ls -d /tmp/kiln-net.* 2>/dev/null | wc -l)
fuzz plain-no-jail "$KNET" --seed $((SEED + 5)) --no-jail
expect_eq "--no-jail: kiln-net removed its temporary directory" "$left_before" \
    "$(ls -d /tmp/kiln-net.* 2>/dev/null | wc -l)"
if [ -n "${KNET_ASAN:-}" ]; then
    if [ -x "$KNET_ASAN" ]; then
        with=()
        [ $servers = 1 ] && with=(--netns)
        fuzz asan "$KNET_ASAN" --seed $((SEED + 3)) "${with[@]}"
        fuzz asan-no-seccomp "$KNET_ASAN" --seed $((SEED + 4)) "${with[@]}" --no-seccomp
    else
        not_ok "KNET_ASAN=$KNET_ASAN is an executable"
    fi
fi

echo "# t-knet: $T_PASS passed, $T_FAIL failed in $(( $(date +%s) - start )) s"
done_testing
