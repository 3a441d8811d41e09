"""Training-step throughput: images/s, views/s, MFU and peak memory, per (method, model, size).

The step is the real one (method forward, backward, optimiser step) on synthetic views already
on the device, so this measures compute alone; `fastssl bench loader` measures data loading.
MFU = achieved FLOP/s / peak FLOP/s, with FLOPs counted by torch.utils.flop_counter on one step
and the peak given by --peak-tflops (default: a bf16 matmul measured in the same run).

    python benchmarks/bench_train.py --small                         # CPU, seconds
    python benchmarks/bench_train.py --configs simclr:resnet50:224:256 byol:resnet18-cifar:32:512
"""

from __future__ import annotations

import argparse
import csv
import datetime
import sys
import time
from pathlib import Path

import torch

from fastssl.config import Config
from fastssl.methods import build_method
from fastssl.provenance import device_name, git_commit
from fastssl.train.optim import build_optimizer


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int, iters: int = 10) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(iters):
        a @ b
    sync(device)
    return 2 * n**3 * iters / (time.perf_counter() - t) / 1e12


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_one(method_name: str, model: str, size: int, batch: int, steps: int, device: torch.device,
              amp: torch.dtype | None) -> dict:
    cfg = Config()
    cfg.method.name, cfg.model.name, cfg.data.image_size = method_name, model, size
    cfg.model.patch_size = 16 if size >= 128 else 4
    method = build_method(cfg).to(device).train()
    if device.type == "cuda" and "resnet" in model:
        method = method.to(memory_format=torch.channels_last)
    opt = build_optimizer(method, cfg.optim, 0.1)
    views = [torch.randn(batch, 3, size, size, device=device) for _ in range(2)]

    def step(i: int) -> None:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            out = method(views, step=i, max_steps=steps)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        if hasattr(method, "on_after_step"):
            method.on_after_step(i, steps)

    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        step(0)
    flops = fc.get_total_flops()
    step(1)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    for i in range(steps):
        step(i)
    sync(device)
    dt = (time.perf_counter() - t) / steps
    return {
        "method": method_name, "model": model, "image_size": size, "batch": batch,
        "step_ms": round(dt * 1e3, 2), "images_per_s": round(batch / dt, 1), "views_per_s": round(2 * batch / dt, 1),
        "tflops_per_s": round(flops / dt / 1e12, 4),
        "peak_mem_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else "",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="*", help="method:model:image_size:batch entries")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--small", action="store_true", help="tiny CPU run (seconds)")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="peak for MFU; default: measured bf16 matmul")
    p.add_argument("--csv", default="benchmarks/results/train_throughput.csv")
    args = p.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = torch.bfloat16 if device.type == "cuda" else None
    if args.small:
        configs, steps = ["simclr:resnet-tiny:16:128", "byol:resnet-tiny:16:128", "simclr:resnet18:32:64"], 5
    else:
        configs, steps = args.configs or [
            "simclr:resnet18-cifar:32:512", "byol:resnet18-cifar:32:512", "simclr:resnet50:224:256",
            "simclr:vit_small:224:256",
        ], args.steps
    peak = args.peak_tflops or (matmul_tflops(device, torch.bfloat16 if device.type == "cuda" else torch.float32,
                                              8192 if device.type == "cuda" else 1024))
    meta = {"device": device_name(device), "torch": torch.__version__, "commit": git_commit(),
            "date": datetime.date.today().isoformat(), "peak_tflops": round(peak, 2)}
    print(f"# {meta}")
    rows = []
    for entry in configs:
        m, model, size, batch = entry.split(":")
        row = bench_one(m, model, int(size), int(batch), steps, device, amp)
        row["mfu"] = round(row["tflops_per_s"] / peak, 4)
        rows.append({**meta, **row})
        print(f"{m:<7} {model:<16} {size:>4}px b{batch:<5} {row['step_ms']:>9.1f} ms/step "
              f"{row['images_per_s']:>9.1f} img/s {row['views_per_s']:>9.1f} views/s  MFU {row['mfu']:.1%}  "
              f"mem {row['peak_mem_gb']} GB", flush=True)
    base = rows[0]["images_per_s"]
    for r in rows[1:]:
        print(f"ratio {r['method']}/{r['model']} vs {rows[0]['method']}/{rows[0]['model']}: "
              f"{r['images_per_s'] / base:.2f}x images/s")
    path = Path(args.csv)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        if new:
            w.writeheader()
        w.writerows(rows)
    print(f"# appended {len(rows)} rows to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
