"""`fastssl bench step`: the real SSL training step per strategy, with per-rank memory and traffic.

    torchrun --nproc_per_node=2 -m fastssl bench step --strategy ddp,fsdp,zero1,zero2,zero3 \
        --model vit_small --image-size 32 --patch-size 16 --batch 8 [--method byol] [--optim adamw] \
        [--grad-accum 4 [--grad-cache auto|on|off]] [--dp-replicate 2 --dp-shard -1]

Each strategy builds the method and its engine (fastssl/parallel/engines/) and runs
`fastssl.train.step.train_step`, the trainer's own step, on synthetic views already on the
device (the method's view spec; no data loading: `fastssl bench loader`). Per rank it reports:

- the bytes of parameters, gradients and optimizer state this rank holds (`Engine.memory_report`:
  local shard storages, each counted once; gradients as held between backward and the optimizer
  step; DeepSpeed's fp32 master partitions count as optimizer state), their sum `state_mb` and
  its ratio to DDP's (`state_vs_ddp`);
- the collectives of one step: calls, payload bytes (the full buffer per call, nccl-tests'
  size) and a ring-algorithm estimate of the bytes this rank sends (fastssl/parallel/comm_counter.py),
  in all and per mesh dim (`comm_dp_replicate_mb`, `comm_dp_shard_mb`, `comm_dp_mb`: ring MiB over
  the replicate groups, the shard groups, the whole data-parallel group), so HSDP's inter-node
  traffic (dp_replicate) shows apart from its intra-node traffic (dp_shard);
- `peak_rss_mb`: this process's peak resident memory so far (ru_maxrss: run one strategy per
  invocation to read it per strategy);
- step time (median of `--repeats`), images/s of the global batch, the ratio to DDP's images/s
  (`vs_ddp`; DDP is measured first unless `--no-ddp-baseline`), and the same views through the
  backbone alone, forward + backward on one device with no collectives (`backbone_images_per_s`),
  in the step's precision (`train.precision`: bf16 autocast on CUDA) and memory format
  (channels_last for CNNs on CUDA), so `ssl_overhead` = backbone images/s / step images/s is
  what the method and the strategy add, not a difference of dtype or layout;
- with `--grad-accum K` the step runs K micro-batches of batch / (ranks x K) per rank and one
  optimizer step (fastssl/train/accumulation.py; GradCache for losses that couple samples, as
  `--grad-cache` says, default auto as the trainer's); `step_peak_mb` is one step's peak memory
  above what is held between steps (activations, gradients, buffers: CUDA's allocator peak, or on
  CPU the resident set's high-water mark; `harness.measure_peak_memory_in_process`) and
  `peak_mb` the process's whole peak from that step on (model, optimizer state and the step);
- `flops_per_step`: this rank's FLOPs of one step, counted by torch.utils.flop_counter.FlopCounterMode
  (matmuls and convolutions, forward and backward, the optimizer not counted) on the first
  strategy and reused for the others (same model, same batch), and `mfu`, those FLOPs per step
  time over the GPU's dense bf16 peak (`fastssl.bench.mfu`; empty on CPU).

Strategies: ddp, fsdp, zero1, zero2, zero3 (DeepSpeed; `deepspeed` means `--zero-stage`).
`--dp-replicate` / `--dp-shard` set the data-parallel mesh (`--dist.dp_replicate` / `--dist.dp_shard`):
fsdp with dp_replicate > 1 is HSDP, zero3 is ZeRO++ hpZ, ddp ignores the split.
Works on one process too (each strategy on a 1-rank group). Rows go to one CSV, one per rank;
rank 0's rows are written as each strategy finishes, the other ranks' at the end. Each rank
runs on cuda:LOCAL_RANK (`fastssl.distributed.local_device`).
"""

from __future__ import annotations

import argparse
import copy
import gc
from typing import Any

from fastssl.bench.harness import (
    Provenance,
    bench_device,
    cuda_sync,
    load_average,
    measure,
    measure_peak_memory_in_process,
    set_threads,
)
from fastssl.bench.mfu import device_peak_flops, mfu
from fastssl.bench.report import RowSink, add_output_options, emit, log
from fastssl.errors import FastSSLError
from fastssl.registry import BENCHMARKS

STRATEGIES = ("ddp", "fsdp", "zero1", "zero2", "zero3", "deepspeed")
MIB = 2**20
FIELDS = (
    "strategy", "zero_stage", "rank", "world_size", "method", "model", "image_size", "patch_size", "batch", "optim",
    "param_bytes", "grad_bytes", "optim_bytes", "state_mb", "state_vs_ddp", "comm_calls", "comm_payload_mb",
    "comm_ring_mb", "comm_dp_replicate_mb", "comm_dp_shard_mb", "comm_dp_mb", "comm_ops", "peak_rss_mb",
    "dp_replicate", "dp_shard", "flops_per_step", "mfu", "step_ms", "step_p10_ms", "step_p90_ms", "images_per_s", "vs_ddp", "backbone_images_per_s",
    "ssl_overhead", "grad_accum", "grad_cache", "step_peak_mb", "peak_mb", "mem_method", "repeats", "status", "load_1m",
    *Provenance.fields(),
)  # fmt: skip
COLUMNS = ("strategy", "rank", "param_bytes", "grad_bytes", "optim_bytes", "state_mb", "state_vs_ddp", "comm_calls",
           "comm_payload_mb", "comm_ring_mb", "comm_dp_replicate_mb", "comm_dp_shard_mb", "peak_rss_mb", "grad_accum",
           "step_peak_mb", "step_ms", "images_per_s", "mfu", "vs_ddp", "ssl_overhead")


def _config(args: argparse.Namespace, dp_size: int):
    from fastssl.config import apply_overrides, validate
    from fastssl.recipes import get_recipe

    cfg = get_recipe(args.recipe)
    overrides = [f"--train.batch_size={args.batch}", f"--optim.name={args.optim}", "--optim.warmup_epochs=0",
                 f"--train.grad_accum_steps={args.grad_accum}", f"--train.grad_cache={args.grad_cache}",
                 f"--dist.dp_replicate={args.dp_replicate}", f"--dist.dp_shard={args.dp_shard}"]
    if args.method:
        overrides.insert(0, f"--method.name={args.method}")
    if args.model:
        overrides.append(f"--model.name={args.model}")
    if args.image_size:
        overrides.append(f"--data.image_size={args.image_size}")
    if args.patch_size:
        overrides.append(f"--model.patch_size={args.patch_size}")
    cfg = apply_overrides(cfg, overrides + list(args.set or []))
    validate(cfg)
    if cfg.train.batch_size % dp_size:
        raise FastSSLError(f"--batch {cfg.train.batch_size} is not divisible by the {dp_size} data-parallel ranks")
    return cfg


def _strategy(cfg, name: str, zero_stage: int):
    cfg = copy.deepcopy(cfg)
    if name.startswith("zero"):
        cfg.dist.strategy, cfg.dist.zero_stage = "deepspeed", int(name[-1])
    elif name == "deepspeed":
        cfg.dist.strategy, cfg.dist.zero_stage = "deepspeed", zero_stage
    else:
        cfg.dist.strategy = name
    return cfg


def step_format(cfg, device, is_vit: bool):
    """(autocast dtype or None, memory format) of the trainer's step on `device`.

    The engine autocasts to `train.precision` (bf16 on CUDA by default) and `fastssl.parallel`
    makes CNNs channels_last on CUDA; the backbone-alone baseline must run the same way, or the
    overhead ratio would measure dtype and layout instead of the method.
    """
    import torch

    from fastssl.parallel.engines.base import precision_dtype

    channels_last = device.type == "cuda" and cfg.train.channels_last and not is_vit
    return precision_dtype(cfg, device), torch.channels_last if channels_last else torch.contiguous_format


def _views(method, cfg, per_rank: int, device):
    import torch

    g = torch.Generator().manual_seed(0)
    spec = type(method).view_spec(cfg)
    views = [torch.randn(per_rank, 3, v.size, v.size, generator=g).to(device) for v in spec.views]
    if device.type == "cuda" and cfg.train.channels_last:  # as the trainer hands views to the step
        views = [v.contiguous(memory_format=torch.channels_last) for v in views]
    return views


def _backbone_baseline(cfg, views, args, device, world_size: int) -> float:
    """Images/s of the global batch when each rank runs its views through the backbone alone,
    in the step's precision and memory format (`step_format`)."""
    import torch

    from fastssl.models.backbone import build_backbone

    backbone = build_backbone(cfg.model.name, cfg.data.image_size, cfg.model.patch_size).to(device).train()
    amp, fmt = step_format(cfg, device, backbone.is_vit)
    backbone = backbone.to(memory_format=fmt)
    views = [v.contiguous(memory_format=fmt) for v in views]

    def step():
        backbone.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = sum(backbone(v).float().square().mean() for v in views)
        loss.backward()

    t = measure(step, args.warmup, args.repeats, cuda_sync(device))
    return views[0].shape[0] * world_size / t.median_s


def process_peak_bytes(device) -> int:
    """The process's peak since the last reset: CUDA's allocator peak, or on CPU the resident set's
    high-water mark."""
    import torch

    from fastssl.bench.peak_rss_child import status_kib

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return status_kib("VmHWM") * 1024


def count_flops(fn) -> int | None:
    """FLOPs of one `fn()` by FlopCounterMode; None where a strategy's internals defeat it."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with FlopCounterMode(display=False) as fc:
            fn()
    except Exception:  # noqa: BLE001 -- MFU is optional; the step's own errors surface in the timed calls
        return None
    return fc.get_total_flops()


def _bench(cfg, world, args, name: str, flops: dict[str, int | None]) -> dict[str, Any]:
    import torch

    from fastssl.methods import build_method
    from fastssl.parallel.comm_counter import CommCounter
    from fastssl.parallel.engines import build_engine
    from fastssl.train.bn_guard import BatchNormGuard
    from fastssl.train.optim import build_optimizer
    from fastssl.train.schedule import scaled_lr
    from fastssl.train.accumulation import check_accumulation, grad_cache_on
    from fastssl.train.step import OK, train_step

    engine = build_engine(cfg, world)
    torch.manual_seed(cfg.train.seed)
    method = build_method(cfg).to(world.device)
    check_accumulation(cfg, world, type(method))
    accum = {"accum_steps": cfg.train.grad_accum_steps, "grad_cache": grad_cache_on(cfg, type(method))}
    lr = scaled_lr(cfg.optim, cfg.train.batch_size)
    engine.wrap(method, lambda m: build_optimizer(m, cfg.optim, lr))
    method = engine.method
    guard = BatchNormGuard(method)
    views = _views(method, cfg, cfg.train.batch_size // world.dims.dp_size, world.device)
    total, step_no = 10**6, 0
    engine.model.train()

    def one(probe=None):
        nonlocal step_no
        out = train_step(engine, method, views, step_no, total, 0, lr, guard, on_grads=probe, **accum)
        step_no += 1
        if out.status != OK:
            raise FastSSLError(f"the {name} step was skipped ({out.status} not finite); lower --optim or check --set")

    one()  # creates the optimizer state
    if "step" not in flops:
        flops["step"] = count_flops(one)
    mem: dict[str, int] = {}
    one(probe=lambda: mem.update(engine.memory_report()))
    with CommCounter(world.dims.group_labels()) as comm:
        one()
    peak = measure_peak_memory_in_process(one, world.device)
    t = measure(one, max(args.warmup - 2, 0), args.repeats, cuda_sync(world.device))
    row = {"strategy": name, "zero_stage": cfg.dist.zero_stage if cfg.dist.strategy == "deepspeed" else "",
           "rank": world.rank, "world_size": world.world_size, **mem,
           "state_mb": sum(mem.values()) / MIB, "comm_calls": comm.calls,
           "comm_payload_mb": comm.payload_bytes / MIB, "comm_ring_mb": comm.ring_bytes / MIB,
           "comm_ops": " ".join(f"{op}={n}" for op, n in sorted(comm.by_op.items())),
           **{f"comm_{d}_mb": comm.by_dim[d][2] / MIB for d in ("dp_replicate", "dp_shard", "dp")},
           "peak_rss_mb": peak_rss_mb(), "dp_replicate": world.dims.dp_replicate, "dp_shard": world.dims.dp_shard,
           "step_ms": t.median_s * 1e3, "step_p10_ms": t.p10_s * 1e3, "step_p90_ms": t.p90_s * 1e3,
           "images_per_s": cfg.train.batch_size / t.median_s, "repeats": t.repeats, "status": "ok",
           "flops_per_step": flops["step"], "mfu": mfu(flops["step"], t.median_s, device_peak_flops(world.device)),
           "grad_accum": accum["accum_steps"], "grad_cache": "on" if accum["grad_cache"] else "off",
           "step_peak_mb": peak.extra_mb, "peak_mb": process_peak_bytes(world.device) / MIB, "mem_method": peak.method}
    if not args.no_backbone_baseline:
        row["backbone_images_per_s"] = _backbone_baseline(cfg, views, args, world.device, world.dims.dp_size)
        row["ssl_overhead"] = row["backbone_images_per_s"] / row["images_per_s"]
    return row


def peak_rss_mb() -> float:
    """This process's peak resident set so far, MiB (ru_maxrss is KiB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _complete(row: dict[str, Any], common: dict[str, Any], earlier: list[dict[str, Any]]) -> None:
    """The run's common columns and the ratios to this rank's DDP row (measured first), so the row
    is whole when it is written."""
    row.update(common, load_1m=load_average())
    ddp = next((r for r in earlier + [row] if r["strategy"] == "ddp"), None)
    if ddp is not None:
        row["vs_ddp"] = row["images_per_s"] / ddp["images_per_s"]
        row["state_vs_ddp"] = row["state_mb"] / ddp["state_mb"]


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import torch.distributed as dist

    from fastssl.distributed import destroy_distributed, init_distributed

    device = bench_device(args.device)
    set_threads(args.threads)
    names = [s.strip() for s in args.strategy.split(",") if s.strip()]
    if bad := [s for s in names if s not in STRATEGIES]:
        raise FastSSLError(f"--strategy: unknown {', '.join(bad)}; choose from {', '.join(STRATEGIES)}")
    if not args.no_ddp_baseline and "ddp" not in names:
        names.insert(0, "ddp")
    world = init_distributed("auto", device, dp_replicate=args.dp_replicate, dp_shard=args.dp_shard)
    try:
        cfg = _config(args, world.dims.dp_size)
        prov = Provenance.collect(device)
        if world.is_main:
            log(args, f"# bench step: {prov.summary()}; {cfg.method.name}/{cfg.model.name} at {cfg.data.image_size} px, "
                      f"global batch {cfg.train.batch_size} on {world.world_size} rank(s) ({world.dims.describe()}), "
                      f"optim {cfg.optim.name}")
        common = {**prov.as_row(), "method": cfg.method.name, "model": cfg.model.name, "image_size": cfg.data.image_size,
                  "patch_size": cfg.model.patch_size, "batch": cfg.train.batch_size, "optim": cfg.optim.name}
        rows, flops, sink = [], {}, RowSink(args.csv if world.is_main else "", FIELDS)
        for name in names:
            row = _bench(_strategy(cfg, name, args.zero_stage), world, args, name, flops)
            _complete(row, common, rows)
            rows.append(sink.add(row))  # this rank's rows; the sink takes the others' below too
            gc.collect()
            if world.is_main:
                log(args, f"  {name:<6} rank 0: {row['state_mb']:8.1f} MiB state  {row['comm_payload_mb']:8.1f} MiB "
                          f"collectives/step  {row['images_per_s']:8.1f} images/s")
        all_rows = rows
        if world.world_size > 1:
            gathered = [None] * world.world_size
            dist.all_gather_object(gathered, rows)
            all_rows = [r for rank_rows in gathered for r in rank_rows]
            for r in all_rows:
                if r["rank"] != world.rank:
                    sink.add(r)  # this rank's rows are in the CSV already
        all_rows.sort(key=lambda r: (names.index(r["strategy"]), r["rank"]))
        if not world.is_main:
            return {}
        return emit(
            "step", args, all_rows, FIELDS, provenance=prov.as_row(), columns=COLUMNS, sink=sink, notes=[
                "bytes: what each rank holds (local shards); grads between backward and optimizer step; "
                "comm: one step's collectives (payload = full buffer per call)"],
            plot_spec=dict(x="strategy", y=["images_per_s", "state_mb"], group=["strategy", "rank"], kind="bar",
                           title=f"{cfg.method.name}/{cfg.model.name} step, {world.world_size} rank(s), {prov.device}"),
        )
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        destroy_distributed()


@BENCHMARKS.register("step")
def add_parser(sub: Any) -> None:
    p = sub.add_parser("step", help="the SSL training step per strategy: per-rank memory, collectives, images/s",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--strategy", default="ddp,fsdp,zero3", help=f"comma-separated: {', '.join(STRATEGIES)}")
    p.add_argument("--zero-stage", type=int, default=2, choices=(1, 2, 3), help="ZeRO stage of `deepspeed`")
    p.add_argument("--dp-replicate", type=int, default=1, help="--dist.dp_replicate: replica groups (HSDP; -1: the rest)")
    p.add_argument("--dp-shard", type=int, default=-1, help="--dist.dp_shard: ranks per shard group (-1: the rest)")
    p.add_argument("--recipe", default="default", help="config to start from")
    p.add_argument("--method", default=None, help="method (default: the recipe's)")
    p.add_argument("--model", default=None, help="backbone (default: the recipe's)")
    p.add_argument("--image-size", type=int, default=0, help="view size (default: the recipe's)")
    p.add_argument("--patch-size", type=int, default=0, help="ViT patch size (default: the recipe's)")
    p.add_argument("--batch", type=int, default=8, help="global batch (all ranks)")
    p.add_argument("--optim", default="adamw", choices=("adamw", "sgd", "lars"),
                   help="optimizer (default adamw, the same for every strategy)")
    p.add_argument("--grad-accum", type=int, default=1,
                   help="micro-batches per optimizer step (--train.grad_accum_steps)")
    p.add_argument("--grad-cache", default="auto", choices=("auto", "on", "off"),
                   help="GradCache for losses that couple samples (--train.grad_cache)")
    p.add_argument("--set", nargs="*", metavar="SECTION.KEY=VALUE", help="further config overrides")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps (the first creates state; at least 2 run)")
    p.add_argument("--repeats", type=int, default=3, help="timed steps")
    p.add_argument("--no-ddp-baseline", action="store_true", help="do not add ddp for the vs_ddp ratios")
    p.add_argument("--no-backbone-baseline", action="store_true", help="skip the backbone-alone measurement")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="CPU threads per rank (default: torch's)")
    add_output_options(p, "step")
    p.set_defaults(func=lambda a: (run(a), 0)[1])
