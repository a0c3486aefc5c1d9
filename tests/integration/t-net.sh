#!/usr/bin/env bash
# Network allowlists end to end (issue 6): kiln run --allow with kiln-net,
# against a fake internet (tests/integration/netrig: its own namespace, DNS,
# HTTP/HTTPS with a test CA, UDP and line servers). Every case of the issue is
# one line of one guest run (tests/integration/net_guest.sh), judged here from
# the guest's view, the servers' logs and kiln-net's audit log. Runs where
# /dev/kvm works, as root (the rig makes namespaces and veths).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/netrig/rig.sh"

KILN="$B/kiln"
TINY="${KILN_TEST_TINY:-$B/images/tiny.img}"
DEBIAN="${KILN_TEST_DEBIAN:-$B/images/debian.img}"
work=$(mktemp -d /tmp/t-net.XXXXXX)
watcher=
cleanup() {
    [ -z "$watcher" ] || kill "$watcher" 2>/dev/null
    ip link del kd0 2>/dev/null
    rig_down
    # What to look at when a case failed (the emulated host's /tmp vanishes).
    rm -rf "$B/t-net-last" && mkdir -p "$B/t-net-last" &&
        cp "$work"/*.log "$work"/*.out "$work"/*.err "$work"/rig/*.log "$B/t-net-last/" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
if ! rig_up "$work/rig" 2>"$work/rig.err"; then
    not_ok "test rig up: $(head -n1 "$work/rig.err")"
    exit 1
fi
ok "test rig up (fake internet in its own namespace)"
ca="$work/rig/ca.pem"
trust=(--put "$ca:/tmp/ca.pem" -e CURL_CA_BUNDLE=/tmp/ca.pem)
# A guest that triple-faulted (seen rarely, only inside the emulated host's
# nested SVM, with and without networking, and QEMU's guests oops there too)
# is run once more; every such retry is listed at the end. Nothing else is.
krun() {
    local e rc
    e=$(mktemp "$work/krun.XXXXXX")
    timeout -s KILL 600 "$KILN" run "$@" 2>"$e"; rc=$?
    if [ $rc = 125 ] && grep -q 'triple fault' "$e"; then
        echo "$* :: $(tail -n1 "$e")" >> "$work/retries"
        timeout -s KILL 600 "$KILN" run "$@" 2>"$e"; rc=$?
    fi
    cat "$e" >&2
    rm -f "$e"
    return $rc
}
procs() { pgrep -x "$1" | wc -l; }

PY=${RIG_PYTHON:-python3}  # a python3 that starts fast inside the emulated host
# audit_has DESC KEY=VALUE...: a line of the audit log must have all of these
# (VALUE may list alternatives: a|b). Collected, then judged by audit_verify in
# one python run.
audit_has() { printf '%s\n' "$*" >> "$work/audit.checks"; }
audit_verify() {
    local verdict desc
    # (No process substitution: the emulated host has no /dev/fd.)
    "$PY" - "$work/audit.log" "$work/audit.checks" > "$work/audit.verdicts" <<'PY'
import json, shlex, sys
try:
    lines = [json.loads(l) for l in open(sys.argv[1])]
    print("ok\tthe audit log is JSON lines (%d)" % len(lines))
except ValueError as e:
    lines = []
    print("not ok\tthe audit log is JSON lines (%s)" % e)
for check in open(sys.argv[2]):
    desc, *pairs = shlex.split(check)
    want = dict(p.split("=", 1) for p in pairs)
    hit = any(all(str(e.get(k)) in v.split("|") for k, v in want.items()) for e in lines)
    print("%s\t%s%s" % ("ok" if hit else "not ok", desc, "" if hit else " (no line with %s)" % " ".join(pairs)))
PY
    while IFS=$'\t' read -r verdict desc; do
        if [ "$verdict" = ok ]; then ok "audit: $desc"; else not_ok "audit: $desc"; fi
    done < "$work/audit.verdicts"
}
# case NAME: the guest's "rc=N out=..." for that case.
case_of() { sed -n "s/^R $1 //p" "$work/guest.out" | head -n1; }
case_rc() { case_of "$1" | sed -n 's/^rc=\([0-9]*\).*/\1/p'; }
case_out() { case_of "$1" | sed 's/^rc=[0-9]* out=//'; }

# --- the done-when commands -----------------------------------------------------------
out=$(krun --image "$DEBIAN" --allow allowed.test "${trust[@]}" -- curl -s https://allowed.test/ 2>"$work/e1")
expect_eq "kiln run --allow allowed.test -- curl -s https://allowed.test/ succeeds" \
    "0 hello from 11.0.2.10 host=allowed.test sni=allowed.test" "$? $out"
krun --image "$DEBIAN" --allow allowed.test "${trust[@]}" -- curl -s https://denied.test/ >/dev/null 2>"$work/e2"
rc=$?
check "kiln run --allow allowed.test -- curl -s https://denied.test/ fails (rc $rc)" test "$rc" != 0 -a "$rc" -lt 124

echo "# t-net: ${SECONDS}s"
# --- one run, every case ---------------------------------------------------------------
# The host takes on 150 IPv4 and 150 IPv6 addresses (a dummy interface, as
# a Kubernetes or Docker host does), and two more once kiln-net runs; then
# flag.test resolves, which the guest waits for.
modprobe dummy 2>/dev/null
{
    echo "link add kd0 type dummy"
    for i in $(seq 0 149); do
        echo "addr add 11.9.$((i / 200)).$((i % 200 + 1))/32 dev kd0"
        printf 'addr add 2a00:65::%x/128 dev kd0 nodad\n' $((i + 1))
    done
    echo "link set kd0 up"
} | ip -batch - 2> "$work/dummy.err"
check "the host has 300 more addresses ($(ip -o addr show dev kd0 2>/dev/null | wc -l) on kd0)" \
    test "$(ip -o addr show dev kd0 2>/dev/null | wc -l)" -ge 300
(
    for _ in $(seq 1500); do pgrep -x kiln-net > /dev/null && break; sleep 0.2; done
    sleep 1
    ip addr add 11.9.7.7/32 dev kd0 && ip addr add 2a00:65::7777/128 dev kd0 nodad &&
        touch "$work/rig/flag"
) &
watcher=$!
rules=(--allow allowed.test --allow '*.allowed.test' --allow rebind.test --allow rebind6.test
       --allow meta.test --allow '203.0.113.0/24:8080' --allow udp:192.0.2.10:9999
       --allow '*.ip.test' --allow '*.ipp.test;private' --allow '*.forge.test' --allow flag.test
       --allow '11.9.0.0/16:8089' --allow '[2a00:65::/64]:8089' --allow '198.51.100.0/24:8089'
       --allow '[2001:db8:1::/64]:8089' --allow '[64:ff9b::/96]:8089' --allow '[2002::/16]:8089'
       --allow '[2001::/32]:8089' --allow '192.0.2.0/24:80' --allow '0.0.0.0/0:81')
srv_before=$(wc -l < "$work/rig/srv.log")
dns_before=$(wc -l < "$work/rig/dns.log")
krun --image "$DEBIAN" "${rules[@]}" "${trust[@]}" --audit "$work/audit.log" --json \
    --put "$(dirname "$0")/net_guest.sh:/tmp/net_guest.sh" \
    --put "$(dirname "$0")/netrig/guest_probe.py:/tmp/guest_probe.py" -- bash /tmp/net_guest.sh \
    > "$work/guest.out" 2> "$work/guest.err"
krc=$?
expect_eq "the guest's case script ran (kiln run exit 0)" 0 "$krc"
# A failed run says why: kiln's own lines, then the last guest output.
[ "$krc" = 0 ] || { grep -v '^{' "$work/guest.err" | tail -n 20; tail -n 5 "$work/guest.out"; } | sed 's/^/# /'
wait "$watcher"
watcher=
sed -n '/^R /p' "$work/guest.out" | sed 's/^/# /'
json=$(tail -n1 "$work/guest.err")

expect_eq "HTTPS to an allowed name" "0 hello from 11.0.2.10 host=allowed.test sni=allowed.test" \
    "$(case_rc https) $(case_out https)"
expect_eq "HTTP to an allowed name" "0 hello from 11.0.2.10 host=allowed.test sni=-" \
    "$(case_rc http) $(case_out http)"
expect_eq "HTTPS to an allowed name over IPv6" \
    "0 hello from 2a00:11::10 host=allowed.test sni=allowed.test" "$(case_rc https6) $(case_out https6)"
expect_eq "a wildcard rule covers a subdomain" \
    "0 hello from 11.0.2.10 host=www.allowed.test sni=www.allowed.test" "$(case_rc wildcard) $(case_out wildcard)"
expect_eq "a name not allowed does not resolve (curl: 6)" 6 "$(case_rc denied_name)"
expect_eq "... nor through the libc resolver (getent: 2)" 2 "$(case_rc denied_lookup)"
expect_eq "a direct IP not allowed is reset (curl: 7)" 7 "$(case_rc direct_ip)"
expect_eq "... over IPv6 too" 7 "$(case_rc direct_ip6)"
expect_match "SNI spoofing (allowed IP, other SNI) is reset" '^(35|56) .*reset' "$(case_rc sni_spoof) $(case_out sni_spoof)"
expect_match "... over IPv6 too" '^(35|56) .*reset' "$(case_rc sni_spoof6) $(case_out sni_spoof6)"
expect_match "Host header spoofing is reset" '^56 .*reset' "$(case_rc host_spoof) $(case_out host_spoof)"
expect_match "... over IPv6 too" '^56 .*reset' "$(case_rc host_spoof6) $(case_out host_spoof6)"
expect_eq "DNS rebinding: an allowed name resolving to 127.0.0.1 gets no address" 2 "$(case_rc rebind_lookup)"
expect_eq "... and one resolving to ::1" 2 "$(case_rc rebind6_lookup)"
expect_eq "... and one resolving to the metadata address" 2 "$(case_rc meta_lookup)"
expect_eq "the metadata address is unreachable (curl: 7)" 7 "$(case_rc meta_ip)"
expect_eq "the gateway (the host) is unreachable" 7 "$(case_rc gateway)"
expect_eq "the host's own address is unreachable (a CIDR rule covers it)" 7 "$(case_rc host_addr)"
expect_eq "a CIDR rule with a port allows that port" "0 port 8080" "$(case_rc cidr_port) $(case_out cidr_port)"
check "... and no other port ($(case_out cidr_other_port | cut -c1-60))" test "$(case_rc cidr_other_port)" != 0
expect_eq "UDP allowed by a udp: rule is relayed" "0 echo from 192.0.2.10 kiln-udp" "$(case_rc udp_allowed) $(case_out udp_allowed)"
expect_match "UDP to a port no rule allows is dropped (no echo)" '^1 $' "$(case_rc udp_dropped) $(case_out udp_dropped)"
expect_match "ICMP echo is dropped" '^1 .*timed out' "$(case_rc ping) $(case_out ping)"

# Issue 11: non-public answers withheld unless the rule says ;private.
expect_eq "a name answered in a documentation range, no ;private: no address (curl: 6)" 6 "$(case_rc doc_withheld)"
expect_eq "... with ;private: reached" "0 hello from 192.0.2.10 host=192-0-2-10.ipp.test sni=-" \
    "$(case_rc doc_optin) $(case_out doc_optin)"
expect_eq "... and by a CIDR rule inside it" "0 hello from 192.0.2.10 host=192.0.2.10 sni=-" \
    "$(case_rc doc_cidr) $(case_out doc_cidr)"
# answer CASE WANT: the guest's DNS answer ("rcode=0 ADDRS", "-" for none).
answer() { expect_eq "DNS answer $1 ($3)" "0 rcode=0 $2" "$(case_rc "$1") $(case_out "$1")"; }
answer a_public 11.0.2.10 "a public address: kept"
answer a_private - "10.1.2.3 without ;private: withheld"
answer a_private_optin 10.1.2.3 "10.1.2.3 with ;private: kept"
answer a_cgnat - "100.64.1.1 (CGNAT): withheld"
answer a_bench - "198.18.0.1 (benchmarking): withheld"
answer a_doc - "192.0.2.10 (documentation): withheld"
answer a_doc_optin 192.0.2.10 "192.0.2.10 with ;private: kept"
answer a_ula - "fd12::1 (ULA): withheld"
answer a_reserved_optin - "127.0.0.1, even with ;private: withheld"
answer a_meta_optin - "169.254.169.254, even with ;private: withheld"
answer a_host_veth_optin - "the host's 198.51.100.1, even with ;private: withheld"
answer a_host_bcast_optin - "the host's subnet broadcast 198.51.100.255, even with ;private: withheld"
answer a_host_dummy - "the host's 11.9.0.7 (one of 300): withheld"
answer a_host_dummy6 - "the host's 2a00:65::7: withheld"
answer a_host_dummy_last - "the host's 11.9.0.150 (the 150th IPv4): withheld"
answer a_nat64_private - "64:ff9b::10.1.2.3: withheld"
answer a_nat64_loop_optin - "64:ff9b::127.0.0.1, even with ;private: withheld"
answer a_nat64_meta_optin - "64:ff9b::169.254.169.254, even with ;private: withheld"
answer a_nat64_host - "64:ff9b::11.9.0.7 (a host address): withheld"
answer a_nat64_public 64:ff9b::b00:20a "64:ff9b::11.0.2.10 (public): kept"
answer a_mapped_private - "::ffff:10.1.2.3: withheld"
answer a_mapped_loop_optin - "::ffff:127.0.0.1, even with ;private: withheld"
answer a_6to4_private - "6to4 of 10.1.2.3: withheld"
answer a_6to4_host - "6to4 of 11.9.0.7 (a host address): withheld"
answer a_teredo_loop_optin - "Teredo, client 127.0.0.1, even with ;private: withheld"
answer a_compat_meta_optin - "::169.254.169.254 (IPv4-compatible), even with ;private: withheld"
answer a_translated_optin - "::ffff:0:127.0.0.1 (IPv4-translated), even with ;private: withheld"
answer a_host_added - "11.9.7.7, added while the VM ran: withheld"
answer a_host_added6 - "2a00:65::7777, added while the VM ran: withheld"
for how in id port q type; do
    expect_eq "DNS: a forged reply (wrong $how) before the real one is ignored" "0 rcode=0 11.0.2.10" \
        "$(case_rc "forge_$how") $(case_out "forge_$how")"
done
expect_eq "DNS: only a forged reply: SERVFAIL, never the forged address" "0 rcode=2 -" \
    "$(case_rc forge_only) $(case_out forge_only)"
check "the guest never saw the forged address 6.6.6.6" bash -c "! grep -q '6\.6\.6\.6' '$work/guest.out'"
expect_eq "the host's new addresses were added while the VM ran" 0 "$(case_rc flag)"
for c in c_host_cidr4 c_host_cidr4_last c_host_cidr6 c_host_cidr6_last c_host_veth c_host_veth6 \
         c_host_bcast c_host_nat64 c_host_nat64_dummy c_host_6to4 c_host_teredo c_host_added c_host_added6; do
    expect_eq "connect: $c (a host address under a CIDR rule, or a translated form of one) is reset" \
        "1 refused" "$(case_rc $c) $(case_out $c)"
done
expect_eq "connect: 192.0.2.10:81 under 0.0.0.0/0:81 (non-public, rule not inside it) is reset" \
    "1 refused" "$(case_rc c_private_wide) $(case_out c_private_wide)"
# Upstream DNS questions: a fresh source port and a random ID each.
"$PY" - "$work/rig/dns.log" "$dns_before" > "$work/dnsids.out" <<'PY'
import re, sys
lines = open(sys.argv[1]).read().splitlines()[int(sys.argv[2]):]
seen = [(int(m.group(1)), int(m.group(2))) for m in (re.search(r" id=(\d+) port=(\d+) ", l) for l in lines) if m]
ports = {p for _, p in seen}
steps = sum(1 for (a, _), (b, _) in zip(seen, seen[1:]) if (b - a) & 0xFFFF in (1, 0xFFFF))
print(len(seen), len(ports), steps)
PY
read -r nq nports nsteps < "$work/dnsids.out"
check "the resolver saw $nq questions from $nports source ports, $nsteps sequential IDs" \
    test "${nq:-0}" -ge 30 -a "$((nports * 10))" -ge "$((nq * 9))" -a "$((nsteps * 20))" -le "${nq:-0}"

# What the servers saw: the denied connections reached them (a handshake)
# but not one byte; the host's loopback and address services saw nothing.
new_srv=$(tail -n +"$((srv_before + 1))" "$work/rig/srv.log")
check "denied HTTPS connections delivered 0 bytes to the server" \
    grep -q 'accept 11.0.2.10:443 .*bytes_in=0$' <<< "$new_srv"
check "denied HTTP connections delivered 0 bytes to the server" \
    grep -q 'accept 11.0.2.10:80 .*bytes_in=0$' <<< "$new_srv"
check "no connection ever reached denied.test's server" bash -c "! grep -q 'accept 11.0.2.20:' <<< \"\$1\"" _ "$new_srv"
check "the host's loopback service saw no connection" test ! -s "$work/rig/loop.log"
check "no host address (300 on kd0, the veth's, those added later) saw a connection" \
    test ! -s "$work/rig/hostaddr.log"
check "only the allowed UDP flow reached a UDP server" bash -c "! grep -q '203.0.113.7' '$work/rig/udp.log' && grep -q '192.0.2.10:9999' '$work/rig/udp.log'"

# The audit log: a line for every attempt.
audit_has "'DNS answer for an allowed name'" proto=dns name=allowed.test qtype=A verdict=allow answers=11.0.2.10
audit_has "'HTTPS allowed, pinned, with bytes'" proto=tcp dst=11.0.2.10 port=443 name=allowed.test verdict=allow reason=pinned
audit_has "'HTTP allowed'" proto=tcp dst=11.0.2.10 port=80 name=allowed.test verdict=allow
audit_has "'HTTPS over IPv6 allowed'" proto=tcp dst=2a00:11::10 port=443 verdict=allow
audit_has "'name refused'" proto=dns name=denied.test verdict=deny reason=no-rule
audit_has "'direct IP denied'" proto=tcp dst=11.0.2.20 port=80 verdict=deny reason=no-rule
audit_has "'direct IPv6 denied'" proto=tcp dst=2a00:11::20 port=80 verdict=deny reason=no-rule
audit_has "'SNI spoof denied'" proto=tcp dst=11.0.2.10 port=443 name=denied.test verdict=deny
audit_has "'SNI spoof over IPv6 denied'" proto=tcp dst=2a00:11::10 port=443 name=denied.test verdict=deny
audit_has "'Host spoof denied'" proto=tcp dst=11.0.2.10 port=80 name=denied.test verdict=deny
audit_has "'rebinding to 127.0.0.1 withheld'" proto=dns name=rebind.test verdict=allow reason=rebinding dropped=127.0.0.1 dropped_reasons=reserved-address
audit_has "'rebinding to ::1 withheld'" proto=dns name=rebind6.test reason=rebinding dropped=::1
audit_has "'metadata answer withheld'" proto=dns name=meta.test reason=rebinding dropped=169.254.169.254
audit_has "'metadata address denied'" proto=tcp dst=169.254.169.254 port=80 verdict=deny "reason=reserved-address|rebinding"
audit_has "'gateway denied'" proto=tcp dst=10.0.2.2 port=22 verdict=deny reason=host-address
audit_has "'host address denied'" proto=tcp dst=198.51.100.1 port=8089 verdict=deny reason=host-address
audit_has "'CIDR port allowed by its rule'" proto=tcp dst=203.0.113.7 port=8080 verdict=allow reason=rule "rule_text=203.0.113.0/24:8080"
audit_has "'CIDR other port denied'" proto=tcp dst=203.0.113.7 port=8081 verdict=deny
audit_has "'UDP allowed with bytes each way'" proto=udp dst=192.0.2.10 port=9999 verdict=allow bytes_up=8 bytes_down=29
audit_has "'UDP dropped'" proto=udp dst=203.0.113.7 port=9999 verdict=deny
audit_has "'ICMP dropped, counted'" proto=icmp verdict=deny reason=icmp
audit_has "'private answer withheld'" proto=dns name=10-1-2-3.ip.test reason=rebinding dropped=10.1.2.3 dropped_reasons=private-address
audit_has "'private answer kept with ;private'" proto=dns name=10-1-2-3.ipp.test reason=rule answers=10.1.2.3
audit_has "'host address answer withheld'" proto=dns name=11-9-0-7.ip.test dropped=11.9.0.7 dropped_reasons=host-address
audit_has "'host broadcast answer withheld'" proto=dns name=198-51-100-255.ipp.test dropped=198.51.100.255 dropped_reasons=host-address
audit_has "'NAT64 of a host address withheld'" proto=dns name=64xff9bxxb09x7.ip.test dropped=64:ff9b::b09:7 dropped_reasons=host-address
audit_has "'NAT64 of loopback withheld'" proto=dns name=64xff9bxx7f00x1.ipp.test dropped=64:ff9b::7f00:1 dropped_reasons=reserved-address
audit_has "'mapped private withheld'" proto=dns name=xxffffxa01x203.ip.test dropped_reasons=private-address
audit_has "'6to4 of a host address withheld'" proto=dns name=2002xb09x7xx1.ip.test dropped_reasons=host-address
audit_has "'Teredo of loopback withheld'" proto=dns name=2001x0x808x808xx80ffxfffe.ipp.test dropped_reasons=reserved-address
audit_has "'added host address withheld'" proto=dns name=11-9-7-7.ip.test dropped=11.9.7.7 dropped_reasons=host-address
audit_has "'host address under a CIDR rule denied'" proto=tcp dst=11.9.0.7 port=8089 verdict=deny reason=host-address
audit_has "'host IPv6 address under a CIDR rule denied'" proto=tcp dst=2a00:65::7 port=8089 verdict=deny reason=host-address
audit_has "'the 150th IPv6 host address denied'" proto=tcp dst=2a00:65::96 port=8089 verdict=deny reason=host-address
audit_has "'host broadcast denied'" proto=tcp dst=198.51.100.255 port=8089 verdict=deny reason=host-address
audit_has "'NAT64 of the host denied'" proto=tcp dst=64:ff9b::c633:6401 port=8089 verdict=deny reason=host-address
audit_has "'6to4 of the host denied'" proto=tcp dst=2002:c633:6401::1 port=8089 verdict=deny reason=host-address
audit_has "'Teredo of the host denied'" proto=tcp dst=2001:0:c633:6401::1 port=8089 verdict=deny reason=host-address
audit_has "'added host address denied'" proto=tcp dst=11.9.7.7 port=8089 verdict=deny reason=host-address
audit_has "'added host IPv6 address denied'" proto=tcp dst=2a00:65::7777 port=8089 verdict=deny reason=host-address
audit_has "'non-public address under a wide rule denied'" proto=tcp dst=192.0.2.10 port=81 verdict=deny reason=private-address
audit_has "'forged replies counted'" proto=dns verdict=error reason=mismatched-reply
for kind in $(case_out frames); do
    audit_has "'dropped frame: $kind'" verdict=deny reason="$kind" "proto=frame|icmp|tcp"
done
audit_verify
expect_match "--json: counts of allowed and blocked attempts" '"net":\{"allowed":[1-9][0-9]*,"blocked":[1-9][0-9]*,' "$json"
# The flood of dropped frames: a few lines a second, whatever the count.
flood=$(case_out flood)
"$PY" - "$work/audit.log" "$flood" > "$work/flood.out" <<'PY'
import json, re, sys
sent = int(re.search(r"sent=(\d+)", sys.argv[2]).group(1))
secs = float(re.search(r"seconds=([\d.]+)", sys.argv[2]).group(1))
lines = [json.loads(l) for l in open(sys.argv[1])]
drops = [e for e in lines if "count" in e and e.get("reason") != "mismatched-reply"]
print(sent, len(drops), sum(e["count"] for e in drops), int(13 * (secs + 4)) + 40)
PY
read -r fsent flines fcount fbound < "$work/flood.out"
check "a flood of ${fsent:-?} dropped frames: ${flines:-?} audit lines (at most ${fbound:-?}) counting ${fcount:-?}" \
    test "${fsent:-0}" -ge 100000 -a "${flines:-99999}" -le "${fbound:-0}" -a "$((${fcount:-0} * 10))" -ge "$((${fsent:-1} * 9))"
check "the audit log stays small ($(wc -c < "$work/audit.log") bytes)" test "$(wc -c < "$work/audit.log")" -lt 200000
ip link del kd0 2>/dev/null

echo "# t-net: ${SECONDS}s"
# --- bandwidth limit, and kiln-net's walls while it runs --------------------------------
# Every byte the guest sends out passes --net-rate, measured where it lands:
# 16 connections holding 16 KB first flights each (released through the
# bucket once the Host is seen), then a flood of long DNS names under an
# allowed wildcard (upstream bytes count), then a download.
RATE=32768
timing_before=$(wc -l < "$work/rig/timing.log")
dns_before=$(wc -l < "$work/rig/dns.log")
krun --image "$DEBIAN" --allow rate.test:80 --allow '*.flood.test' --allow 192.0.2.10:80 \
    --net-rate 32K --dns-rate 100000 --json \
    --put "$(dirname "$0")/netrig/guest_probe.py:/tmp/guest_probe.py" -- \
    sh -c 'python3 /tmp/guest_probe.py rate; s=$(cut -d" " -f1 /proc/uptime); n=$(curl -s http://192.0.2.10/bytes/262144 | wc -c); e=$(cut -d" " -f1 /proc/uptime); echo "$n $s $e"' \
    > "$work/rate.out" 2> "$work/rate.err" &
kpid=$!
net_pid=
for _ in $(seq 300); do
    net_pid=$(pgrep -x kiln-net | head -n1)
    [ -n "$net_pid" ] && grep -q '^Seccomp:.*2' "/proc/$net_pid/status" 2>/dev/null && break
    sleep 0.2
done
if [ -n "$net_pid" ]; then
    st=$(cat "/proc/$net_pid/status")
    expect_match "kiln-net runs under a seccomp filter" $'Seccomp:\t2' "$st"
    expect_match "kiln-net has no_new_privs" $'NoNewPrivs:\t1' "$st"
    expect_match "kiln-net is uid 65534" $'Uid:\t65534\t65534\t65534' "$st"
    expect_match "kiln-net has no capabilities" $'CapEff:\t0000000000000000' "$st"
    expect_eq "kiln-net sees no host files (its root holds only its socket)" "fwd.sock" \
        "$(ls "/proc/$net_pid/root" 2>&1 | tr '\n' ' ' | sed 's/ $//')"
    expect_eq "kiln-net stays in the host's network namespace (it is the egress)" \
        "$(readlink /proc/self/ns/net)" "$(readlink "/proc/$net_pid/ns/net")"
    vmm_ns=$(readlink "/proc/$(pgrep -x kiln-vmm | tail -n1)/ns/net" 2>/dev/null)
    check "the VMM's network namespace is not the host's ($vmm_ns)" test -n "$vmm_ns" -a \
        "$vmm_ns" != "$(readlink /proc/self/ns/net)"
else
    not_ok "kiln-net not seen running under seccomp"
fi
wait $kpid
sed -n '/^R /p' "$work/rate.out" | sed 's/^/# /'
expect_match "16 connections with 16 KB first flights were all answered" '^R first_flights rc=0 ' \
    "$(grep '^R first_flights' "$work/rate.out")"
expect_match "the DNS flood ran" '^R dns_flood rc=0 out=sent=[0-9]{3,}' "$(grep '^R dns_flood' "$work/rate.out")"
"$PY" - "$work/rig/timing.log" "$timing_before" "$work/rig/dns.log" "$dns_before" "$RATE" > "$work/rates.out" <<'PY'
import re, sys
rate = int(sys.argv[5])
conns = [l for l in open(sys.argv[1]).read().splitlines()[int(sys.argv[2]):] if l.startswith("conn 11.0.2.40:80 ")]
got = [(int(re.search(r"bytes_in=(\d+)", l).group(1)), float(re.search(r"first=([\d.]+)", l).group(1)),
        float(re.search(r"last=([\d.]+)", l).group(1))) for l in conns]
total = sum(b for b, _, _ in got)
span = max(l for _, _, l in got) - min(f for _, f, _ in got) if got else 0
print(len(got), total, "%.2f" % span, "%.0f" % (total / span if span else 0))
qs = [l for l in open(sys.argv[3]).read().splitlines()[int(sys.argv[4]):] if ".flood.test A " in l]
lens = [(int(re.search(r" len=(\d+)", l).group(1)), float(re.search(r" t=([\d.]+)", l).group(1))) for l in qs]
total = sum(n for n, _ in lens)
span = max(t for _, t in lens) - min(t for _, t in lens) if lens else 0
print(len(lens), total, "%.2f" % span, "%.0f" % (total / span if span else 0))
PY
{ read -r up_conns up_bytes up_span up_rate; read -r dq dq_bytes dq_span dq_rate; } < "$work/rates.out"
lo=$((RATE * 8 / 10)) hi=$((RATE * 12 / 10))
check "--net-rate 32K, 16 x 16 KB first flights: the server got $up_bytes bytes on $up_conns connections in $up_span s: $up_rate B/s (within $lo..$hi)" \
    test "${up_conns:-0}" = 16 -a "${up_rate:-0}" -ge $lo -a "${up_rate:-0}" -le $hi
check "--net-rate 32K, DNS flood: the resolver got $dq_bytes bytes in $dq questions over $dq_span s: $dq_rate B/s (within $lo..$hi)" \
    test "${dq:-0}" -ge 100 -a "${dq_rate:-0}" -ge $lo -a "${dq_rate:-0}" -le $hi
line=$(grep -v '^R ' "$work/rate.out" | tail -n1)
read -r n s e <<< "$line"
expect_eq "--net-rate: the download completes" 262144 "$n"
# A lower bound only (emulation can only make it slower): 256 KiB at 32 KiB/s
# after a burst of 6.4 KiB takes at least 7 s.
took=$(awk -v s="$s" -v e="$e" 'BEGIN { printf "%.2f", e - s }')
check "--net-rate 32K: 256 KiB took at least 7 s (took $took s)" awk -v t="$took" 'BEGIN { exit !(t >= 7.0) }'


echo "# t-net: ${SECONDS}s"
# --- default deny: no --allow, no network device ----------------------------------------
# Watched while it runs: a VMM is seen, kiln-net never.
krun --image "$TINY" -- sh -c 'cat /proc/net/dev; sleep 3' > "$work/nodev.out" 2> "$work/nodev.err" &
kpid=$!
seen_vmm=0 seen_net=0
while kill -0 $kpid 2>/dev/null; do
    [ "$(procs kiln-vmm)" != 0 ] && seen_vmm=1
    [ "$(procs kiln-net)" != 0 ] && seen_net=1
    sleep 0.2
done
wait $kpid
out=$(cat "$work/nodev.out")
check "without --allow the guest has no network device (only lo)" \
    bash -c "grep -q 'lo:' <<< \"\$1\" && ! grep -qv -e 'lo:' -e '|' <<< \"\$1\"" _ "$out"
expect_eq "... and no kiln-net ran beside its VMM" "1 0" "$seen_vmm $seen_net"

echo "# t-net: ${SECONDS}s"
# --- kiln-net killed mid-run: the run fails, nothing is left ---------------------------
krun --image "$TINY" --allow 192.0.2.10 -- sleep 60 > /dev/null 2> "$work/kill.err" &
kpid=$!
for _ in $(seq 300); do pgrep -x kiln-net >/dev/null && grep -q '^Seccomp:.*2' "/proc/$(pgrep -x kiln-net | head -n1)/status" 2>/dev/null && break; sleep 0.2; done
sleep 2
pkill -KILL -x kiln-net
wait $kpid
rc=$?
expect_eq "kiln-net SIGKILLed: kiln run exits 125" 125 "$rc"
expect_match "... saying the network process died" 'network process \(kiln-net\) died' "$(cat "$work/kill.err")"
sleep 1
expect_eq "... and no VMM is left" 0 "$(procs kiln-vmm)"
expect_eq "... and no kiln-net is left" 0 "$(procs kiln-net)"

echo "# t-net: ${SECONDS}s"
# --- bad input: refused before anything boots -------------------------------------------
for bad in '10.0.0.1/8' 'bad..name' '*.' 'udp:example.com' '1.2.3.4:0' '[::1]:70000'; do
    err=$("$KILN" run --image "$TINY" --allow "$bad" -- true 2>&1); rc=$?
    expect_eq "--allow '$bad' is refused with exit 2" "2 1" "$rc $(printf '%s\n' "$err" | wc -l)"
done
err=$("$KILN" run --image "$TINY" --audit /nonexistent/dir/a.log --allow 1.2.3.4 -- true 2>&1)
expect_eq "an --audit path that cannot be created is refused (exit 2)" 2 "$?"
err=$("$KILN" run --image "$TINY" --net-rate 12 --allow 1.2.3.4 -- true 2>&1)
expect_eq "a --net-rate below 4K is refused (exit 2)" 2 "$?"
err=$("$KILN" run --image "$TINY" --audit "$work/x.log" -- true 2>&1)
expect_eq "--audit without --allow is refused (exit 2)" 2 "$?"
expect_eq "no VMM was started by bad input" 0 "$(procs kiln-vmm)"

if [ -s "$work/retries" ]; then
    sed 's/^/# retried after a triple fault: /' "$work/retries"
fi
done_testing
