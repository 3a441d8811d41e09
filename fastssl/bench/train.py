"""`fastssl bench train`: images/s and MFU of finished `fastssl train` runs (the GPU suite's smoke).

    fastssl bench train --run runs/simclr-ddp runs/simclr-fsdp [--gpus 1] [--flop-batch 2] [--csv PATH]

Each run folder's `config.json` and `metrics.jsonl` give one row:

- images/s, the steady rate between the first and the last `train` record:
  (last step - first step) x global batch / (last time - first time). Steps before the first
  record (start-up, cuDNN autotuning, Triton compiles) are left out, so a 30-step smoke needs
  `--train.log_every` at most 10. The trainer's own end-of-run figure includes them.
- GFLOPs per image: one forward+backward of the run's method (its config: views, multi-crop,
  masking, EMA target) on `--flop-batch` synthetic images per view, counted by
  torch.utils.flop_counter.FlopCounterMode (matmuls and convolutions, forward and backward; the
  optimizer and elementwise ops are not counted), divided by the images.
- MFU: GFLOPs/image x images/s over (`--gpus` x the GPU's dense bf16 peak, `fastssl.bench.mfu`);
  empty on CPU or an unknown GPU.

A run without two `train` records gets a row whose status says so; the others still count.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
from typing import Any

from fastssl.bench.harness import Provenance, bench_device, load_average
from fastssl.bench.mfu import device_peak_flops, mfu
from fastssl.bench.report import RowSink, add_output_options, emit, log
from fastssl.errors import FastSSLError
from fastssl.registry import BENCHMARKS

FIELDS = (
    "run", "method", "model", "image_size", "strategy", "precision", "loss_impl", "batch", "gpus", "steps",
    "images_per_s", "gflops_per_image", "tflops", "mfu", "status", "load_1m", *Provenance.fields(),
)  # fmt: skip
COLUMNS = ("run", "method", "model", "image_size", "strategy", "batch", "steps", "images_per_s",
           "gflops_per_image", "tflops", "mfu", "status")


def steady_rate(records: list[dict[str, Any]], global_batch: int) -> tuple[float, int] | None:
    """(images/s between the first and last train record, steps spanned); None with fewer than two."""
    train = [r for r in records if r.get("kind") == "train" and "time" in r]
    if len(train) < 2 or train[-1]["time"] <= train[0]["time"]:
        return None
    steps = train[-1]["step"] - train[0]["step"]
    return steps * global_batch / (train[-1]["time"] - train[0]["time"]), steps


def method_flops_per_image(cfg, device, per_view: int = 2) -> float:
    """FLOPs of one forward+backward of `cfg`'s method per source image (FlopCounterMode)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from fastssl.methods import build_method

    cfg = copy.deepcopy(cfg)
    if hasattr(cfg.method, "loss_impl"):
        # The reference loss is what FlopCounterMode can see (a Triton launch is invisible to it);
        # at a few images its (2N)^2 d FLOPs are negligible next to the backbone's anyway.
        cfg.method.loss_impl = "torch"
    torch.manual_seed(0)
    method = build_method(cfg).to(device).train()
    g = torch.Generator().manual_seed(0)
    views = [torch.randn(per_view, 3, v.size, v.size, generator=g).to(device)
             for v in type(method).view_spec(cfg).views]
    with FlopCounterMode(display=False) as fc:
        method(views, step=0, schedule_len=1.0)["loss"].backward()
    flops = fc.get_total_flops()
    del method, views
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return flops / per_view


def _read_run(path: str):
    from fastssl.config.config import Config

    try:
        with open(os.path.join(path, "config.json")) as f:
            cfg = Config.from_dict(json.load(f))
        with open(os.path.join(path, "metrics.jsonl")) as f:
            records = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError) as e:
        raise FastSSLError(f"{path}: not a finished fastssl run ({e})") from None
    return cfg, records


def _row(path: str, args, device, prov_row: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {**prov_row, "run": os.path.basename(os.path.normpath(path)), "gpus": args.gpus,
                           "load_1m": load_average()}
    try:
        cfg, records = _read_run(path)
    except FastSSLError as e:
        row["status"] = f"failed: {e}"
        return row
    row.update(method=cfg.method.name, model=cfg.model.name, image_size=cfg.data.image_size,
               strategy=cfg.dist.strategy, precision=cfg.train.precision,
               loss_impl=getattr(cfg.method, "loss_impl", ""), batch=cfg.train.batch_size)
    rate = steady_rate(records, cfg.train.batch_size)
    if rate is None:
        row["status"] = "failed: fewer than two train records in metrics.jsonl (lower --train.log_every)"
        return row
    per_image = method_flops_per_image(cfg, device, args.flop_batch)
    peak = device_peak_flops(device)
    row.update(images_per_s=rate[0], steps=rate[1], gflops_per_image=per_image / 1e9,
               tflops=per_image * rate[0] / 1e12,
               mfu=mfu(per_image * rate[0], 1.0, peak * args.gpus if peak else None), status="ok")
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    if not args.run:
        raise FastSSLError("--run: name at least one run folder")
    if args.gpus < 1 or args.flop_batch < 1:
        raise FastSSLError("--gpus and --flop-batch must be >= 1")
    device = bench_device(args.device)
    prov = Provenance.collect(device)
    log(args, f"# bench train: {prov.summary()}")
    sink = RowSink(args.csv, FIELDS)
    for path in args.run:
        row = sink.add(_row(path, args, device, prov.as_row()))
        log(args, f"  {row['run']:<24} {row.get('images_per_s', float('nan')):9.1f} images/s  "
                  f"MFU {row.get('mfu') if row.get('mfu') is not None else '-'}  {row['status']}")
    return emit(
        "train", args, sink.rows, FIELDS, provenance=prov.as_row(), columns=COLUMNS, notes=[], sink=sink,
        plot_spec=dict(x="run", y=["images_per_s", "tflops"], group=["run"], kind="bar",
                       title=f"fastssl train smoke, {prov.device}"),
    )


@BENCHMARKS.register("train")
def add_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="images/s and MFU of finished `fastssl train` runs",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--run", nargs="+", default=[], help="run folders (--train.out of each run)")
    p.add_argument("--gpus", type=int, default=1, help="GPUs each run used (MFU is per GPU)")
    p.add_argument("--flop-batch", type=int, default=2, help="images per view in the FLOP-counting step")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    add_output_options(p, "train")
    # Exit 1 when a run has no figure, so the GPU suite reports the smoke as failed.
    p.set_defaults(func=lambda a: 0 if all(r["status"] == "ok" for r in run(a)["rows"]) else 1)
