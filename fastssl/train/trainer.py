"""The pretraining loop: one function, `train(cfg)`, the same under `python` and `torchrun`.

The strategy (`--dist.strategy=ddp|fsdp|deepspeed`) is an engine (fastssl/parallel/engines/);
each step is `train_step` (step.py), written once for all of them. Checkpoints are distributed
(fastssl/checkpoint/): every rank writes its shards at `ckpt_every_steps`, at each epoch's end,
and on SIGTERM / SIGINT (e.g. SLURM preemption) at the next step boundary. `--resume` continues
from the newest complete checkpoint in `train.out`, chosen by rank 0, at the exact step, on any
world size and strategy: the data order and augmentations are functions of (seed, epoch, index),
the schedule is a function of the step, and RNG states are restored.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from fastssl.checkpoint import (
    atomic_write_text,
    check_resumable,
    latest_checkpoint,
    load_model_weights,
    read_train_state,
    save_checkpoint,
    set_rng_state,
    step_of,
)
from fastssl.cluster.training_images import training_images
from fastssl.config import Config, format_config, validate
from fastssl.distributed import World, all_reduce_mean, destroy_distributed, init_distributed, is_dist
from fastssl.errors import FastSSLError
from fastssl.methods import build_method
from fastssl.parallel.engines import build_engine, check_strategy
from fastssl.train.bn_guard import BatchNormGuard
from fastssl.train.knn_monitor import KnnMonitor, knn_at_end, parse_every
from fastssl.train.metrics import MetricLogger
from fastssl.train.optim import build_optimizer
from fastssl.train.replicas import check_replicas
from fastssl.train.schedule import lr_at, scaled_lr
from fastssl.train.step import OK, STOPPED, train_step
from fastssl.train.time_budget import TimeBudgetPlanner, agree_total, parse_duration


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


def validate_run(cfg: Config, world: World) -> None:
    validate(cfg)
    check_strategy(cfg)
    if cfg.train.batch_size % world.world_size:
        raise FastSSLError(
            f"train.batch_size={cfg.train.batch_size} is not divisible by world size {world.world_size}; "
            f"set --train.batch_size to a multiple of {world.world_size}"
        )
    budget_s = parse_duration(cfg.train.time_budget)  # fails on a malformed duration, before any work
    if budget_s:  # the planner checks its own settings (the tolerance), before any work too
        TimeBudgetPlanner(budget_s, tolerance=cfg.train.time_budget_tolerance)
    parse_every(cfg.eval.knn_every)
    if cfg.train.epochs < 1 and cfg.train.max_steps < 1 and not budget_s:
        raise FastSSLError("nothing to train: set --train.epochs or --train.max_steps to at least 1")


def _decide_start(cfg: Config, out: Path, world: World) -> Path | None:
    """Rank 0 decides what to resume from (or that the folder is taken); every rank gets the answer."""
    decision: list[Any] = [None, None]
    if world.is_main:
        found = latest_checkpoint(out)
        if cfg.train.resume:
            decision[0] = str(found) if found else None
            if found is None:
                print(f"fastssl: no checkpoint in {out}/checkpoints yet; starting from step 0", flush=True)
        elif found is not None:
            decision[1] = f"{out} already holds checkpoints; pass --resume to continue it or choose another --train.out"
    if is_dist():
        dist.broadcast_object_list(decision, src=0)
    if decision[1]:
        raise FastSSLError(decision[1])
    return Path(decision[0]) if decision[0] else None


def train(cfg: Config) -> dict[str, Any]:
    """Pretrain with `cfg`; returns the final summary (also logged). Rank 0 writes all logs."""
    world = init_distributed(cfg.dist.backend, cfg.train.device, cfg.dist.timeout_s)
    try:
        return _train(cfg, world)
    finally:
        destroy_distributed()


def _train(cfg: Config, world: World) -> dict[str, Any]:
    from fastssl.data import build_pretrain_loader

    validate_run(cfg, world)
    engine = build_engine(cfg, world)  # fails here, before any work, if e.g. DeepSpeed is missing
    out = Path(cfg.train.out)
    resume_from = _decide_start(cfg, out, world)
    if world.is_main:
        print(format_config(cfg), flush=True)
        atomic_write_text(cfg.to_json() + "\n", out / "config.json")

    torch.manual_seed(cfg.train.seed)
    method = build_method(cfg).to(world.device)
    loader = build_pretrain_loader(cfg, world, views=type(method).view_spec(cfg))
    if method.needs_pairs and loader.batch_size < 2:
        raise FastSSLError(
            f"{cfg.method.name} needs at least 2 images per rank for negatives, got {loader.batch_size}; "
            f"raise --train.batch_size to at least {2 * world.world_size}"
        )
    steps_per_epoch = len(loader)
    total_steps = cfg.train.epochs * steps_per_epoch
    if cfg.train.max_steps:
        total_steps = min(total_steps, cfg.train.max_steps) if cfg.train.epochs else cfg.train.max_steps
    peak_lr = scaled_lr(cfg.optim, cfg.train.batch_size)
    warmup_steps = int(round(cfg.optim.warmup_epochs * steps_per_epoch))
    planner = None
    if cfg.train.time_budget:
        # The budget decides the step count; --train.max_steps, if set, still caps it. Until the
        # plan is fixed the total is provisional; the warm-up measured meanwhile does not depend on it.
        planner = TimeBudgetPlanner(parse_duration(cfg.train.time_budget), cap=cfg.train.max_steps,
                                    tolerance=cfg.train.time_budget_tolerance, hold_until=warmup_steps)
        total_steps = cfg.train.max_steps or planner.PROVISIONAL_TOTAL

    def schedule_at(step: int) -> tuple[float, int, float]:
        """(schedule step, schedule length, `max_steps` for step/max_steps schedules such as the EMA
        momentum): (step, total, total) unless a time-budget re-plan remapped the remaining steps."""
        if planner is None or not planner.decided:
            return step, total_steps, total_steps
        return planner.schedule_step(step), planner.schedule_total, planner.schedule_length(step)

    step, bad_steps, resumed = 0, 0, None
    if resume_from is not None:
        resumed = read_train_state(resume_from)
        if resumed["legacy"]:
            raise FastSSLError(f"{resume_from} is a single-file checkpoint of an older fastssl; resume is only "
                               f"possible from checkpoints/step_* folders (use it with `fastssl eval` or start afresh)")
        check_resumable(resumed["config"], cfg, str(resume_from))
        load_model_weights(method, resume_from)  # full weights, before the engine shards them
    engine.wrap(method, lambda m: build_optimizer(m, cfg.optim, peak_lr))
    method = engine.method
    if world.is_main:
        print(f"fastssl: {engine.describe()}", flush=True)
    if resumed is not None:
        engine.load_optimizer_state(resume_from)
        rngs = resumed["rng"]
        set_rng_state(rngs[world.rank] if world.rank < len(rngs) else rngs[0])
        step, bad_steps = resumed["step"], resumed.get("bad_steps", 0)
        if planner is not None and resumed.get("planned_total_steps"):
            # The saved plan, kept (with its re-plans) and not revised: see fastssl/train/time_budget.py.
            planner.load_state_dict(resumed.get("time_budget_plan") or {"planned_total": resumed["planned_total_steps"]})
            total_steps = planner.planned_total
        if world.is_main:
            print(f"fastssl: resumed from {resume_from} (written by {resumed.get('strategy')} on "
                  f"{resumed.get('world_size')} process(es)) at step {step}", flush=True)

    method.configure_schedule(steps_per_epoch, total_steps)
    guard = BatchNormGuard(method)
    monitor = KnnMonitor(cfg, world)
    log = MetricLogger(out, enabled=world.is_main, tensorboard=cfg.train.tensorboard,
                       progress=cfg.train.progress, total_steps=total_steps, initial_step=step)
    images_seen, t_start = 0, time.perf_counter()
    last_ckpt = resume_from

    def checkpoint(epoch_of_step: int) -> None:
        nonlocal last_ckpt
        check_replicas(engine)
        last_ckpt = save_checkpoint(out, step, engine.model_state(), engine.optimizer_state(), {
            "config": cfg.to_dict(), "step": step, "epoch": epoch_of_step, "bad_steps": bad_steps,
            "strategy": cfg.dist.strategy, "zero_stage": cfg.dist.zero_stage, "world_size": world.world_size,
            "planned_total_steps": planner.planned_total if planner is not None else None,
            "time_budget_plan": planner.state_dict() if planner is not None and planner.decided else None,
        }, cfg.train.keep_last)

    stopped_by: int | None = None
    images = training_images(cfg, world)  # opened only if a method asks (DeepCluster v2)
    with _StopFlag() as stop:
        while step < total_steps:
            epoch, start_in_epoch = divmod(step, steps_per_epoch)
            if start_in_epoch == 0:
                # Every rank calls it: a method may run collectives here (k-means across ranks).
                method.on_epoch_start(epoch, images)
            loader.set_epoch(epoch, start_in_epoch)
            engine.model.train()
            t_step = time.perf_counter()
            batches = 0
            for views, _labels in loader:
                batches += 1
                if step >= total_steps:
                    break
                views = [v.to(world.device, non_blocking=True) for v in views]
                if world.device.type == "cuda" and cfg.train.channels_last:
                    views = [v.contiguous(memory_format=torch.channels_last) for v in views]
                sched_step, sched_total, momentum_len = schedule_at(step)
                lr = lr_at(sched_step, sched_total, warmup_steps, peak_lr, cfg.optim.min_lr_ratio)
                result = train_step(engine, method, views, step, momentum_len, epoch, lr, guard,
                                    stop_requested=stop.signum is not None)
                if result.status == STOPPED:
                    stopped_by = stop.signum or signal.SIGTERM
                    break
                if result.status != OK:
                    bad_steps += 1
                    log.write(f"fastssl: non-finite {result.status} at step {step}; skipped ({bad_steps} in a row)")
                    if bad_steps >= cfg.train.max_bad_steps:
                        kept = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
                        log.close()
                        raise FastSSLError(
                            f"loss was not finite for {bad_steps} steps in a row (step {step}); {kept}; "
                            f"lower --optim.base_lr, set --optim.clip_grad, or use --train.precision=fp32"
                        )
                    step += 1  # the schedule moves on, as a skipped batch is consumed data
                    continue
                bad_steps = 0
                step += 1
                outputs = result.outputs
                n_img = views[0].shape[0] * world.world_size
                images_seen += n_img
                now = time.perf_counter()
                dt, t_step = now - t_step, now
                log.progress(1, loss=outputs["loss"].detach(), lr=lr, img_s=n_img / max(dt, 1e-9))
                train_s = now - t_start - monitor.seconds
                planned = None  # what to report when the plan is fixed or revised at this step
                if planner is not None and not planner.decided and planner.observe(dt, step, train_s) is not None:
                    planner.fix(agree_total(planner.planned_total), step, train_s)
                    planned = planner.describe()
                elif planner is not None and planner.replan_due(step):
                    before = planner.planned_total
                    if planner.apply(step, agree_total(planner.propose(step, train_s))):
                        log.log(step, {"planned_total_steps": planner.planned_total,
                                       "train_seconds": round(train_s, 2)}, kind="replan")
                        planned = (f"the pace drifted; re-planned {before} -> {planner.planned_total} steps at step "
                                   f"{step} (the schedule is compressed or stretched, not restarted)")
                if planned is not None:
                    total_steps = planner.planned_total
                    method.configure_schedule(steps_per_epoch, total_steps)
                    log.set_total(total_steps)
                    log.write(f"fastssl: time budget {cfg.train.time_budget}: {planned}")
                if step % cfg.train.log_every == 0 or step == total_steps:
                    elapsed = now - t_start
                    # Mean over ranks, so the logged loss is the global batch's on every world size.
                    names = list(outputs)
                    means = all_reduce_mean(torch.stack([outputs[k].detach().float().to(world.device) for k in names]))
                    scalars = dict(zip(names, means.tolist()))
                    log.log(step, {**scalars, "lr": lr, "epoch": epoch, "grad_norm": result.grad_norm,
                                   "images_per_s": images_seen / elapsed,
                                   "views_per_s": images_seen * len(views) / elapsed})
                if monitor.enabled and monitor.due(step, train_s):
                    knn = monitor.run(engine)
                    log.log(step, {**knn, "train_seconds": round(train_s, 2)}, kind="knn_every")
                    log.write(f"fastssl: step {step} kNN top-1 {knn['top1']:.2f}% ({knn['n_train']} bank, "
                              f"{knn['n_test']} queries, {train_s:.0f} s of training)")
                if cfg.train.ckpt_every_steps and step % cfg.train.ckpt_every_steps == 0:
                    checkpoint(epoch)
            if stopped_by is not None:
                break
            if batches == 0:
                raise FastSSLError(f"the data loader yielded no batches in epoch {epoch}; check --data.path and --data.limit")
            if step % steps_per_epoch == 0 or step >= total_steps:
                if last_ckpt is None or step_of(last_ckpt) != step:
                    checkpoint(epoch)
    if stopped_by is not None:
        checkpoint(step // max(steps_per_epoch, 1))
        log.write(f"fastssl: stopped by signal {stopped_by} at step {step}; checkpoint {last_ckpt}; "
                  f"continue with --resume --train.out={out}")
        log.close()
        return {"step": step, "stopped": True, "checkpoint": str(last_ckpt)}

    elapsed = time.perf_counter() - t_start
    summary: dict[str, Any] = {"step": step, "checkpoint": str(last_ckpt), "seconds": round(elapsed, 2),
                               "train_seconds": round(elapsed - monitor.seconds, 2),
                               "images_per_s": round(images_seen / max(elapsed - monitor.seconds, 1e-9), 2)}
    if planner is not None:
        summary["time_budget_s"] = planner.budget_s
        summary["replans"] = planner.replans
    if cfg.train.knn_at_end:
        knn = knn_at_end(engine, cfg, world)  # every rank: under sharding the forward is collective
        summary["knn_top1"] = knn["top1"]
        log.log(step, knn, kind="knn")
    log.log(step, summary, kind="summary")
    log.write("fastssl: done " + " ".join(f"{k}={v}" for k, v in summary.items()))
    log.close()
    return summary
