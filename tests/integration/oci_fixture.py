#!/usr/bin/python3
"""OCI fixtures for t-image.sh, written offline with tarfile and hashlib.

    oci_fixture.py good DIR        DIR/layout (oci:), DIR/image.oci.tar (oci-archive:),
                                   DIR/image.docker.tar (docker-archive:)
    oci_fixture.py bad KIND DIR    DIR/layout holding one bad image (KINDs below)
    oci_fixture.py tree ROOT       a canonical listing of an unpacked tree
"""
import gzip
import hashlib
import io
import json
import os
import stat
import sys
import tarfile

MTIME = 1700000000
BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "ls", "cat", "id", "pwd", "env", "stat", "readlink", "test", "echo")
PASSWD = b"root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000:Agent:/home/agent:/bin/sh\n"
GROUP = b"root:x:0:\nagent:x:1000:\ntools:x:2000:agent\n"


def entry(tf, name, kind="file", data=b"", mode=0o644, uid=0, gid=0, link="", size=None):
    ti = tarfile.TarInfo(name)
    ti.mtime = MTIME
    ti.mode = mode
    ti.uid, ti.gid = uid, gid
    if kind == "file":
        ti.type = tarfile.REGTYPE
        ti.size = len(data) if size is None else size
        tf.addfile(ti, io.BytesIO(data) if size is None else ZeroReader(size))
        return
    ti.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE,
               "chr": tarfile.CHRTYPE}[kind]
    ti.linkname = link
    if kind == "chr":
        ti.devmajor, ti.devminor = 1, 3
    tf.addfile(ti)


class ZeroReader:
    def __init__(self, n):
        self.n = n

    def read(self, k=-1):
        k = self.n if k < 0 else min(k, self.n)
        self.n -= k
        return b"\0" * k


def tar_bytes(fill):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        fill(tf)
    return buf.getvalue()


def layer1(tf):
    entry(tf, "bin", "dir", mode=0o755)
    with open(BUSYBOX, "rb") as f:
        entry(tf, "bin/busybox", data=f.read(), mode=0o755)
    for a in APPLETS:
        entry(tf, "bin/" + a, "sym", link="busybox", mode=0o777)
    entry(tf, "keep.txt", data=b"kept\n")
    entry(tf, "hard.txt", "hard", link="keep.txt")
    entry(tf, "gone.txt", data=b"deleted in layer 2\n")
    entry(tf, "link", "sym", link="keep.txt", mode=0o777)
    entry(tf, "abs", "sym", link="/keep.txt", mode=0o777)
    entry(tf, "dir", "dir", mode=0o750)
    entry(tf, "dir/a.txt", data=b"a\n", mode=0o600)
    entry(tf, "app", "dir", mode=0o755, uid=1000, gid=1000)
    entry(tf, "app/run.sh", data=b"#!/bin/sh\necho run.sh ran\n", mode=0o755, uid=1000, gid=1000)
    entry(tf, "opq", "dir", mode=0o755)
    entry(tf, "opq/old1", data=b"old1\n")
    entry(tf, "opq/sub", "dir", mode=0o755)
    entry(tf, "opq/sub/old2", data=b"old2\n")
    entry(tf, "work", "dir", mode=0o777, uid=1000, gid=1000)
    # A named user (the config's User) with a supplementary group.
    entry(tf, "etc", "dir", mode=0o755)
    entry(tf, "etc/passwd", data=PASSWD)
    entry(tf, "etc/group", data=GROUP)


def layer2(tf):
    entry(tf, ".wh.gone.txt")
    entry(tf, "opq", "dir", mode=0o755)
    entry(tf, "opq/.wh..wh..opq")
    entry(tf, "opq/new1", data=b"new1\n")
    entry(tf, "new.txt", data=b"layer 2\n", mode=0o640, uid=0, gid=1000)


CONFIG = {
    "Env": ["PATH=/bin", "FIXTURE=yes", "SHADOW=image"],
    "Entrypoint": ["/bin/sh", "-c"],
    # t-image runs the image with no CMD: this checks what the VM sees.
    "Cmd": ['echo "from-cmd $FIXTURE $SHADOW $PATH"; pwd; id -u; id -g; id -G; echo "$HOME"; '
            'cat /keep.txt /opq/new1; ls /opq; test -e /gone.txt || echo gone; '
            'stat -c "%u:%g %a" /app/run.sh; /app/run.sh; readlink /link; '
            'touch /work/w && echo writable'],
    "WorkingDir": "/work",
    "User": "agent",
}


def sha(b):
    return hashlib.sha256(b).hexdigest()


def write_layout(d, layers, gz, config=CONFIG, tag="v1", corrupt=False):
    """An OCI layout in d: layers are raw tar bytes; gz says which to gzip."""
    blobs = os.path.join(d, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)

    def put(b):
        h = sha(b)
        with open(os.path.join(blobs, h), "wb") as f:
            f.write(b)
        return h

    descs = []
    for raw, z in zip(layers, gz):
        blob = gzip.compress(raw, mtime=0) if z else raw
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if z else ""),
                      "digest": "sha256:" + put(blob), "size": len(blob)})
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "created": "2023-11-14T22:13:20Z",
                      "config": config,
                      "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha(l) for l in layers]}},
                     sort_keys=True).encode()
    ch = put(cfg)
    man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                 "digest": "sha256:" + ch, "size": len(cfg)},
                      "layers": descs}, sort_keys=True).encode()
    mh = put(man)
    with open(os.path.join(d, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    with open(os.path.join(d, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + mh,
             "size": len(man), "annotations": {"org.opencontainers.image.ref.name": tag}}]}, f)
    if corrupt:
        # flip a byte of the last layer, keep its name: a digest mismatch
        p = os.path.join(blobs, descs[-1]["digest"].split(":")[1])
        with open(p, "r+b") as f:
            f.seek(len(layers[-1]) // 2 if not gz[-1] else 20)
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([b[0] ^ 0xff]))
    return cfg, ch


def dir_to_tar(src, out):
    with tarfile.open(out, "w") as tf:
        for name in sorted(os.listdir(src)):
            tf.add(os.path.join(src, name), arcname=name)


def good(d):
    l1, l2 = tar_bytes(layer1), tar_bytes(layer2)
    layout = os.path.join(d, "layout")
    cfg, ch = write_layout(layout, [l1, l2], [True, False])
    dir_to_tar(layout, os.path.join(d, "image.oci.tar"))
    # docker save format: manifest.json, the config, one uncompressed tar per layer
    dk = os.path.join(d, "docker")
    os.makedirs(dk)
    with open(os.path.join(dk, ch + ".json"), "wb") as f:
        f.write(cfg)
    names = []
    for i, l in enumerate((l1, l2)):
        n = "%s/layer.tar" % sha(l)
        os.makedirs(os.path.join(dk, sha(l)))
        with open(os.path.join(dk, n), "wb") as f:
            f.write(l)
        names.append(n)
    with open(os.path.join(dk, "manifest.json"), "w") as f:
        json.dump([{"Config": ch + ".json", "RepoTags": ["fixture:v1"], "Layers": names}], f)
    dir_to_tar(dk, os.path.join(d, "image.docker.tar"))


def bad(kind, d):
    base = tar_bytes(lambda tf: entry(tf, "ok.txt", data=b"ok\n"))
    layout = os.path.join(d, "layout")
    if kind == "corrupt":
        write_layout(layout, [base, tar_bytes(layer2)], [False, False], corrupt=True)
        return
    evil = {
        "dotdot": lambda tf: entry(tf, "../escaped.txt", data=b"x\n"),
        "symlink-out": lambda tf: (entry(tf, "evil", "sym", link=d + "/outside"),
                                   entry(tf, "evil/pwned", data=b"x\n")),
        "hardlink-out": lambda tf: entry(tf, "h", "hard", link="../../../etc/passwd"),
        "device": lambda tf: entry(tf, "dev/null2", "chr", mode=0o666),
        "bomb": lambda tf: entry(tf, "big", size=3 << 20),
    }[kind]
    write_layout(layout, [base, tar_bytes(evil)], [False, True])


def tree(root):
    """path type mode uid gid content: one line per entry; hard links by inode."""
    inodes = {}
    out = []
    for dp, dns, fns in os.walk(root):
        dns.sort()
        for n in sorted(dns + fns):
            p = os.path.join(dp, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            m = st.st_mode
            if stat.S_ISLNK(m):
                what = "l -> " + os.readlink(p)
            elif stat.S_ISDIR(m):
                what = "d"
            elif stat.S_ISREG(m):
                with open(p, "rb") as f:
                    what = "f " + sha(f.read())[:16]
                if st.st_nlink > 1:
                    what += " link#%d" % inodes.setdefault(st.st_ino, len(inodes) + 1)
            else:
                what = "other %o" % stat.S_IFMT(m)
            out.append("%s %s %04o %d:%d" % (rel, what, stat.S_IMODE(m), st.st_uid, st.st_gid))
    print("\n".join(sorted(out)))


if __name__ == "__main__":
    if sys.argv[1] == "good":
        good(sys.argv[2])
    elif sys.argv[1] == "bad":
        bad(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "tree":
        tree(sys.argv[2])
