#!/usr/bin/env bash
# Checks the test network rig itself, from the host netns, then that rig_down
# leaves nothing behind. Run as root where the rig may change the network:
#   scripts/with-kvm -- bash tests/integration/netrig/selfcheck.sh
set -uo pipefail
source "$(dirname "$0")/rig.sh"

n=0
fails=0
ok()     { n=$((n + 1)); echo "ok $n - $*"; }
not_ok() { n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $*"; }
# check DESC CMD...: passes when CMD exits 0.
check()  { local d=$1; shift; if "$@"; then ok "$d"; else not_ok "$d"; fi; }
# expect DESC WANT GOT
expect() { if [ "$2" = "$3" ]; then ok "$1"; else not_ok "$1 (want '$2', got '$3')"; fi; }

dir=$(mktemp -d /tmp/netrig.XXXXXX)
resolv_before=$(cat /etc/resolv.conf 2>/dev/null)
trap 'rig_down; rm -rf "$dir"' EXIT

# since T0: seconds elapsed since T0 (a date +%s.%N), one decimal.
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

t0=$(date +%s.%N)
if ! rig_up "$dir"; then
    not_ok "rig_up"
    exit 1
fi
ok "rig_up took $(since "$t0") s"
pid=$RIG_PID

# curl, never through a proxy from the environment.
c() { curl -sS --noproxy '*' --max-time 10 "$@"; }

# --- HTTP and HTTPS by name, over IPv4 and IPv6 ----------------------------------
expect "https://allowed.test/ over IPv4" "hello from 11.0.2.10 host=allowed.test sni=allowed.test" \
    "$(c -4 --cacert "$dir/ca.pem" https://allowed.test/)"
expect "https://allowed.test/ over IPv6" "hello from 2a00:11::10 host=allowed.test sni=allowed.test" \
    "$(c -6 --cacert "$dir/ca.pem" https://allowed.test/)"
expect "http://denied.test/" "hello from 11.0.2.20 host=denied.test sni=-" "$(c -4 http://denied.test/)"
expect "https://cname.test/ (CNAME, SAN)" "hello from 11.0.2.10 host=cname.test sni=cname.test" \
    "$(c -4 --cacert "$dir/ca.pem" https://cname.test/)"
expect "http://169.254.169.254/ (fake metadata)" "hello from 169.254.169.254 host=169.254.169.254 sni=-" \
    "$(c http://169.254.169.254/)"
expect "HTTP keep-alive: two requests, one connection" \
    "hello from 11.0.2.30 host=other.test sni=-
hello from 11.0.2.30 host=other.test sni=-" \
    "$(c http://other.test/a http://other.test/b)"

# --- DNS through the host's resolver (glibc getaddrinfo) ---------------------------
got=$("$RIG_PYTHON" -I - <<'EOF'
import socket
def addrs(name, fam):
    try:
        return ",".join(sorted({a[4][0] for a in socket.getaddrinfo(name, 80, fam, socket.SOCK_STREAM)}))
    except socket.gaierror as e:
        return f"error:{e.errno}"
for name, fam in [("rebind.test", socket.AF_INET), ("rebind6.test", socket.AF_INET6),
                  ("allowed.test", socket.AF_INET6), ("cname.test", socket.AF_INET),
                  ("nosuch.test", socket.AF_INET), ("10-1-2-3.ip.test", socket.AF_INET),
                  ("64xff9bxxa00x1.ipp.test", socket.AF_INET6), ("flag.test", socket.AF_INET)]:
    print(name, addrs(name, fam))
EOF
)
expect "getaddrinfo: rebind.test -> 127.0.0.1" "rebind.test 127.0.0.1" "$(sed -n 1p <<< "$got")"
expect "getaddrinfo: rebind6.test -> ::1" "rebind6.test ::1" "$(sed -n 2p <<< "$got")"
expect "getaddrinfo: allowed.test AAAA" "allowed.test 2a00:11::10" "$(sed -n 3p <<< "$got")"
expect "getaddrinfo: cname.test -> 11.0.2.10" "cname.test 11.0.2.10" "$(sed -n 4p <<< "$got")"
expect "getaddrinfo: nosuch.test is NXDOMAIN" "nosuch.test error:$("$RIG_PYTHON" -I -c 'import socket; print(socket.EAI_NONAME)')" \
    "$(sed -n 5p <<< "$got")"
expect "getaddrinfo: 10-1-2-3.ip.test spells 10.1.2.3" "10-1-2-3.ip.test 10.1.2.3" "$(sed -n 6p <<< "$got")"
expect "getaddrinfo: 64xff9bxxa00x1.ipp.test spells 64:ff9b::a00:1" "64xff9bxxa00x1.ipp.test 64:ff9b::a00:1" \
    "$(sed -n 7p <<< "$got")"
expect "getaddrinfo: flag.test is NXDOMAIN without DIR/flag" "flag.test error:$("$RIG_PYTHON" -I -c 'import socket; print(socket.EAI_NONAME)')" \
    "$(sed -n 8p <<< "$got")"
touch "$dir/flag"
expect "getent: flag.test resolves once DIR/flag exists" "11.0.2.10" "$(getent ahostsv4 flag.test | awk 'NR == 1 { print $1 }')"
check "dns.log records 'rebind.test A' with id, port, length, time" \
    grep -qE '^rebind\.test A id=[0-9]+ port=[0-9]+ len=[0-9]+ t=[0-9.]+$' "$dir/dns.log"
check "dns.log records 'rebind6.test AAAA'" grep -qE '^rebind6\.test AAAA ' "$dir/dns.log"
# Forgeries: what each *.forge.test query gets back, in order (source port, answer).
got=$("$RIG_PYTHON" -I - <<'EOF2'
import socket, struct
def q(name, qtype=1):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1)
    s.bind(("198.51.100.1", 0))
    s.sendto(struct.pack("!HHHHHH", 0x1234, 0x100, 1, 0, 0, 0) + b"".join(
        bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0" + struct.pack("!HH", qtype, 1),
        ("192.0.2.53", 53))
    out = []
    while True:
        try:
            m, peer = s.recvfrom(4096)
        except socket.timeout:
            return " ".join(out)
        ident, an = struct.unpack_from("!H", m)[0], struct.unpack_from("!H", m, 6)[0]
        out.append(f"{peer[1]}:{ident:x}:{socket.inet_ntoa(m[-4:]) if an else '-'}")
for how in ("id", "port", "q", "type", "only"):
    print(how, q(f"{how}.forge.test"))
EOF2
)
expect "forge: wrong ID, then the real answer" "id 53:1335:6.6.6.6 53:1234:11.0.2.10" "$(sed -n 1p <<< "$got")"
expect "forge: from port 5353, then the real answer" "port 5353:1234:6.6.6.6 53:1234:11.0.2.10" "$(sed -n 2p <<< "$got")"
expect "forge: wrong question, then the real answer" "q 53:1234:6.6.6.6 53:1234:11.0.2.10" "$(sed -n 3p <<< "$got")"
expect "forge: wrong type, then the real answer" "type 53:1234:6.6.6.6 53:1234:11.0.2.10" "$(sed -n 4p <<< "$got")"
expect "forge: only a forgery" "only 53:9234:6.6.6.6" "$(sed -n 5p <<< "$got")"

# --- UDP and the bare-IP TCP ports --------------------------------------------------
expect "UDP echo on 203.0.113.7:9999" "echo from 203.0.113.7 hi" \
    "$(echo hi | socat -t 3 - UDP:203.0.113.7:9999)"
expect "UDP echo on 192.0.2.10:9999" "echo from 192.0.2.10 hi" \
    "$(echo hi | socat -t 3 - UDP:192.0.2.10:9999)"
expect "UDP echo on 11.0.2.10:9999" "echo from 11.0.2.10 hi" \
    "$(echo hi | socat -t 3 - UDP:11.0.2.10:9999)"
check "udp.log records the datagram" \
    rig_wait_log "$dir/udp.log" '^udp 203\.0\.113\.7:9999 from 198\.51\.100\.1:[0-9]+ bytes=3$'
expect "TCP 203.0.113.7:8080" "port 8080" "$(socat -t 3 - TCP:203.0.113.7:8080 < /dev/null)"
expect "TCP 203.0.113.7:8081" "port 8081" "$(socat -t 3 - TCP:203.0.113.7:8081 < /dev/null)"

# --- services in the host netns -----------------------------------------------------
expect "host loopback 127.0.0.1:8088" "port 8088" "$(socat -t 3 - TCP:127.0.0.1:8088 < /dev/null)"
check "loop.log records it" rig_wait_log "$dir/loop.log" '^accept 127\.0\.0\.1:8088 from 127\.0\.0\.1:[0-9]+ bytes_in=0$'
expect "host veth address 198.51.100.1:8089" "port 8089" "$(socat -t 3 - TCP:198.51.100.1:8089 < /dev/null)"
check "hostaddr.log records it" rig_wait_log "$dir/hostaddr.log" '^accept 198\.51\.100\.1:8089 from '
expect "every host address answers on 8089 (IPv6 too)" "port 8089" "$(socat -t 3 - 'TCP:[2001:db8:1::1]:8089' < /dev/null)"
check "hostaddr.log records that" rig_wait_log "$dir/hostaddr.log" '^accept \[2001:db8:1::1\]:8089 from '

# --- srv.log: bytes received per connection, even when reset ------------------------
req=$'GET /exact HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n'
printf '%s' "$req" | socat -t 3 - TCP:11.0.2.30:80 > /dev/null
check "srv.log: plain HTTP request, bytes_in=${#req}" \
    rig_wait_log "$dir/srv.log" "^accept 11\.0\.2\.30:80 from 198\.51\.100\.1:[0-9]+ bytes_in=${#req}\$"
check "timing.log: the same connection, first and last byte times" \
    rig_wait_log "$dir/timing.log" "^conn 11\.0\.2\.30:80 from 198\.51\.100\.1:[0-9]+ bytes_in=${#req} first=[0-9.]+ last=[0-9.]+\$"
check "srv.log: the HTTPS connection got bytes" \
    rig_wait_log "$dir/srv.log" '^accept 11\.0\.2\.10:443 from 198\.51\.100\.1:[0-9]+ bytes_in=[1-9][0-9]*$'
check "srv.log: the IPv6 connection, bracketed" \
    rig_wait_log "$dir/srv.log" '^accept \[2a00:11::10\]:443 from \[2001:db8:1::1\]:[0-9]+ bytes_in=[1-9]'
"$RIG_PYTHON" -I - <<'EOF'
# Two connections ended by a reset (SO_LINGER 0): one after no bytes, one after 5.
import socket, struct, time
for addr, data in ((("11.0.2.30", 443), b""), (("203.0.113.7", 80), b"HELLO")):
    s = socket.create_connection(addr, timeout=5)
    if data:
        s.sendall(data)
        time.sleep(0.2)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
EOF
check "srv.log: reset with no payload: bytes_in=0" \
    rig_wait_log "$dir/srv.log" '^accept 11\.0\.2\.30:443 from 198\.51\.100\.1:[0-9]+ bytes_in=0$'
check "srv.log: reset after 5 bytes: bytes_in=5" \
    rig_wait_log "$dir/srv.log" '^accept 203\.0\.113\.7:80 from 198\.51\.100\.1:[0-9]+ bytes_in=5$'
check "no log holds the readiness probe's connections" \
    bash -c "! grep -qE '198\.51\.100\.3|2001:db8:1::3|127\.0\.0\.2' '$dir'/*.log"

# --- a large download ---------------------------------------------------------------
size=$((64 << 20))
t0=$(date +%s.%N)
got=$(c -o /dev/null -w '%{size_download}' "http://allowed.test/bytes/$size")
expect "GET /bytes/$size streams $size bytes ($(since "$t0") s)" "$size" "$got"
size=$((16 << 20))
t0=$(date +%s.%N)
got=$(c --cacert "$dir/ca.pem" -o /dev/null -w '%{size_download}' "https://allowed.test/bytes/$size")
expect "HTTPS GET /bytes/$size streams $size bytes ($(since "$t0") s)" "$size" "$got"
expect "GET /bytes/too-big is refused" 400 "$(c -o /dev/null -w '%{http_code}' "http://allowed.test/bytes/$((201 << 20))")"

# --- idle servers use no CPU --------------------------------------------------------
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
sleep 1
before=$(cpu)
sleep 3
after=$(cpu)
check "rigd idles at 0% CPU (ticks over 3 s: $((after - before)))" test $((after - before)) -le 1

# On failure, show what the servers saw.
if [ "$fails" != 0 ]; then
    for f in "$dir"/*.log "$dir/rigd.err"; do sed "s|^|# ${f##*/}: |" "$f"; done
fi

# --- teardown -----------------------------------------------------------------------
# A process a test left in kinet: rig_down kills it (and says so on stderr).
ip netns exec kinet sleep 300 &
stray=$!
disown "$stray"
for _ in $(seq 50); do ip netns pids kinet | grep -qx "$stray" && break; sleep 0.1; done
rig_down 2> "$dir/down.err"
check "rig_down: kills a process left in kinet" bash -c "! kill -0 $stray 2>/dev/null || grep -q '^State:.*Z' /proc/$stray/status"
check "rig_down: says so" grep -q "^rig_down: killing processes left in netns kinet: $stray\$" "$dir/down.err"
check "rig_down: netns kinet is gone" test ! -e /run/netns/kinet
check "rig_down: veth kh0 is gone" bash -c '! ip link show kh0 > /dev/null 2>&1'
check "rig_down: routes are gone" test -z "$(ip route show 192.0.2.0/24; ip route show 11.0.2.0/24; ip -6 route show 2001:db8::/48; ip -6 route show 64:ff9b::/96; ip route show default metric 4242)"
check "rig_down: rigd.py is gone" bash -c "! kill -0 $pid 2>/dev/null || grep -q '^State:.*Z' /proc/$pid/status"
check "rig_down: no process left from the rig" bash -c "! pgrep -f 'rigd\.py' > /dev/null"
expect "rig_down: /etc/resolv.conf restored" "$resolv_before" "$(cat /etc/resolv.conf 2>/dev/null)"
check "rig_down: a second call is harmless" rig_down

# --- failures: one line, nothing left behind ------------------------------------------
# nothing_left: no namespace, veth, rigd or changed resolv.conf.
nothing_left() {
    [ ! -e /run/netns/kinet ] && [ ! -e /sys/class/net/kh0 ] && ! pgrep -f 'rigd\.py' > /dev/null &&
        [ "$(cat /etc/resolv.conf 2>/dev/null)" = "$resolv_before" ]
}
# fails_cleanly DESC REGEX [CHECK...]: rig_up must fail with status 1 and one
# line matching REGEX, and then CHECK (default: nothing_left) must pass.
fails_cleanly() {
    local desc=$1 re=$2 out st
    shift 2
    [ $# -gt 0 ] || set -- nothing_left
    out=$(rig_up "$dir/fail" 2>&1 > /dev/null)
    st=$?
    if [ "$st" = 1 ] && [ "$(wc -l <<< "$out")" = 1 ] && [[ "$out" =~ ^rig_up:\ .*$re ]] && "$@"; then
        ok "rig_up fails cleanly: $desc"
    else
        not_ok "rig_up fails cleanly: $desc (status $st, '$out')"
    fi
}
socat TCP-LISTEN:8088,bind=127.0.0.1,reuseaddr - < /dev/null > /dev/null 2>&1 &
squatter=$!
sleep 0.5
fails_cleanly "a server's port is taken" 'cannot start the servers: .*Address already in use'
kill "$squatter" 2>/dev/null
wait "$squatter" 2>/dev/null
RIG_PYTHON=/bin/false fails_cleanly "rigd does not start" 'rigd.py gave no verdict'
ip netns add kinet
fails_cleanly "netns kinet exists (and is left alone)" 'netns kinet or link kh0 already exists' \
    test -e /run/netns/kinet
ip netns del kinet
check "after the failures, nothing is left" nothing_left

echo "1..$n"
[ "$fails" = 0 ]
