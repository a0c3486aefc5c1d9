#!/usr/bin/python3
"""kiln image import: an OCI or Docker image into an erofs root image.

Run by `kiln image import` (src/cli/image.c), which has checked the name and
passes everything as arguments:

    image-import.py --cache DIR --image-dir DIR --name NAME --max-size BYTES SRC

Steps (docs/images.md, "Imported images"): under the cache's lock, key the
image by its source manifest digest, the converter version and the
compression ($KILN_EROFS_COMPRESS: lz4hc by default, lz4, none); on a hit only
the name links are written. Otherwise skopeo copies SRC into a staging OCI
layout (it checks every blob's digest), every layer is scanned here before
anything is unpacked (paths, links, device nodes, sizes), umoci unpacks,
mkfs.erofs makes the image, and the image and its config are renamed into the
cache. Image contents are hostile: every refusal is one line on stderr and a
non-zero exit; nothing is written outside the staging directory until the
final renames.
"""
import datetime
import fcntl
import gzip
import hashlib
import json
import os
import posixpath
import re
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import tempfile

# Bump when the tree or the config this produces changes: it is part of the key.
# 2: the compression in the key (lz4hc by default; lz4, none on request).
CONVERTER = 2
# mkfs.erofs -z: what Debian 12's erofs-utils 1.5 writes and the guest kernel
# reads (CONFIG_EROFS_FS_ZIP); "none" stores the files uncompressed.
COMPRESSORS = ("lz4hc", "lz4", "none")
MAX_ENTRIES = 4 << 20           # inodes over all layers
MAX_LAYERS = 256
MAX_JSON = 4 << 20              # a manifest, index or config blob
MAX_ENV = 256
MAX_STR = 65536
MOUNT_POINTS = (("dev", 0o755), ("proc", 0o555), ("sys", 0o555), ("run", 0o755),
                ("tmp", 0o1777), ("root", 0o700))
GZIP_TYPES = ("application/vnd.oci.image.layer.v1.tar+gzip",
              "application/vnd.docker.image.rootfs.diff.tar.gzip")
TAR_TYPES = ("application/vnd.oci.image.layer.v1.tar",
             "application/vnd.docker.image.rootfs.diff.tar")

staging = None
child = None


class Refused(Exception):
    """Bad input: one line, exit 1."""


def die(msg, code=1):
    sys.stderr.write("kiln image import: %s\n" % oneline(msg))
    sys.exit(code)


def oneline(s, cap=400):
    # skopeo and umoci log as logrus: time=... level=fatal msg="..."
    m = re.search(r'msg="((?:[^"\\]|\\.)*)"', str(s))
    if m:
        s = str(s)[:str(s).find("time=")] + m.group(1).replace('\\"', '"')
    s = "".join(c if c.isprintable() else "\\x%02x" % (ord(c) & 0xff) for c in str(s))
    return s if len(s) <= cap else s[:cap] + "..."


def on_signal(sig, _frame):
    # Not child.wait(): the interrupted code may hold Popen's wait lock.
    if child is not None:
        try:
            os.killpg(child.pid, signal.SIGKILL)
            os.waitpid(child.pid, 0)
        except OSError:
            pass
    cleanup()
    sys.stderr.write("kiln image import: interrupted (signal %d); nothing was imported\n" % sig)
    os._exit(128 + sig)


def cleanup():
    global staging
    if staging and os.path.isdir(staging):
        shutil.rmtree(staging, ignore_errors=True)
    staging = None


def run(what, argv, log):
    """Run a tool in its own process group; its last stderr line on failure."""
    global child
    with open(log, "wb") as lf:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=lf, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        rc = child.wait()
        child = None
    if rc != 0:
        with open(log, "rb") as lf:
            lines = [l for l in lf.read()[-8192:].decode("utf-8", "replace").splitlines() if l.strip()]
        raise Refused("%s failed: %s" % (what, lines[-1] if lines else "exit %d" % rc))


def capture(what, argv):
    global child
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True)
    out, err = child.communicate()
    rc = child.returncode
    child = None
    if rc != 0:
        lines = [l for l in err.decode("utf-8", "replace").splitlines() if l.strip()]
        raise Refused("%s failed: %s" % (what, lines[-1] if lines else "exit %d" % rc))
    return out


def check_source(src):
    m = re.match(r"^([a-z-]+):(.*)$", src)
    if not m or m.group(1) not in ("oci", "oci-archive", "docker-archive", "docker"):
        raise Refused("unknown transport in '%s' (oci:DIR[:TAG], oci-archive:FILE[:TAG], "
                      "docker-archive:FILE or docker://REF)" % src)
    t, rest = m.groups()
    if t == "docker" and not rest.startswith("//"):
        raise Refused("docker transport wants docker://REF, not '%s'" % src)
    if t != "docker":
        path = rest.split(":", 1)[0]
        if not path or not os.path.exists(path):
            raise Refused("%s: no such file or directory: %s" % (t, path))


def read_blob(layout, digest, cap=MAX_JSON):
    m = re.match(r"^sha256:([0-9a-f]{64})$", digest or "")
    if not m:
        raise Refused("bad digest %r" % digest)
    p = os.path.join(layout, "blobs", "sha256", m.group(1))
    with open(p, "rb") as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise Refused("blob %s is larger than %d bytes" % (digest, cap))
    if hashlib.sha256(data).hexdigest() != m.group(1):
        raise Refused("blob %s does not match its digest" % digest)
    return data


def load_json(data, what):
    try:
        v = json.loads(data)
    except ValueError as e:
        raise Refused("%s is not JSON: %s" % (what, e))
    if not isinstance(v, dict):
        raise Refused("%s is not a JSON object" % what)
    return v


class CappedReader:
    """A file object that refuses to give more than cap bytes."""

    def __init__(self, f, cap, what):
        self.f, self.left, self.what = f, cap, what

    def read(self, n=-1):
        data = self.f.read(n if n is not None and n >= 0 else 1 << 20)
        self.left -= len(data)
        if self.left < 0:
            raise Refused("%s unpacks to more than the --max-size cap" % self.what)
        return data


def norm(name):
    """A member name as a clean relative path, or Refused."""
    if name.startswith("/"):
        raise Refused("absolute path %r" % name)
    parts = []
    for p in name.split("/"):
        if p in ("", "."):
            continue
        if p == "..":
            raise Refused("path with '..': %r" % name)
        parts.append(p)
    return "/".join(parts)


def scan_layers(layout, manifest, cap):
    """Refuse a layer that could escape, make devices or blow up; before umoci."""
    layers = manifest.get("layers")
    if not isinstance(layers, list) or len(layers) > MAX_LAYERS:
        raise Refused("the manifest has no layer list or more than %d layers" % MAX_LAYERS)
    total = 0
    entries = 0
    links = set()      # symlinks in the merged tree so far
    for i, layer in enumerate(layers, 1):
        if not isinstance(layer, dict):
            raise Refused("layer %d: not an object" % i)
        mt = layer.get("mediaType")
        digest = layer.get("digest", "")
        m = re.match(r"^sha256:([0-9a-f]{64})$", digest if isinstance(digest, str) else "")
        if not m:
            raise Refused("layer %d: bad digest %r" % (i, digest))
        if mt not in GZIP_TYPES + TAR_TYPES:
            raise Refused("layer %d: unsupported media type %r (plain and gzip tar only)" % (i, mt))
        what = "layer %d (%s)" % (i, digest[:19])
        h = hashlib.sha256()
        with open(os.path.join(layout, "blobs", "sha256", m.group(1)), "rb") as raw:
            class Hashing:
                def read(self, n=-1):
                    d = raw.read(n)
                    h.update(d)
                    return d
            src = Hashing()
            inner = gzip.GzipFile(fileobj=src) if mt in GZIP_TYPES else src
            # The tar stream itself (headers included) may be at most cap plus
            # its headers' worth; member sizes are counted exactly below.
            capped = CappedReader(inner, cap + (cap >> 4) + (64 << 20), what)
            try:
                tf = tarfile.open(fileobj=capped, mode="r|")
                for ti in tf:
                    entries += 1
                    if entries > MAX_ENTRIES:
                        raise Refused("%s: more than %d files in the image" % (what, MAX_ENTRIES))
                    try:
                        path = norm(ti.name)
                    except Refused as e:
                        raise Refused("%s: %s" % (what, e))
                    if not path:
                        continue
                    parts = path.split("/")
                    for k in range(1, len(parts)):
                        if "/".join(parts[:k]) in links:
                            raise Refused("%s: %r is written through the symlink %r" %
                                          (what, ti.name, "/".join(parts[:k])))
                    base = parts[-1]
                    parent = "/".join(parts[:-1])
                    if base == ".wh..wh..opq":
                        pre = parent + "/" if parent else ""
                        links = {l for l in links if not l.startswith(pre)} if pre else set()
                        continue
                    if base.startswith(".wh."):
                        gone = "/".join(parts[:-1] + [base[4:]])
                        links = {l for l in links if l != gone and not l.startswith(gone + "/")}
                        continue
                    links.discard(path)
                    if ti.ischr() or ti.isblk():
                        raise Refused("%s: device node %r (images may not carry devices)" % (what, ti.name))
                    if ti.issym():
                        links.add(path)
                    elif ti.islnk():
                        try:
                            target = norm(ti.linkname)
                        except Refused as e:
                            raise Refused("%s: hard link %r: %s" % (what, ti.name, e))
                        tparts = target.split("/")
                        for k in range(1, len(tparts) + 1):
                            if "/".join(tparts[:k]) in links:
                                raise Refused("%s: hard link %r points through the symlink %r" %
                                              (what, ti.name, "/".join(tparts[:k])))
                    elif ti.isreg():
                        total += ti.size
                        if total > cap:
                            raise Refused("%s: the image unpacks to more than %d bytes (--max-size)" %
                                          (what, cap))
                    elif not (ti.isdir() or ti.isfifo()):
                        raise Refused("%s: unsupported entry type for %r" % (what, ti.name))
                tf.close()
                while capped.read(1 << 20):
                    pass
            except Refused:
                raise
            except (tarfile.TarError, OSError, EOFError, zlib_error()) as e:
                raise Refused("%s: not a readable tar: %s" % (what, e))
        if h.hexdigest() != m.group(1):
            raise Refused("%s: the blob does not match its digest" % what)
    return total, entries


def zlib_error():
    import zlib
    return zlib.error


def str_list(v, what):
    if v is None:
        return []
    if not isinstance(v, list) or len(v) > MAX_ENV or \
            any(not isinstance(s, str) or len(s) > MAX_STR or "\0" in s for s in v):
        raise Refused("image config: %s is not a list of at most %d strings" % (what, MAX_ENV))
    return v


def kiln_config(cfg, key, digest, size):
    c = cfg.get("config") or {}
    if not isinstance(c, dict):
        raise Refused("image config: 'config' is not an object")
    env = str_list(c.get("Env"), "Env")
    for e in env:
        if "=" not in e or e.startswith("="):
            raise Refused("image config: Env entry %r is not K=V" % e)
    wd = c.get("WorkingDir") or ""
    user = c.get("User") or ""
    for v, what in ((wd, "WorkingDir"), (user, "User")):
        if not isinstance(v, str) or len(v) > 4096 or "\0" in v:
            raise Refused("image config: bad %s" % what)
    if wd and not wd.startswith("/"):
        wd = "/" + wd
    created = cfg.get("created")
    return {
        "kiln_image": 1, "key": key, "digest": digest, "converter": CONVERTER,
        "env": env, "entrypoint": str_list(c.get("Entrypoint"), "Entrypoint"),
        "cmd": str_list(c.get("Cmd"), "Cmd"), "workdir": wd, "user": user,
        "created": created if isinstance(created, str) and len(created) < 64 else "",
        "imported": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "size": size,
    }


def link_name(image_dir, name, img, cfg):
    """NAME.img and NAME.json in the image dir: symlinks into the cache."""
    os.makedirs(image_dir, exist_ok=True)
    for ext, target in ((".json", cfg), (".img", img)):
        tmp = os.path.join(image_dir, ".%s%s.%d" % (name, ext, os.getpid()))
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        os.symlink(target, tmp)
        os.rename(tmp, os.path.join(image_dir, name + ext))


def add_to_shared(cache, layout, manifest_digest, tag):
    """Hard-link the staged blobs into the shared layout, then tag it there."""
    shared = os.path.join(cache, "layout")
    bdir = os.path.join(shared, "blobs", "sha256")
    os.makedirs(bdir, exist_ok=True)
    if not os.path.exists(os.path.join(shared, "oci-layout")):
        with open(os.path.join(shared, "oci-layout"), "w") as f:
            f.write('{"imageLayoutVersion":"1.0.0"}')
    sdir = os.path.join(layout, "blobs", "sha256")
    for b in os.listdir(sdir):
        if re.match(r"^[0-9a-f]{64}$", b) and not os.path.exists(os.path.join(bdir, b)):
            os.link(os.path.join(sdir, b), os.path.join(bdir, b))
    ipath = os.path.join(shared, "index.json")
    try:
        with open(ipath) as f:
            index = json.load(f)
    except FileNotFoundError:
        index = {"schemaVersion": 2, "manifests": []}
    size = os.path.getsize(os.path.join(bdir, manifest_digest.split(":", 1)[1]))
    index["manifests"] = [m for m in index.get("manifests", [])
                          if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") != tag]
    index["manifests"].append({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "digest": manifest_digest, "size": size,
                               "annotations": {"org.opencontainers.image.ref.name": tag}})
    tmp = ipath + ".tmp"
    with open(tmp, "w") as f:
        json.dump(index, f)
    os.rename(tmp, ipath)


def main():
    global staging
    import argparse
    ap = argparse.ArgumentParser(prog="kiln image import")
    ap.add_argument("--cache", required=True)
    ap.add_argument("--image-dir", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--max-size", type=int, required=True)
    ap.add_argument("src")
    a = ap.parse_args()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    for tool, pkg in (("skopeo", "skopeo"), ("umoci", "umoci"), ("mkfs.erofs", "erofs-utils")):
        if not shutil.which(tool):
            die("%s is missing: install %s (scripts/install-deps)" % (tool, pkg))
    compress = os.environ.get("KILN_EROFS_COMPRESS") or "lz4hc"
    if compress not in COMPRESSORS:
        die("KILN_EROFS_COMPRESS must be one of %s, not '%s'" % (", ".join(COMPRESSORS), compress[:64]))
    check_source(a.src)
    named = os.path.join(a.image_dir, a.name)
    if os.path.lexists(named + ".img") and not os.path.lexists(named + ".json"):
        die("'%s' is an image built by make, not an imported one: choose another --name" % a.name)

    cache = os.path.abspath(a.cache)
    a.image_dir = os.path.abspath(a.image_dir)
    os.makedirs(os.path.join(cache, "images"), exist_ok=True)
    os.makedirs(os.path.join(cache, "tmp"), exist_ok=True)
    lock = open(os.path.join(cache, ".lock"), "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    # We hold the lock: any staging directory left is a SIGKILLed import's.
    for d in os.listdir(os.path.join(cache, "tmp")):
        shutil.rmtree(os.path.join(cache, "tmp", d), ignore_errors=True)
    staging = tempfile.mkdtemp(prefix="import.", dir=os.path.join(cache, "tmp"))
    # The tools' own temporary files (skopeo unpacks archives) stay in staging too.
    tmp = os.path.join(staging, "tmp")
    os.mkdir(tmp)
    os.environ["TMPDIR"] = tmp

    # The key: the source's manifest (or index) digest and the converter.
    raw = capture("skopeo inspect", ["skopeo", "--tmpdir", tmp, "inspect", "--raw", a.src])
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    # A manifest declares its blobs' sizes (skopeo holds the blobs to them):
    # refuse before copying what could not fit under the cap anyway.
    try:
        declared = sum(int(l.get("size", 0)) for l in json.loads(raw).get("layers") or [])
    except (ValueError, TypeError, AttributeError):
        declared = 0
    if declared > a.max_size:
        raise Refused("the layers are %d bytes compressed, more than --max-size %d" % (declared, a.max_size))
    # Not root: owners are lost, so that image is another one.
    key = "%s-c%d-%s%s" % (digest.split(":")[1], CONVERTER, compress,
                            "" if os.geteuid() == 0 else "-rootless")
    img = os.path.join(cache, "images", key + ".img")
    cfgp = os.path.join(cache, "images", key + ".json")
    if os.path.exists(img) and os.path.exists(cfgp):
        link_name(a.image_dir, a.name, img, cfgp)
        cleanup()
        print("%s %s cached %s" % (a.name, digest, img))
        return

    layout = os.path.join(staging, "layout")
    tag = "import"
    run("skopeo copy", ["skopeo", "--tmpdir", tmp, "copy", "--quiet", "--format", "oci",
                        a.src, "oci:%s:%s" % (layout, tag)], os.path.join(staging, "skopeo.log"))
    index = load_json(read_blob_file(os.path.join(layout, "index.json")), "index.json")
    mans = [m for m in index.get("manifests", []) if isinstance(m, dict)]
    if len(mans) != 1:
        raise Refused("the staged layout has %d manifests, not 1" % len(mans))
    mdigest = mans[0].get("digest")
    manifest = load_json(read_blob(layout, mdigest), "the manifest")
    cfg = load_json(read_blob(layout, (manifest.get("config") or {}).get("digest")), "the image config")
    size, entries = scan_layers(layout, manifest, a.max_size)

    bundle = os.path.join(staging, "bundle")
    uargs = ["umoci", "--log", "error", "unpack"]
    if os.geteuid() != 0:
        uargs.append("--rootless")
    run("umoci unpack", uargs + ["--image", "%s:%s" % (layout, tag), bundle],
        os.path.join(staging, "umoci.log"))
    rootfs = os.path.join(bundle, "rootfs")
    for d, mode in MOUNT_POINTS:
        p = os.path.join(rootfs, d)
        if not os.path.lexists(p):
            os.mkdir(p)
            os.chown(p, 0, 0) if os.geteuid() == 0 else None
            os.chmod(p, mode)
    staged_img = os.path.join(staging, "image.img")
    mkfs = ["mkfs.erofs", "-x", "-1"] + ([] if compress == "none" else ["-z" + compress])
    if os.geteuid() != 0:
        mkfs.append("--all-root")
        sys.stderr.write("kiln image import: not root: every file in the image will be owned by root\n")
    run("mkfs.erofs", mkfs + [staged_img, rootfs], os.path.join(staging, "mkfs.log"))
    shutil.rmtree(bundle, ignore_errors=True)
    conf = kiln_config(cfg, key, digest, os.path.getsize(staged_img))
    conf["manifest"] = mdigest
    staged_cfg = os.path.join(staging, "config.json")
    with open(staged_cfg, "w") as f:
        json.dump(conf, f, indent=1)
    add_to_shared(cache, layout, mdigest, "kiln-" + key)
    os.rename(staged_cfg, cfgp)
    os.rename(staged_img, img)
    link_name(a.image_dir, a.name, img, cfgp)
    cleanup()
    print("%s %s imported %s (%d files, %d bytes)" % (a.name, digest, img, entries, conf["size"]))


def read_blob_file(p):
    with open(p, "rb") as f:
        data = f.read(MAX_JSON + 1)
    if len(data) > MAX_JSON:
        raise Refused("%s is too large" % p)
    return data


if __name__ == "__main__":
    try:
        main()
    except Refused as e:
        cleanup()
        die(e)
    except (OSError, ValueError) as e:
        cleanup()
        die("%s" % e)
