"""The few-label results table: does self-supervised pretraining beat training on the labels alone?

For each labels-per-class setting N and each seed (which N images per class are labelled),
every row is measured with the same protocol (fastssl.eval.fewlabel: steps, a held-out
validation slice for the step count, refit on all N labels, top-1 on the test split):

- scratch: the same network, randomly initialised, trained end to end on the N labels only;
- random init + linear: a linear head on the frozen random network (a floor for the probes);
- per pretrained encoder: a new linear head on its frozen backbone features ("linear"), the
  same on its projector's outputs ("projector linear": SimCLR's Fig. 8 comparison, which is
  why the projector is discarded), and the whole encoder fine-tuned ("fine-tune");
- self-training on top of the best fine-tuned model at that N (fastssl.eval.selftrain): its
  fine-tune is the teacher, one or more noised students follow.

Features for the probes are extracted once per encoder over the whole training and test
splits; the fine-tunes read images. Rows report mean and standard deviation over seeds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from fastssl.config import Config
from fastssl.eval.features import num_classes_of, project, projector_of, source_features
from fastssl.eval.fewlabel import LINEAR_STEP_GRID, few_label_linear, few_label_run, split_labelled
from fastssl.eval.selftrain import self_train


@dataclass
class Encoder:
    """A model to evaluate: a method (or backbone) with the config it was trained with."""

    name: str
    method: nn.Module
    cfg: Config
    ckpt: str | None = None


@dataclass
class ReportSettings:
    labels_per_class: tuple[int, ...] = (2, 5, 20)
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int | None = None  # None = eval.finetune_steps
    lr: float | None = None  # None = eval.finetune_lr
    selftrain_rounds: int = 1
    threshold: float = 0.9
    batch_size: int | None = None
    num_workers: int = 0
    device: str | torch.device = "cpu"
    val_fraction: float = 0.2  # the same split of the N labels for every row (eval.finetune_val_fraction)
    probe_steps: tuple[int, ...] = LINEAR_STEP_GRID  # step counts the linear probes choose from


def _probe_rows(enc: Encoder, feats: dict[str, torch.Tensor], train_y: torch.Tensor, split, test_y: torch.Tensor,
                num_classes: int, seed: int, step_grid: tuple[int, ...]) -> list[tuple[str, float]]:
    """(evaluation, top-1) of linear probes on each feature kind of `feats` ({"linear": ..., ...})."""
    out = []
    idx = torch.as_tensor(split.labelled, device=train_y.device)
    is_val = np.isin(split.labelled, split.val)
    for kind, (train_x, test_x) in feats.items():
        r = few_label_linear(train_x[idx], train_y[idx], is_val, test_x, test_y, num_classes,
                             lr=enc.cfg.eval.linear_lr, seed=seed, step_grid=step_grid)
        out.append((kind, r["top1"]))
    return out


def few_label_report(encoders: list[Encoder], scratch: Encoder, train_source: Any, test_source: Any,
                     settings: ReportSettings, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Every row of the table, one dict per (encoder, evaluation, N, seed); top-1 in percent."""
    s = settings
    num_classes = num_classes_of(train_source, test_source)
    rows: list[dict[str, Any]] = []
    feats: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
    labels = None
    random_frozen = Encoder("random init", scratch.method, scratch.cfg)  # the scratch network, frozen
    for enc in [random_frozen, *encoders]:
        t = time.perf_counter()
        train_x, train_y = source_features(enc.method, train_source, enc.cfg, s.device, s.batch_size, s.num_workers)
        test_x, test_y = source_features(enc.method, test_source, enc.cfg, s.device, s.batch_size, s.num_workers)
        labels = (train_y, test_y)
        feats[enc.name] = {"linear": (train_x, test_x)}
        projector = projector_of(enc.method)
        if projector is not None and enc is not random_frozen:
            feats[enc.name]["projector linear"] = (project(projector, train_x), project(projector, test_x))
        log(f"features of {enc.name}: {len(train_x)} train + {len(test_x)} test in {time.perf_counter() - t:.1f}s")
    train_y, test_y = labels

    def add(encoder: str, evaluation: str, n: int, seed: int, top1: float, seconds: float, **extra: Any) -> None:
        rows.append({"encoder": encoder, "evaluation": evaluation, "labels_per_class": n, "seed": seed,
                     "top1": round(float(top1), 2), "seconds": round(seconds, 1), **extra})
        log(f"N={n} seed={seed} {encoder} / {evaluation}: top-1 {top1:.1f}% ({seconds:.0f}s)")

    for n in s.labels_per_class:
        runs: dict[str, list] = {}
        for seed in s.seeds:
            split = split_labelled(np.asarray(train_source.labels), n, s.val_fraction, seed)
            for enc in [random_frozen, *encoders]:
                t = time.perf_counter()
                for kind, top1 in _probe_rows(enc, feats[enc.name], train_y, split, test_y, num_classes, seed,
                                              s.probe_steps):
                    add(enc.name, kind, n, seed, top1, time.perf_counter() - t)
            for enc in [scratch, *encoders]:
                t = time.perf_counter()
                run = few_label_run(enc.method, train_source, test_source, enc.cfg, s.device, n, s.steps, s.lr,
                                    s.batch_size, seed, s.num_workers, val_fraction=s.val_fraction, linear=False)
                runs.setdefault(enc.name, []).append(run)
                add(enc.name, "fine-tune", n, seed, run.result["top1"], time.perf_counter() - t,
                    best_step=run.result["best_step"], steps=run.result["steps"])
        if s.selftrain_rounds > 0:
            best = max(runs, key=lambda name: np.mean([r.result["top1"] for r in runs[name]]))
            enc = next(e for e in [scratch, *encoders] if e.name == best)
            for seed, teacher in zip(s.seeds, runs[best]):
                t = time.perf_counter()
                r = self_train(enc.method, train_source, test_source, enc.cfg, s.device, n, s.selftrain_rounds,
                               s.threshold, s.steps, s.lr, s.batch_size, seed, s.num_workers, teacher=teacher)
                last = r["rounds"][-1]
                add(f"self-training on {best}", f"student round {last['round']}", n, seed, r["top1"],
                    time.perf_counter() - t, n_pseudo=last["n_pseudo"], pseudo_accuracy=last["pseudo_accuracy"])
    return rows
