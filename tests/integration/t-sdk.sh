#!/usr/bin/env bash
# The Python SDK (sdk/python, package kiln) against a real kilnd: starts kilnd
# as t-daemon.sh does (tiny image, a tokens file of its own), runs
# tests/sdk with Debian's pytest, and turns each test's result into a TAP line.
# Three VMs in all (tiny image). Runs where /dev/kvm works.
source "$(dirname "$0")/lib.sh"

source "$(dirname "$0")/kilnd.sh"
PY=/usr/bin/python3
kilnd_rig t-sdk

if ! $PY -c 'import httpx, pytest, pytest_asyncio' 2>/dev/null; then
    not_ok "python3-httpx, python3-pytest and python3-pytest-asyncio are installed (scripts/install-deps)"
    done_testing
    exit
fi

TA=sdk-token-$RANDOM$RANDOM$RANDOM
kilnd_tenant sdk "$TA" 4 4 2048 3600

start_kilnd
check "kilnd is listening" test -S "$sock"

# The package installs offline, without build isolation (setuptools from Debian).
if $PY -m pip --version >/dev/null 2>&1; then
    check "pip install --no-build-isolation ./sdk/python (offline) into a target dir" \
        $PY -m pip install -q --root-user-action=ignore --no-build-isolation --no-deps --no-index --target "$work/site" "$top/sdk/python"
    check "the installed package has py.typed" test -f "$work/site/kiln/py.typed"
fi

KILN_HOST="unix:$sock" KILN_TOKEN="$TA" PYTHONPATH="$top/sdk/python" run_pytest sdk tests/sdk

expect_eq "no VM is left after the SDK tests" "0" "$(vmms)"
kill -TERM "$kpid"; wait "$kpid"; krc=$?; kpid=
expect_eq "SIGTERM: kilnd stops with 0" "0" "$krc"
echo "# kilnd log:"; sed 's/^/#   /' "$work/kilnd.log" | tail -n 5
done_testing
