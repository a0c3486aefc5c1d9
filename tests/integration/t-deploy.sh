#!/usr/bin/env bash
# The Kubernetes DaemonSet's container, rebuilt by hand around a real kilnd:
# its own cgroup namespace with /sys/fs/cgroup mounted read-only (as a
# container runtime mounts it), exactly the capabilities that
# deploy/kubernetes/kilnd-daemonset.yaml adds and no other, kilnd started by
# deploy/bin/kilnd-start --cgroup-leaf --drain-on-term on TCP. One VM (tiny
# image) boots and runs a command in there, its cgroup lands inside the
# "container's", and SIGTERM drains before kilnd stops. Runs as root where
# /dev/kvm works.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/kilnd.sh"
kilnd_rig t-deploy
cg=/sys/fs/cgroup
ctr="$cg/kiln-t-deploy-$$"
spid=
kilnd_cleanup_more() {
    [ -n "$spid" ] && kill -9 "$spid" 2>/dev/null
    # whatever is left in the fake container's cgroup, then the cgroup itself
    [ -d "$ctr" ] && { echo 1 > "$ctr/cgroup.kill"; } 2>/dev/null
    for _ in $(seq 50); do
        [ -d "$ctr" ] || break
        find "$ctr" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null
        rmdir "$ctr" 2>/dev/null && break
        sleep 0.1
    done
}

# The capabilities the DaemonSet adds, as setpriv spells them.
caps=$(python3 - "$top/deploy/kubernetes/kilnd-daemonset.yaml" <<'EOF'
import sys, yaml
ds = yaml.safe_load(open(sys.argv[1]))
c = ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]
assert c["drop"] == ["ALL"], c
print(",".join("+" + x.lower() for x in c["add"]))
EOF
)
expect_match "the DaemonSet's capabilities read" '^\+sys_admin(,\+[a-z_]+)+$' "$caps"

# A free TCP port on loopback for kilnd.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
T=deploy-token-$RANDOM$RANDOM
fleet=0
"$B/kilnd" --help 2>&1 | grep -q -- '--host-id' && fleet=1
kilnd_tenant ops "$T" 2 2 1024 600
if [ $fleet = 1 ]; then
    # an admin tenant, for the drain (kilnd of issue 16)
    sed -i 's/"max_timeout_s": 600}/"max_timeout_s": 600, "admin": true}/' "$work/tokens.json"
fi

# container CMD...: CMD inside a fake container: its own cgroup (a child of
# the root with cpu, memory and pids), cgroup and mount namespaces,
# /sys/fs/cgroup read-only, the bounding set cut to $caps.
mkdir -p "$ctr"
for c in cpu memory pids; do echo "+$c" > "$cg/cgroup.subtree_control" 2>/dev/null; done
container() {
    bash -c 'echo $$ > "$1/cgroup.procs" && shift &&
             exec unshare --cgroup --mount --propagation private -- sh -c "
                 umount -l /sys/fs/cgroup &&
                 mount -t cgroup2 -o ro,nosuid,nodev,noexec cgroup2 /sys/fs/cgroup &&
                 exec setpriv --bounding-set -all,$0 --inh-caps -all -- \"\$@\"" sh "$@"' \
        "$caps" "$ctr" "$@"
}

# --- without CAP_SYS_ADMIN, kilnd-start refuses: it cannot make the cgroup writable ---
out=$(caps=${caps//+sys_admin,/} container env KILND="$B/kilnd" \
        "$top/deploy/bin/kilnd-start" --cgroup-leaf -- --version 2>&1)
expect_match "without SYS_ADMIN: kilnd-start fails, naming the cgroup mount" \
    'cannot make /sys/fs/cgroup writable' "$out"

# --- kilnd in the fake container ------------------------------------------------
mkdir -p "$work/tmp"
KILN_HOST_ID=Node-7.Example.COM KILND="$B/kilnd" TMPDIR="$work/tmp" \
    KILN_HOST="tcp:127.0.0.1:$port" KILN_TOKEN="$T" \
    container "$top/deploy/bin/kilnd-start" --cgroup-leaf --drain-on-term -- \
    --tokens "$work/tokens.json" --state-dir "$state" --listen "tcp:127.0.0.1:$port" \
    --image-dir "$work/images" 2>>"$work/kilnd.log" &
spid=$!
for _ in $(seq 300); do
    grep -q 'kilnd: ready' "$work/kilnd.log" 2>/dev/null && break
    kill -0 "$spid" 2>/dev/null || break
    sleep 0.1
done
if grep -q 'kilnd: ready' "$work/kilnd.log"; then
    ok "kilnd is ready under the DaemonSet's capabilities"
else
    not_ok "kilnd is ready under the DaemonSet's capabilities"
    sed 's/^/# /' "$work/kilnd.log"
fi
# $spid is the background subshell; kilnd-start (kilnd's parent) runs under it
kpid=$(pgrep -nx kilnd)
start_pid=$(ps -o ppid= -p "${kpid:-0}" | tr -d ' ')
check "kilnd-start is kilnd's parent" grep -q kilnd-start "/proc/${start_pid:-0}/cmdline"
expect_eq "kilnd-start moved itself (and kilnd) into the container's kilnd/ leaf" \
    "0::/${ctr#"$cg"/}/kilnd" "$(cat "/proc/$kpid/cgroup" 2>/dev/null)"
capset() { sed 's/.*=//; s/cap_//g; s/+//g' | tr ',' '\n' | sort | paste -sd,; }
expect_eq "kilnd's capabilities are the DaemonSet's" "$(echo "$caps" | capset)" \
    "$(capsh --decode="$(awk '/^CapEff/ {print $2}' "/proc/$kpid/status" 2>/dev/null)" | capset)"

api() {
    local m=$1 p=$2
    shift 2
    curl -sS -X "$m" -H "Authorization: Bearer $T" -w '\n%{http_code}' "$@" "http://127.0.0.1:$port$p"
}
body() { sed '$d'; }
code() { tail -n1; }

expect_eq "health over TCP (the probes' path)" "200" "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v1/health")"
r=$(api POST /v1/sandboxes -d '{"image":"tiny","cpus":1,"memory_mib":256,"disk_mib":64,"timeout_s":600,"allow":["example.com"]}')
expect_eq "create (with kiln-net for an allow rule): 201" "201" "$(echo "$r" | code)"
[ "$(echo "$r" | code)" = 201 ] || echo "$r" | sed 's/^/# /'
id=$(echo "$r" | body | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' 2>/dev/null)
if [ $fleet = 1 ]; then
    expect_match "the sandbox id carries the node name as a host id" '^sb-node-7-example-com-[0-9a-f]{32}$' "$id"
else
    ok "the sandbox id carries the node name as a host id # SKIP this kilnd has no --host-id yet"
fi
out=$(api POST "/v1/sandboxes/$id/exec" -d '{"cmd":["echo","in-the-vm"]}' | body)
expect_match "exec in the sandbox" '"in-the-vm\\n"' "$out"
vmm=$(pgrep -x kiln-vmm | head -n1)
expect_match "the VM's cgroup is inside the container's" "^0::/${ctr#"$cg"/}/kiln/run-" "$(cat "/proc/$vmm/cgroup" 2>/dev/null)"

# --- SIGTERM: drain first, then stop ----------------------------------------------
kill -TERM "$start_pid"
if [ $fleet = 1 ]; then
    for _ in $(seq 100); do grep -q 'is draining' "$work/kilnd.log" && break; sleep 0.1; done
    check "SIGTERM drains: kilnd-drain says so" grep -q 'kilnd-drain: tcp:127.0.0.1:[0-9]* is draining' "$work/kilnd.log"
    r=$(api POST /v1/sandboxes -d '{"image":"tiny","timeout_s":60}')
    expect_match "a draining host refuses new sandboxes" '^(429|503)$' "$(echo "$r" | code)"
    expect_eq "the running sandbox still answers" "200" "$(api GET "/v1/sandboxes/$id" | code)"
    check "kilnd is still up while the sandbox runs" kill -0 "$kpid"
    expect_eq "delete it: 204" "204" "$(api DELETE "/v1/sandboxes/$id" | code)"
else
    ok "SIGTERM drains first # SKIP this kilnd has no /v1/drain yet"
fi
for _ in $(seq 300); do kill -0 "$spid" 2>/dev/null || break; sleep 0.1; done
check "kilnd-start and kilnd have ended" bash -c "! kill -0 $spid 2>/dev/null && ! kill -0 $kpid 2>/dev/null"
spid=
expect_eq "no VMM left" "0" "$(vmms)"
[ $fleet = 1 ] && check "the drain ended with no sandbox left" grep -q 'kilnd-drain: drained' "$work/kilnd.log"
done_testing
