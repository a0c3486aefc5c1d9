#!/usr/bin/env bash
# Where libkiln puts a VM's cgroup, depending on the caller's own cgroup:
# next to it when its parent already gives cpu, memory and pids to its
# children (a delegated subtree or a slice), else under the root; and the
# sweep in such a subtree. Runs as root inside scripts/with-kvm; the driver is
# tests/integration/cgroup_limits (--where, --sweep).
source "$(dirname "$0")/lib.sh"

PROBE=${KILN_CGROUP_PROBE:-$B/tests/integration/cgroup_limits}
cg=/sys/fs/cgroup
run_re='run-[0-9]+-[0-9a-f]{8}$'

if [ "$(stat -fc %T "$cg" 2>/dev/null)" != cgroup2fs ]; then
    not_ok "no cgroup2 mounted at $cg"; exit 1
fi
[ -x "$PROBE" ] || { not_ok "missing $PROBE (run make)"; exit 1; }

cleanup() {
    rmdir "$cg"/t-cg-svc/kiln/run-* "$cg"/t-cg-svc/kiln "$cg"/t-cg-svc/main "$cg"/t-cg-svc \
          "$cg"/t-cg-bare/main "$cg"/t-cg-bare "$cg"/t-cg-plain 2>/dev/null
}
trap cleanup EXIT
cleanup

# inside CGROUP CMD... : runs CMD after moving its process into $cg/CGROUP.
inside() { sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cg/$1" "${@:2}"; }

echo "+cpu +memory +pids" > "$cg/cgroup.subtree_control"
mkdir -p "$cg/t-cg-plain" "$cg/t-cg-svc/main" "$cg/t-cg-bare/main"
echo "+cpu +memory +pids" > "$cg/t-cg-svc/cgroup.subtree_control"

got=$(inside t-cg-plain "$PROBE" --where 2>&1)
expect_match "from a child of the root: under the root's kiln/" "^$cg/kiln/$run_re" "$got"

got=$(inside t-cg-svc/main "$PROBE" --where 2>&1)
expect_match "from svc/main where svc gives out the controllers: svc/kiln/" "^$cg/t-cg-svc/kiln/$run_re" "$got"
expect_eq "destroy left nothing in svc/kiln" "" "$(cd "$cg/t-cg-svc/kiln" 2>/dev/null && ls -d run-* 2>/dev/null)"
expect_eq "svc/kiln gives out the controllers" "cpu memory pids" "$(cat "$cg/t-cg-svc/kiln/cgroup.subtree_control" 2>&1)"

got=$(inside t-cg-bare/main "$PROBE" --where 2>&1)
expect_match "from bare/main where bare gives out nothing: under the root" "^$cg/kiln/$run_re" "$got"
check "nothing created in bare/" test ! -e "$cg/t-cg-bare/kiln"

# A stale cgroup of a dead owner in svc/kiln; the sweep run from svc/main removes it.
sh -c 'exit 0' & dead=$!; wait $dead
mkdir "$cg/t-cg-svc/kiln/run-$dead-deadbeef"
inside t-cg-svc/main "$PROBE" --sweep
check "sweep from svc/main removed svc/kiln/run-$dead-deadbeef" test ! -e "$cg/t-cg-svc/kiln/run-$dead-deadbeef"

done_testing
