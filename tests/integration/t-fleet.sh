#!/usr/bin/env bash
# A kilnd fleet behind kiln-router: three real kilnd (each its own socket,
# state dir and --host-id; h1 with 2 slots, h2 and h3 with 1) and one router
# with a hosts file. Creates spread and a create beyond the fleet's capacity
# is 503; every later request reaches the sandbox's owner (X-Kiln-Host); a
# draining host's 503 and a full host's 429 make the router place elsewhere;
# kill -9 of a kilnd:
# creates avoid it, its ids get 410, it sweeps and rejoins after a restart;
# a 20 MiB exec stream and files both ways arrive byte-exact; the SDK suite
# (tests/sdk) passes with KILN_HOST at the router. Runs where /dev/kvm works.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/kilnd.sh"
kilnd_rig t-fleet
ROUTER="$B/kiln-router"
PY=/usr/bin/python3
TA=fleet-token-$RANDOM$RANDOM$RANDOM
TB=other-token-$RANDOM$RANDOM
# The tenant is admin (it may drain a host); quotas are per host.
sum=$(printf %s "$TA" | sha256sum | cut -d' ' -f1)
printf '{"name": "fleet", "token_sha256": "%s", "max_sandboxes": 4, "max_vcpus": 8, "max_memory_mib": 4096, "max_timeout_s": 3600, "admin": true}\n' "$sum" > "$work/tenants"
kilnd_tenant other "$TB" 2 2 1024 600

declare -A hpid slots extra
slots=([h1]=2 [h2]=1 [h3]=1)
# h2 also listens on TCP, for a router that finds it by DNS (A records).
PORT=$((20000 + RANDOM % 20000))
extra=([h2]="--listen tcp:127.0.0.1:$PORT")
rpid= r2pid= r3= r4pid=
kilnd_cleanup_more() {
    local p
    for p in "${hpid[@]}" $rpid $r2pid $r3 $r4pid; do kill -9 "$p" 2>/dev/null; done
}
# start_host ID: its own socket and state dir; waits for this start's ready line.
start_host() {
    local h=$1 before
    before=$(grep -c 'kilnd: ready' "$work/$h.log" 2>/dev/null)
    "$KILND" --tokens "$work/tokens.json" --state-dir "$work/state-$h" --listen "unix:$work/$h.sock" \
        --image-dir "$work/images" --host-id "$h" --max-sandboxes "${slots[$h]}" --log-json ${extra[$h]:-} 2>>"$work/$h.log" &
    hpid[$h]=$!
    for _ in $(seq 300); do
        [ "$(grep -c 'kilnd: ready' "$work/$h.log" 2>/dev/null)" -gt "${before:-0}" ] && break
        kill -0 "${hpid[$h]}" 2>/dev/null || break
        sleep 0.1
    done
}
# start_router SOCK LOG [ARGS...]: waits for its ready line.
start_router() {
    local s=$1 log=$2
    shift 2
    "$ROUTER" --listen "unix:$s" --hosts-file "$work/hosts" --tokens "$work/tokens.json" \
        --upstream-token "$TA" "$@" 2>>"$log" &
    rlast=$!
    for _ in $(seq 100); do
        grep -q 'kiln-router: ready' "$log" 2>/dev/null && break
        kill -0 "$rlast" 2>/dev/null || break
        sleep 0.1
    done
}
# via SOCK TOKEN METHOD PATH [curl args]: headers to $work/hdr, body then the code.
via() {
    local s=$1 tok=$2 m=$3 p=$4
    shift 4
    curl -sS --unix-socket "$s" -X "$m" ${tok:+-H "Authorization: Bearer $tok"} \
        -D "$work/hdr" -w '\n%{http_code}' "$@" "http://kiln$p"
}
api() { via "$work/router.sock" "$@"; }
direct() { local h=$1; shift; via "$work/$h.sock" "$@"; }
body() { sed '$d'; }
code() { tail -n1; }
hdr() { tr -d '\r' < "$work/hdr" | sed -n "s/^$1: //Ip" | tail -n1; }
jget() { $PY -c 'import json,sys; d=json.load(sys.stdin); print(eval("d"+sys.argv[1]))' "$1"; }
host_of() { local id=${1#sb-}; echo "${id%-*}"; }
# The router's view: how many hosts answer (its /v1/capacity "live").
live() { api "$TA" GET /v1/capacity | body | jget '["live"]' 2>/dev/null; }
# wait_cap KEY VALUE: until the router's /v1/capacity says so (a refresh or two).
wait_cap() {
    for _ in $(seq 200); do
        [ "$(api "$TA" GET /v1/capacity | body | jget "[\"$1\"]" 2>/dev/null)" = "$2" ] && return 0
        sleep 0.1
    done
    return 1
}
wait_live() {
    for _ in $(seq 200); do [ "$(live)" = "$1" ] && return 0; sleep 0.1; done
    return 1
}
SB='{"image":"tiny","memory_mib":128,"disk_mib":0,"timeout_s":900}'

# --- the fleet ------------------------------------------------------------------
{ echo '{"tenants": ['; paste -sd, "$work/tenants"; echo ']}'; } > "$work/tokens.json"
for h in h1 h2 h3; do start_host $h; done
{ echo "# t-fleet: rendered as a Nomad template or a ConfigMap would"
  for h in h1 h2 h3; do echo "$h unix:$work/$h.sock"; done; } > "$work/hosts"
start_router "$work/router.sock" "$work/router.log" --refresh-s 1 --sample 3
rpid=$rlast
check "three kilnd and the router are listening" test -S "$work/h1.sock" -a -S "$work/h2.sock" -a -S "$work/h3.sock" -a -S "$work/router.sock"
expect_eq "kilnd: a bad --host-id is exit 2" "2" "$("$KILND" --host-id 'Bad_Id' --tokens x --state-dir y 2>/dev/null; echo $?)"
expect_match "kilnd: a bad --host-id is named" "host id 'Bad_Id' must match" "$("$KILND" --host-id 'Bad_Id' --tokens x --state-dir y 2>&1)"
expect_eq "router: no discovery source is exit 2" "2" "$("$ROUTER" --listen "unix:$work/x.sock" 2>/dev/null; echo $?)"
printf 'h1 http://1.2.3.4:0\n' > "$work/bad-hosts"
expect_match "router: a bad hosts file is named, with its line" "line 1: the URL" "$("$ROUTER" --listen "unix:$work/x.sock" --hosts-file "$work/bad-hosts" 2>&1)"

r=$(direct h1 "$TA" GET /v1/capacity)
expect_eq "kilnd: GET /v1/capacity is 200" "200" "$(echo "$r" | code)"
expect_match "kilnd: capacity names the host and its slots" '"host_id":"h1","slots":2,"used":0,"starting":0,"free_cpus":[0-9]+,"free_memory_mib":[0-9]+,"draining":false' "$r"
expect_eq "kilnd: X-Kiln-Host on its answers" "h1" "$(hdr X-Kiln-Host)"
direct h2 "" GET /v1/nothing > /dev/null
expect_eq "kilnd: X-Kiln-Host even on a 404 without a token" "h2" "$(hdr X-Kiln-Host)"
expect_eq "kilnd: drain is for admin tenants only (403)" "403" "$(direct h1 "$TB" POST /v1/drain | code)"
expect_eq "router: health without a token" "200" "$(api "" GET /v1/health | code)"
expect_eq "router: no token is 401 at the router" "401" "$(api "" GET /v1/sandboxes | code)"
expect_eq "router: an unknown token is 401 at the router" "401" "$(api "nope" GET /v1/sandboxes | code)"
expect_eq "router: another tenant's token is forwarded" "200" "$(api "$TB" GET /v1/sandboxes | code)"
r=$(api "$TA" GET /v1/capacity | body)
expect_eq "router: capacity sums the fleet's slots" "4" "$(echo "$r" | jget '["slots"]')"
expect_eq "router: three live hosts" "3" "$(echo "$r" | jget '["live"]')"
start_router "$work/router3.sock" "$work/router3.log" --refresh-s 1 --dns-a "localhost:$PORT" --hosts-file ""
r3=$rlast
r=$(via "$work/router3.sock" "$TA" GET /v1/capacity | body)
expect_eq "a router with DNS A discovery learns h2 from h2 (its slots, one live host)" "1 1" \
    "$(echo "$r" | jget '["slots"]') $(echo "$r" | jget '["live"]')"
via "$work/router3.sock" "$TA" GET /v1/sandboxes/sb-h2-0123456789abcdef0123456789abcdef > /dev/null
expect_eq "... and routes h2's ids to it" "h2" "$(hdr X-Kiln-Host)"
kill -TERM "$r3"; wait "$r3"; r3=

# --- creates spread; beyond capacity is 503 ---------------------------------------
ids=()
declare -A per
for i in 1 2 3 4; do
    r=$(api "$TA" POST /v1/sandboxes -d "$SB")
    c=$(echo "$r" | code)
    id=$(echo "$r" | body | jget '["id"]' 2>/dev/null)
    if [ "$c" = 201 ] && [ "$(hdr X-Kiln-Host)" = "$(host_of "$id")" ]; then
        ok "create $i: 201 on $(hdr X-Kiln-Host), the host in its id ($id)"
        ids+=("$id")
        per[$(host_of "$id")]=$(( ${per[$(host_of "$id")]:-0} + 1 ))
    else
        not_ok "create $i: 201 on the host in its id (got $c, host '$(hdr X-Kiln-Host)': $(echo "$r" | head -c 300))"
    fi
done
expect_eq "creates filled every host to its slots" "h1=2 h2=1 h3=1" "h1=${per[h1]:-0} h2=${per[h2]:-0} h3=${per[h3]:-0}"
expect_match "ids are sb-<host>-<32 hex>" '^sb-h[123]-[0-9a-f]{32}$' "${ids[0]}"
before=$(vmms)
r=$(api "$TA" POST /v1/sandboxes -d "$SB")
expect_eq "a create beyond the fleet's capacity: 503" "503" "$(echo "$r" | code)"
expect_match "... code no_capacity" '"code":"no_capacity"' "$r"
expect_eq "... with Retry-After" "5" "$(hdr Retry-After)"
expect_eq "... and no VM was booted for it" "$before" "$(vmms)"

# --- every later request reaches the owner ----------------------------------------
for id in "${ids[@]}"; do
    h=$(host_of "$id")
    r=$(api "$TA" GET "/v1/sandboxes/$id")
    expect_eq "GET $id: 200 from $h" "200 $h" "$(echo "$r" | code) $(hdr X-Kiln-Host)"
    r=$(api "$TA" POST "/v1/sandboxes/$id/exec" -d '{"cmd":["sh","-c","echo hi-from-guest"]}')
    expect_eq "exec in $id through the router" "hi-from-guest|exit=0 $h" "$(echo "$r" | body | stdout_of | tr -d '\n') $(hdr X-Kiln-Host)"
done
expect_eq "the router's list merges every host's" "4" "$(api "$TA" GET /v1/sandboxes | body | jget '["sandboxes"].__len__()')"
expect_eq "the list's query goes along (state=booting: none)" "0" "$(api "$TA" GET '/v1/sandboxes?state=booting' | body | jget '["sandboxes"].__len__()')"
expect_eq "another tenant sees none of them" "0" "$(api "$TB" GET /v1/sandboxes | body | jget '["sandboxes"].__len__()')"
expect_eq "another tenant's GET of one: 404 from its host" "404" "$(api "$TB" GET "/v1/sandboxes/${ids[0]}" | code)"
expect_eq "an id of a host not in the fleet: 410" "410" "$(api "$TA" GET /v1/sandboxes/sb-h9-0123456789abcdef0123456789abcdef | code)"
expect_match "... code host_gone" 'host_gone' "$(api "$TA" GET /v1/sandboxes/sb-h9-0123456789abcdef0123456789abcdef/files?path=/x)"
expect_eq "an id from before host ids (no host in it): 404" "404" "$(api "$TA" GET /v1/sandboxes/sb-0123456789abcdef0123456789abcdef | code)"
expect_eq "... its run record is asked of every host: 404 when none has it" "404" "$(api "$TA" GET /v1/runs/sb-0123456789abcdef0123456789abcdef | code)"
expect_eq "a malformed id: 404" "404" "$(api "$TA" GET /v1/sandboxes/sb-H1-zz | code)"
expect_eq "an oversized id: 404" "404" "$(api "$TA" GET "/v1/sandboxes/sb-$(printf 'a%.0s' $(seq 200))" | code)"
expect_eq "an unknown router path: 404" "404" "$(api "$TA" GET /v1/nothing | code)"
head -c 70000 /dev/zero | tr '\0' ' ' > "$work/big.json"
expect_eq "an oversized create body: 413 at the router" "413" "$(api "$TA" POST /v1/sandboxes --data-binary @"$work/big.json" | code)"

# --- streams and files through the router, byte-exact -----------------------------
A=${ids[0]}
r=$(api "$TA" POST "/v1/sandboxes/$A/exec" -d '{"cmd":["sh","-c","head -c 20971520 /dev/urandom > /root/r; sha256sum /root/r | cut -d\" \" -f1 >&2; cat /root/r"]}' | body)
got=$(echo "$r" | $PY -c '
import json, sys, base64, hashlib
h = hashlib.sha256(); n = 0; err = b""
for line in sys.stdin:
    line = line.strip()
    if not line: continue
    e = json.loads(line)
    d = e.get("data_b64")
    b = base64.b64decode(d) if d is not None else (e.get("data") or "").encode("utf-8", "surrogateescape")
    if e["type"] == "stdout": h.update(b); n += len(b)
    if e["type"] == "stderr": err += b
print(n, h.hexdigest(), err.decode().strip())')
read -r n hgot hwant <<< "$got"
expect_eq "a 20 MiB exec stream through the router: every byte" "20971520" "$n"
expect_eq "... byte-exact (sha256 as the guest computed it)" "$hwant" "$hgot"
api "$TA" GET "/v1/sandboxes/$A/files?path=/root/r" -o "$work/r.back" > /dev/null
expect_eq "GET the 20 MiB file through the router: byte-exact" "$hwant" "$(sha256sum < "$work/r.back" | cut -d' ' -f1)"
head -c $((8 << 20)) /dev/urandom > "$work/up"
expect_eq "PUT 8 MiB through the router: 204" "204" "$(api "$TA" PUT "/v1/sandboxes/$A/files?path=/root/up&mode=0600" --data-binary @"$work/up" | code)"
expect_eq "... arrives byte-exact" "$(sha256sum < "$work/up" | cut -d' ' -f1)|exit=0" \
    "$(api "$TA" POST "/v1/sandboxes/$A/exec" -d '{"cmd":["sh","-c","sha256sum /root/up | cut -d\" \" -f1"]}' | body | stdout_of | tr -d '\n')"
expect_eq "PUT with a chunked body through the router: 204" "204" \
    "$(api "$TA" PUT "/v1/sandboxes/$A/files?path=/root/ch" -H 'Transfer-Encoding: chunked' --data-binary @"$work/up" | code)"
expect_eq "... byte-exact" "$(sha256sum < "$work/up" | cut -d' ' -f1)|exit=0" \
    "$(api "$TA" POST "/v1/sandboxes/$A/exec" -d '{"cmd":["sh","-c","sha256sum /root/ch | cut -d\" \" -f1"]}' | body | stdout_of | tr -d '\n')"
expect_match "a NUL in a query reaches kilnd as it was sent (400 there)" 'without NUL' "$(api "$TA" GET "/v1/sandboxes/$A/fs/stat?path=/etc/passwd%00.txt")"
# A client that hangs up mid-stream: the hang-up reaches kilnd, which ends the process.
timeout 3 curl -sS -N --unix-socket "$work/router.sock" -H "Authorization: Bearer $TA" \
    -d '{"cmd":["sh","-c","while :; do echo tick; sleep 0.2; done & echo $! > /root/ticker; wait"]}' \
    "http://kiln/v1/sandboxes/$A/exec" > "$work/ticks" 2>/dev/null
check "a streaming client through the router got output before it left" grep -q tick "$work/ticks"
gone=
for _ in $(seq 50); do
    gone=$(api "$TA" POST "/v1/sandboxes/$A/exec" -d '{"cmd":["sh","-c","kill -0 $(cat /root/ticker) 2>/dev/null && echo alive || echo gone"]}' | body | stdout_of | tr -d '\n')
    [ "$gone" = "gone|exit=0" ] && break
    sleep 0.2
done
expect_eq "the hang-up went through the router: the process is gone" "gone|exit=0" "$gone"

# --- a draining host's 503: the router places elsewhere --------------------------
for id in "${ids[@]}"; do
    case $(host_of "$id") in h1|h2) api "$TA" DELETE "/v1/sandboxes/$id" > /dev/null ;; esac
done
expect_eq "deletes through the router reached their hosts" "0 0" \
    "$(direct h1 "$TA" GET /v1/sandboxes | body | jget '["sandboxes"].__len__()') $(direct h2 "$TA" GET /v1/sandboxes | body | jget '["sandboxes"].__len__()')"
# A second router that reads capacity once (refresh 1 h): it will think h1
# (2 free) beats h2 (1 free) while h1 drains.
start_router "$work/router2.sock" "$work/router2.log" --refresh-s 3600 --sample 3
r2pid=$rlast
r=$(direct h1 "$TA" POST /v1/drain)
expect_eq "kilnd: POST /v1/drain by an admin" '200 {"draining":true}' "$(echo "$r" | code) $(echo "$r" | body)"
r=$(direct h1 "$TA" POST /v1/sandboxes -d "$SB")
expect_eq "a draining kilnd refuses creates: 503" "503" "$(echo "$r" | code)"
expect_match "... code draining" '"code":"draining"' "$r"
expect_eq "... and its capacity says so" "True" "$(direct h1 "$TA" GET /v1/capacity | body | jget '["draining"]')"
creates_h1() { grep -c '"method":"POST","path":"/v1/sandboxes"' "$work/h1.log"; }
n1=$(creates_h1)
r=$(via "$work/router2.sock" "$TA" POST /v1/sandboxes -d "$SB")
D=$(echo "$r" | body | jget '["id"]' 2>/dev/null)
expect_eq "the router retried elsewhere after h1's 503: 201 on h2" "201 h2" "$(echo "$r" | code) $(hdr X-Kiln-Host)"
expect_eq "... h1 was asked first (it had the most room)" "$((n1 + 1))" "$(creates_h1)"
expect_eq "h1 booted nothing while it drained" "0" "$(direct h1 "$TA" GET /v1/sandboxes | body | jget '["sandboxes"].__len__()')"
kill -TERM "$r2pid"; wait "$r2pid"; rc=$?; r2pid=
expect_eq "router: SIGTERM is a clean exit" "0" "$rc"
r=$(direct h1 "$TA" DELETE /v1/drain)
expect_eq "kilnd: DELETE /v1/drain undoes it" '200 {"draining":false}' "$(echo "$r" | code) $(echo "$r" | body)"

# --- a full host's 429: the router places elsewhere --------------------------------
# A router that knows only h1 and h2 and reads their capacity once: its first
# create lands on h1 (most room); h1 is then filled behind its back, so its
# next create goes to h1 first (a tie, h1 listed first), which answers 429.
api "$TA" DELETE "/v1/sandboxes/$D" > /dev/null
printf 'h1 unix:%s\nh2 unix:%s\n' "$work/h1.sock" "$work/h2.sock" > "$work/hosts12"
start_router "$work/router4.sock" "$work/router4.log" --hosts-file "$work/hosts12" --refresh-s 3600 --sample 3
r4pid=$rlast
r=$(via "$work/router4.sock" "$TA" POST /v1/sandboxes -d "$SB")
F1=$(echo "$r" | body | jget '["id"]' 2>/dev/null)
expect_eq "429: the router's first create lands on h1 (most room)" "201 h1" "$(echo "$r" | code) $(hdr X-Kiln-Host)"
r=$(direct h1 "$TA" POST /v1/sandboxes -d "$SB")
F2=$(echo "$r" | body | jget '["id"]' 2>/dev/null)
expect_eq "429: h1 filled behind the router's back" "201" "$(echo "$r" | code)"
r=$(direct h1 "$TA" POST /v1/sandboxes -d "$SB")
expect_eq "a full kilnd answers 429" "429" "$(echo "$r" | code)"
expect_match "... with scope host" '"scope":"host"' "$r"
n1=$(creates_h1)
r=$(via "$work/router4.sock" "$TA" POST /v1/sandboxes -d "$SB")
F3=$(echo "$r" | body | jget '["id"]' 2>/dev/null)
expect_eq "the router retried elsewhere after h1's 429: 201 on h2" "201 h2" "$(echo "$r" | code) $(hdr X-Kiln-Host)"
expect_eq "... h1 was asked first (it refused)" "$((n1 + 1))" "$(creates_h1)"
kill -TERM "$r4pid"; wait "$r4pid"; r4pid=
for id in "$F1" "$F2" "$F3"; do api "$TA" DELETE "/v1/sandboxes/$id" > /dev/null; done
expect_eq "429: h1 and h2 are empty again" "0 0" \
    "$(direct h1 "$TA" GET /v1/sandboxes | body | jget '["sandboxes"].__len__()') $(direct h2 "$TA" GET /v1/sandboxes | body | jget '["sandboxes"].__len__()')"

# --- kill -9 of a kilnd ---------------------------------------------------------
X=
for id in "${ids[@]}"; do [ "$(host_of "$id")" = h3 ] && X=$id; done
check "the router sees h1 no longer draining" wait_cap hosts_draining 0
wait_live 3
vm_before=$(vmms)
kill -9 "${hpid[h3]}"; wait "${hpid[h3]}" 2>/dev/null
check "after one refresh the router sees two live hosts" wait_live 2
r=$(api "$TA" GET "/v1/sandboxes/$X")
expect_eq "a sandbox of the dead host: 410" "410" "$(echo "$r" | code)"
expect_match "... host_gone" 'host_gone' "$r"
r=$(api "$TA" POST /v1/sandboxes -d "$SB")
N=$(echo "$r" | body | jget '["id"]' 2>/dev/null)
expect_eq "a new create avoids the dead host (201 on h1)" "201 h1" "$(echo "$r" | code) $(hdr X-Kiln-Host)"
start_host h3
check "h3 restarted and marked its earlier sandbox's record daemon-stopped" grep -q '1 earlier records marked daemon-stopped' "$work/h3.log"
check "h3 rejoins the fleet" wait_live 3
expect_eq "h3's old VM died with it (one gone, one new on h1)" "$vm_before" "$(vmms)"
r=$(api "$TA" GET "/v1/runs/$X")
expect_eq "the old sandbox's record, through the router: 200 from h3" "200 h3" "$(echo "$r" | code) $(hdr X-Kiln-Host)"
expect_eq "... ended daemon-stopped" "daemon-stopped" "$(echo "$r" | body | jget '["end_reason"]' 2>/dev/null)"
expect_eq "the old sandbox itself stays gone: 404 from h3" "404 h3" "$(api "$TA" GET "/v1/sandboxes/$X" | code) $(hdr X-Kiln-Host)"
for id in "$D" "$N"; do api "$TA" DELETE "/v1/sandboxes/$id" > /dev/null; done
expect_eq "the fleet is empty again" "0" "$(api "$TA" GET /v1/sandboxes | body | jget '["sandboxes"].__len__()')"

# --- the SDK suite against the router ------------------------------------------
if $PY -c 'import httpx, pytest, pytest_asyncio' 2>/dev/null; then
    KILN_HOST="unix:$work/router.sock" KILN_TOKEN="$TA" PYTHONPATH="$top/sdk/python" \
        run_pytest sdk-via-router ${KILN_FLEET_SDK_K:+-k "$KILN_FLEET_SDK_K"} tests/sdk
else
    not_ok "python3-httpx, python3-pytest and python3-pytest-asyncio are installed (scripts/install-deps)"
fi

# --- stop -------------------------------------------------------------------------
kill -TERM "$rpid"; wait "$rpid"; rc=$?; rpid=
expect_eq "router: SIGTERM, exit 0" "0" "$rc"
for h in h1 h2 h3; do
    kill -TERM "${hpid[$h]}"; wait "${hpid[$h]}"; rc=$?
    expect_eq "$h: SIGTERM, exit 0" "0" "$rc"
    unset "hpid[$h]"
done
expect_eq "no VM is left" "0" "$(vmms)"
echo "# router log:"; sed 's/^/#   /' "$work/router.log" | tail -n 5
done_testing
