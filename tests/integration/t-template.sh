#!/usr/bin/env bash
# kiln template create|ls|rm (issue 14): a booted microVM, after its warm-up
# command, saved into the template cache: the VMM's state file (read back
# with kiln-vmm --inspect-snapshot), the guest RAM (sparse) and the scratch
# disk taken at the same instant. Two boots: one template made, one warm-up
# that fails. The refusals need no VM.
source "$(dirname "$0")/lib.sh"

KILN="$B/kiln"
work=$(mktemp -d /tmp/t-template.XXXXXX)
trap 'rm -rf "$work"' EXIT
export KILN_CACHE="$work/cache"
tdir="$KILN_CACHE/templates"
# A copy of the tiny image, so that touching it makes the template stale.
cp "${KILN_TEST_TINY:-$B/images/tiny.img}" "$work/tiny.img" || { not_ok "no tiny image"; exit 1; }
one_line() { [ "$(wc -l < "$1")" = 1 ]; }
leftovers() { pgrep -x kiln-vmm >/dev/null && echo "a kiln-vmm still runs"; ls -A "$tdir" 2>/dev/null | grep '^\.new-'; }

# ---- refusals, no VM -----------------------------------------------------
"$KILN" template create 'Bad!' >/dev/null 2>"$work/e"; rc=$?
expect_eq "a bad name: exit 2" 2 "$rc"
check "a bad name: one line naming it" grep -q "'Bad!' is not a template name" "$work/e"
"$KILN" template create >/dev/null 2>"$work/e"; rc=$?
expect_eq "no name: exit 2" 2 "$rc"
"$KILN" template create t9 --image "$work/tiny.img" --allow example.com:443 -- true 2>"$work/e"; rc=$?
expect_eq "--allow: exit 2 (a template has no network device)" 2 "$rc"
check "--allow: one line" one_line "$work/e"
"$KILN" template rm nope 2>"$work/e"; rc=$?
expect_eq "rm of a template that is not there: exit 1" 1 "$rc"
check "rm of a template that is not there: one line" grep -q "no template 'nope'" "$work/e"
out=$(env -u KILN_CACHE -u XDG_CACHE_HOME -u HOME "$KILN" template ls 2>&1); rc=$?
expect_eq "no cache directory at all: exit 2" 2 "$rc"
expect_match "no cache directory at all: says what to set" 'set KILN_CACHE' "$out"

# ---- a template made ------------------------------------------------------
mark="kiln-warm-$$-$RANDOM"
"$KILN" template create t1 --image "$work/tiny.img" --cpus 2 --mem 128 --disk 64 \
    -- sh -c "echo $mark > /root/warm.txt && sync && mkdir -p /run/pat && mount -t tmpfs -o size=72m pat /run/pat && dd if=/dev/urandom of=/run/pat/p bs=1M count=64 2>/dev/null && md5sum /run/pat/p > /root/pat.md5 && echo warmed" >"$work/out" 2>"$work/err"
rc=$?
expect_eq "create t1: exit 0" 0 "$rc"
expect_eq "create t1: the warm-up's output is shown" warmed "$(cat "$work/out")"
check "create t1: one line on stderr, the figures" one_line "$work/err"
expect_match "create t1: says what it saved" "saved 't1'.*state [0-9]+ bytes, RAM 128 MiB \\([0-9.]+ MiB not zero\\)" "$(cat "$work/err")"
sed 's/^/# /' "$work/err"
for f in state mem scratch template.json; do
    check "t1 has its $f" test -s "$tdir/t1/$f"
done
insp=$("$B/kiln-vmm" --inspect-snapshot "$tdir/t1/state" 2>&1); rc=$?
expect_eq "the state file passes kiln-vmm's reader" 0 "$rc"
expect_match "the state file: 2 vCPUs, 128 MiB" "vm cpus 2 mem 134217728" "$insp"
expect_match "the state file: where vCPU 1 was (its GS base: a kernel per-CPU area)" "gs-base 0xffff8880" "$(echo "$insp" | grep '^section sregs 1 ')"
expect_eq "the memory file is the guest RAM's size" $((128 << 20)) "$(stat -c %s "$tdir/t1/mem")"
alloc=$(( $(stat -c %b "$tdir/t1/mem") * $(stat -c %B "$tdir/t1/mem") ))
check "the memory file is sparse ($((alloc >> 20)) MiB allocated of 128)" test "$alloc" -lt $((128 << 20))
check "the memory file holds the 64 MiB pattern ($((alloc >> 20)) MiB allocated)" test "$alloc" -ge $((64 << 20))
check "the guest RAM holds the warm-up's file (page cache)" grep -q -a "$mark" "$tdir/t1/mem"
expect_eq "the scratch disk is the --disk size" $((64 << 20)) "$(stat -c %s "$tdir/t1/scratch")"
check "the scratch disk holds the warm-up's file" grep -q -a "$mark" "$tdir/t1/scratch"
check "the scratch disk is an ext4 file system" sh -c "file -b '$tdir/t1/scratch' | grep -q ext4 || blkid '$tdir/t1/scratch' | grep -q ext4"
j=$(cat "$tdir/t1/template.json")
expect_match "template.json: the warm-up" "\"warmup\": \"sh -c echo $mark" "$j"
expect_match "template.json: the image" "\"path\": \"$work/tiny.img\"" "$j"
expect_eq "no staging directory and no VMM left" "" "$(leftovers)"
ls_out=$("$KILN" template ls 2>&1); rc=$?
expect_eq "ls: exit 0" 0 "$rc"
expect_match "ls: t1, 2 CPUs, 128 MiB, ok" "t1 +2 +128M +64M .* ok" "$ls_out"
"$KILN" template create t1 --image "$work/tiny.img" -- true 2>"$work/e"; rc=$?
expect_eq "create t1 again: exit 2" 2 "$rc"
check "create t1 again: names the template that exists" grep -q "template 't1' exists" "$work/e"

# ---- clones: kiln run --template t1 ---------------------------------------------
# Each clone restores t1 (no boot): the warm-up's file is there, its own
# writes reach neither the template nor a sibling, and its identity is its own.
sum_t1() { sha256sum "$tdir/t1/state" "$tdir/t1/mem" "$tdir/t1/scratch" | cut -d' ' -f1 | tr '\n' ' '; }
before=$(sum_t1)
probe='cat /root/warm.txt; cat /run/kiln/sandbox-id; hostname
head -c 32 /dev/urandom | od -An -tx1 | tr -d " \n"; echo
cat /proc/sys/kernel/random/boot_id; date +%s
ls /root/clone.txt 2>/dev/null || echo no-clone-file
echo "$1" > /root/clone.txt && sync && cat /root/clone.txt
md5sum /run/pat/p | cmp -s - /root/pat.md5 && echo pattern-same || echo pattern-differs
a=$(cut -d" " -f1 /proc/uptime); sleep 1; b=$(cut -d" " -f1 /proc/uptime); echo "$a $b"'
for c in a b; do
    host_t0=$(date +%s)
    "$KILN" run --template t1 --json --console "$work/console.$c" -- sh -c "$probe" clone "clone-$c" >"$work/c$c" 2>"$work/c$c.err"
    rc=$?
    host_t1=$(date +%s)
    expect_eq "clone $c: exit 0" 0 "$rc"
    [ "$rc" = 0 ] || sed 's/^/# /' "$work/c$c.err"
    mapfile -t L < "$work/c$c"
    expect_eq "clone $c: the warm-up's file is there" "$mark" "${L[0]}"
    expect_match "clone $c: a sandbox id of its own shape" '^sb-[a-z0-9-]+-[0-9a-f]{32}$' "${L[1]}"
    expect_match "clone $c: --json reports that sandbox id" "\"sandbox_id\": *\"${L[1]}\"" "$(tail -1 "$work/c$c.err")"
    expect_eq "clone $c: its hostname comes from its id" "sb-${L[1]: -32:12}" "${L[2]}"
    expect_match "clone $c: 32 bytes from /dev/urandom" '^[0-9a-f]{64}$' "${L[3]}"
    age=$(( host_t0 - $(stat -c %Y "$tdir/t1/state") ))
    check "clone $c: the guest's clock is the host's, template saved ${age} s before (guest ${L[5]}, host ${host_t0}..${host_t1})" \
        test "${L[5]:-0}" -ge $((host_t0 - 1)) -a "${L[5]:-0}" -le $((host_t1 + 1))
    expect_eq "clone $c: no sibling's file" no-clone-file "${L[6]}"
    expect_eq "clone $c: its own write reads back" "clone-$c" "${L[7]}"
    expect_eq "clone $c: the 64 MiB pattern in guest RAM is the warm-up's" pattern-same "${L[8]}"
    read -r u0 u1 <<< "${L[9]}"
    check "clone $c: sleep 1 takes about 1 s of guest uptime (${u0:-?} -> ${u1:-?})" \
        awk -v a="${u0:-0}" -v b="${u1:-0}" 'BEGIN { exit !(b - a >= 0.95 && b - a < 5) }'
    check "clone $c: no soft lockup or RCU stall in the guest's log" \
        sh -c "! grep -qiE 'soft lockup|rcu.*stall' '$work/console.$c'"
    eval "id_$c=\${L[1]} host_$c=\${L[2]} rnd_$c=\${L[3]} boot_$c=\${L[4]}"
done
check "the clones' sandbox ids differ" test "$id_a" != "$id_b"
check "the clones' hostnames differ" test "$host_a" != "$host_b"
check "the clones' first /dev/urandom bytes differ" test "$rnd_a" != "$rnd_b"
check "the clones' boot ids differ" test "$boot_a" != "$boot_b"
# 18 more (20 in all): every clone's id, hostname, first urandom bytes and boot id its own.
for i in $(seq 3 20); do
    "$KILN" run --template t1 -- sh -c 'cat /run/kiln/sandbox-id; hostname; head -c 32 /dev/urandom | od -An -tx1 | tr -d " \n"; echo; cat /proc/sys/kernel/random/boot_id' \
        >"$work/u$i" 2>"$work/u$i.err" || sed 's/^/# /' "$work/u$i.err"
done
printf '%s\n' "$id_a" "$host_a" "$rnd_a" "$boot_a" > "$work/u1"
printf '%s\n' "$id_b" "$host_b" "$rnd_b" "$boot_b" > "$work/u2"
for k in 1 2 3 4; do
    what=$(echo "sandbox ids|hostnames|first 32 bytes of /dev/urandom|boot ids" | cut -d'|' -f$k)
    n=$(for i in $(seq 1 20); do sed -n "${k}p" "$work/u$i"; done | grep . | sort -u | wc -l)
    expect_eq "20 clones: 20 different $what" 20 "$n"
done
expect_eq "the template's files are unchanged by its clones" "$before" "$(sum_t1)"
out=$(echo from-stdin | "$KILN" run --template t1 -- cat 2>&1); rc=$?
expect_eq "a clone: stdin reaches its command" "0 from-stdin" "$rc $out"
expect_eq "no VMM or run directory left by the clones" "" "$(leftovers)"
"$KILN" run --template t1 --cpus 4 -- true 2>"$work/e"; rc=$?
expect_eq "--template with --cpus: exit 2" 2 "$rc"
check "--template with --cpus: one line naming it" grep -q -- "--cpus cannot be used with --template" "$work/e"
"$KILN" run --template t1 --allow example.com:443 -- true 2>"$work/e"; rc=$?
expect_eq "--template with --allow: exit 2" 2 "$rc"
"$KILN" run --template nope -- true 2>"$work/e"; rc=$?
expect_eq "--template of a template that is not there: exit 2" 2 "$rc"
check "--template of a template that is not there: one line" grep -q "no template 'nope'" "$work/e"

# ---- the machine's automatic template ------------------------------------------
m=(--image "$work/tiny.img" --cpus 1 --mem 128 --disk 32)
"$KILN" template create --auto "${m[@]}" -- sh -c 'echo no' 2>"$work/e"; rc=$?
expect_eq "create --auto with a warm-up: exit 2" 2 "$rc"
check "create --auto with a warm-up: one line" one_line "$work/e"
"$KILN" template create --auto "${m[@]}" ls 2>"$work/e"; rc=$?
expect_eq "create --auto with a warm-up without --: exit 2" 2 "$rc"
"$KILN" template create --auto "${m[@]}" >/dev/null 2>"$work/e"; rc=$?
expect_eq "create --auto: exit 0" 0 "$rc"
[ "$rc" = 0 ] || sed 's/^/# /' "$work/e"
auto=$(ls "$tdir" | grep '^auto-')
expect_match "create --auto: named auto-<16 hex>" '^auto-[0-9a-f]{16}$' "$auto"
out=$("$KILN" run "${m[@]}" --json -- cat /run/kiln/sandbox-id 2>"$work/e"); rc=$?
expect_eq "a plain run of that machine: exit 0" 0 "$rc"
expect_match "a plain run of that machine: restored from $auto" "\"template\": *\"$auto\"" "$(tail -1 "$work/e")"
expect_match "a plain run of that machine: its own sandbox id" "\"sandbox_id\": *\"$out\"" "$(tail -1 "$work/e")"
"$KILN" run "${m[@]}" --cold --json -- true 2>"$work/e"; rc=$?
expect_eq "--cold: exit 0" 0 "$rc"
expect_match "--cold: booted, no template" '"template": *null' "$(tail -1 "$work/e")"
# An idle clone's VMM (of the automatic template, a clean boot): the memory
# it owns - its anonymous pages: the guest's writes since the restore (private
# copies of the template's pages) and the VMM's own heap - is at most 10 % of
# its 128 MiB. Pages read from the memory file stay page cache every clone
# shares; smaps counts them Private_Dirty while one clone maps them when the
# cache lives on tmpfs (shmem pages are always dirty), so that field is not it.
coproc IDLE { exec "$KILN" run "${m[@]}" -- sh -c 'echo up; exec sleep 120' 2>&1; }
read -r -t 120 up <&"${IDLE[0]}"
expect_eq "an idle clone: up" up "$up"
sleep 2
anon=0 rss=0
for pid in $(pgrep -x kiln-vmm); do
    r=$(awk '/^Rss:/ { print $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null)
    [ "${r:-0}" -gt 4096 ] || continue
    rss=$r
    anon=$(awk '/^Anonymous:/ { print $2 }' "/proc/$pid/smaps_rollup")
done
check "an idle clone owns $((anon / 1024)) MiB of its 128 MiB (anonymous, at most 10 %; RSS $((rss / 1024)) MiB with the template's pages it reads)" \
    test "$anon" -gt 0 -a "$anon" -le $((128 * 1024 / 10))
kill "$IDLE_PID" 2>/dev/null; wait "$IDLE_PID" 2>/dev/null
for _ in $(seq 100); do pgrep -x kiln-vmm >/dev/null || break; sleep 0.2; done
# A damaged automatic template is a shortcut lost, not a failed run.
printf 'kiln-damage' | dd of="$tdir/$auto/state" bs=1 seek=64 conv=notrunc 2>/dev/null
"$KILN" run "${m[@]}" --json -- true 2>"$work/e"; rc=$?
expect_eq "a damaged automatic template: the run boots, exit 0" 0 "$rc"
check "a damaged automatic template: said once" test "$(grep -c "automatic template $auto not restored" "$work/e")" = 1
expect_match "a damaged automatic template: booted, no template" '"template": *null' "$(tail -1 "$work/e")"
touch "$work/tiny.img"
expect_match "ls after the image changed: stale" "t1 .* stale \(image changed\)" "$("$KILN" template ls 2>&1)"
expect_match "ls after the image changed: the automatic one stale too" "$auto .* stale \(image changed\)" "$("$KILN" template ls 2>&1)"
"$KILN" run --template t1 -- true 2>"$work/e"; rc=$?
expect_eq "run --template of a stale template: exit 2" 2 "$rc"
check "run --template of a stale template: says so" grep -q "template 't1' is stale: its image" "$work/e"

# ---- a warm-up that fails: no template ---------------------------------------
"$KILN" template create t2 --image "$work/tiny.img" --mem 128 --disk 64 -- sh -c 'exit 3' 2>"$work/e"; rc=$?
expect_eq "a failing warm-up: its status" 3 "$rc"
check "a failing warm-up: says no template was saved" grep -q "no template was saved" "$work/e"
check "a failing warm-up: no t2" test ! -e "$tdir/t2"
expect_eq "a failing warm-up: no staging directory or VMM left" "" "$(leftovers)"

# ---- damaged and foreign directories ----------------------------------------
mkdir -p "$tdir/junk" && echo '{"format": 1, "name": "other"}' > "$tdir/junk/template.json"
out=$("$KILN" template ls 2>&1); rc=$?
expect_eq "ls with a damaged template: exit 125" 125 "$rc"
expect_match "ls with a damaged template: names it" "junk: .*template.json" "$out"
touch "$tdir/junk/mine.txt"
"$KILN" template rm junk 2>"$work/e"; rc=$?
expect_eq "rm of a directory holding other files: refused (125)" 125 "$rc"
check "rm of a directory holding other files: left in place" test -e "$tdir/junk/mine.txt"
rm -rf "$tdir/junk"
# a staging directory of a process that is gone is swept
mkdir -p "$tdir/.new-t3.999999999.abcdef" && touch "$tdir/.new-t3.999999999.abcdef/mem"
"$KILN" template ls >/dev/null 2>&1
check "a dead creator's staging directory is swept" test ! -e "$tdir/.new-t3.999999999.abcdef"

"$KILN" template rm "$auto" 2>/dev/null
"$KILN" template rm t1; rc=$?
expect_eq "rm t1: exit 0" 0 "$rc"
check "rm t1: gone" test ! -e "$tdir/t1"
done_testing
