# kiln netrig: a fake internet for the network end-to-end tests (sourced).
# shellcheck shell=bash
#
#   source tests/integration/netrig/rig.sh
#   rig_up DIR || exit 1        # as root, inside scripts/with-kvm
#   trap rig_down EXIT          # rig_down is safe to call twice
#
# rig_up builds the network namespace "kinet" behind a veth pair, points the
# host's /etc/resolv.conf at its DNS server, writes a test CA to DIR/ca.pem and
# starts rigd.py (every server, one process), then waits until each server
# answers from the host netns. Logs land in DIR (see README.md). Call rig_up
# and rig_down from the test's own shell, not from a subshell: they keep their
# state in RIG_* variables.

RIG_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RIG_NS=kinet                 # the fake internet
RIG_WAIT=${RIG_WAIT:-20}     # seconds rig_up waits for the servers
RIG_DIR=                     # set while a rig is up
RIG_PID=                     # rigd.py
RIG_CTL=                     # fd: a pipe to rigd's stdin, while rig_up runs
RIG_VERDICT=                 # fd: a pipe from rigd's stdout, likewise
RIG_RESOLV=                  # what /etc/resolv.conf was: link:TARGET, file, none
RIG_RESOLV_TEXT=             # its text, when it was a file

# Debian's python starts in about a second on the emulated host; a pyenv shim
# takes several.
if [ -x /usr/bin/python3 ]; then RIG_PYTHON=${RIG_PYTHON:-/usr/bin/python3}; else RIG_PYTHON=${RIG_PYTHON:-python3}; fi

_rig_err() { echo "rig_up: $*" >&2; }

# Every name in the zone and every server address, for the certificate.
_rig_sans="DNS:allowed.test, DNS:www.allowed.test, DNS:*.allowed.test, DNS:denied.test, \
DNS:other.test, DNS:cname.test, DNS:rebind.test, DNS:rebind6.test, DNS:meta.test, \
DNS:rate.test, DNS:doc.test, DNS:*.ip.test, DNS:*.ipp.test, DNS:*.ipq.test, \
IP:11.0.2.10, IP:11.0.2.20, IP:11.0.2.30, IP:11.0.2.40, IP:2a00:11::10, IP:2a00:11::20, \
IP:192.0.2.10, IP:203.0.113.7, IP:169.254.169.254, IP:2001:db8::10"

# _rig_certs: DIR/ca.pem (+ca.key), DIR/srv.pem and DIR/srv.key (EC P-256).
_rig_certs() {
    local d=$RIG_DIR
    cat > "$d/tls.cnf" <<EOF
[req]
distinguished_name = dn
[dn]
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[srv_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = $_rig_sans
EOF
    local key=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -config "$d/tls.cnf")
    if ! openssl req -x509 "${key[@]}" -extensions ca_ext -keyout "$d/ca.key" -out "$d/ca.pem" \
            -subj "/CN=kiln netrig test CA" 2> "$d/openssl.err" ||
       ! openssl req -x509 "${key[@]}" -extensions srv_ext -CA "$d/ca.pem" -CAkey "$d/ca.key" \
            -keyout "$d/srv.key" -out "$d/srv.pem" -subj "/CN=allowed.test" 2>> "$d/openssl.err"; then
        _rig_err "openssl failed: $(grep -v '^-*$' "$d/openssl.err" | head -n1)"
        return 1
    fi
}

# _rig_ip [ip options] <<< commands: one `ip -batch`, its first error on failure.
_rig_ip() {
    local out
    out=$(ip "$@" -batch - 2>&1) || { _rig_err "ip: $(echo "$out" | head -n1)"; return 1; }
}

# _rig_net: the namespace, the veth, the addresses, the routes. Link-local
# addresses are set by hand and nothing does DAD, so all is usable at once.
# Three `ip -batch` runs: every process start is slow on the emulated host.
# The probe addresses (.3, ::3) are for rigd's readiness probe only: the routes
# name the source addresses, and ::3 is deprecated (never picked as a source).
_rig_net() {
    [ -e /sys/module/veth ] || modprobe veth 2>/dev/null
    _rig_ip <<EOF || return 1
netns add $RIG_NS
link add kh0 type veth peer name ki0 netns $RIG_NS
link set kh0 addrgenmode none
addr add fe80::1/64 dev kh0 nodad
addr add 198.51.100.1/24 dev kh0
addr add 198.51.100.3/24 dev kh0
addr add 2001:db8:1::1/64 dev kh0 nodad
addr add 2001:db8:1::3/64 dev kh0 nodad preferred_lft 0
link set kh0 up
EOF
    _rig_ip -n "$RIG_NS" <<EOF || return 1
link set lo up
addr add 11.0.2.10/32 dev lo
addr add 11.0.2.20/32 dev lo
addr add 11.0.2.30/32 dev lo
addr add 11.0.2.40/32 dev lo
addr add 2a00:11::10/128 dev lo
addr add 2a00:11::20/128 dev lo
addr add 192.0.2.10/32 dev lo
addr add 192.0.2.53/32 dev lo
addr add 203.0.113.7/32 dev lo
addr add 169.254.169.254/32 dev lo
addr add 2001:db8::10/128 dev lo
addr add 2001:db8::53/128 dev lo
link set ki0 addrgenmode none
addr add fe80::2/64 dev ki0 nodad
addr add 198.51.100.2/24 dev ki0
addr add 2001:db8:1::2/64 dev ki0 nodad
link set ki0 up
EOF
    _rig_ip <<EOF
route add 11.0.2.0/24 via 198.51.100.2 src 198.51.100.1
route add 192.0.2.0/24 via 198.51.100.2 src 198.51.100.1
route add 203.0.113.0/24 via 198.51.100.2 src 198.51.100.1
route add 169.254.169.254/32 via 198.51.100.2 src 198.51.100.1
route add 2a00:11::/32 via 2001:db8:1::2 src 2001:db8:1::1
route add 2001:db8::/48 via 2001:db8:1::2 src 2001:db8:1::1
route add 64:ff9b::/96 via 2001:db8:1::2 src 2001:db8:1::1
route add 2002::/16 via 2001:db8:1::2 src 2001:db8:1::1
route add 2001::/32 via 2001:db8:1::2 src 2001:db8:1::1
route add default via 198.51.100.2 src 198.51.100.1 metric 4242
route add ::/0 via 2001:db8:1::2 src 2001:db8:1::1 metric 4242
EOF
}

# _rig_resolv: the host's resolver asks rigd's DNS server. The old file (or
# symlink) is kept in RIG_RESOLV* for rig_down.
_rig_resolv() {
    local f=/etc/resolv.conf
    if [ -L "$f" ]; then
        RIG_RESOLV="link:$(readlink "$f")"
    elif [ -e "$f" ]; then
        RIG_RESOLV="file"
        RIG_RESOLV_TEXT=$(< "$f")
    else
        RIG_RESOLV=none
    fi
    { [ ! -L "$f" ] || rm -f "$f"; } 2>/dev/null &&
        { printf 'nameserver 192.0.2.53\noptions timeout:2 attempts:2\n' > "$f"; } 2>/dev/null && return 0
    _rig_err "$f is not writable (rig_up belongs inside scripts/with-kvm, as root)"
    return 1
}

_rig_resolv_restore() {
    local f=/etc/resolv.conf
    case "$RIG_RESOLV" in
    link:*) rm -f "$f" && ln -s "${RIG_RESOLV#link:}" "$f" ;;
    file)   { printf '%s\n' "$RIG_RESOLV_TEXT" > "$f"; } 2>/dev/null ;;
    none)   rm -f "$f" ;;
    esac || true
    RIG_RESOLV=
    RIG_RESOLV_TEXT=
}

# _rig_spawn: starts rigd.py at once (its Python start overlaps with the rest
# of rig_up), detached from this shell's jobs so that a test's bare `wait` does
# not wait for it. RIG_CTL and RIG_VERDICT are pipes (FIFOs) to its stdin and
# from its stdout; opening them meets rigd's own opens, so it cannot block.
_rig_spawn() {
    local d=$RIG_DIR
    mkfifo "$d/.ctl" "$d/.verdict" || { _rig_err "cannot create FIFOs in $d"; return 1; }
    "$RIG_PYTHON" -I "$RIG_HERE/rigd.py" "$d" "$RIG_WAIT" \
        < "$d/.ctl" > "$d/.verdict" 2>> "$d/rigd.err" &
    RIG_PID=$!
    disown "$RIG_PID"
    exec {RIG_CTL}> "$d/.ctl" {RIG_VERDICT}< "$d/.verdict"
}

# _rig_pipes_close: closes the pipes to rigd (EOF on its stdin: it gives up
# if it has not started yet).
_rig_pipes_close() {
    [ -z "$RIG_CTL" ] || exec {RIG_CTL}>&-
    [ -z "$RIG_VERDICT" ] || exec {RIG_VERDICT}<&-
    RIG_CTL=
    RIG_VERDICT=
    [ -z "$RIG_DIR" ] || rm -f "$RIG_DIR/.ctl" "$RIG_DIR/.verdict"
}

# _rig_go: tells rigd to start serving, waits for its verdict (it probes every
# server, for at most RIG_WAIT seconds).
_rig_go() {
    local verdict=
    # In a subshell: if rigd has died, the SIGPIPE must not end this shell.
    ( echo go >&"$RIG_CTL" ) 2>/dev/null
    read -r -t $((RIG_WAIT + 10)) -u "$RIG_VERDICT" verdict || true
    _rig_pipes_close
    case "$verdict" in
    ok) return 0 ;;
    fail:*) _rig_err "${verdict#fail: }" ;;
    *) _rig_err "rigd.py gave no verdict: $(tail -n1 "$RIG_DIR/rigd.err" 2>/dev/null)" ;;
    esac
    return 1
}

# _rig_host_ok: the rig changes the network and /etc/resolv.conf of the
# machine it runs on. That is the point inside with-kvm's emulated host (a
# throwaway root); on a machine with a real /dev/kvm, with-kvm runs the test
# right there, so rig_up refuses unless RIG_ANY_HOST=1.
_rig_host_ok() {
    local name
    name=$(< /proc/sys/kernel/hostname)
    [ "$name" = kiln-emuhost ] || [ "${RIG_ANY_HOST:-}" = 1 ] && return 0
    _rig_err "refusing to change the network of host '$name' (not with-kvm's emulated host; RIG_ANY_HOST=1 overrides)"
    return 1
}

# rig_up DIR: builds the rig, logs in DIR (created if needed). On failure: one
# line on stderr, everything undone, status 1.
rig_up() {
    local dir=${1:-} f
    [ -n "$dir" ] || { _rig_err "usage: rig_up DIR"; return 1; }
    [ "$EUID" = 0 ] || { _rig_err "needs root (run inside scripts/with-kvm)"; return 1; }
    [ -z "$RIG_DIR" ] || { _rig_err "a rig is already up (in $RIG_DIR)"; return 1; }
    _rig_host_ok || return 1
    if [ -e "/run/netns/$RIG_NS" ] || [ -e /sys/class/net/kh0 ]; then
        _rig_err "netns $RIG_NS or link kh0 already exists (another rig is up?)"
        return 1
    fi
    mkdir -p "$dir" || { _rig_err "cannot create $dir"; return 1; }
    [[ "$dir" = /* ]] || dir=$PWD/$dir
    RIG_DIR=$dir
    rm -f "$dir/.ctl" "$dir/.verdict"
    for f in dns.log srv.log udp.log loop.log hostaddr.log timing.log rigd.err; do : > "$dir/$f"; done
    rm -f "$dir/flag"
    _rig_spawn && _rig_setup && _rig_go && return 0
    rig_down
    return 1
}

# _rig_setup: certificates (in the background: openssl is slow to start on
# the emulated host), network, resolver.
_rig_setup() {
    local certs st=0
    _rig_certs &
    certs=$!
    _rig_net && _rig_resolv || st=1
    wait "$certs" || st=1
    return $st
}

# _rig_kill PID: TERM, then KILL after 2 s; only if PID is still rigd.py.
# Waits until it is gone (or a zombie): its sockets are closed by then.
_rig_kill() {
    local pid=$1 i state argv=()
    { mapfile -d '' argv < "/proc/$pid/cmdline"; } 2>/dev/null || return 0
    [[ "${argv[*]}" = *rigd.py* ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do
        { read -r _ _ state _ < "/proc/$pid/stat"; } 2>/dev/null || return 0
        [ "$state" != Z ] || return 0
        [ "$i" != 20 ] || kill -KILL "$pid" 2>/dev/null || true
        sleep 0.1
    done
}

# rig_down: stops rigd, removes the veth (and with it the routes) and the
# namespace, restores /etc/resolv.conf. Leaves DIR alone. Safe to call twice.
rig_down() {
    [ -n "$RIG_DIR" ] || return 0
    _rig_pipes_close
    [ -z "$RIG_PID" ] || _rig_kill "$RIG_PID"
    RIG_PID=
    # No process substitution: the emulated host has no /dev/fd.
    local pids left=()
    pids=$(ip netns pids "$RIG_NS" 2>/dev/null) || true
    [ -z "$pids" ] || mapfile -t left <<< "$pids"
    if [ ${#left[@]} -gt 0 ]; then
        echo "rig_down: killing processes left in netns $RIG_NS: ${left[*]}" >&2
        kill -KILL "${left[@]}" 2>/dev/null || true
    fi
    # kh0 first: deleting it is synchronous, a namespace's teardown is not.
    ip link del kh0 2>/dev/null || true
    ip netns del "$RIG_NS" 2>/dev/null || true
    [ -z "$RIG_RESOLV" ] || _rig_resolv_restore
    RIG_DIR=
    return 0
}

# rig_wait_log FILE REGEX [SECONDS]: waits (default 5 s) until a line of FILE
# matches the extended REGEX. Servers log a connection when it closes, which
# may be a moment after the client has seen it end.
rig_wait_log() {
    local file=$1 re=$2 i
    for ((i = 0; i < ${3:-5} * 10; i++)); do
        grep -Eq -- "$re" "$file" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
