"""The few-label protocol: N labels per class, steps not epochs, a validation slice for stopping.

Issue 11, item 9: fine-tuning on 200 labelled digits for "30 epochs" was 60 steps, and a random
init scored below a logistic regression on raw pixels. The protocol here, used alike for a
pretrained encoder and for training from scratch so that the two are comparable:

1. draw N images per class from the training split (seeded; `sample_per_class`);
2. hold out `val_fraction` of each class's N (at least one when N >= 2) as a validation slice;
3. fine-tune on the rest for a number of *steps* (`eval.finetune_steps`), checking the
   validation slice ~20 times, and keep the step with the best validation top-1 (ties: lower
   validation loss);
4. refit on all N labels for that many steps (the validation images are labelled data too;
   with N = 2 holding one out would halve the training set), then report top-1 on the test set;
5. next to it, the linear probe on frozen features of the same N labels, its step count chosen
   on the same validation slice (`few_label_linear`), so the two numbers answer "how much does
   end-to-end training add over a frozen encoder?".

No test image is read before step 5's final evaluation.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fastssl.config import Config
from fastssl.errors import FastSSLError
from fastssl.eval.features import num_classes_of, resolve_device, source_features, unwrap_backbone
from fastssl.eval.finetune import classify_accuracy, finetune_backbone, sample_per_class, training_steps
from fastssl.eval.knn import topk_accuracy
from fastssl.eval.linear import predict_ranked, standardise, train_linear

# Step counts the linear probe chooses from on the validation slice (features are cached, so
# trying them all costs little).
LINEAR_STEP_GRID = (50, 100, 200, 500, 1000)


@dataclass
class LabelSplit:
    """Indices into the training source: all N per class, and their fit / validation parts."""

    labelled: np.ndarray
    fit: np.ndarray
    val: np.ndarray


def split_labelled(labels: np.ndarray, n: int, val_fraction: float, seed: int = 0) -> LabelSplit:
    """N per class (`sample_per_class`), then `val_fraction` of each class held out (>= 1 if N >= 2)."""
    if not 0.0 <= val_fraction < 1.0:
        raise FastSSLError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    labels = np.asarray(labels)
    labelled = sample_per_class(labels, n, seed)
    rng = np.random.default_rng(seed + 7919)  # a stream of its own: the draw of N stays as before
    val = []
    for c in np.unique(labels[labelled]):
        mine = labelled[labels[labelled] == c]
        k = 0 if len(mine) < 2 or val_fraction == 0 else min(len(mine) - 1, max(1, round(val_fraction * len(mine))))
        val.append(rng.choice(mine, size=k, replace=False))
    val = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    return LabelSplit(labelled, np.setdiff1d(labelled, val), val)


def best_of(history: list[tuple[int, float, float]]) -> tuple[int, float]:
    """(step, val top-1) of the best (step, top1, loss) entry: highest top-1, then lowest loss."""
    step, top1, _ = max(history, key=lambda h: (h[1], -h[2]))
    return step, top1


@dataclass
class FewLabelRun:
    """What the protocol produced: the JSON-able `result`, the fine-tuned backbone, the split."""

    result: dict[str, Any]
    backbone: nn.Module
    split: LabelSplit


def few_label_finetune(model: nn.Module, train_source: Any, test_source: Any, cfg: Config,
                       device: str | torch.device = "auto", labels_per_class: int | None = None,
                       steps: int | None = None, lr: float | None = None, batch_size: int | None = None,
                       seed: int = 0, num_workers: int = 0, epochs: int | None = None,
                       val_fraction: float | None = None, refit: bool = True, linear: bool = True) -> dict[str, Any]:
    """The protocol above on a copy of `model`'s backbone; test top-1 in percent. `model` is untouched."""
    return few_label_run(model, train_source, test_source, cfg, device, labels_per_class, steps, lr, batch_size,
                         seed, num_workers, epochs, val_fraction, refit, linear).result


def few_label_run(model: nn.Module, train_source: Any, test_source: Any, cfg: Config,
                  device: str | torch.device = "auto", labels_per_class: int | None = None,
                  steps: int | None = None, lr: float | None = None, batch_size: int | None = None,
                  seed: int = 0, num_workers: int = 0, epochs: int | None = None,
                  val_fraction: float | None = None, refit: bool = True, linear: bool = True) -> FewLabelRun:
    """`few_label_finetune`, also returning the fine-tuned backbone and the label split."""
    from fastssl.data import IndexedSource

    device = resolve_device(device)
    n = cfg.eval.labels_per_class if labels_per_class is None else labels_per_class
    val_fraction = cfg.eval.finetune_val_fraction if val_fraction is None else val_fraction
    lr = cfg.eval.finetune_lr if lr is None else lr
    num_classes = num_classes_of(train_source, test_source)
    split = split_labelled(train_source.labels, n, val_fraction, seed)
    fit, val, everything = (IndexedSource(train_source, i) for i in (split.fit, split.val, split.labelled))
    start = copy.deepcopy(unwrap_backbone(model))
    bs = max(1, min(batch_size or cfg.eval.batch_size, len(fit)))
    total = training_steps(cfg, len(fit), bs, steps, epochs)
    kwargs = dict(device=device, lr=lr, batch_size=batch_size, seed=seed, num_workers=num_workers,
                  weight_decay=cfg.eval.finetune_weight_decay)
    # Seed the head init and any stochastic layers, without disturbing the caller's RNG.
    # (DataLoader iteration draws from the global RNG too, hence the evaluation is inside.)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        history: list[tuple[int, float, float]] = []
        best_state: dict[str, torch.Tensor] = {}

        def watch(step: int, backbone: nn.Module) -> None:
            r = classify_accuracy(backbone, val, cfg, device, batch_size, num_workers)
            history.append((step, r["top1"], r["loss"]))
            if best_of(history)[0] == step:
                best_state.clear()
                best_state.update({k: v.detach().clone() for k, v in backbone.state_dict().items()})

        every = max(1, total // 20) if len(val) else 0
        backbone = finetune_backbone(copy.deepcopy(start), fit, cfg, num_classes, steps=total, every=every,
                                     on_eval=watch if len(val) else None, **kwargs)
        best_step, val_top1 = best_of(history) if history else (total, None)
        if len(val) and refit:
            torch.manual_seed(seed)
            backbone = finetune_backbone(copy.deepcopy(start), everything, cfg, num_classes, steps=best_step, **kwargs)
        elif best_state:
            backbone.load_state_dict(best_state)
        result = classify_accuracy(backbone, test_source, cfg, device, batch_size, num_workers)
        out = {
            "top1": result["top1"], **({"top5": result["top5"]} if "top5" in result else {}),
            "labels_per_class": n, "n_labelled": len(split.labelled), "n_fit": len(split.fit),
            "n_val": len(split.val), "steps": total, "best_step": best_step, "val_top1": val_top1,
            "refit": bool(refit and len(val)), "lr": lr,
        }
        if linear:  # inside the forked RNG too: building the probe's nn.Linear draws from it
            feats, labels = source_features(start, everything, cfg, device, batch_size, num_workers)
            test_x, test_y = source_features(start, test_source, cfg, device, batch_size, num_workers)
            out["linear"] = few_label_linear(feats, labels, np.isin(split.labelled, split.val), test_x, test_y,
                                             num_classes, lr=cfg.eval.linear_lr, seed=seed)
    return FewLabelRun(out, backbone, split)


def few_label_linear(feats: torch.Tensor, labels: torch.Tensor, is_val: np.ndarray, test_feats: torch.Tensor,
                     test_labels: torch.Tensor, num_classes: int, lr: float = 0.1, seed: int = 0,
                     step_grid: tuple[int, ...] = LINEAR_STEP_GRID, batch_size: int = 256) -> dict[str, Any]:
    """Linear probe on frozen features of the N labelled images; steps chosen on the val rows.

    `feats` [N, D] are the labelled images' features, `is_val` [N] marks the validation slice.
    Standardisation uses all N labelled images' features (no labels involved). The probe is
    refit on all N for the chosen step count; returns test top-1 in percent.
    """
    is_val = torch.as_tensor(np.asarray(is_val, dtype=bool), device=feats.device)
    x, test_x = standardise(feats.float(), test_feats.float().to(feats.device))
    labels = labels.to(feats.device)

    def fit(rows: torch.Tensor, steps: int) -> nn.Module:
        per_epoch = max(1, math.ceil(int(rows.sum()) / batch_size))
        with torch.enable_grad():
            return train_linear(x[rows], labels[rows], num_classes, epochs=max(1, math.ceil(steps / per_epoch)),
                                lr=lr, batch_size=batch_size, seed=seed)

    chosen, val_top1 = step_grid[-1], None
    if bool(is_val.any()) and bool((~is_val).any()):
        history = []
        for steps in step_grid:
            head = fit(~is_val, steps)
            with torch.no_grad():
                logits = head(x[is_val])
            top1 = 100.0 * (logits.argmax(1) == labels[is_val]).float().mean().item()
            history.append((steps, top1, nn.functional.cross_entropy(logits, labels[is_val]).item()))
        chosen, val_top1 = best_of(history)
    head = fit(torch.ones_like(is_val), chosen)
    return {**topk_accuracy(predict_ranked(head, test_x), test_labels), "steps": chosen, "val_top1": val_top1}
