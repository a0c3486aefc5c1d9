#!/usr/bin/env bash
# The Python SDK (sdk/python, package kiln) against a real kilnd: starts kilnd
# as t-daemon.sh does (tiny image, a tokens file of its own), runs
# tests/sdk with Debian's pytest, and turns each test's result into a TAP line.
# Three VMs in all (tiny image). Runs where /dev/kvm works.
source "$(dirname "$0")/lib.sh"

KILND="$B/kilnd"
PY=/usr/bin/python3
work=$(mktemp -d /tmp/t-sdk.XXXXXX)
sock="$work/kilnd.sock"
state="$work/state"
kpid=
cleanup() {
    [ -n "$kpid" ] && kill -9 "$kpid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

if ! $PY -c 'import httpx, pytest, pytest_asyncio' 2>/dev/null; then
    not_ok "python3-httpx, python3-pytest and python3-pytest-asyncio are installed (scripts/install-deps)"
    done_testing
    exit
fi

# The tiny image under the name "tiny" in an image dir of our own.
mkdir -p "$work/images"
ln -s "${KILN_TEST_TINY:-$B/images/tiny.img}" "$work/images/tiny.img"

TA=sdk-token-$RANDOM$RANDOM$RANDOM
ha=$(printf %s "$TA" | sha256sum | cut -d' ' -f1)
cat > "$work/tokens.json" <<EOT
{"tenants": [
 {"name": "sdk", "token_sha256": "$ha", "max_sandboxes": 4, "max_vcpus": 4, "max_memory_mib": 2048, "max_timeout_s": 3600}]}
EOT

# start_kilnd: waits for this start's "ready" line.
start_kilnd() {
    local before
    before=$(grep -c 'kilnd: ready' "$work/kilnd.log" 2>/dev/null)
    "$KILND" --tokens "$work/tokens.json" --state-dir "$state" --listen "unix:$sock" \
        --image-dir "$work/images" 2>>"$work/kilnd.log" &
    kpid=$!
    for _ in $(seq 300); do
        [ "$(grep -c 'kilnd: ready' "$work/kilnd.log" 2>/dev/null)" -gt "${before:-0}" ] && break
        kill -0 "$kpid" 2>/dev/null || break
        sleep 0.1
    done
}
vmms() { pgrep -x kiln-vmm | wc -l; }

start_kilnd
check "kilnd is listening" test -S "$sock"

# The package installs offline, without build isolation (setuptools from Debian).
if $PY -m pip --version >/dev/null 2>&1; then
    check "pip install --no-build-isolation ./sdk/python (offline) into a target dir" \
        $PY -m pip install -q --root-user-action=ignore --no-build-isolation --no-deps --no-index --target "$work/site" "$top/sdk/python"
    check "the installed package has py.typed" test -f "$work/site/kiln/py.typed"
fi

start=$(date +%s)
( cd "$top" && KILN_HOST="unix:$sock" KILN_TOKEN="$TA" PYTHONPATH="$top/sdk/python" \
    PYTHONDONTWRITEBYTECODE=1 timeout 600 $PY -m pytest -v -p no:cacheprovider -rfE --tb=short \
    --color=no tests/sdk 2>&1; echo "rc=$?" ) | tee "$work/pytest.out" | sed -u 's/^/# /'
rc=$(sed -n 's/^rc=//p' "$work/pytest.out" | tail -n1)
echo "# pytest exited $rc after $(( $(date +%s) - start )) s"
n=0
while IFS= read -r line; do
    if [[ "$line" =~ ^tests/sdk/[^:]+::([^ ]+)\ (PASSED|FAILED|ERROR|XPASS|XFAIL|SKIPPED) ]]; then
        name=${BASH_REMATCH[1]} res=${BASH_REMATCH[2]}
        n=$((n + 1))
        case $res in
        PASSED|XFAIL|SKIPPED) [ "$res" = PASSED ] && ok "$name" || ok "$name ($res)" ;;
        *) not_ok "$name ($res)" ;;
        esac
    fi
done < "$work/pytest.out"
check "pytest ran tests ($n)" test "$n" -gt 0
expect_eq "pytest exit status" "0" "$rc"

expect_eq "no VM is left after the SDK tests" "0" "$(vmms)"
kill -TERM "$kpid"; wait "$kpid"; krc=$?; kpid=
expect_eq "SIGTERM: kilnd stops with 0" "0" "$krc"
echo "# kilnd log:"; sed 's/^/#   /' "$work/kilnd.log" | tail -n 5
done_testing
