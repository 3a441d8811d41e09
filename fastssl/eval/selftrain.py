"""Self-training on top of an encoder: a teacher labels the unlabelled images, a noised student learns.

The semi-supervised recipe of SimCLR v2 (Chen et al. 2020, "Big self-supervised models are
strong semi-supervised learners": pretrain, fine-tune on the labels, then train on unlabelled
data labelled by the fine-tuned model) with the student noise of Noisy Student (Xie et al.
2020) and the confidence threshold of pseudo-labelling (Lee 2013; FixMatch's tau = 0.95):

    round 0: teacher = the few-label protocol's fine-tune of the encoder (fastssl.eval.fewlabel)
    round r: 1. the teacher, in eval mode and without augmentation, predicts every unlabelled
                training image; those whose top softmax probability >= `threshold` keep that
                class as a hard pseudo-label, the rest are left out;
             2. a student starts again from the encoder (not the teacher) and is trained on the
                labelled images (true labels) + the pseudo-labelled ones, noised: translation /
                flip augmentation, dropout before its head, stochastic depth in its residual
                blocks (where the backbone has them: timm ResNet and ViT blocks);
             3. its test top-1 is reported, and it becomes the next round's teacher.

Any backbone of fastssl.models works (the student is a copy of the encoder with a new head).
"Unlabelled" means the training split minus the N labelled images per class: their true
labels never reach training (the report reads them afterwards, to say how accurate the
pseudo-labels were). Test images are read only by the per-round evaluations.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from fastssl.config import Config
from fastssl.errors import FastSSLError
from fastssl.eval.features import num_classes_of, resolve_device, unwrap_backbone
from fastssl.eval.fewlabel import FewLabelRun, few_label_run
from fastssl.eval.finetune import classify_accuracy, finetune_backbone, predict, training_steps

# Noisy Student (Xie et al. 2020, Sec. 3): dropout 0.5 before the final layer and stochastic
# depth with survival 0.8 at the last block, for EfficientNets trained for hundreds of epochs.
# The small CPU runs here use milder defaults; the command takes both as flags.
DEFAULT_DROPOUT = 0.3
DEFAULT_DROP_PATH = 0.1
# FixMatch (Sohn et al. 2020) keeps pseudo-labels above tau = 0.95; a fine-tuned teacher on few
# labels is less confident, so 0.9 here.
DEFAULT_THRESHOLD = 0.9


def set_stochastic_depth(backbone: nn.Module, rate: float) -> int:
    """Drop each residual branch with probability rising linearly to `rate` at the last block.

    Returns how many blocks got a DropPath (0 for backbones without timm's drop-path slots).
    """
    from timm.layers import DropPath

    slots = ("drop_path", "drop_path1", "drop_path2")
    blocks = [m for unit in unwrap_backbone(backbone).blocks() for m in unit.modules()
              if not isinstance(m, DropPath) and any(s in m.__dict__ or s in m._modules for s in slots)]
    for i, block in enumerate(blocks):
        p = rate * i / max(len(blocks) - 1, 1)  # timm's linspace(0, rate, depth)
        for s in slots:
            if s in block.__dict__ or s in block._modules:
                setattr(block, s, DropPath(p) if p > 0 else nn.Identity())
    return len(blocks)


@torch.no_grad()
def pseudo_label(teacher: nn.Module, source: Any, cfg: Config, threshold: float,
                 device: str | torch.device = "auto", batch_size: int | None = None,
                 num_workers: int = 0) -> dict[str, np.ndarray]:
    """The teacher's confident predictions on `source`: {"index", "label", "confidence"} of kept rows.

    A row is kept when its top softmax probability is >= `threshold`; `index` is into `source`.
    """
    if not 0.0 <= threshold <= 1.0:
        raise FastSSLError(f"--threshold is a probability; use a value in [0, 1], not {threshold}")
    logits, _ = predict(teacher, source, cfg, device, batch_size, num_workers)  # [N, C]
    confidence, label = logits.softmax(dim=1).max(dim=1)  # [N], [N]
    keep = (confidence >= threshold).cpu().numpy()
    return {"index": np.flatnonzero(keep), "label": label.cpu().numpy()[keep],
            "confidence": confidence.cpu().numpy()[keep]}


def _relabelled(source: Any, indices: np.ndarray, labels: np.ndarray) -> Any:
    from fastssl.data import IndexedSource

    view = IndexedSource(source, indices)
    view.labels = np.asarray(labels, dtype=np.int64)  # what the loaders read (ImageSource.sample)
    return view


def _concat(a: Any, b: Any) -> Any:
    """Labelled + pseudo-labelled: both are views of the same training source."""
    return _relabelled(a.base, np.concatenate([a.indices, b.indices]), np.concatenate([a.labels, b.labels]))


def self_train(model: nn.Module, train_source: Any, test_source: Any, cfg: Config,
               device: str | torch.device = "auto", labels_per_class: int | None = None, rounds: int = 1,
               threshold: float = DEFAULT_THRESHOLD, steps: int | None = None, lr: float | None = None,
               batch_size: int | None = None, seed: int = 0, num_workers: int = 0,
               dropout: float = DEFAULT_DROPOUT, drop_path: float = DEFAULT_DROP_PATH,
               teacher: FewLabelRun | None = None) -> dict[str, Any]:
    """Teacher + `rounds` student rounds; each round's test top-1 in percent. `model` is untouched.

    `teacher`: the few-label run of `model` with the same labels, if already done (the report
    reuses its fine-tune). The result's "backbone" is the last student (not JSON-able).
    """
    if rounds < 1:
        raise FastSSLError(f"--rounds must be >= 1, got {rounds}")
    device = resolve_device(device)
    num_classes = num_classes_of(train_source, test_source)
    run = teacher or few_label_run(model, train_source, test_source, cfg, device, labels_per_class, steps, lr,
                                   batch_size, seed, num_workers, linear=False)
    teacher, teacher_run, labelled_idx = run.backbone, run.result, run.split.labelled
    n = teacher_run["labels_per_class"]
    labelled = _relabelled(train_source, labelled_idx, np.asarray(train_source.labels)[labelled_idx])
    unlabelled_idx = np.setdiff1d(np.arange(len(train_source)), labelled_idx)
    unlabelled = _relabelled(train_source, unlabelled_idx, np.full(len(unlabelled_idx), -1))
    history = [{"round": 0, "role": "teacher", "top1": teacher_run["top1"], "n_train": len(labelled),
                "n_pseudo": 0, "pseudo_accuracy": None}]
    start = unwrap_backbone(model)
    lr = cfg.eval.finetune_lr if lr is None else lr
    for r in range(1, rounds + 1):
        kept = pseudo_label(teacher, unlabelled, cfg, threshold, device, batch_size, num_workers)
        pseudo = _relabelled(train_source, unlabelled_idx[kept["index"]], kept["label"])
        student_set = _concat(labelled, pseudo)
        student = copy.deepcopy(start)
        blocks = set_stochastic_depth(student, drop_path)
        bs = max(1, min(batch_size or cfg.eval.batch_size, len(student_set)))
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed + r)
            finetune_backbone(student, student_set, cfg, num_classes, device,
                              steps=training_steps(cfg, len(student_set), bs, steps), lr=lr, batch_size=batch_size,
                              seed=seed + r, num_workers=num_workers, weight_decay=cfg.eval.finetune_weight_decay,
                              head_dropout=dropout)
            result = classify_accuracy(student, test_source, cfg, device, batch_size, num_workers)
        # How good the pseudo-labels were: measurable here because the benchmark's unlabelled
        # images do have labels; computed after training, from the base source, for the report only.
        truth = np.asarray(train_source.labels)[pseudo.indices]
        history.append({"round": r, "role": "student", "top1": result["top1"], "n_train": len(student_set),
                        "n_pseudo": len(pseudo), "pseudo_accuracy": float(100.0 * (truth == pseudo.labels).mean())
                        if len(pseudo) else None, "stochastic_depth_blocks": blocks})
        teacher = student
    return {"labels_per_class": n, "n_labelled": len(labelled), "n_unlabelled": len(unlabelled),
            "threshold": threshold, "rounds": history, "top1": history[-1]["top1"],
            "teacher_top1": teacher_run["top1"], "backbone": teacher}
