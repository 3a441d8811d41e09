"""`fastssl bench loader`: images/s of one data backend, as the training loop would see it.

    fastssl bench loader --backend {torch,dali,dali-cpu,gpu-tensor} --data PATH [--batch 256]
                         [--steps 50] [--warmup 5] [--image-size 224] [--local-crops 0]
                         [--workers N] [--dtype fp32] [--csv FILE] [--json]

The loader comes from the same factory as training (`build_pretrain_loader`) with the default
SimCLR/BYOL augmentation. After `--warmup` untimed steps, `--steps` steps are timed, cycling
epochs as needed; on CUDA the clock stops after a device sync, so queued GPU work is counted.
"Images" are source images per second; "views" counts every augmented view produced.
Each run appends a row to `--csv` (device, backend, image size, views, batch, images/s,
views/s, commit, date, plus data, steps and setup seconds).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import time
from typing import Any

import torch

from fastssl.config import Config
from fastssl.distributed import World
from fastssl.errors import FastSSLError
from fastssl.provenance import device_name, git_commit

CSV_FIELDS = (
    "device", "backend", "image_size", "views", "batch", "images_per_s", "views_per_s",
    "commit", "date", "data", "steps", "setup_s",
)
DEFAULT_CSV = os.path.join("benchmarks", "results", "loader.csv")


def bench_config(
    backend: str,
    data: str,
    *,
    dataset: str = "auto",
    batch: int = 256,
    image_size: int = 224,
    local_crops: int = 0,
    local_size: int = 96,
    workers: int | None = None,
    dtype: str = "fp32",
    limit: int = 0,
) -> Config:
    cfg = Config()
    d = cfg.data
    d.backend, d.path, d.dataset, d.image_size, d.dtype, d.limit = backend, data, dataset, image_size, dtype, limit
    d.num_workers = (os.cpu_count() or 1) if workers is None else workers
    # Benchmark every stored image: no held-out split.
    d.test_path = "(bench: no held-out split)"
    cfg.train.batch_size = batch
    cfg.aug.local_crops, cfg.aug.local_size = local_crops, local_size
    return cfg


def bench_loader(cfg: Config, steps: int, warmup: int = 5, device: str = "auto") -> dict[str, Any]:
    """Time `steps` batches of the configured backend; returns the CSV row as a dict."""
    from fastssl.data.loader import build_pretrain_loader, resolve_backend
    from fastssl.distributed import resolve_device

    if steps < 1 or warmup < 0:
        raise FastSSLError("--steps must be >= 1 and --warmup >= 0")
    dev = resolve_device(device)
    world = World(device=dev)
    t0 = time.perf_counter()
    loader = build_pretrain_loader(cfg, world)
    setup = time.perf_counter() - t0

    def batches():
        epoch = 0
        while True:
            loader.set_epoch(epoch)
            yield from loader
            epoch += 1

    it = batches()
    views = None
    for _ in range(warmup):
        views, _ = next(it)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        views, labels = next(it)
    sync()
    elapsed = time.perf_counter() - start
    num_views = len(views)
    images = steps * loader.batch_size / elapsed
    return {
        "device": device_name(dev),
        "backend": resolve_backend(cfg.data.backend, dev),
        "image_size": cfg.data.image_size,
        "views": num_views,
        "batch": loader.batch_size,
        "images_per_s": round(images, 1),
        "views_per_s": round(images * num_views, 1),
        "commit": git_commit(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "data": cfg.data.path,
        "steps": steps,
        "setup_s": round(setup, 2),
    }


def append_csv(path: str, row: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        if new:
            w.writeheader()
        w.writerow({k: row[k] for k in CSV_FIELDS})


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """`fastssl bench loader ...` (registers the `bench` command group)."""
    p = subparsers.add_parser("bench", help="benchmarks: loader throughput")
    sub = p.add_subparsers(dest="bench_cmd", metavar="{loader}", required=True)
    b = sub.add_parser("loader", help="images/s of a data backend", description=__doc__.split("\n\n")[0])
    b.add_argument("--backend", default="torch", help="torch | dali | dali-cpu | gpu-tensor | auto")
    b.add_argument("--data", required=True, help="dataset path (npz, image folder, list.txt, webdataset tars)")
    b.add_argument("--dataset", default="auto", help="format of --data (default: auto)")
    b.add_argument("--batch", type=int, default=256, help="batch size (one process)")
    b.add_argument("--steps", type=int, default=50, help="timed steps")
    b.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    b.add_argument("--image-size", type=int, default=224)
    b.add_argument("--local-crops", type=int, default=0, help="extra multi-crop views")
    b.add_argument("--local-size", type=int, default=96)
    b.add_argument("--workers", type=int, default=None, help="loader workers / DALI threads (default: all cores)")
    b.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    b.add_argument("--limit", type=int, default=0, help="use only the first N images")
    b.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    b.add_argument("--csv", default=DEFAULT_CSV, help=f"append the result here (default: {DEFAULT_CSV}; '' = none)")
    b.add_argument("--json", action="store_true", help="print the result as one JSON object")
    b.set_defaults(func=run_bench_loader)
    return p


def run_bench_loader(args: argparse.Namespace) -> int:
    cfg = bench_config(
        args.backend, args.data, dataset=args.dataset, batch=args.batch, image_size=args.image_size,
        local_crops=args.local_crops, local_size=args.local_size, workers=args.workers,
        dtype=args.dtype, limit=args.limit,
    )
    row = bench_loader(cfg, args.steps, args.warmup, args.device)
    if args.csv:
        append_csv(args.csv, row)
    if args.json:
        print(json.dumps(row))
    else:
        print(
            f"{row['backend']} on {row['device']}: {row['images_per_s']:.1f} images/s "
            f"({row['views_per_s']:.1f} views/s, {row['views']} views at {row['image_size']} px, batch {row['batch']})"
        )
    return 0
