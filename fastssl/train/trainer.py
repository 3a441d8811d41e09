"""The pretraining loop, `train(cfg)`: the same under `python` and `torchrun`, built from components.

Each component owns one concern, as in torchtitan's trainer:

- `RunDir` (run_dir.py): the run folder and its config: start afresh, refuse a folder that holds a
  run, or resume it with its saved config and only this command line's changes;
- the engine (fastssl/parallel/engines/): the strategy (`--dist.strategy=ddp|fsdp|deepspeed`);
  each step is `train_step` (step.py), written once for all of them: one optimizer step over
  `train.grad_accum_steps` micro-batches (accumulation.py; GradCache, grad_cache.py);
- the step plan (time_budget.py): the step count and where each step sits on the lr / momentum
  schedule, fixed or laid over a wall-clock `--train.time_budget`;
- `Checkpointer` (checkpointer.py): distributed checkpoints at `ckpt_every_steps`, at each epoch's
  end, at the end and at a stop;
- `StopSignals` (fastssl/stop_signals.py): SIGTERM, SIGINT or SIGUSR1 to the process or its whole
  group (SLURM, `timeout`, torchrun) becomes a checkpoint at the step every rank agrees on and exit
  status 128 + signal;
- `MetricLogger` (metrics.py): JSONL, TensorBoard and progress on rank 0, closed once;
- the monitors (knn_monitor.py): periodic kNN and the end-of-run kNN;
- `OnlineProbe` (online_probe.py): `--eval.online_probe`, a linear classifier on the detached
  features of each step, outside the engine.

`--resume` continues at the exact step, on any world size and strategy: the data order and
augmentations are functions of (seed, epoch, index), the loader's position is restored (a stream's
per-worker positions too: fastssl/data/stream/position.py), the schedule is a function of the step,
and RNG states are restored.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from fastssl.checkpoint import load_model_weights, read_train_state, set_rng_state
from fastssl.checkpoint.init_weights import init_backbone
from fastssl.cluster.training_images import training_images
from fastssl.config import Config, validate
from fastssl.distributed import World, all_reduce_mean, destroy_distributed, init_distributed
from fastssl.errors import FastSSLError
from fastssl.methods import build_method
from fastssl.parallel.engines import build_engine
from fastssl.stop_signals import StopSignals, exit_status
from fastssl.train.accumulation import check_accumulation, grad_cache_on, micro_batch_size
from fastssl.train.time_budget import build_plan
from fastssl.train.trackers import open_trackers
from fastssl.train.bn_guard import BatchNormGuard
from fastssl.train.checkpointer import Checkpointer
from fastssl.train.knn_monitor import KnnMonitor, knn_at_end, skipped_note
from fastssl.train.metrics import MetricLogger
from fastssl.train.online_probe import OnlineProbe
from fastssl.train.optim import build_optimizer
from fastssl.train.run_dir import RunDir
from fastssl.train.schedule import lr_at, scaled_lr
from fastssl.train.step import OK, STOPPED, StepOutcome, train_step


def validate_run(cfg: Config, world: World) -> None:
    """`Config.validate()` (every check on values alone), then what depends on the world size."""
    validate(cfg)
    dp = world.dims.dp_size
    if cfg.train.batch_size % dp:
        raise FastSSLError(
            f"train.batch_size={cfg.train.batch_size} is not divisible by the {dp} data-parallel ranks; "
            f"set --train.batch_size to a multiple of {dp}"
        )


def train(cfg: Config) -> dict[str, Any]:
    """Pretrain with `cfg`; returns the run's summary (also logged). Rank 0 writes all logs.

    A run stopped by a signal returns `{"stopped": "SIGTERM", "exit_status": 143, ...}` after
    writing its checkpoint; the CLI exits with that status.
    """
    world = init_distributed(cfg.dist.backend, cfg.train.device, cfg.dist.timeout_s,
                             cfg.dist.dp_replicate, cfg.dist.dp_shard)
    try:
        return Trainer(cfg, world).run()
    finally:
        destroy_distributed()


class Trainer:
    """Builds the components (in the order the docstring above lists them), then runs the loop."""

    def __init__(self, cfg: Config, world: World):
        from fastssl.data import build_pretrain_loader

        validate_run(cfg, world)
        self.cfg, self.world = cfg, world
        self.monitor = KnnMonitor(cfg, world)  # refuses data it cannot evaluate before any work
        self.engine = build_engine(cfg, world)  # fails here, before any work, if e.g. DeepSpeed is missing
        resume_from = RunDir(cfg, world).open()
        torch.manual_seed(cfg.train.seed)
        method = build_method(cfg).to(world.device)
        check_accumulation(cfg, world, type(method))
        self.grad_cache = grad_cache_on(cfg, type(method))
        self.loader = build_pretrain_loader(cfg, world, views=type(method).view_spec(cfg))
        self.steps_per_epoch = len(self.loader)
        self.peak_lr = scaled_lr(cfg.optim, cfg.train.batch_size)
        warmup_steps = int(round(cfg.optim.warmup_epochs * self.steps_per_epoch))
        self.plan = build_plan(cfg, self.steps_per_epoch, warmup_steps, self.loader.prefetch_depth,
                               time.perf_counter())
        self.step, self.bad_steps, self.images_seen = 0, 0, 0
        resumed = read_train_state(resume_from) if resume_from is not None else None
        if resumed is not None:
            load_model_weights(method, resume_from)  # full weights, before the engine shards them
        elif cfg.model.init:  # a new run from another's weights; a resume has its own
            report = init_backbone(method, cfg.model.init, cfg.model.name)
            if world.is_main:
                print(report.line(), flush=True)
        self.engine.wrap(method, lambda m: build_optimizer(m, cfg.optim, self.peak_lr))
        self.method = self.engine.method
        if world.is_main:
            print(f"fastssl: {self.engine.describe()} on {world.device}; data: the {self.loader.backend} backend "
                  f"(--data.backend={cfg.data.backend}), {self.steps_per_epoch} steps per epoch", flush=True)
            if cfg.train.grad_accum_steps > 1:
                print(f"fastssl: {cfg.train.grad_accum_steps} micro-batches of {micro_batch_size(cfg, world)} images "
                      f"per rank and step, GradCache {'on' if self.grad_cache else 'off'}", flush=True)
        if resumed is not None:
            self._restore(resumed, resume_from)
        self.method.configure_schedule(self.steps_per_epoch, self.plan.total_steps)
        self.guard = BatchNormGuard(self.method)
        self.probe = OnlineProbe(cfg, world, self.engine, resumed)  # off unless --eval.online_probe
        self.checkpointer = Checkpointer(cfg, world, self.engine, self.plan, resume_from, self.loader,
                                         self.probe.train_state)
        self.resumed_at = self.step if cfg.train.resume else None

    def _restore(self, resumed: dict[str, Any], path) -> None:
        self.engine.load_optimizer_state(path)
        rngs = resumed["rng"]
        r = self.world.dims.dp_rank
        set_rng_state(rngs[r] if r < len(rngs) else rngs[0])
        self.step, self.bad_steps = resumed["step"], resumed.get("bad_steps", 0)
        # Checkpoints from before the loaders' positions were saved have none: the step implies it.
        self.loader.load_state_dict(resumed.get("loader") or [])
        # The saved plan is kept (with its re-plans) and not revised: see time_budget.py.
        self.plan.load_state_dict(resumed.get("time_budget_plan") or {})
        if self.world.is_main:
            print(f"fastssl: resumed from {path} (written by {resumed.get('strategy')} on "
                  f"{resumed.get('world_size')} process(es)) at step {self.step}", flush=True)

    # --- the run ------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        self.log = MetricLogger(cfg.train.out, enabled=self.world.is_main, tensorboard=cfg.train.tensorboard,
                                progress=cfg.train.progress, total_steps=self.plan.total_steps,
                                initial_step=self.step, resume_step=self.resumed_at, log_every=cfg.train.log_every,
                                trackers=open_trackers(cfg) if self.world.is_main else ())
        try:
            with StopSignals() as self.stop:
                self.t_start = self._t_last = time.perf_counter()
                self._loop()
                return self._stopped() if self.stop.requested else self._finish()
        finally:
            self.loader.close()  # before the interpreter's exit, whose SIGTERM the workers ignore
            self.log.close()

    def _loop(self) -> None:
        raw = training_images(self.cfg, self.world)  # opened only if a method asks (DeepCluster v2)
        # In the dtype the engine's model takes, as the step's views are (DeepSpeed bf16: bf16).
        images = lambda: (self.engine.prepare_inputs([x])[0] for x in raw())
        while self.step < self.plan.total_steps and not self.stop.requested:
            epoch, start_in_epoch = divmod(self.step, self.steps_per_epoch)
            if start_in_epoch == 0:
                # Every rank calls it: a method may run collectives here (k-means across ranks).
                self.method.on_epoch_start(epoch, images)
            self.loader.set_epoch(epoch, start_in_epoch)
            self.engine.model.train()
            self.plan.on_loader_start(self.step, time.perf_counter())
            batches = 0
            for views, labels in self._batches():
                batches += 1
                if self.step >= self.plan.total_steps or self._train_one(views, epoch, labels).status == STOPPED:
                    break
            if self.stop.requested:
                return
            if batches == 0:
                raise FastSSLError(f"the data loader yielded no batches in epoch {epoch}; check --data.path and --data.limit")
            at_end = self.step % self.steps_per_epoch == 0 or self.step >= self.plan.total_steps
            if at_end and not self.checkpointer.has(self.step):
                self.checkpointer.save(self.step, epoch, self.bad_steps)

    def _batches(self):
        """The loader's batches; a loader whose workers died after a stop request just ends."""
        try:
            yield from self.loader
        except RuntimeError:
            if not self.stop.requested:
                raise

    def _train_one(self, views: list[torch.Tensor], epoch: int, labels: torch.Tensor) -> StepOutcome:
        cfg, device = self.cfg, self.world.device
        views = [v.to(device, non_blocking=True) for v in views]
        if device.type == "cuda" and cfg.train.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        at = self.plan.at(self.step)
        lr = lr_at(at.step, at.total, at.warmup, self.peak_lr, cfg.optim.min_lr_ratio)
        result = train_step(self.engine, self.method, views, self.step, at.schedule_len, epoch, lr, self.guard,
                            stop_requested=self.stop.requested, accum_steps=cfg.train.grad_accum_steps,
                            grad_cache=self.grad_cache)
        if result.status == STOPPED:
            return result
        if result.status != OK:
            self._skipped(result)
        else:
            self.bad_steps = 0
            self.probe.update(labels)
            self.step += 1
            self._after_step(result, views, lr, epoch)
        return result

    def _skipped(self, result: StepOutcome) -> None:
        self.bad_steps += 1
        self.log.write(f"fastssl: non-finite {result.status} at step {self.step}; skipped ({self.bad_steps} in a row)")
        if self.bad_steps >= self.cfg.train.max_bad_steps:
            raise FastSSLError(
                f"loss was not finite for {self.bad_steps} steps in a row (step {self.step}); "
                f"{self.checkpointer.describe_last()}; lower --optim.base_lr, set --optim.clip_grad, "
                f"or use --train.precision=fp32"
            )
        self.step += 1  # the schedule moves on, as a skipped batch is consumed data

    def _after_step(self, result: StepOutcome, views: list[torch.Tensor], lr: float, epoch: int) -> None:
        step, now = self.step, time.perf_counter()
        n_img = views[0].shape[0] * self.world.dims.dp_size
        self.images_seen += n_img
        dt, self._t_last = now - self._t_last, now
        self.log.progress(1, loss=result.outputs["loss"].detach(), lr=lr, img_s=n_img / max(dt, 1e-9))
        event = self.plan.after_step(step, now)
        if event is not None:
            self.method.configure_schedule(self.steps_per_epoch, event.total_steps)
            self.log.set_total(event.total_steps)
            self.log.log(step, event.record, kind=event.kind)
            self.log.write(f"fastssl: time budget {self.cfg.train.time_budget}: {event.message}")
        if step % self.cfg.train.log_every == 0 or step == self.plan.total_steps:
            self._log_scalars(result, lr, epoch, now)
        train_s = now - self.t_start - self.monitor.seconds
        if self.monitor.enabled and self.monitor.due(step, train_s):
            self._periodic_knn(train_s)
        if self.checkpointer.due(step):
            self.checkpointer.save(step, epoch, self.bad_steps)

    def _log_scalars(self, result: StepOutcome, lr: float, epoch: int, now: float) -> None:
        # Mean over ranks, so the logged loss is the global batch's on every world size.
        names = list(result.outputs)
        means = all_reduce_mean(torch.stack([result.outputs[k].detach().float().to(self.world.device) for k in names]))
        elapsed = now - self.t_start
        self.log.log(self.step, {**dict(zip(names, means.tolist())), "lr": lr, "epoch": epoch,
                                 "grad_norm": result.grad_norm, "images_per_s": self.images_seen / elapsed,
                                 "views_per_s": self.images_seen * self.loader.num_views / elapsed,
                                 **self.probe.scalars()})

    def _periodic_knn(self, train_s: float) -> None:
        before = self.monitor.seconds
        knn = {**self.monitor.run(self.engine), **self.probe.held_out(self.monitor)}
        self.plan.account("knn", self.monitor.seconds - before)
        self.log.log(self.step, {**knn, "train_seconds": round(train_s, 2)}, kind="knn_every")
        probe = f", online probe top-1 {knn['online_probe_top1']:.2f}%" if "online_probe_top1" in knn else ""
        self.log.write(f"fastssl: step {self.step} kNN top-1 {knn['top1']:.2f}%{probe} ({knn['n_train']} bank, "
                       f"{knn['n_test']} queries, {train_s:.0f} s of training)")

    # --- the end ------------------------------------------------------------------------------
    def _stopped(self) -> dict[str, Any]:
        ckpt = self.checkpointer
        if not ckpt.has(self.step):
            ckpt.save(self.step, self.step // max(self.steps_per_epoch, 1), self.bad_steps)
        status = exit_status(self.stop.signum)
        self.log.write(f"fastssl: stopped by {self.stop.name} at step {self.step} of {self.plan.total_steps}; "
                       f"checkpoint {ckpt.last}; exit status {status}; continue with the same command plus "
                       f"--resume (--train.out={self.cfg.train.out})")
        summary = {"step": self.step, "stopped": self.stop.name, "exit_status": status, "checkpoint": str(ckpt.last)}
        self.log.log(self.step, summary, kind="stopped")
        return summary

    def _finish(self) -> dict[str, Any]:
        elapsed = time.perf_counter() - self.t_start
        train_s = elapsed - self.monitor.seconds
        summary: dict[str, Any] = {"step": self.step, "checkpoint": str(self.checkpointer.last),
                                   "seconds": round(elapsed, 2), "train_seconds": round(train_s, 2),
                                   "images_per_s": round(self.images_seen / max(train_s, 1e-9), 2),
                                   **self.plan.summary()}
        if self.cfg.train.knn_at_end:
            self._knn_at_end(summary)
        self.log.log(self.step, summary, kind="summary")
        self.log.write("fastssl: done " + " ".join(f"{k}={v}" for k, v in summary.items()))
        return summary

    def _knn_at_end(self, summary: dict[str, Any]) -> None:
        try:
            knn = knn_at_end(self.engine, self.cfg, self.world)  # every rank: under sharding the forward is collective
        except FastSSLError as e:
            # On by default, so unasked for: data it cannot evaluate (no labels, tars) must not turn a
            # finished run into a failed one. Every rank reads the same data, so all skip alike.
            self.log.log(self.step, {"reason": str(e)}, kind="knn_skipped")
            self.log.write(skipped_note(e, self.cfg))
            return
        summary["knn_top1"] = knn["top1"]
        self.log.log(self.step, knn, kind="knn")
