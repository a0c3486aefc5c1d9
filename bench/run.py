#!/usr/bin/env python3
"""`kiln run -- true` end to end, split into phases, next to a bare kiln-vmm
boot of the same kernel (bench/boot's measurement), alternated run by run in
the same host. Needs /dev/kvm: bench/run wraps it in scripts/with-kvm."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import boot  # noqa: E402  (bench/boot.py: the bare-boot measurement)


NO_WALLS = ["--no-jail", "--no-seccomp", "--no-cgroup"]


def kiln_run(args, extra=(), image=None, cmd=("true",)):
    t0 = time.monotonic()
    p = subprocess.run([os.path.join(ROOT, "build/kiln"), "run", "--image", image or args.image, "--json",
                        "--cpus", str(args.cpus), "--mem", str(args.mem), *extra, "--", *cmd],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout=args.timeout)
    wall = time.monotonic() - t0
    lines = p.stderr.decode(errors="replace").strip().splitlines()
    if p.returncode != 0 or not lines:
        sys.stderr.write(f"bench/run: kiln run failed ({p.returncode}): {lines[-1] if lines else ''}\n")
        return None
    d = json.loads(lines[-1])["durations_ms"]
    d["wall"] = wall * 1000
    return d


def show(name, xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        print(f"  {name:22s} no data")
        return None
    med = statistics.median(xs)
    print(f"  {name:22s} median {med:9.1f} ms  min {min(xs):9.1f}  max {max(xs):9.1f}  (n={len(xs)})")
    return med


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--cpus", type=int, default=1)
    ap.add_argument("--mem", type=int, default=256)
    ap.add_argument("--image", default=os.path.join(ROOT, "build/images/tiny.img"))
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--walls", action="store_true",
                    help="compare the default (jail, seccomp, cgroup) with --no-jail --no-seccomp --no-cgroup")
    ap.add_argument("--compress", nargs=2, metavar=("COMPRESSED", "UNCOMPRESSED"),
                    help="cold `kiln run -- python3 -c pass` on two images of the same tree, alternated")
    args = ap.parse_args()
    if args.walls:
        walls(args)
        return
    if args.compress:
        compress(args)
        return
    bargs = argparse.Namespace(mem=args.mem, cpus=args.cpus, timeout=args.timeout, settle=0.0,
                               kernel=os.path.join(ROOT, "build/guest/vmlinux"),
                               initrd=os.path.join(ROOT, "build/guest/test-initrd.cpio"), qemu=None)
    runs, bare = [], []
    for i in range(args.runs):
        order = ("run", "bare") if i % 2 == 0 else ("bare", "run")
        for kind in order:
            if kind == "run":
                runs.append(kiln_run(args))
            else:
                b, _ = boot.run_one("kiln", bargs)
                bare.append(b * 1000 if b else None)
        r = runs[-1]
        print(f"# run {i + 1}: kiln run total {r['total'] if r else float('nan'):.1f} ms, "
              f"bare boot {bare[-1] if bare[-1] else float('nan'):.1f} ms", flush=True)
    ok = [r for r in runs if r]
    print(f"\nkiln run -- true ({args.cpus} vCPU, {args.mem} MiB, image {os.path.basename(args.image)}, "
          f"{args.runs} runs):")
    for phase in ("boot", "guest_boot", "exec", "teardown", "total", "wall"):
        show(phase, [r.get(phase) for r in ok])
    print("bare kiln-vmm boot to userspace (test initramfs):")
    bm = show("boot", bare)
    tm = statistics.median([r["total"] for r in ok]) if ok else None
    if bm and tm:
        print(f"ratio kiln-run-total / bare-boot: {tm / bm:.2f}")
    sys.exit(0 if len(ok) == args.runs and all(bare) else 1)


def walls(args):
    """Start-up cost of the walls: kiln run -- true with and without them,
    alternated, plus the VMM's own measure of its jail + seccomp set-up."""
    on, off = [], []
    for i in range(args.runs):
        order = ("on", "off") if i % 2 == 0 else ("off", "on")
        for kind in order:
            (on if kind == "on" else off).append(kiln_run(args, () if kind == "on" else NO_WALLS))
        print(f"# run {i + 1}: with walls {on[-1]['total'] if on[-1] else float('nan'):.1f} ms, "
              f"without {off[-1]['total'] if off[-1] else float('nan'):.1f} ms", flush=True)
    on_ok, off_ok = [r for r in on if r], [r for r in off if r]
    print(f"\nkiln run -- true ({args.cpus} vCPU, {args.mem} MiB, {args.runs} runs each, alternated):")
    print("with jail + seccomp + cgroup (default):")
    m_on = show("total", [r["total"] for r in on_ok])
    show("boot", [r["boot"] for r in on_ok])
    w = show("vmm_walls (in the VMM)", [r.get("vmm_walls") for r in on_ok])
    print("with --no-jail --no-seccomp --no-cgroup:")
    m_off = show("total", [r["total"] for r in off_ok])
    show("boot", [r["boot"] for r in off_ok])
    if m_on and m_off:
        print(f"overhead of the walls, end to end: {m_on - m_off:+.1f} ms ({(m_on / m_off - 1) * 100:+.1f} %)"
              f"  (noise: the emulated boot alone varies by seconds)")
    if w and m_on:
        print(f"VMM's own jail + seccomp set-up: {w:.2f} ms = {w / m_on * 100:.2f} % of the total")
    sys.exit(0 if len(on_ok) == len(off_ok) == args.runs else 1)


def compress(args):
    """The run-time cost of erofs compression: a fresh VM per run (the guest's
    page cache is cold, so python3 and its modules are read and decompressed
    from the image), the compressed and the uncompressed image alternated."""
    imgs = {"compressed": args.compress[0], "uncompressed": args.compress[1]}
    res = {k: [] for k in imgs}
    for i in range(args.runs):
        order = ("compressed", "uncompressed") if i % 2 == 0 else ("uncompressed", "compressed")
        for kind in order:
            res[kind].append(kiln_run(args, image=imgs[kind], cmd=("python3", "-c", "pass")))
        print("# run %d: compressed %.1f ms, uncompressed %.1f ms" % (
            i + 1, *[(res[k][-1] or {}).get("total", float("nan")) for k in ("compressed", "uncompressed")]),
            flush=True)
    print(f"\nkiln run -- python3 -c pass ({args.cpus} vCPU, {args.mem} MiB, {args.runs} runs each, alternated):")
    med = {}
    for kind, path in imgs.items():
        ok = [r for r in res[kind] if r]
        size = os.path.getsize(path)
        print(f"{kind}: {os.path.basename(os.path.realpath(path))}, {size / 1048576:.1f} MiB")
        med[kind] = show("total", [r["total"] for r in ok])
        show("exec (python3 -c pass)", [r["exec"] for r in ok])
        show("boot", [r["boot"] for r in ok])
    if med["compressed"] and med["uncompressed"]:
        print(f"ratio compressed / uncompressed (total): {med['compressed'] / med['uncompressed']:.3f}")
    sys.exit(0 if all(all(res[k]) for k in res) else 1)


if __name__ == "__main__":
    main()
