#!/usr/bin/env bash
# kiln image import/ls/rm and kiln run --image with an imported image's
# defaults. The fixtures are written offline by oci_fixture.py (no registry):
# one good image as an OCI layout, an oci-archive and a docker-archive, and
# one layout per bad input. Everything but the last check needs no VM.
source "$(dirname "$0")/lib.sh"

KILN="$B/kiln"
FX="/usr/bin/python3 $top/tests/integration/oci_fixture.py"
work=$(mktemp -d /tmp/t-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
export KILN_CACHE="$work/cache" KILN_IMAGE_DIR="$work/images"
cache="$KILN_CACHE/oci"

$FX good "$work/fx" || { not_ok "cannot write the fixtures"; exit 1; }

# tree IMG: the canonical listing of what the erofs image holds
tree() {
    local d
    d=$(mktemp -d "$work/x.XXXXXX")
    fsck.erofs --extract="$d/root" "$1" >/dev/null 2>&1 || { echo "fsck.erofs failed on $1"; return; }
    $FX tree "$d/root"
    rm -rf "$d"
}
bb=$(sha256sum /bin/busybox | cut -c1-16)
h() { printf %s "$1" | sha256sum | cut -c1-16; }
want=$( {
    echo "abs l -> /keep.txt 0777 0:0"
    echo "app d 0755 1000:1000"
    echo "app/run.sh f $(h $'#!/bin/sh\necho run.sh ran\n') 0755 1000:1000"
    echo "bin d 0755 0:0"
    echo "bin/busybox f $bb 0755 0:0"
    for a in sh ls cat id pwd env stat readlink test echo; do echo "bin/$a l -> busybox 0777 0:0"; done
    echo "dev d 0755 0:0"
    echo "dir d 0750 0:0"
    echo "dir/a.txt f $(h $'a\n') 0600 0:0"
    echo "etc d 0755 0:0"
    echo "etc/group f $(h $'root:x:0:\nagent:x:1000:\ntools:x:2000:agent\n') 0644 0:0"
    echo "etc/passwd f $(h $'root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000:Agent:/home/agent:/bin/sh\n') 0644 0:0"
    echo "hard.txt f $(h $'kept\n') 0644 0:0"
    echo "keep.txt f $(h $'kept\n') 0644 0:0"
    echo "link l -> keep.txt 0777 0:0"
    echo "new.txt f $(h $'layer 2\n') 0640 0:1000"
    echo "opq d 0755 0:0"
    echo "opq/new1 f $(h $'new1\n') 0644 0:0"
    echo "proc d 0555 0:0"
    echo "root d 0700 0:0"
    echo "run d 0755 0:0"
    echo "sys d 0555 0:0"
    echo "tmp d 1777 0:0"
    echo "work d 0777 1000:1000"
} | LC_ALL=C sort)

# --- a good image through each transport -----------------------------------------
# Imported with the default compression (lz4hc), so the VM checks below read a
# compressed image; fixture-n is the same stored as is.
unset KILN_EROFS_COMPRESS
out=$("$KILN" image import "oci:$work/fx/layout:v1" --name fixture 2>"$work/err"); rc=$?
expect_eq "import oci:DIR:TAG exits 0" 0 "$rc"
expect_match "import says what it made" '^fixture sha256:[0-9a-f]{64} imported ' "$out"
img=$(readlink "$KILN_IMAGE_DIR/fixture.img")
check "the name is a link into the cache" test -f "$img" -a "${img#"$cache"/images/}" != "$img"
tree_oci=$(tree "$KILN_IMAGE_DIR/fixture.img")
expect_eq "the image's tree: whiteouts and the opaque dir applied, owners, modes and links kept" \
    "$want" "$(LC_ALL=C sort <<<"$tree_oci")"
nid() { dump.erofs --path="$1" "$KILN_IMAGE_DIR/fixture.img" | sed -n 's/^NID: \([0-9]*\) *Links: \([0-9]*\).*/\1 \2/p'; }
expect_eq "hard.txt is a hard link of keep.txt (one inode, 2 links)" "$(nid /keep.txt)" "$(nid /hard.txt)"
expect_match "the hard link has 2 links" ' 2$' "$(nid /hard.txt)"
ratio() { dump.erofs --path="$2" "$1" | sed -n 's/.*Compression ratio: \([0-9.]*\)%.*/\1/p'; }
check "compressed by default (busybox at $(ratio "$img" /bin/busybox)% of its size)" \
    awk -v r="$(ratio "$img" /bin/busybox)" 'BEGIN { exit !(r > 0 && r < 90) }'
expect_match "the cache key names the converter and the compression" '/[0-9a-f]{64}-c2-lz4hc\.img$' "$img"
cfg=$(cat "$KILN_IMAGE_DIR/fixture.json")
expect_match "the config keeps Env, Entrypoint, Cmd, WorkingDir, User" \
    '"FIXTURE=yes".*"entrypoint".*"/bin/sh".*"cmd".*"workdir": "/work".*"user": "agent"' "$(tr -d '\n' <<<"$cfg")"

"$KILN" image import "oci-archive:$work/fx/image.oci.tar:v1" --name fixture-a >/dev/null 2>&1
expect_eq "oci-archive gives the same tree" "$tree_oci" "$(tree "$KILN_IMAGE_DIR/fixture-a.img")"
"$KILN" image import "docker-archive:$work/fx/image.docker.tar" --name fixture-d >/dev/null 2>&1
expect_eq "docker-archive gives the same tree" "$tree_oci" "$(tree "$KILN_IMAGE_DIR/fixture-d.img")"

# KILN_EROFS_COMPRESS=none: stored as is, another cache entry, the same tree.
KILN_EROFS_COMPRESS=none "$KILN" image import "oci:$work/fx/layout:v1" --name fixture-n >/dev/null 2>&1
nimg=$(readlink "$KILN_IMAGE_DIR/fixture-n.img")
expect_match "uncompressed is another cache entry" '/[0-9a-f]{64}-c2-none\.img$' "$nimg"
expect_eq "uncompressed: the same tree" "$tree_oci" "$(tree "$KILN_IMAGE_DIR/fixture-n.img")"
expect_eq "uncompressed: busybox stored as is" "100.00" "$(ratio "$nimg" /bin/busybox)"
check "the compressed image is smaller ($(stat -c %s "$img") < $(stat -c %s "$nimg") bytes)" \
    test "$(stat -c %s "$img")" -lt "$(stat -c %s "$nimg")"
"$KILN" image rm fixture-n
err=$(KILN_EROFS_COMPRESS=zstd "$KILN" image import "oci:$work/fx/layout:v1" --name fixture-z 2>&1); rc=$?
expect_eq "an unknown KILN_EROFS_COMPRESS: exit 1" 1 "$rc"
expect_match "an unknown KILN_EROFS_COMPRESS: one line" '^kiln image import: KILN_EROFS_COMPRESS must be one of lz4hc, lz4, none, not .zstd.$' "$err"

# A second import is a cache hit: no mkfs.erofs (one that fails is first in PATH).
mkdir -p "$work/nomkfs"
printf '#!/bin/sh\necho mkfs.erofs ran >&2\nexit 1\n' > "$work/nomkfs/mkfs.erofs"
chmod +x "$work/nomkfs/mkfs.erofs"
ino=$(stat -c %i "$img")
out=$(PATH="$work/nomkfs:$PATH" "$KILN" image import "oci:$work/fx/layout:v1" --name fixture 2>&1); rc=$?
expect_eq "a second import exits 0 without mkfs.erofs" 0 "$rc"
expect_match "a second import is a cache hit" ' cached ' "$out"
expect_eq "the cached image file is the same one" "$ino" "$(stat -c %i "$img")"
check "blobs dedupe into one shared OCI layout" test -s "$cache/layout/index.json" \
    -a "$(ls "$cache/layout/blobs/sha256" | wc -l)" -le 8

ls_out=$("$KILN" image ls)
expect_match "image ls: name, digest, size, created" \
    'fixture +sha256:[0-9a-f]{12} +[0-9.]+M +2023-11-14T22:13:20Z' "$ls_out"
"$KILN" image rm fixture-a; rc=$?
expect_eq "image rm exits 0" 0 "$rc"
check "image rm keeps a cache file another name still uses" test -f "$img"
dimg=$(readlink "$KILN_IMAGE_DIR/fixture-d.img")
"$KILN" image rm fixture-d
check "image rm removes the name and its last cached image" \
    test ! -e "$KILN_IMAGE_DIR/fixture-d.img" -a ! -e "$dimg" -a ! -e "${dimg%.img}.json"
expect_eq "image ls lists what is left" "fixture" "$("$KILN" image ls | awk 'NR > 1 { print $1 }')"
"$KILN" image rm nope 2>/dev/null
check "image rm of an unknown name fails" test $? = 1

# A hostile NAME.json is a usage error of kiln run, before any VM.
cp "$img" "$KILN_IMAGE_DIR/badcfg.img"
echo '{"env": ["no-equals-sign"]}' > "$KILN_IMAGE_DIR/badcfg.json"
err=$("$KILN" run --image badcfg -- true 2>&1); rc=$?
expect_eq "kiln run: a bad image config exits 2" 2 "$rc"
expect_match "kiln run: a bad image config is one line" '^kiln run: .*badcfg.json: bad env' "$err"
rm -f "$KILN_IMAGE_DIR"/badcfg.*

# A built image's name is not taken over.
: > "$KILN_IMAGE_DIR/built.img"
err=$("$KILN" image import "oci:$work/fx/layout:v1" --name built 2>&1); rc=$?
expect_match "import refuses the name of a built image" "^kiln image import: 'built' is an image built by make" "$err"
check "the built image's file is untouched" test -f "$KILN_IMAGE_DIR/built.img" -a ! -L "$KILN_IMAGE_DIR/built.img" -a ! -s "$KILN_IMAGE_DIR/built.img"
rm -f "$KILN_IMAGE_DIR/built.img"

# --- bad input: one line, non-zero, nothing left -------------------------------
state() { ls -A "$cache/images" "$KILN_IMAGE_DIR"; ls -A "$cache/tmp"; }
before=$(state)
refuse() { # DESC REGEX SRC [ARGS]
    local d=$1 re=$2 rc err
    shift 2
    timeout -s KILL 300 "$KILN" image import "$@" --name bad >/dev/null 2>"$work/err"; rc=$?
    err=$(cat "$work/err")
    if [ $rc != 0 ] && [ "$(wc -l < "$work/err")" = 1 ] && [[ "$err" =~ $re ]] &&
       [ "$(state)" = "$before" ]; then
        ok "refused: $d"
    else
        not_ok "refused: $d (exit $rc, stderr '${err:0:300}', state $(state | tr '\n' ' '))"
    fi
}
for k in corrupt dotdot symlink-out hardlink-out device bomb; do
    mkdir -p "$work/bad-$k"
    $FX bad "$k" "$work/bad-$k"
done
refuse "a blob that does not match its digest" 'Digest did not match' "oci:$work/bad-corrupt/layout:v1"
refuse "a layer with ../ paths" "path with '\.\.'" "oci:$work/bad-dotdot/layout:v1"
refuse "a layer writing through a symlink to outside" 'written through the symlink' \
    "oci:$work/bad-symlink-out/layout:v1"
check "nothing was written through that symlink" test ! -e "$work/bad-symlink-out/outside"
check "nothing was written at ../" test -z "$(find "$work" /tmp -maxdepth 2 -name escaped.txt 2>/dev/null)"
refuse "a hard link to ../" "hard link 'h'" "oci:$work/bad-hardlink-out/layout:v1"
refuse "a device node" 'device node' "oci:$work/bad-device/layout:v1"
refuse "a layer bomb over --max-size" 'more than 2097152 bytes' "oci:$work/bad-bomb/layout:v1" --max-size 2M
refuse "a missing tag" 'no descriptor found for reference "nope"' "oci:$work/fx/layout:nope"
refuse "an unknown transport" 'unknown transport' "ftp:$work/fx/layout"
refuse "a missing file" 'no such file' "oci-archive:$work/none.tar"
# No registry is reachable here: a bogus one fails at once with skopeo's reason.
refuse "an unreachable registry (docker://)" \
    'skopeo inspect failed: .*pinging container registry 127\.0\.0\.1:9.*connection refused' \
    "docker://127.0.0.1:9/x:y"

# SIGTERM mid-import: a mkfs.erofs that says it started, then waits.
mkdir -p "$work/slow"
printf '#!/bin/sh\necho $$ > "%s/slow/started"\nexec sleep 3600\n' "$work" > "$work/slow/mkfs.erofs"
chmod +x "$work/slow/mkfs.erofs"
KILN_CACHE="$work/cache2" PATH="$work/slow:$PATH" "$KILN" image import \
    "docker-archive:$work/fx/image.docker.tar" --name slow 2>"$work/err" &
pid=$!
for _ in $(seq 3000); do [ -s "$work/slow/started" ] && break; sleep 0.1; done
kill -TERM $pid
wait $pid; rc=$?
expect_eq "SIGTERM mid-import exits 143" 143 "$rc"
expect_match "SIGTERM: one line" '^kiln image import: interrupted \(signal 15\); nothing was imported$' "$(cat "$work/err")"
check "SIGTERM: the tool it ran is gone" test -s "$work/slow/started" -a ! -d "/proc/$(cat "$work/slow/started" 2>/dev/null)"
check "SIGTERM: no staging dir, no image, no name" \
    test -z "$(find "$work/cache2/oci/tmp" "$work/cache2/oci/images" -mindepth 1)" -a ! -e "$KILN_IMAGE_DIR/slow.img"

# --- the image in a microVM --------------------------------------------------------
if [ -n "${KILN_TEST_NO_VM:-}" ]; then
    echo "ok - $T_NAME: the microVM check # SKIP KILN_TEST_NO_VM is set"
elif [ -c /dev/kvm ]; then
    krun() {
        local rc
        timeout -s KILL 300 "$KILN" run --image fixture "$@" 2>"$work/err"; rc=$?
        if [ $rc = 125 ] && grep -q 'ended while booting.*triple fault' "$work/err"; then
            timeout -s KILL 300 "$KILN" run --image fixture "$@" 2>"$work/err"; rc=$?
        fi
        cat "$work/err" >&2
        return $rc
    }
    # No CMD: the image's Entrypoint + Cmd (oci_fixture.py) print what they see.
    out=$(krun -e SHADOW=cli)
    rc=$?
    expect_eq "kiln run --image fixture exits 0" 0 "$rc"
    expect_eq "in the VM: Entrypoint + Cmd ran; files, Env (-e wins), WorkingDir and User (a name: uid, gid, groups, HOME) from the image" \
"from-cmd yes cli /bin
/work
1000
1000
1000 2000
/home/agent
kept
new1
new1
gone
1000:1000 755
run.sh ran
keep.txt
writable" "$out"
    # --user NAME:GROUP over the image's; --put files belong to that user too.
    echo put > "$work/put.txt"
    out=$(krun --user agent:tools --put "$work/put.txt:/work/put.txt" -- \
        sh -c 'id -u; id -G; stat -c %u:%g /work/put.txt; echo "$HOME"')
    expect_eq "--user agent:tools: that group only; --put owned by it; HOME from passwd" \
"1000
2000
1000:2000
/home/agent" "$out"
    # An unknown user: CMD never runs, one line, 126.
    krun --user bob -- sh -c 'echo ran' > "$work/out"; rc=$?
    expect_eq "--user bob (not in the image): exit 126" 126 "$rc"
    expect_eq "--user bob: CMD did not run" "" "$(cat "$work/out")"
    expect_match "--user bob: one line naming the user and the file" \
        "^kiln run: cannot run sh: no user 'bob' in the image's /etc/passwd$" "$(cat "$work/err")"

    # kilnd: a sandbox of the imported image; processes get its defaults.
    t_work=$work
    source "$top/tests/integration/kilnd.sh"
    kilnd_rig t-image-kilnd
    kilnd_cleanup_more() { rm -rf "$t_work"; }
    TA=tok-image-$$
    kilnd_tenant alpha "$TA" 2 2 1024 600
    cp -P "$KILN_IMAGE_DIR/fixture.img" "$KILN_IMAGE_DIR/fixture.json" "$work/images/"
    cp "$img" "$work/images/badcfg.img"
    echo '{"user": "a:b:c"}' > "$work/images/badcfg.json"
    start_kilnd
    api() {
        local m=$1 p=$2
        shift 2
        curl -sS --unix-socket "$sock" -X "$m" -H "Authorization: Bearer $TA" -w '\n%{http_code}' "$@" "http://kiln$p"
    }
    events() { # the stdout of a process's event stream, then |exit=N or |error=...
        python3 -c '
import json, sys, base64
out = ""
for line in sys.stdin:
    line = line.strip()
    if not line or line[0] != "{": continue
    e = json.loads(line)
    if e.get("type") == "stdout": out += base64.b64decode(e["data"]).decode()
    if e.get("type") == "exit": out += "|exit=%s" % e["exit_code"]
    if e.get("type") == "error": out += "|error=" + e["message"]
print(out, end="")'
    }
    r=$(api POST /v1/sandboxes -d '{"image":"badcfg"}')
    expect_match "kilnd: an image whose config is bad is refused before it boots (400)" \
        "badcfg: its user 'a:b:c' is not USER\\[:GROUP\\].*400$" "$(tr -d '\n' <<<"$r")"
    r=$(api POST /v1/sandboxes -d '{"image":"fixture","timeout_s":300}')
    sb=$(sed '$d' <<<"$r" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' 2>/dev/null)
    expect_eq "kilnd: a sandbox of the imported image (201)" 201 "$(tail -n1 <<<"$r")"
    out=$(api POST "/v1/sandboxes/$sb/processes" \
        -d '{"cmd":["sh","-c","id -u; id -G; echo \"$FIXTURE $SHADOW $HOME\"; pwd"],"env":{"SHADOW":"req"}}' | sed '$d' | events)
    expect_eq "kilnd: a process gets the image's User (by name), Env (under the request's) and WorkingDir" \
        "1000
1000 2000
yes req /home/agent
/work
|exit=0" "$out"
    out=$(api POST "/v1/sandboxes/$sb/processes" \
        -d '{"cmd":["sh","-c","id -u; echo \"$HOME\"; pwd"],"user":"root","cwd":"/tmp"}' | sed '$d' | events)
    expect_eq "kilnd: the request's user and cwd win" "0
/root
/tmp
|exit=0" "$out"
    r=$(api POST "/v1/sandboxes/$sb/processes" -d '{"cmd":["true"],"user":"bob"}')
    expect_match "kilnd: an unknown user is 404 user_not_found, naming it" \
        "\"user_not_found\".*no user 'bob' in the image's /etc/passwd.*404$" "$(tr -d '\n' <<<"$r")"
    KILN_HOST="unix:$sock" KILN_TOKEN="$TA" timeout -s KILL 120 "$KILN" exec --user bob "$sb" -- true \
        2>"$work/err"; rc=$?
    expect_eq "kiln exec --user bob: exit 126" 126 "$rc"
    expect_match "kiln exec --user bob: one line" "^kiln: .*no user 'bob'" "$(cat "$work/err")"
    expect_eq "kiln exec --user bob: nothing else" 1 "$(wc -l < "$work/err")"
    expect_eq "kilnd: the sandbox is deleted (204)" 204 "$(api DELETE "/v1/sandboxes/$sb" | tail -n1)"
else
    not_ok "no /dev/kvm: the microVM check needs scripts/with-kvm"
fi
done_testing
