"""kNN during and after training: the learning curve of a run and its final figure.

`--eval.knn_every` runs a bounded kNN (at most `eval.knn_every_train` bank images and
`eval.knn_every_test` held-out queries) every N steps (`500`) or every stretch of training time
(`2m`, `90s`). It must not change training, so it:
- runs the backbone in eval mode under no_grad (BatchNorm statistics stay as they are);
- restores the global RNG afterwards (a DataLoader draws its base seed from it);
- is excluded from the training clock, so a `--train.time_budget` buys the same steps with or
  without monitoring, and curves plot kNN against training time.

Every rank runs each evaluation on the same images: under FSDP or ZeRO-3 the forward is collective.
A minute cadence is decided by rank 0's clock and broadcast, so all ranks evaluate together.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist

from fastssl.config import Config, DataConfig
from fastssl.distributed import World, is_dist
from fastssl.errors import FastSSLError
from fastssl.parallel.engines import Engine
from fastssl.config.durations import parse_every


class _EngineBackbone(torch.nn.Module):
    """The trained backbone as a module for the evaluators, forwarding through the engine."""

    def __init__(self, engine: Engine):
        super().__init__()
        self._engine = [engine]  # a list, so it is not registered as a submodule (no .to / state)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._engine[0].eval_forward(images)

    def train(self, mode: bool = True) -> "_EngineBackbone":
        self._engine[0].model.train(mode)
        return super().train(mode)


def open_labelled_sources(data_cfg: DataConfig) -> tuple[Any, Any]:
    """The kNN's bank (`--data.path`'s training split) and held-out queries, or a FastSSLError
    saying why this run's data cannot give them: tars only the training loader streams, or images
    without labels (a flat folder, unlabelled tars)."""
    from fastssl.data import open_eval_sources
    from fastssl.data.sources.factory import resolve_dataset

    # As open_eval_sources reads a test path: the training set's format only if it is a concrete one.
    test_dataset = data_cfg.dataset if data_cfg.dataset not in ("digits", "auto") else "auto"
    paths = (("--data.path", data_cfg.path, data_cfg.dataset), ("--data.test_path", data_cfg.test_path, test_dataset))
    for key, path, dataset in paths:
        if path and resolve_dataset(dataset, path, key) == "webdataset":
            raise FastSSLError(f"{key}={path} holds webdataset tars, which only the training loader streams")
    bank, queries = open_eval_sources(data_cfg)
    for (key, path, _), source in zip(paths, (bank, queries)):
        labels = np.asarray(source.labels)
        if len(labels) and labels.min() < 0:
            where = f"{key}={path}" if path else f"the held-out split of --data.path={data_cfg.path}"
            raise FastSSLError(f"{where} has images without labels "
                               f"(a flat folder has none: labels are class sub-folders)")
    return bank, queries


def knn_at_end(engine: Engine, cfg: Config, world: World) -> dict[str, Any]:
    """kNN on held-out data (`data.test_path`, else the dataset's own held-out split).

    Every rank runs it on the same images, so the engine's collective eval forward lines up; the
    kNN itself is cheap next to the features and is computed on each rank alike. Data it cannot
    evaluate raises FastSSLError on every rank alike (see `skipped_note`).
    """
    from fastssl.eval.knn import knn_eval

    train_src, test_src = open_labelled_sources(cfg.data)
    # A run limited to N images is a quick one: its kNN bank is those N images, not the full set.
    train_src = train_src.head(cfg.eval.knn_train_limit or cfg.data.limit)
    test_src = test_src.head(cfg.eval.knn_test_limit)
    return knn_eval(_EngineBackbone(engine), train_src, test_src, cfg, world.device)


def skipped_note(reason: FastSSLError, cfg: Config) -> str:
    """The line that replaces the end-of-run kNN when it cannot run: why, and the command for later."""
    return (f"fastssl: kNN at end skipped: {reason}; the checkpoint is saved, evaluate it on labelled images with "
            f"`fastssl eval knn --ckpt {cfg.train.out} --data.train LABELLED_TRAIN --data.test LABELLED_TEST`")


class KnnMonitor:
    """Decides when a periodic kNN is due, runs it, and keeps its time off the training clock."""

    def __init__(self, cfg: Config, world: World):
        self.cfg, self.world = cfg, world
        self.every_steps, self.every_s = parse_every(cfg.eval.knn_every)
        self.seconds = 0.0  # wall time spent evaluating; the trainer subtracts it
        self._next_s = self.every_s
        # Opened now, so data it cannot evaluate is refused before any training.
        self._sources = self._open_sources() if self.enabled else None

    def _open_sources(self) -> tuple[Any, Any]:
        # Refused before any training, not skipped: the user asked for this curve, and a run
        # without it would spend the time it was meant to measure.
        try:
            bank, queries = open_labelled_sources(self.cfg.data)
        except FastSSLError as e:
            raise FastSSLError(
                f"--eval.knn_every={self.cfg.eval.knn_every} needs labelled images, but {e}; drop --eval.knn_every "
                f"and evaluate the saved checkpoints afterwards with `fastssl eval knn --ckpt "
                f"{self.cfg.train.out}/checkpoints/step_N --data.train LABELLED --data.test LABELLED`") from None
        return bank.head(self.cfg.eval.knn_every_train), queries.head(self.cfg.eval.knn_every_test)

    @property
    def enabled(self) -> bool:
        return bool(self.every_steps or self.every_s)

    def due(self, step: int, train_s: float) -> bool:
        """Called on every rank after every step; identical answer on every rank."""
        if self.every_steps:
            return step % self.every_steps == 0
        if not self.every_s:
            return False
        due = train_s >= self._next_s
        if is_dist():  # rank 0's clock decides; one scalar per step, only with a minute cadence
            flag = torch.tensor([int(due)], device=self.world.device)
            dist.broadcast(flag, src=0)
            due = bool(flag.item())
        if due:
            while self._next_s <= train_s:
                self._next_s += self.every_s
            return True
        return False

    def run(self, engine: Engine) -> dict[str, Any]:
        from fastssl.eval.knn import knn_eval

        # No loader workers: a few thousand images decode in-process faster than workers start.
        return self.evaluate(engine, lambda backbone, bank, queries: knn_eval(
            backbone, bank, queries, self.cfg, self.world.device, num_workers=0))

    def evaluate(self, engine: Engine, fn: Callable[[torch.nn.Module, Any, Any], dict[str, Any]]) -> dict[str, Any]:
        """`fn(backbone, bank, queries)` on this monitor's held-out slice, off the training clock and
        leaving the RNG as it was: the kNN, and the online probe's held-out top-1 (online_probe.py)."""
        t0 = time.perf_counter()
        cpu_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        try:
            result = fn(_EngineBackbone(engine), *self._sources)
        finally:
            torch.set_rng_state(cpu_rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state_all(cuda_rng)
            engine.model.train()
        self.seconds += time.perf_counter() - t0
        return result
