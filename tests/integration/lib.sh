# Shared helpers for integration tests (sourced). Tests print TAP lines.
# shellcheck shell=bash
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
B="$top/build"
T_PASS=0
T_FAIL=0
T_NAME=$(basename "$0" .sh)

ok()     { T_PASS=$((T_PASS + 1)); echo "ok - $T_NAME: $*"; }
not_ok() { T_FAIL=$((T_FAIL + 1)); echo "not ok - $T_NAME: $*"; }
# check DESC CMD... : passes when CMD exits 0.
check()  { local d=$1; shift; if "$@"; then ok "$d"; else not_ok "$d"; fi; }
# expect_eq DESC WANT GOT
expect_eq() {
    if [ "$2" = "$3" ]; then ok "$1"; else not_ok "$1 (want '$2', got '$3')"; fi
}
# expect_match DESC REGEX TEXT
expect_match() {
    if [[ "$3" =~ $2 ]]; then ok "$1"; else not_ok "$1 (no match for /$2/ in '${3:0:300}')"; fi
}
done_testing() { [ $T_FAIL = 0 ]; }
