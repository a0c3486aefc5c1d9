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

# run_pytest NAME ARGS...: runs `python3 -m pytest ARGS` from the top of the
# tree (environment as the caller exported it; output in $work/NAME.out) and
# turns each test's result into a TAP line; prints the lines that are not
# PASSED (failures, tracebacks, the summary).
run_pytest() {
    local name=$1 n=0 rc line start; shift
    start=$(date +%s)
    ( cd "$top" && PYTHONDONTWRITEBYTECODE=1 timeout 600 /usr/bin/python3 -m pytest -v \
        -p no:cacheprovider -rfE --tb=short --color=no "$@" 2>&1
      echo "rc=$?" ) > "$work/$name.out"
    sed 's/^/# /' "$work/$name.out" | grep -v ' PASSED' | tail -n 60
    rc=$(sed -n 's/^rc=//p' "$work/$name.out" | tail -n1)
    echo "# $name: pytest exited $rc after $(( $(date +%s) - start )) s"
    while IFS= read -r line; do
        # (parametrized ids may hold spaces)
        if [[ "$line" =~ ^tests/[^:]+::(.+)\ (PASSED|FAILED|ERROR|XPASS|XFAIL|SKIPPED)(\ |$) ]]; then
            n=$((n + 1))
            case ${BASH_REMATCH[2]} in
            PASSED) ok "${BASH_REMATCH[1]}" ;;
            XFAIL|SKIPPED) ok "${BASH_REMATCH[1]} (${BASH_REMATCH[2]})" ;;
            *) not_ok "${BASH_REMATCH[1]} (${BASH_REMATCH[2]})" ;;
            esac
        fi
    done < "$work/$name.out"
    check "$name: pytest ran tests ($n)" test "$n" -gt 0
    expect_eq "$name: a line for every test collected" \
        "$(sed -n 's/^collected \([0-9]*\) items.*/\1/p; s/.*collecting .* collected \([0-9]*\) items.*/\1/p' "$work/$name.out" | head -n1)" "$n"
    expect_eq "$name: pytest exit status" "0" "$rc"
}
