"""`fastssl bench backbone`: forward+backward images/s of each backbone at its recipe's image size.

    fastssl bench backbone [--models resnet-tiny,resnet18-cifar,...] [--image-size 0] [--batch 8]
                           [--amp none|bf16|fp16] [--warmup 1] [--repeats 3] [--json] [--csv PATH]

One step is the backbone alone on synthetic images already on the device: forward, a scalar of
the pooled features, backward (gradients allocated inside the step, as in training); no
optimiser, no projector, no data loading (`fastssl bench loader`). On CUDA ResNets run
channels_last, as `fastssl.parallel` sets them up for training. Each row: step time (median,
p10, p90), images/s, GFLOPs per image counted by torch.utils.flop_counter.FlopCounterMode on one
step (matmuls and convolutions, forward and backward), the achieved TFLOP/s, the MFU (those FLOPs
over the GPU's dense bf16 peak, `fastssl.bench.mfu`; empty on CPU), and peak memory above the
model and inputs (fresh process per model on CPU). Each row reaches the CSV as it is measured.

Image size: the first recipe (`fastssl recipes`) training that backbone decides, else 32 px for
CIFAR-stem models and 224 px otherwise; `--image-size` overrides it for every model.
"""

from __future__ import annotations

import argparse
from typing import Any

from fastssl.bench.harness import (Provenance, bench_device, cuda_sync, load_average, measure, measure_peak_memory,
                                   set_threads)
from fastssl.bench.mfu import device_peak_flops, mfu
from fastssl.bench.report import RowSink, add_output_options, emit, log
from fastssl.data.dtypes import output_dtype
from fastssl.errors import FastSSLError
from fastssl.registry import BENCHMARKS

CPU_MODELS = "resnet-tiny,resnet18-cifar,resnet18,resnet50,vit_tiny,vit_small"
CUDA_MODELS = "resnet18-cifar,resnet18,resnet50,vit_tiny,vit_small,vit_base"
AMP = ("none", "bf16", "fp16")

FIELDS = (
    "model", "image_size", "patch_size", "size_from", "batch", "amp", "status", "step_ms", "step_p10_ms",
    "step_p90_ms", "images_per_s", "repeats", "cold", "gflops_per_image", "tflops", "mfu", "peak_extra_mb",
    "mem_method", "params_m", "load_1m", *Provenance.fields(),
)  # fmt: skip
COLUMNS = ("model", "image_size", "batch", "amp", "step_ms", "step_p10_ms", "step_p90_ms", "images_per_s",
           "gflops_per_image", "tflops", "mfu", "peak_extra_mb", "params_m", "size_from", "status")


def recipe_size(name: str) -> tuple[int, int, str]:
    """(image_size, patch_size, where that came from) for backbone `name`."""
    from fastssl.recipes import RECIPES

    for recipe, make in RECIPES.items():
        cfg = make()
        if cfg.model.name == name:
            return cfg.data.image_size, cfg.model.patch_size, f"recipe {recipe}"
    if name.endswith("-cifar") or name in ("resnet-tiny", "vit_nano"):
        # CIFAR-sized models: 32 px; ViTs at that size need small patches (4 px: 8x8 tokens).
        return 32, 4, "CIFAR size (no recipe)"
    return 224, 16, "ImageNet size (no recipe)"


def make_step(name: str, image_size: int, patch_size: int, batch: int, device: str = "cpu", amp: str = "none"):
    """Model, images and one forward+backward step; also the child-process target for peak memory."""
    import torch

    from fastssl.models.backbone import build_backbone

    dev = torch.device(device)
    model = build_backbone(name, image_size=image_size, patch_size=patch_size).to(dev).train()
    x = torch.randn(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(0)).to(dev)
    if dev.type == "cuda" and "resnet" in name:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    dtype = None if amp == "none" else output_dtype(amp)

    def step():
        model.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            feats = model(x)  # [B, D]
        feats.float().square().mean().backward()

    step.params = sum(p.numel() for p in model.parameters())
    return step


def _count_flops(step) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        step()
    return fc.get_total_flops()


def _bench_model(args, device, name: str, prov_row: dict[str, Any]) -> dict[str, Any]:
    import torch

    size, patch, size_from = recipe_size(name)
    if args.image_size:
        size, size_from = args.image_size, "--image-size"
        patch = patch if size % patch == 0 else 16 if size % 16 == 0 else 4
    row = {**prov_row, "model": name, "image_size": size, "patch_size": patch, "size_from": size_from,
           "batch": args.batch, "amp": args.amp, "load_1m": load_average()}
    kw = dict(name=name, image_size=size, patch_size=patch, batch=args.batch, amp=args.amp)
    try:
        step = make_step(device=str(device), **kw)
        flops = _count_flops(step)  # also the first warm-up call
        t = measure(step, max(0, args.warmup - 1), args.repeats, cuda_sync(device), args.max_case_s)
        mem = measure_peak_memory(make_step, kw, device, {**kw, "batch": 1}, built=step) if args.memory else None
    except Exception as e:  # noqa: BLE001 -- an OOM is a result for this model; the others still run
        if not isinstance(e, (torch.OutOfMemoryError, MemoryError, FastSSLError)):
            raise
        row["status"] = f"failed: {str(e).splitlines()[0][:120]}"
        return row
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    row.update(
        status="ok", step_ms=t.median_s * 1e3, step_p10_ms=t.p10_s * 1e3, step_p90_ms=t.p90_s * 1e3,
        images_per_s=args.batch / t.median_s, repeats=t.repeats, cold=t.cold,
        gflops_per_image=flops / args.batch / 1e9, tflops=flops / t.median_s / 1e12, params_m=step.params / 1e6,
        mfu=mfu(flops, t.median_s, device_peak_flops(device)),
    )
    if mem is not None:
        row.update(peak_extra_mb=mem.extra_mb, mem_method=mem.method)
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    from fastssl.registry import BACKBONES

    device = bench_device(args.device)
    set_threads(args.threads)
    models = [m.strip() for m in (args.models or (CUDA_MODELS if device.type == "cuda" else CPU_MODELS)).split(",")]
    if bad := [m for m in models if m not in BACKBONES]:
        raise FastSSLError(f"--models: unknown backbone {', '.join(bad)}; choose from {', '.join(BACKBONES)}")
    if args.amp is None:
        args.amp = "bf16" if device.type == "cuda" else "none"
    if args.batch is None:
        args.batch = 128 if device.type == "cuda" else 8
    if args.batch < 1:
        raise FastSSLError("--batch must be >= 1")
    prov = Provenance.collect(device)
    log(args, f"# bench backbone: {prov.summary()}; batch {args.batch}, amp {args.amp}")
    sink = RowSink(args.csv, FIELDS)
    for name in models:
        row = sink.add(_bench_model(args, device, name, prov.as_row()))
        log(args, f"  {name:<16} {row['image_size']:>4}px  {row.get('images_per_s', float('nan')):9.1f} images/s  "
                  f"{row.get('peak_extra_mb', float('nan')):8.1f} MiB  {row['status']}")
    return emit(
        "backbone", args, sink.rows, FIELDS, provenance=prov.as_row(), columns=COLUMNS, notes=[], sink=sink,
        plot_spec=dict(x="model", y=["images_per_s", "tflops"], group=["model", "image_size"], kind="bar", logy=True,
                       title=f"backbone fwd+bwd, batch {args.batch}, {prov.device}"),
    )


@BENCHMARKS.register("backbone")
def add_parser(sub: Any) -> None:
    p = sub.add_parser("backbone", help="forward+backward images/s per backbone", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=None, help=f"comma-separated (default CPU {CPU_MODELS}; CUDA {CUDA_MODELS})")
    p.add_argument("--image-size", type=int, default=0, help="one size for every model (default: each recipe's)")
    p.add_argument("--batch", type=int, default=None, help="images per step (default CPU 8, CUDA 128)")
    p.add_argument("--amp", default=None, choices=AMP, help="autocast dtype (default bf16 on CUDA, none on CPU)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (the FLOP-counting step is one)")
    p.add_argument("--repeats", type=int, default=3, help="timed steps (fewer when --max-case-s runs out)")
    p.add_argument("--max-case-s", type=float, default=30.0, help="time allowed per model")
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory measurement")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's, one per core)")
    add_output_options(p, "backbone")
    p.set_defaults(func=lambda a: (run(a), 0)[1])
