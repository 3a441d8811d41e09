"""The pretraining loop: one function, `train(cfg)`, the same under `python` and `torchrun`.

Per step: lr from the schedule -> forward under autocast -> non-finite guard (agreed across
ranks) -> backward -> clip -> optimiser step -> the method's post-step hook (EMA targets).
Checkpoints are written by rank 0 at `ckpt_every_steps` and at each epoch's end, and on SIGTERM
/ SIGINT (e.g. SLURM preemption) at the next step boundary. `--resume` continues from the newest
checkpoint in `train.out` at the exact step: the data order and augmentations are functions of
(seed, epoch, index), the schedule is a function of the step, and RNG states are restored.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from fastssl.config import Config, format_config, validate
from fastssl.distributed import World, all_reduce_mean, destroy_distributed, init_distributed, is_dist
from fastssl.errors import FastSSLError
from fastssl.methods import build_method
from fastssl.methods.momentum import ema_update_
from fastssl.parallel.parallelize import parallelize, unwrap
from fastssl.train.checkpoint import (
    atomic_write_text,
    latest_checkpoint,
    load_checkpoint,
    load_model_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from fastssl.train.metrics import MetricLogger
from fastssl.train.optim import build_optimizer
from fastssl.train.schedule import lr_at, scaled_lr


class _StopFlag:
    """Turns SIGTERM/SIGINT into a checkpoint-and-exit at the next step boundary."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        for s in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread (e.g. called from a test runner thread)
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # a second Ctrl-C means "now"
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def _precision(cfg: Config, device: torch.device) -> torch.dtype | None:
    p = cfg.train.precision
    if p == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if p == "bf16":
        return torch.bfloat16
    if p == "fp32":
        return None
    raise FastSSLError(f"unknown train.precision '{p}'; use auto, bf16 or fp32")


def _any_rank(flags: torch.Tensor) -> list[bool]:
    """OR each flag across ranks with one collective (and one host sync) per step."""
    if is_dist():
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return [bool(f) for f in flags.tolist()]


def check_replicas(method: torch.nn.Module, device: torch.device) -> None:
    """Fail if any rank's weights (EMA targets and BN buffers included) differ from rank 0's.

    A per-tensor float64 checksum is all-gathered: one small collective per checkpoint.
    """
    if not is_dist():
        return
    tensors = [*method.parameters(), *method.buffers()]
    sums = torch.stack([t.detach().double().sum() for t in tensors]).to(device)
    gathered = [torch.empty_like(sums) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, sums)
    for r, g in enumerate(gathered[1:], start=1):
        if not torch.equal(g, gathered[0]):
            raise FastSSLError(
                f"rank {r}'s weights differ from rank 0's; replicas diverged, so the run is not data-parallel. "
                f"Check that every rank runs the same fastssl version and config"
            )


def _validate(cfg: Config, world: World) -> None:
    validate(cfg)
    if cfg.train.batch_size % world.world_size:
        raise FastSSLError(
            f"train.batch_size={cfg.train.batch_size} is not divisible by world size {world.world_size}; "
            f"set --train.batch_size to a multiple of {world.world_size}"
        )
    if cfg.train.epochs < 1 and cfg.train.max_steps < 1:
        raise FastSSLError("nothing to train: set --train.epochs or --train.max_steps to at least 1")


def train(cfg: Config) -> dict[str, Any]:
    """Pretrain with `cfg`; returns the final summary (also logged). Rank 0 writes all files."""
    world = init_distributed(cfg.dist.backend, cfg.train.device, cfg.dist.timeout_s)
    try:
        return _train(cfg, world)
    finally:
        destroy_distributed()


def _train(cfg: Config, world: World) -> dict[str, Any]:
    from fastssl.data import build_pretrain_loader

    _validate(cfg, world)
    out = Path(cfg.train.out)
    resume_from = latest_checkpoint(out) if cfg.train.resume else None
    if cfg.train.resume and resume_from is None and world.is_main:
        print(f"fastssl: no checkpoint in {out}/checkpoints yet; starting from step 0", flush=True)
    if world.is_main:
        print(format_config(cfg), flush=True)
        if not resume_from and (out / "config.json").exists() and any((out / "checkpoints").glob("step_*.pt")):
            raise FastSSLError(f"{out} already holds checkpoints; pass --resume to continue it or choose another --train.out")
        atomic_write_text(cfg.to_json() + "\n", out / "config.json")

    torch.manual_seed(cfg.train.seed)
    method = build_method(cfg).to(world.device)
    loader = build_pretrain_loader(cfg, world)
    if getattr(method, "needs_pairs", False) and loader.batch_size < 2:
        raise FastSSLError(
            f"{cfg.method.name} needs at least 2 images per rank for negatives, got {loader.batch_size}; "
            f"raise --train.batch_size to at least {2 * world.world_size}"
        )
    steps_per_epoch = len(loader)
    total_steps = cfg.train.epochs * steps_per_epoch
    if cfg.train.max_steps:
        total_steps = min(total_steps, cfg.train.max_steps) if cfg.train.epochs else cfg.train.max_steps
    method.configure_schedule(steps_per_epoch, total_steps)
    peak_lr = scaled_lr(cfg.optim, cfg.train.batch_size)
    warmup_steps = int(round(cfg.optim.warmup_epochs * steps_per_epoch))
    optimizer = build_optimizer(method, cfg.optim, peak_lr)

    step, bad_steps = 0, 0
    if resume_from is not None:
        state = load_checkpoint(resume_from, map_location=world.device)
        load_model_state(method, state["model"], state["config"], cfg, str(resume_from))
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        step, bad_steps = state["step"], state.get("bad_steps", 0)
        if world.is_main:
            print(f"fastssl: resumed from {resume_from} at step {step}", flush=True)

    model = parallelize(method, cfg, world)
    amp_dtype = _precision(cfg, world.device)
    log = MetricLogger(out, enabled=world.is_main, tensorboard=cfg.train.tensorboard,
                       progress=cfg.train.progress, total_steps=total_steps, initial_step=step)
    views_per_image = None
    images_seen, t_start = 0, time.perf_counter()
    last_ckpt = resume_from

    def checkpoint(epoch_of_step: int) -> None:
        nonlocal last_ckpt
        check_replicas(method, world.device)
        if world.is_main:
            last_ckpt = save_checkpoint(out, {
                "config": cfg.to_dict(), "step": step, "epoch": epoch_of_step,
                "model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                "rng": rng_state(), "bad_steps": bad_steps,
            }, step, cfg.train.keep_last)
        if is_dist():
            dist.barrier()

    # A skipped step must leave no trace: its forward already moved the BatchNorm running
    # statistics (possibly to NaN), so each step snapshots them into storage allocated once.
    buffers = list(method.buffers())
    saved_buffers = [b.detach().clone() for b in buffers]
    max_norm = cfg.optim.clip_grad if cfg.optim.clip_grad > 0 else math.inf

    def skip_step(what: str) -> None:
        nonlocal bad_steps
        torch._foreach_copy_(buffers, saved_buffers)
        optimizer.zero_grad(set_to_none=True)
        bad_steps += 1
        log.write(f"fastssl: non-finite {what} at step {step}; skipped ({bad_steps} in a row)")
        if bad_steps >= cfg.train.max_bad_steps:
            kept = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
            log.close()
            raise FastSSLError(
                f"loss was not finite for {bad_steps} steps in a row (step {step}); {kept}; "
                f"lower --optim.base_lr, set --optim.clip_grad, or use --train.precision=fp32"
            )

    stopped_by: int | None = None
    with _StopFlag() as stop:
        while step < total_steps:
            epoch, start_in_epoch = divmod(step, steps_per_epoch)
            loader.set_epoch(epoch, start_in_epoch)
            model.train()
            t_step = time.perf_counter()
            batches = 0
            for views, _labels in loader:
                batches += 1
                if step >= total_steps:
                    break
                views = [v.to(world.device, non_blocking=True) for v in views]
                if world.device.type == "cuda" and cfg.train.channels_last:
                    views = [v.contiguous(memory_format=torch.channels_last) for v in views]
                views_per_image = len(views)
                lr = lr_at(step, total_steps, warmup_steps, peak_lr, cfg.optim.min_lr_ratio)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                torch._foreach_copy_(saved_buffers, buffers)
                with (torch.autocast(world.device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()):
                    outputs = model(views, step=step, max_steps=total_steps)
                loss = outputs["loss"]
                optimizer.zero_grad(set_to_none=True)
                stop_now = 1.0 if stop.signum is not None else 0.0
                flags = torch.stack([(~torch.isfinite(loss.detach())).float(), torch.tensor(stop_now, device=loss.device)])
                bad_loss, stop_requested = _any_rank(flags)
                if stop_requested:
                    stopped_by = stop.signum or signal.SIGTERM
                    break
                if bad_loss:
                    skip_step("loss")
                    step += 1  # the schedule moves on, as a skipped batch is consumed data
                    continue
                loss.backward()
                method.after_backward(step, epoch)
                grad_norm = torch.nn.utils.clip_grad_norm_(method.parameters(), max_norm)
                if not torch.isfinite(grad_norm):
                    skip_step("gradient")
                    step += 1
                    continue
                optimizer.step()
                bad_steps = 0
                m = method.momentum_at(step, total_steps) if method.momentum_pairs() else 0.0
                for online, target in method.momentum_pairs():
                    ema_update_(target, online, m)
                method.commit_step(step, total_steps)
                step += 1
                n_img = views[0].shape[0] * world.world_size
                images_seen += n_img
                now = time.perf_counter()
                dt, t_step = now - t_step, now
                log.progress(1, loss=loss.detach(), lr=lr, img_s=n_img / max(dt, 1e-9))
                if step % cfg.train.log_every == 0 or step == total_steps:
                    elapsed = now - t_start
                    # Mean over ranks, so the logged loss is the global batch's on every world size.
                    names = list(outputs)
                    means = all_reduce_mean(torch.stack([outputs[k].detach().float().to(world.device) for k in names]))
                    scalars = dict(zip(names, means.tolist()))
                    log.log(step, {**scalars, "lr": lr, "epoch": epoch, "grad_norm": grad_norm.detach(),
                                   "images_per_s": images_seen / elapsed,
                                   "views_per_s": images_seen * views_per_image / elapsed})
                if cfg.train.ckpt_every_steps and step % cfg.train.ckpt_every_steps == 0:
                    checkpoint(epoch)
            if stopped_by is not None:
                break
            if batches == 0:
                raise FastSSLError(f"the data loader yielded no batches in epoch {epoch}; check --data.path and --data.limit")
            if step % steps_per_epoch == 0 or step >= total_steps:
                if last_ckpt is None or not str(last_ckpt).endswith(f"step_{step:08d}.pt"):
                    checkpoint(epoch)
    if stopped_by is not None:
        checkpoint(step // max(steps_per_epoch, 1))
        log.write(f"fastssl: stopped by signal {stopped_by} at step {step}; checkpoint {last_ckpt}; "
                  f"continue with --resume --train.out={out}")
        log.close()
        return {"step": step, "stopped": True, "checkpoint": str(last_ckpt)}

    elapsed = time.perf_counter() - t_start
    summary: dict[str, Any] = {"step": step, "checkpoint": str(last_ckpt), "seconds": round(elapsed, 2),
                               "images_per_s": round(images_seen / max(elapsed, 1e-9), 2)}
    if cfg.train.knn_at_end and world.is_main:
        knn = _knn_at_end(unwrap(model), cfg, world)
        summary["knn_top1"] = knn["top1"]
        log.log(step, knn, kind="knn")
    log.log(step, summary, kind="summary")
    log.write("fastssl: done " + " ".join(f"{k}={v}" for k, v in summary.items()))
    log.close()
    return summary


def _knn_at_end(method: torch.nn.Module, cfg: Config, world: World) -> dict[str, Any]:
    """kNN on held-out data: `data.test_path`, else the dataset's own held-out split."""
    from fastssl.data.sources import open_eval_sources
    from fastssl.eval.knn import knn_eval

    train_src, test_src = open_eval_sources(cfg.data)
    # A run limited to N images is a quick one: its kNN bank is those N images, not the full set.
    train_src = train_src.head(cfg.eval.knn_train_limit or cfg.data.limit)
    test_src = test_src.head(cfg.eval.knn_test_limit)
    return knn_eval(method, train_src, test_src, cfg, world.device)
