# Guest side of t-net.sh (run by bash in the Debian image): one line per case,
# "R NAME rc=N out=FIRST-200-CHARS". The host side judges them.
r() {
    name=$1; shift
    out=$("$@" 2>&1); rc=$?
    echo "R $name rc=$rc out=$(printf '%s' "$out" | tr '\n' ' ' | cut -c1-200)"
}
c() { curl -sS --max-time 20 "$@"; }
# bash's /dev/tcp and /dev/udp: python starts slowly in an emulated guest.
# TCP: connect, print the server's first line (the rig's line servers say "port N").
tcpline() { exec 3<>"/dev/tcp/$1/$2" || return 1; read -r -t 10 line <&3; rc=$?; exec 3<&-; echo "$line"; return $rc; }
# UDP: one datagram, print the echo, or fail after 3 s.
udp() {
    exec 3<>"/dev/udp/$1/$2" || return 1
    printf kiln-udp >&3
    timeout 3 dd bs=512 count=1 <&3 2>/dev/null | grep . ; rc=$?
    exec 3<&-
    return $rc
}
r https c https://allowed.test/
r http c http://allowed.test/
r https6 c -6 https://allowed.test/
r wildcard c https://www.allowed.test/
r denied_name c https://denied.test/
r denied_lookup getent hosts denied.test
r direct_ip c http://11.0.2.20/
r direct_ip6 c 'http://[2a00:11::20]/'
r sni_spoof c --resolve denied.test:443:11.0.2.10 https://denied.test/
r sni_spoof6 c --resolve 'denied.test:443:[2a00:11::10]' https://denied.test/
r host_spoof c -H 'Host: denied.test' http://allowed.test/
r host_spoof6 c -6 -H 'Host: denied.test' http://allowed.test/
r rebind_lookup getent ahostsv4 rebind.test
r rebind6_lookup getent ahostsv6 rebind6.test
r meta_lookup getent ahostsv4 meta.test
r meta_ip c http://169.254.169.254/
r gateway c http://10.0.2.2:22/
r host_addr c http://198.51.100.1:8089/
r cidr_port tcpline 203.0.113.7 8080
r cidr_other_port tcpline 203.0.113.7 8081
r udp_allowed udp 192.0.2.10 9999
r udp_dropped udp 203.0.113.7 9999
# Non-public addresses: a name without ;private gets none, with it reaches
# one; a CIDR rule inside a non-public block reaches it too.
r doc_withheld c http://192-0-2-10.ip.test/
r doc_optin c http://192-0-2-10.ipp.test/
r doc_cidr c http://192.0.2.10/
# ICMP echo on a raw socket (root in the guest): checksum of 08 00 .. 00 = f7ff.
r ping python3 -c 'import socket; s=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_ICMP); s.settimeout(3); s.sendto(b"\x08\x00\xf7\xff\x00\x00\x00\x00",("192.0.2.10",0)); print(s.recv(64))'
# Issue 11: answers, forgeries, host addresses, dropped frames (one Python).
r uptime_before_probe cut -d' ' -f1 /proc/uptime
python3 /tmp/guest_probe.py main
r uptime_end cut -d' ' -f1 /proc/uptime
