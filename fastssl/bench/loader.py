"""`fastssl bench loader`: images/s of data backends, as the training loop would see them.

    fastssl bench loader --data PATH[,PATH...] [--backend torch,dali-cpu,gpu-tensor] [--batch 64] [--steps 10]
                         [--repeats 3] [--warmup 2] [--image-size 224] [--local-crops 0] [--workers N]
                         [--dtype fp32] [--limit N] [--device auto] [--json] [--csv PATH]

Each loader comes from the same factory as training (`fastssl.data.build_pretrain_loader`) with
the default SimCLR/BYOL augmentation. After `--warmup` untimed batches, `--repeats` windows of
`--steps` batches are timed, cycling epochs as needed; on CUDA the clock stops after a device
sync, so queued GPU work is counted. images/s is the median window's rate (p10/p90 beside it);
"images" are source images, "views" every augmented view produced. Ratios are to the torch
DataLoader on the same data in the same run; `--data` may list several paths (e.g. the same
images as npz shards and as webdataset tars, which every backend streams), each row naming its
`format`. One backend named alone must run (its error is the command's
error); in a list, a backend that cannot run here (no DALI, no GPU) is skipped with a note.
Peak memory is not measured: loader workers are separate processes.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from fastssl.bench.harness import Provenance, bench_device, cuda_sync, load_average, measure
from fastssl.bench.report import add_output_options, emit, log
from fastssl.errors import FastSSLError
from fastssl.registry import BENCHMARKS

FIELDS = (
    "backend", "format", "image_size", "views", "batch", "steps", "repeats", "images_per_s", "images_per_s_p10",
    "images_per_s_p90", "views_per_s", "ratio_vs_torch", "setup_s", "workers", "data", "note", "load_1m",
    *Provenance.fields(),
)  # fmt: skip
COLUMNS = ("backend", "format", "image_size", "batch", "images_per_s", "images_per_s_p10", "images_per_s_p90",
           "views_per_s", "ratio_vs_torch", "setup_s", "note")


def bench_config(backend: str, data: str, *, dataset: str = "auto", batch: int = 64, image_size: int = 224,
                 local_crops: int = 0, local_size: int = 96, workers: int | None = None, dtype: str = "fp32",
                 limit: int = 0):
    """A training config whose pretrain loader is the one to measure."""
    from fastssl.config import Config

    cfg = Config()
    d = cfg.data
    d.backend, d.path, d.dataset, d.image_size, d.dtype, d.limit = backend, data, dataset, image_size, dtype, limit
    d.num_workers = (os.cpu_count() or 1) if workers is None else workers
    # Every stored image is read: no held-out split.
    d.test_path = "(bench: no held-out split)"
    cfg.train.batch_size = batch
    cfg.aug.local_crops, cfg.aug.local_size = local_crops, local_size
    return cfg


def bench_backend(cfg, device, steps: int, repeats: int, warmup: int) -> dict[str, Any]:
    """Time `repeats` windows of `steps` batches after `warmup` batches; the row's rate columns."""
    from fastssl.data import build_pretrain_loader, resolve_backend
    from fastssl.distributed import World

    if steps < 1 or warmup < 0 or repeats < 1:
        raise FastSSLError("--steps and --repeats must be >= 1 and --warmup >= 0")
    t0 = time.perf_counter()
    loader = build_pretrain_loader(cfg, World(device=device))
    setup_s = time.perf_counter() - t0

    def batches():
        epoch = 0
        while True:
            loader.set_epoch(epoch)
            yield from loader
            epoch += 1

    it = batches()
    last: list = []

    def window():
        for _ in range(steps):
            last[:] = [next(it)[0]]

    # The harness's own warm-up call is one window; `warmup` counts batches, taken here.
    for _ in range(warmup):
        last[:] = [next(it)[0]]
    try:
        t = measure(window, warmup=0, repeats=repeats, sync=cuda_sync(device))
    finally:
        it.close()
        loader.close()  # its workers ignore SIGTERM: left running, they would outlive the command
    images = steps * loader.batch_size
    views = len(last[0])
    return {
        "backend": resolve_backend(cfg.data.backend, device),
        "views": views,
        "batch": loader.batch_size,
        "images_per_s": images / t.median_s,
        "images_per_s_p10": images / t.p90_s,  # the slow tail of the rate is the long tail of time
        "images_per_s_p90": images / t.p10_s,
        "views_per_s": images * views / t.median_s,
        "repeats": t.repeats,
        "setup_s": setup_s,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from fastssl.data.sources.factory import parse_slice, resolve_dataset

    device = bench_device(args.device)
    prov = Provenance.collect(device)
    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    datas = [d.strip() for d in args.data.split(",") if d.strip()]
    log(args, f"# bench loader: {prov.summary()}; {args.data}, batch {args.batch}, {args.steps} steps x {args.repeats}")
    rows, notes = [], []
    for data in datas:
        fmt = resolve_dataset(args.dataset, parse_slice(data)[0])
        for backend in backends:
            cfg = bench_config(backend, data, dataset=args.dataset, batch=args.batch, image_size=args.image_size,
                               local_crops=args.local_crops, local_size=args.local_size, workers=args.workers,
                               dtype=args.dtype, limit=args.limit)
            try:
                r = bench_backend(cfg, device, args.steps, args.repeats, args.warmup)
            except FastSSLError as e:
                if len(backends) == 1 and len(datas) == 1:
                    raise
                notes.append(f"{backend} skipped ({fmt}): {e}")
                log(args, f"  {backend:<11} {fmt:<10} skipped: {e}")
                continue
            gpu_on_cpu = r["backend"] == "gpu-tensor" and device.type != "cuda"
            note = "on CPU: a functional check, not its use case" if gpu_on_cpu else ""
            rows.append({**prov.as_row(), **r, "format": fmt, "image_size": args.image_size, "steps": args.steps,
                         "data": data, "workers": cfg.data.num_workers, "note": note, "load_1m": load_average()})
            log(args, f"  {r['backend']:<11} {fmt:<10} {r['images_per_s']:9.1f} images/s {r['views_per_s']:9.1f} views/s")
    for r in rows:
        base = next((b["images_per_s"] for b in rows if b["backend"] == "torch" and b["data"] == r["data"]), None)
        r["ratio_vs_torch"] = r["images_per_s"] / base if base else None
    return emit(
        "loader", args, rows, FIELDS, provenance=prov.as_row(), columns=COLUMNS, notes=notes,
        plot_spec=dict(x="backend", y="images_per_s", group=["backend", "format", "image_size"], kind="bar",
                       title=f"loader images/s, {prov.device}"),
    )


@BENCHMARKS.register("loader")
def add_parser(sub: Any) -> None:
    b = sub.add_parser("loader", help="images/s of data backends", description=__doc__.split("\n\n")[0])
    b.add_argument("--backend", default="torch",
                   help="torch | dali | dali-cpu | gpu-tensor | auto, or a comma-separated list to compare")
    b.add_argument("--data", required=True,
                   help="dataset path (npz, image folder, list.txt, webdataset tars), or a comma-separated list")
    b.add_argument("--dataset", default="auto", help="format of --data (default: auto)")
    b.add_argument("--batch", type=int, default=64, help="batch size (one process)")
    b.add_argument("--steps", type=int, default=10, help="batches per timed window")
    b.add_argument("--repeats", type=int, default=3, help="timed windows")
    b.add_argument("--warmup", type=int, default=2, help="untimed batches first")
    b.add_argument("--image-size", type=int, default=224)
    b.add_argument("--local-crops", type=int, default=0, help="extra multi-crop views")
    b.add_argument("--local-size", type=int, default=96)
    b.add_argument("--workers", type=int, default=None, help="loader workers / DALI threads (default: all cores)")
    b.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    b.add_argument("--limit", type=int, default=0, help="use only the first N images")
    b.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    add_output_options(b, "loader")
    b.set_defaults(func=lambda a: (run(a), 0)[1])
