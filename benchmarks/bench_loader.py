"""Data-backend comparison in one run; prints images/s and the ratio to the torch DataLoader.

    python benchmarks/bench_loader.py --data-root ../shared/data [--steps 20] [--csv FILE]

1. ImageNet resolution: 224 px, two views, from imagenet-sample/ (334 JPEG photos, cycled):
   torch DataLoader (all cores) vs dali-cpu vs dali (GPU decode).
2. CIFAR-10: 32 px, two views, from cifar10/ npz shards: torch vs gpu-tensor vs dali.

Providers that cannot run here (no GPU, no DALI) are skipped with a note. Every measured row is
appended to --csv like `fastssl bench loader` does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from fastssl.data.loader_bench import DEFAULT_CSV, append_csv, bench_config, bench_loader
from fastssl.errors import FastSSLError


def _skip_reason(backend: str) -> str | None:
    import torch

    from fastssl.data.dali_loader import dali_unavailable_reason

    cuda = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if backend in ("dali", "dali-cpu"):
        return dali_unavailable_reason(backend, cuda)
    if backend == "gpu-tensor" and cuda.type != "cuda":
        return "gpu-tensor measured on the CPU (no CUDA GPU here): a functional check, not its use case"
    return None


def run(args: argparse.Namespace) -> list[dict]:
    suites = [
        ("imagenet-sample 224px", os.path.join(args.data_root, "imagenet-sample"), 224, args.batch_224, 0,
         ["torch", "dali-cpu", "dali"]),
        ("cifar10 32px", os.path.join(args.data_root, "cifar10"), 32, args.batch_32, args.cifar_limit,
         ["torch", "gpu-tensor", "dali", "dali-cpu"]),
    ]
    rows = []
    for title, path, size, batch, limit, backends in suites:
        print(f"\n== {title}: {path}, batch {batch}, {args.steps} steps")
        base = None
        for backend in backends:
            note = _skip_reason(backend)
            if note and backend != "gpu-tensor":
                print(f"  {backend:<11} skipped: {note}")
                continue
            cfg = bench_config(backend, path, batch=batch, image_size=size, limit=limit, workers=args.workers)
            try:
                row = bench_loader(cfg, args.steps, args.warmup)
            except FastSSLError as e:
                print(f"  {backend:<11} skipped: {e}")
                continue
            rows.append(row)
            if args.csv:
                append_csv(args.csv, row)
            base = row["images_per_s"] if backend == "torch" else base
            ratio = f"{row['images_per_s'] / base:5.2f}x torch" if base else ""
            extra = f"  ({note})" if note else ""
            rate = f"{row['images_per_s']:9.1f} images/s {row['views_per_s']:9.1f} views/s"
            print(f"  {backend:<11} {rate}  {ratio}{extra}")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=os.path.join("..", "shared", "data"))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch-224", type=int, default=64)
    p.add_argument("--batch-32", type=int, default=256)
    p.add_argument("--cifar-limit", type=int, default=0, help="use the first N CIFAR images (0 = all 50k)")
    p.add_argument("--workers", type=int, default=None, help="workers / DALI threads (default: all cores)")
    p.add_argument("--csv", default=DEFAULT_CSV)
    p.add_argument("--json", action="store_true", help="print all rows as JSON at the end")
    args = p.parse_args(argv)
    try:
        rows = run(args)
    except FastSSLError as e:
        print(f"bench_loader: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
