#!/usr/bin/env python3
"""Restore against boot (issue 14): a template of the tiny image is made once,
then `kiln run --template bench -- true` and `kiln run --cold -- true` (same
image, vCPUs, memory and disk) alternate; each run's --json durations give the
total and the start (spawn to the agent's greeting: a boot, or a restore).
Last, N clones of the template sit idle while their VMMs' memory is read from
/proc/PID/smaps_rollup: RSS counts the template's RAM pages each clone maps,
PSS splits the shared ones between them. Needs /dev/kvm: bench/restore wraps
it in scripts/with-kvm.

Both kinds of run start from a copy of kiln, kiln-vmm, the guest kernel, the
initrd and the image in a temporary directory, as a host has them on its own
disk: in the emulated KVM host the tree is a 9p share without a page cache,
where every exec read its binary over 9p again (kiln-vmm --help: 78-89 ms
there, 61-62 ms from the emulated host's own file system)."""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILN = os.path.join(ROOT, "build/kiln")  # staged() points it at the copy
STAGED = ("kiln", "kiln-vmm", "guest/vmlinux", "guest/kiln-initrd.cpio")
sys.path.insert(0, os.path.join(ROOT, "bench"))
from run import show  # noqa: E402  (bench/run.py: median, min, max of a phase)


def kiln(args, env, *argv, timeout=300):
    t0 = time.monotonic()
    p = subprocess.run([KILN, *argv], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, env=env, timeout=timeout)
    wall = (time.monotonic() - t0) * 1000
    lines = p.stderr.decode(errors="replace").strip().splitlines()
    if p.returncode != 0 or not lines:
        sys.stderr.write(f"bench/restore: kiln {argv[0]} failed ({p.returncode}): "
                         f"{lines[-1] if lines else ''}\n")
        return None
    try:
        d = json.loads(lines[-1])["durations_ms"]
    except (ValueError, KeyError):
        return {"wall": wall}
    d["wall"] = wall
    return d


def staged(tmp, image):
    """The binaries as kiln finds them (next to itself), and the image, under tmp."""
    global KILN
    for rel in STAGED:
        dst = os.path.join(tmp, "build", rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, "build", rel), dst)
    KILN = os.path.join(tmp, "build", "kiln")
    img = os.path.join(tmp, os.path.basename(image))
    shutil.copy2(image, img)
    return img


def rollup(pid):
    """smaps_rollup of a process in kB: Rss, Pss, Private_Clean + Private_Dirty."""
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                k, _, v = line.partition(":")
                if v.strip().endswith("kB"):
                    out[k] = int(v.split()[0])
    except OSError:
        return None
    out["Private"] = out.get("Private_Clean", 0) + out.get("Private_Dirty", 0)
    return out


def vmm_pids():
    p = subprocess.run(["pgrep", "-x", "kiln-vmm"], capture_output=True, text=True)
    return [int(x) for x in p.stdout.split()]


def clones(args, env):
    """N idle clones; the VMMs' RSS, PSS and private memory once all run."""
    procs = [subprocess.Popen([KILN, "run", "--template", "bench", "--", "sh", "-c",
                               "echo up; exec sleep 600"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
             for _ in range(args.clones)]
    try:
        up = sum(1 for p in procs if p.stdout.readline().strip() == b"up")
        time.sleep(2)  # idle
        # The jail's waiter is a kiln-vmm too: only the VMMs that map guest RAM.
        stats = [s for s in (rollup(pid) for pid in vmm_pids()) if s and s.get("Rss", 0) > 4096]
        print(f"\n{args.clones} idle clones of one {args.mem} MiB template ({up} up, "
              f"{len(stats)} VMMs read):")
        if stats:
            for k in ("Rss", "Pss", "Private", "Anonymous"):
                xs = [s.get(k, 0) / 1024 for s in stats]
                print(f"  {k:13s} per VMM: median {statistics.median(xs):7.1f} MiB  "
                      f"min {min(xs):7.1f}  max {max(xs):7.1f}   all: {sum(xs):8.1f} MiB")
            rss = sum(s.get("Rss", 0) for s in stats)
            pss = sum(s.get("Pss", 0) for s in stats)
            if rss:
                # What a clone owns is its anonymous memory: private copies of
                # the template's pages it wrote, and the VMM's heap. Template
                # pages it only reads are page cache (on tmpfs smaps calls them
                # Private_Dirty while a single clone maps them).
                print(f"  PSS / RSS over all clones: {pss / rss:.2f}; owned (anonymous) per clone "
                      f"{statistics.median([s.get('Anonymous', 0) / 1024 for s in stats]) / args.mem * 100:.1f} "
                      f"% of its guest RAM")
        return up == args.clones
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--clones", type=int, default=8)
    ap.add_argument("--cpus", type=int, default=1)
    ap.add_argument("--mem", type=int, default=256)
    ap.add_argument("--disk", type=int, default=64)
    ap.add_argument("--image", default=os.path.join(ROOT, "build/images/tiny.img"))
    args = ap.parse_args()
    cache = tempfile.mkdtemp(prefix="kiln-bench-restore.")
    env = dict(os.environ, KILN_CACHE=os.path.join(cache, "cache"))
    image = staged(cache, args.image)
    machine = ["--image", image, "--cpus", str(args.cpus), "--mem", str(args.mem),
               "--disk", str(args.disk)]
    ok = True
    try:
        made = kiln(args, env, "template", "create", "bench", *machine, "--", "true")
        if not made:
            sys.exit(1)
        print(f"# template made in {made['wall']:.0f} ms", flush=True)
        res = {"restored": [], "cold": []}
        for i in range(args.runs):
            order = ("restored", "cold") if i % 2 == 0 else ("cold", "restored")
            for kind in order:
                argv = (["run", "--template", "bench", "--json", "--", "true"] if kind == "restored"
                        else ["run", "--cold", *machine, "--json", "--", "true"])
                res[kind].append(kiln(args, env, *argv))
            print("# run %d: restored %.1f ms, cold %.1f ms" % (
                i + 1, *[(res[k][-1] or {}).get("total", float("nan")) for k in ("restored", "cold")]),
                flush=True)
        print(f"\nkiln run -- true, tiny image, {args.cpus} vCPU, {args.mem} MiB, {args.disk} MiB disk, "
              f"{args.runs} runs each, alternated:")
        med = {}
        for kind in ("restored", "cold"):
            good = [r for r in res[kind] if r and "total" in r]
            print(f"{kind}:")
            med[kind] = show("total", [r["total"] for r in good])
            show("start (to agent ready)", [r["boot"] for r in good])
            show("  of it: spawn", [r.get("spawn") for r in good])
            show("  of it: VMM ready", [r.get("ready") for r in good])
            show("exec", [r["exec"] for r in good])
            show("teardown", [r["teardown"] for r in good])
            ok = ok and len(good) == args.runs
        if med["restored"] and med["cold"]:
            print(f"ratio restored / cold (total): {med['restored'] / med['cold']:.3f}")
        ok = clones(args, env) and ok
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
