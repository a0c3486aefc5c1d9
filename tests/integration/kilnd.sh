# A real kilnd for a test (sourced after lib.sh): a work dir of its own, the
# tiny image under the name "tiny", a tokens file, start and stop.
# shellcheck shell=bash

KILND="$B/kilnd"
kpid=

# kilnd_rig NAME: $work (removed on exit, with kilnd killed first), $sock,
# $state and an image dir. A test that needs more on exit defines
# kilnd_cleanup_more.
kilnd_rig() {
    work=$(mktemp -d "/tmp/$1.XXXXXX")
    sock="$work/kilnd.sock"
    state="$work/state"
    mkdir -p "$work/images"
    ln -s "${KILN_TEST_TINY:-$B/images/tiny.img}" "$work/images/tiny.img"
    : > "$work/tenants"
    trap kilnd_cleanup EXIT
}
kilnd_cleanup() {
    declare -F kilnd_cleanup_more > /dev/null && kilnd_cleanup_more
    [ -n "$kpid" ] && kill -9 "$kpid" 2>/dev/null
    rm -rf "$work"
}

# kilnd_tenant NAME TOKEN MAX_SANDBOXES MAX_VCPUS MAX_MIB MAX_TIMEOUT_S: one
# more tenant in $work/tokens.json (only the token's SHA-256 is kept).
kilnd_tenant() {
    local sum
    sum=$(printf %s "$2" | sha256sum | cut -d' ' -f1)
    printf '{"name": "%s", "token_sha256": "%s", "max_sandboxes": %s, "max_vcpus": %s, "max_memory_mib": %s, "max_timeout_s": %s}\n' \
        "$1" "$sum" "$3" "$4" "$5" "$6" >> "$work/tenants"
    { echo '{"tenants": ['; paste -sd, "$work/tenants"; echo ']}'; } > "$work/tokens.json"
}

# start_kilnd [ARGS...]: starts kilnd in the background ($kpid) and waits for
# this start's "ready" line (an earlier kilnd's socket may linger).
start_kilnd() {
    local before
    before=$(grep -c 'kilnd: ready' "$work/kilnd.log" 2>/dev/null)
    "$KILND" --tokens "$work/tokens.json" --state-dir "$state" --listen "unix:$sock" \
        --image-dir "$work/images" "$@" 2>>"$work/kilnd.log" &
    kpid=$!
    for _ in $(seq 300); do
        [ "$(grep -c 'kilnd: ready' "$work/kilnd.log" 2>/dev/null)" -gt "${before:-0}" ] && break
        kill -0 "$kpid" 2>/dev/null || break
        sleep 0.1
    done
}

# VMM processes (not their jail's waiters, kiln-vmm-wait).
vmms() { pgrep -x kiln-vmm | wc -l; }
