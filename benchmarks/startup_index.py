"""Start-up time of an ImageFolder of N empty files, with and without the listing index.

    python benchmarks/startup_index.py [--images 1000000] [--classes 1000] [--root /tmp/fastssl-startup]
                                       [--out benchmarks/results/startup_index.md]

Creates ROOT/<class>/<i>.jpg (empty files: listing cost only, no image is read), then times, each
in a fresh process (so no Python-level cache is shared): opening the source with no index (the
listing, as every start did before), the first start that lists and writes the index, and a
start that reads the index (one stat per folder, no scandir). The files are listed once before
timing, so every row sees a warm page cache of the folder entries; a cold cache (a new node,
a network file system) makes the listing, not the index read, slower.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

_CHILD = """
import os, sys, time
t0 = time.perf_counter()
from fastssl.data.sources.factory import open_source
from fastssl.data.sources import listing_index
if sys.argv[2] == "plain":
    listing_index.cached_listing = lambda root, build, index_dir="": build(root)
import fastssl.data.sources.image_folder as f
f.cached_listing = listing_index.cached_listing
t1 = time.perf_counter()
src = open_source(sys.argv[1], "folder", "all")
print(len(src), time.perf_counter() - t1, t1 - t0)
"""


def make_tree(root: str, images: int, classes: int) -> None:
    per = images // classes
    for c in range(classes):
        d = os.path.join(root, f"c{c:05d}")
        os.makedirs(d, exist_ok=True)
        for i in range(per):
            open(os.path.join(d, f"{i:07d}.jpg"), "wb").close()


def start(root: str, mode: str) -> tuple[int, float]:
    r = subprocess.run([sys.executable, "-c", _CHILD, root, mode], capture_output=True, text=True, check=True)
    n, seconds, _ = r.stdout.split()
    return int(n), float(seconds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=1_000_000)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--root", default="/tmp/fastssl-startup")
    p.add_argument("--out", default="benchmarks/results/startup_index.md")
    args = p.parse_args()
    t0 = time.perf_counter()
    if not os.path.isdir(args.root):
        make_tree(args.root, args.images, args.classes)
    made = time.perf_counter() - t0
    index = os.path.join(args.root, ".fastssl-index")
    shutil.rmtree(index, ignore_errors=True)
    start(args.root, "plain")  # warm the page cache of the folder entries once
    rows = []
    for label, mode, clear in (("no index (lists every folder)", "plain", False),
                               ("first start: lists, writes the index", "index", True),
                               ("later start: reads the index", "index", False),
                               ("later start: reads the index", "index", False)):
        if clear:
            shutil.rmtree(index, ignore_errors=True)
        n, seconds = start(args.root, mode)
        rows.append((label, n, seconds))
        print(f"{label:<40} {n} images {seconds:7.2f} s", flush=True)
    load = os.getloadavg()
    size = sum(os.path.getsize(os.path.join(index, f)) for f in os.listdir(index))
    lines = [
        "# Start-up with and without the listing index", "",
        f"Command: `python benchmarks/startup_index.py --images {args.images} --classes {args.classes}`", "",
        f"Hardware: {os.cpu_count()} CPU cores ({_cpu()}), local disk; load average while running "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min; the machine is shared).", "",
        f"Data: an ImageFolder of {args.images} empty `.jpg` files in {args.classes} class folders "
        f"(made in {made:.0f} s; page cache warm). Index file: {size / 2**20:.1f} MiB.", "",
        "Time to open the source (`open_source(ROOT, 'folder')`, in a fresh process, imports excluded):", "",
        "| start | images | seconds |", "|---|---:|---:|",
        *[f"| {label} | {n} | {s:.2f} |" for label, n, s in rows], "",
    ]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {args.out}")


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


if __name__ == "__main__":
    main()
