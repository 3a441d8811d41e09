"""NT-Xent: torch (materialised 2N x 2N logits) vs the fused Triton kernel, in one run.

    python benchmarks/bench_nt_xent.py --csv benchmarks/results/nt_xent.csv   # GPU
    python benchmarks/bench_nt_xent.py --small                                # CPU smoke run

Per batch size 2N it reports forward and forward+backward time, peak memory above the inputs,
effective TFLOP/s = 8 (2N)^2 d / t(fwd+bwd) (forward logits, their recomputation, dQ and dK: four
2N x 2N x d matmuls of 2 flops per multiply-add), that rate as a fraction of a large bf16 matmul
timed in the same run, and whether torch ran out of memory. `--small` runs the kernel in the Triton
interpreter on CPU at toy sizes: it proves the script works and says nothing about speed.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import sys
import time

FIELDS = [
    "two_n", "d", "dtype", "impl", "fwd_ms", "fwd_bwd_ms", "peak_extra_mib", "tflops",
    "frac_of_matmul", "oom", "time_ratio_vs_torch", "mem_ratio_vs_torch",
]  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="CPU + Triton interpreter, toy sizes, seconds")
    p.add_argument("--sizes", default=None, help="comma-separated 2N values (default 4k..1M, or 64,128 with --small)")
    p.add_argument("--dim", type=int, default=None, help="embedding dim d (default 128, 32 with --small)")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--temperature", type=float, default=0.1)
    p.add_argument("--repeats", type=int, default=None, help="timed repetitions (default 10 GPU, 2 CPU)")
    p.add_argument("--csv", default=None, help="also write the rows to this CSV path")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.small:
        # Must precede the first triton import: triton.jit decides at decoration time.
        os.environ["TRITON_INTERPRET"] = "1"
    import torch
    import triton

    from fastssl.losses import nt_xent

    cuda = torch.cuda.is_available() and not args.small
    if not cuda and not args.small:
        print("no CUDA device: run with --small for a CPU smoke run", file=sys.stderr)
        return 2
    device = torch.device("cuda" if cuda else "cpu")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    default_sizes = "64,128" if args.small else "4096,16384,65536,262144,1048576"
    sizes = [int(s) for s in (args.sizes or default_sizes).split(",")]
    d = args.dim or (32 if args.small else 128)
    repeats = args.repeats or (2 if args.small else 10)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def timed(fn) -> float:
        """Median milliseconds over `repeats` calls after one warm-up (compilation, autotune)."""
        fn()
        sync()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            sync()
            times.append((time.perf_counter() - t0) * 1e3)
        return sorted(times)[len(times) // 2]

    def matmul_ceiling_tflops() -> float:
        s = 8192 if cuda else 256
        a = torch.randn(s, s, device=device, dtype=dtype)
        b = torch.randn(s, s, device=device, dtype=dtype)
        ms = timed(lambda: a @ b)
        return 2 * s**3 / (ms * 1e-3) / 1e12

    def measure(two_n: int, impl: str) -> dict:
        n = two_n // 2
        z1 = torch.randn(n, d, device=device, dtype=dtype, requires_grad=True)
        z2 = torch.randn(n, d, device=device, dtype=dtype, requires_grad=True)

        def fwd():
            with torch.no_grad():
                nt_xent(z1, z2, args.temperature, impl=impl)

        def fwd_bwd():
            z1.grad = z2.grad = None
            nt_xent(z1, z2, args.temperature, impl=impl).backward()

        row = {"two_n": two_n, "d": d, "dtype": args.dtype, "impl": impl, "oom": False}
        try:
            row["fwd_ms"] = timed(fwd)
            fwd_bwd()  # leaves .grad allocated, as in training, before the baseline is read
            sync()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            row["fwd_bwd_ms"] = timed(fwd_bwd)
            if cuda:
                row["peak_extra_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
        except torch.OutOfMemoryError:
            row["oom"] = True  # keeps the forward time if only the backward ran out
        finally:
            z1.grad = z2.grad = None
            if cuda:
                torch.cuda.empty_cache()
        if row.get("fwd_bwd_ms"):
            row["tflops"] = 8 * two_n**2 * d / (row["fwd_bwd_ms"] * 1e-3) / 1e12
            row["frac_of_matmul"] = row["tflops"] / ceiling
        return row

    ceiling = matmul_ceiling_tflops()
    rows = []
    for two_n in sizes:
        by_impl = {impl: measure(two_n, impl) for impl in ("torch", "triton")}
        t, f = by_impl["torch"], by_impl["triton"]
        if t.get("fwd_bwd_ms") and f.get("fwd_bwd_ms"):
            f["time_ratio_vs_torch"] = f["fwd_bwd_ms"] / t["fwd_bwd_ms"]
        if t.get("peak_extra_mib") and f.get("peak_extra_mib"):
            f["mem_ratio_vs_torch"] = f["peak_extra_mib"] / t["peak_extra_mib"]
        rows += [t, f]

    name = torch.cuda.get_device_name(device) if cuda else "CPU (Triton interpreter; timings are not kernel speed)"
    print(f"device: {name}")
    from fastssl.provenance import git_commit

    print(f"torch {torch.__version__}, triton {triton.__version__}, commit {git_commit()}, "
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}")  # fmt: skip
    print(f"{args.dtype} matmul ceiling: {ceiling:.4g} TFLOP/s; d={d}, t={args.temperature}, median of {repeats}")
    print(" ".join(f"{h:>20}" if i == 0 else f"{h:>14}" for i, h in enumerate(FIELDS)))
    for r in rows:
        print(" ".join(_fmt(r.get(h)).rjust(20 if i == 0 else 14) for i, h in enumerate(FIELDS)))
    if args.csv:
        os.makedirs(os.path.dirname(os.path.abspath(args.csv)), exist_ok=True)
        with open(args.csv, "w", newline="") as fh:
            w = csv.DictWriter(fh, FIELDS)
            w.writeheader()
            w.writerows({h: _fmt(r.get(h)) for h in FIELDS} for r in rows)
        print(f"wrote {args.csv}")
    return 0


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


if __name__ == "__main__":
    sys.exit(main())
