"""`fastssl bench loss`: SimCLR's NT-Xent by provider (torch reference, chunked, Triton) over 2N and d.

    fastssl bench loss [--sizes 2048,...,65536] [--dims 128] [--dtype fp32] [--providers torch,chunked,triton]
                       [--mem-budget-mb 2048] [--verify-max-s 30] [--json] [--csv PATH]

Per (provider, 2N, d, dtype) row: forward (no grad) and forward+backward time (median, p10, p90),
peak memory above the inputs during forward+backward (a fresh process per case on CPU, see
`fastssl.bench.harness`), time and memory ratios to the torch reference at the same size, the
matmul FLOPs the provider executes in forward+backward (`fastssl.losses.contrastive_flops`,
recomputation included), the TFLOP/s they imply and the MFU (`fastssl.bench.mfu`: those analytic
FLOPs over the GPU's dense bf16 peak; empty on CPU). Rows reach the CSV as each is measured.

Memory budget (--mem-budget-mb): sizes run in increasing order; once a provider has two measured
sizes, its peak is predicted as a + b (2N)^p (p = 2 for the torch reference, which holds the
2N x 2N logits, 1 for the chunked and fused providers) from the two largest, and a size predicted
over the budget is skipped with the predicted MiB shown. Per provider a `budget-max` row then
gives the largest 2N predicted to fit, verified by one measured run unless that run is predicted
to take longer than --verify-max-s (time scales as (2N)^2).

Triton runs only on CUDA: off CUDA it would run in the Triton interpreter, whose timings say
nothing about the kernel, so it is skipped with a note.
"""

from __future__ import annotations

import argparse
from typing import Any

from fastssl.bench.harness import (MIB, Provenance, Timing, bench_device, cuda_sync, load_average, measure,
                                   measure_peak_memory, set_threads)
from fastssl.bench.mfu import device_peak_flops, mfu
from fastssl.bench.report import RowSink, add_output_options, emit, log
from fastssl.data.dtypes import output_dtype
from fastssl.errors import FastSSLError
from fastssl.registry import BENCHMARKS

PROVIDERS = ("torch", "chunked", "triton")
# Exponent of 2N in each provider's peak memory: the reference materialises [2N, 2N] logits;
# the chunked and fused providers hold O(2N) rows (times a fixed chunk or tile).
MEMORY_ORDER = {"torch": 2, "chunked": 1, "triton": 1}
DTYPES = ("fp32", "bf16", "fp16")
# Under 5 minutes on 2 cores; the 2N = 65,536 memory goal is one flag away (benchmarks/README.md).
CPU_SIZES = "2048,4096,8192,16384"
CUDA_SIZES = "4096,16384,65536,262144,1048576"
CPU_BUDGET_MB = 2048

FIELDS = (
    "case", "provider", "two_n", "d", "dtype", "status",
    "fwd_ms", "fwd_p10_ms", "fwd_p90_ms", "fwd_bwd_ms", "fwd_bwd_p10_ms", "fwd_bwd_p90_ms", "repeats", "cold",
    "peak_extra_mb", "predicted_peak_mb", "budget_mb", "mem_method", "flops_fwd_bwd", "tflops", "mfu",
    "time_ratio_vs_torch", "mem_ratio_vs_torch", "temperature", "load_1m", *Provenance.fields(),
)  # fmt: skip
COLUMNS = (
    "case", "provider", "two_n", "d", "dtype", "fwd_ms", "fwd_bwd_ms", "fwd_bwd_p10_ms", "fwd_bwd_p90_ms",
    "peak_extra_mb", "predicted_peak_mb", "tflops", "mfu", "time_ratio_vs_torch", "mem_ratio_vs_torch", "status",
)  # fmt: skip


def nt_xent_flops(provider: str, two_n: int, d: int) -> int:
    """Matmul FLOPs `provider` executes for single-process NT-Xent forward+backward over 2N rows.

    Recomputation included (`fastssl.losses.contrastive_flops`): torch and triton run 3 passes of
    2 (2N)^2 d; chunked computes only tiles on and above the diagonal. TFLOP/s is therefore how
    busy each provider keeps the hardware; time_ratio_vs_torch compares the work done per loss.
    """
    from fastssl.losses import contrastive_flops

    return contrastive_flops(provider, two_n, two_n, d, symmetric=True, backward=True)


def make_case(two_n: int, d: int, dtype: str, impl: str, temperature: float = 0.1, device: str = "cpu",
              backward: bool = True):
    """Inputs for one case and the call to time; also the child-process target for peak memory."""
    import torch

    from fastssl.losses import nt_xent

    torch_dtype = output_dtype(dtype)
    g = torch.Generator().manual_seed(0)
    z1, z2 = (
        torch.randn(two_n // 2, d, generator=g).to(device=device, dtype=torch_dtype).requires_grad_()
        for _ in range(2)
    )  # [N, d] each

    if backward:
        def run():
            z1.grad = z2.grad = None  # gradients are allocated inside the measured call, as in training
            nt_xent(z1, z2, temperature, impl=impl).backward()
    else:
        def run():
            with torch.no_grad():
                nt_xent(z1, z2, temperature, impl=impl)
    return run


class MemoryModel:
    """Peak bytes ~ a + b (2N)^p per (provider, d, dtype), from the two largest measured sizes."""

    def __init__(self) -> None:
        self.points: dict[tuple, dict[int, int]] = {}

    def add(self, key: tuple, two_n: int, peak_bytes: int) -> None:
        self.points.setdefault(key, {})[two_n] = peak_bytes

    def fit(self, key: tuple) -> tuple[float, float, int] | None:
        pts = sorted(self.points.get(key, {}).items())
        if len(pts) < 2:
            return None
        p = MEMORY_ORDER[key[0]]
        (n1, m1), (n2, m2) = pts[-2:]
        b = (m2 - m1) / (n2**p - n1**p)
        if b <= 0:
            return None  # memory did not grow over the measured sizes: no basis to extrapolate
        return m1 - b * n1**p, b, p

    def predict(self, key: tuple, two_n: int) -> float | None:
        f = self.fit(key)
        return None if f is None else f[0] + f[1] * two_n ** f[2]

    def largest_fitting(self, key: tuple, budget_bytes: float) -> int | None:
        f = self.fit(key)
        if f is None or budget_bytes <= f[0]:
            return None
        n = int(((budget_bytes - f[0]) / f[1]) ** (1 / f[2]))
        step = 256 if n >= 512 else 2
        return n // step * step or None


def _unavailable(provider: str, device) -> str | None:
    from fastssl.losses import IMPLS

    if provider not in IMPLS:
        return f"fastssl.losses has no impl='{provider}' (available: {', '.join(IMPLS)})"
    if provider == "triton":
        if device.type != "cuda":
            return "triton skipped off CUDA: the Triton interpreter's timings say nothing about the kernel"
        try:
            import triton  # noqa: F401
        except ImportError as e:
            return f"triton unavailable: {e}"
    return None


def _peak(args, device, two_n: int, d: int, dtype: str, provider: str):
    kw = dict(two_n=two_n, d=d, dtype=dtype, impl=provider, temperature=args.temperature)
    return measure_peak_memory(make_case, kw, device, prime_kwargs={**kw, "two_n": 8})


def _timing_cols(prefix: str, t: Timing) -> dict[str, Any]:
    return {f"{prefix}_ms": t.median_s * 1e3, f"{prefix}_p10_ms": t.p10_s * 1e3, f"{prefix}_p90_ms": t.p90_s * 1e3}


def _is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, (torch.OutOfMemoryError, MemoryError))


def _measure_case(args, device, row: dict[str, Any], model: MemoryModel) -> None:
    """Fill `row` for one timed case: peak memory, forward and forward+backward timings."""
    key = (row["provider"], row["d"], row["dtype"])
    sync = cuda_sync(device)
    kw = dict(two_n=row["two_n"], d=row["d"], dtype=row["dtype"], impl=row["provider"],
              temperature=args.temperature, device=str(device))
    mem = None
    if device.type != "cuda":  # CPU: memory first, in a child; a slow case reuses its run as the timing
        mem = _peak(args, device, row["two_n"], row["d"], row["dtype"], row["provider"])
    fwd = measure(make_case(backward=False, **kw), args.warmup, args.repeats, sync, args.max_case_s)
    if mem is not None and mem.run_s >= args.max_case_s / 2:
        fwd_bwd = Timing.from_samples([mem.run_s], cold=True)
    else:
        fwd_bwd = measure(make_case(**kw), args.warmup, args.repeats, sync, args.max_case_s)
    if device.type == "cuda":
        mem = _peak(args, device, row["two_n"], row["d"], row["dtype"], row["provider"])
    model.add(key, row["two_n"], mem.extra_bytes)
    flops = nt_xent_flops(row["provider"], row["two_n"], row["d"])
    row.update(_timing_cols("fwd", fwd), **_timing_cols("fwd_bwd", fwd_bwd))
    row.update(repeats=fwd_bwd.repeats, cold=fwd_bwd.cold or fwd.cold, peak_extra_mb=mem.extra_mb,
               mem_method=mem.method, flops_fwd_bwd=flops, tflops=flops / fwd_bwd.median_s / 1e12,
               mfu=mfu(flops, fwd_bwd.median_s, device_peak_flops(device)), status="ok")


def _budget_row(args, device, base: dict[str, Any], key: tuple, model: MemoryModel, rows: list) -> dict[str, Any]:
    provider, d, dtype = key
    budget = args.mem_budget_mb * MIB
    row = {**base, "case": "budget-max", "provider": provider, "d": d, "dtype": dtype}
    two_n = model.largest_fitting(key, budget)
    if two_n is None:
        row["status"] = "no prediction: needs two measured sizes whose peak grows with 2N"
        return row
    row.update(two_n=two_n, predicted_peak_mb=model.predict(key, two_n) / MIB)
    ref = max((r for r in rows if r["case"] == "timed" and r.get("fwd_bwd_ms") and
               (r["provider"], r["d"], r["dtype"]) == key), key=lambda r: r["two_n"])
    predicted_s = ref["fwd_bwd_ms"] / 1e3 * (two_n / ref["two_n"]) ** 2
    if predicted_s > args.verify_max_s:
        row["status"] = f"not verified: one run predicted to take {predicted_s:.0f} s > --verify-max-s"
        return row
    try:
        mem = _peak(args, device, two_n, d, dtype, provider)
    except Exception as e:  # noqa: BLE001 -- an OOM here is the answer, not a crash
        if not (_is_oom(e) or isinstance(e, FastSSLError)):
            raise
        row["status"] = f"verification failed: {str(e).splitlines()[0][:120]}"
        return row
    flops = nt_xent_flops(provider, two_n, d)
    fits = mem.extra_bytes <= budget
    row.update(peak_extra_mb=mem.extra_mb, mem_method=mem.method, fwd_bwd_ms=mem.run_s * 1e3, repeats=1, cold=True,
               flops_fwd_bwd=flops, tflops=flops / mem.run_s / 1e12,
               mfu=mfu(flops, mem.run_s, device_peak_flops(device)),
               status="verified: fits" if fits else "verified: exceeds budget (prediction too low)")
    return row


def _add_ratios(row: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Ratios of `row` to the torch row of its size, measured before it (torch runs first per size),
    so the row is complete when it is written."""
    if row["case"] != "timed" or row.get("status") != "ok":
        return
    t = next((r for r in rows + [row] if r["case"] == "timed" and r["provider"] == "torch" and r.get("status") == "ok"
              and (r["two_n"], r["d"], r["dtype"]) == (row["two_n"], row["d"], row["dtype"])), None)
    if t is None:
        return
    row["time_ratio_vs_torch"] = row["fwd_bwd_ms"] / t["fwd_bwd_ms"]
    if t["peak_extra_mb"] > 0:
        row["mem_ratio_vs_torch"] = row["peak_extra_mb"] / t["peak_extra_mb"]


def _provider_caps(text: str, providers: list[str]) -> dict[str, int]:
    """--max-two-n chunked=262144,...: the largest 2N to time per provider."""
    caps = {}
    for item in (t.strip() for t in (text or "").split(",") if t.strip()):
        name, _, value = item.partition("=")
        if name not in PROVIDERS or not value.isdigit():
            raise FastSSLError(f"--max-two-n takes PROVIDER=2N pairs (providers {', '.join(PROVIDERS)}), got {item!r}")
        caps[name] = int(value)
    # torch first: every other provider's ratio needs the torch row of its size already measured.
    providers.sort(key=lambda p: p != "torch")
    return caps


def _timed_row(args, device, row: dict[str, Any], model: MemoryModel, cap: int | None) -> None:
    """Measure one timed case into `row`, or say why it was skipped or failed."""
    import torch

    predicted = model.predict((row["provider"], row["d"], row["dtype"]), row["two_n"])
    if predicted is not None:
        row["predicted_peak_mb"] = predicted / MIB
    if cap is not None and row["two_n"] > cap:
        row["status"] = f"skipped: 2N above --max-two-n {row['provider']}={cap}"
        return
    if predicted is not None and predicted > args.mem_budget_mb * MIB:
        row["status"] = f"skipped: predicted {predicted / MIB:.0f} MiB > --mem-budget-mb"
        return
    try:
        _measure_case(args, device, row, model)
    except Exception as e:  # noqa: BLE001 -- record OOM and go on with other cases
        if not (_is_oom(e) or isinstance(e, FastSSLError)):
            raise
        row["status"] = f"failed: {str(e).splitlines()[0][:120]}"
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _ints(text: str, flag: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise FastSSLError(f"{flag} takes comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 2:
        raise FastSSLError(f"{flag} values must be >= 2, got {text!r}")
    return vals


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    device = bench_device(args.device)
    set_threads(args.threads)
    sizes = sorted(_ints(args.sizes or (CUDA_SIZES if device.type == "cuda" else CPU_SIZES), "--sizes"))
    if any(s % 2 for s in sizes):
        raise FastSSLError(f"--sizes are 2N (two views of N images) and must be even, got {args.sizes}")
    dims = _ints(args.dims, "--dims")
    dtypes = [t.strip() for t in args.dtype.split(",")]
    if bad := [t for t in dtypes if t not in DTYPES]:
        raise FastSSLError(f"--dtype {','.join(bad)} is not one of {', '.join(DTYPES)}")
    if args.mem_budget_mb is None:
        args.mem_budget_mb = (0.8 * torch.cuda.get_device_properties(device).total_memory / MIB
                              if device.type == "cuda" else CPU_BUDGET_MB)
    prov = Provenance.collect(device)
    log(args, f"# bench loss: {prov.summary()}; budget {args.mem_budget_mb:.0f} MiB")
    notes, providers = [], []
    for p in args.providers.split(","):
        if p not in PROVIDERS:
            raise FastSSLError(f"--providers: unknown provider '{p}'; use some of {', '.join(PROVIDERS)}")
        why = _unavailable(p, device)
        notes.append(f"{p}: {why}") if why else providers.append(p)
    base = {"budget_mb": args.mem_budget_mb, "temperature": args.temperature, **prov.as_row()}
    caps = _provider_caps(args.max_two_n, providers)
    model, sink = MemoryModel(), RowSink(args.csv, FIELDS)
    rows = sink.rows
    for dtype in dtypes:
        for d in dims:
            for two_n in sizes:
                for provider in providers:
                    row = {**base, "case": "timed", "provider": provider, "two_n": two_n, "d": d, "dtype": dtype,
                           "load_1m": load_average()}
                    _timed_row(args, device, row, model, caps.get(provider))
                    _add_ratios(row, rows)
                    sink.add(row)
                    log(args, f"  {provider:<8} 2N={two_n:<8} d={d:<4} {dtype}: "
                              f"fwd+bwd {row.get('fwd_bwd_ms', float('nan')):.4g} ms, "
                              f"peak {row.get('peak_extra_mb', float('nan')):.4g} MiB  {row.get('status')}")
    for key in sorted(model.points):
        row = sink.add(_budget_row(args, device, {**base, "load_1m": load_average()}, key, model, rows))
        if fit := model.fit(key):
            notes.append(f"{key[0]} d={key[1]} {key[2]}: peak ~ {fit[0] / MIB:.1f} MiB + {fit[1]:.3g} B x (2N)^{fit[2]}; "
                         f"largest 2N in {args.mem_budget_mb:.0f} MiB: {row.get('two_n')} ({row['status']})")
    return emit(
        "loss", args, rows, FIELDS, provenance=prov.as_row(), columns=COLUMNS, notes=notes, sink=sink,
        plot_rows=[r for r in rows if r["case"] == "timed"],
        plot_spec=dict(x="two_n", y=["fwd_bwd_ms", "peak_extra_mb"], group=["provider", "d", "dtype"],
                       logx=True, logy=True, title=f"NT-Xent fwd+bwd, {prov.device}"),
    )


@BENCHMARKS.register("loss")
def add_parser(sub: Any) -> None:
    p = sub.add_parser("loss", help="NT-Xent providers: time, memory, TFLOP/s, largest 2N in a budget",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default=None, help=f"2N values (default CPU {CPU_SIZES}; CUDA {CUDA_SIZES})")
    p.add_argument("--dims", default="128", help="embedding dims d, comma-separated")
    p.add_argument("--dtype", default="fp32", help="fp32 | bf16 | fp16, comma-separated")
    p.add_argument("--providers", default=",".join(PROVIDERS), help="comma-separated subset of torch,chunked,triton")
    p.add_argument("--max-two-n", default="", metavar="PROVIDER=2N,...",
                   help="largest 2N timed per provider (e.g. chunked=262144: its time grows as (2N)^2)")
    p.add_argument("--temperature", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=1, help="untimed calls first")
    p.add_argument("--repeats", type=int, default=5, help="timed calls (fewer when --max-case-s runs out)")
    p.add_argument("--max-case-s", type=float, default=20.0, help="time allowed per case and direction")
    p.add_argument("--mem-budget-mb", type=float, default=None,
                   help=f"memory budget in MiB (default CPU {CPU_BUDGET_MB}; CUDA 80%% of the GPU)")
    p.add_argument("--verify-max-s", type=float, default=30.0, help="longest predicted run to verify the budget-max")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's, one per core)")
    add_output_options(p, "loss")
    p.set_defaults(func=lambda a: (run(a), 0)[1])

