"""Fine-tuning a backbone end to end on labelled images, for a set number of optimizer steps.

The training length is in *steps*, not epochs: with 200 labelled images, 30 epochs at batch 256
are 30 steps, far too few for a network to fit them (issue 11, item 9). `finetune_backbone`
gives the backbone a fresh linear head (`backbone.reset_head`; optionally behind dropout) and
trains all of it with SGD + momentum and a cosine schedule; `every`/`on_eval` let the caller
watch a validation set during training (fastssl.eval.fewlabel selects the step count that way).

Augmentation is a random translation (replicate padding, 1/8 of the side) plus a horizontal
flip only when the recipe flips (`aug.flip_p > 0`; digits are not mirror-symmetric). It runs on
batches on the device, so it works with whatever in-order loader `fastssl.data` provides.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from fastssl.config import Config
from fastssl.errors import FastSSLError
from fastssl.eval.features import eval_loader, resolve_device
from fastssl.eval.knn import topk_accuracy


def sample_per_class(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of exactly n items of every class present in `labels`, drawn with `seed`."""
    labels = np.asarray(labels)
    if n < 1:
        raise FastSSLError(f"--labels-per-class must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    # Group indices by class once (O(N log N)) rather than scanning all labels per class.
    by_class = np.argsort(labels, kind="stable")  # [N]
    classes, starts, counts = np.unique(labels[by_class], return_index=True, return_counts=True)
    picked = []
    for c, start, count in zip(classes, starts, counts):
        if count < n:
            raise FastSSLError(
                f"class {c} has only {count} training images but --labels-per-class={n}; "
                f"pass --labels-per-class={count} or fewer"
            )
        picked.append(by_class[start + rng.choice(count, size=n, replace=False)])
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def _translate_flip(x: torch.Tensor, gen: torch.Generator, flip: bool) -> torch.Tensor:
    """Per-image random shift by up to 1/8 of the side (and optional h-flip) of `[B, C, H, W]`."""
    b, _, h, w = x.shape
    pad = max(1, min(h, w) // 8)
    padded = nn.functional.pad(x, (pad, pad, pad, pad), mode="replicate")  # [B, C, H+2p, W+2p]
    dy = torch.randint(0, 2 * pad + 1, (b, 1), generator=gen).to(x.device)  # [B, 1]
    dx = torch.randint(0, 2 * pad + 1, (b, 1), generator=gen).to(x.device)  # [B, 1]
    rows = dy + torch.arange(h, device=x.device)  # [B, H]
    cols = dx + torch.arange(w, device=x.device)  # [B, W]
    if flip:
        flipped = (torch.rand(b, generator=gen) < 0.5).to(x.device)[:, None]  # [B, 1]
        cols = torch.where(flipped, cols.flip(1), cols)
    batch = torch.arange(b, device=x.device)[:, None, None]  # [B, 1, 1]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous()


# Labelled sets up to this size (as fp32 tensors) are decoded once and kept; larger ones
# (1% of ImageNet at 224 px is ~7.7 GB) are re-read every pass.
CACHE_BYTES = 1 << 30


def shuffled_batches(source: Any, cfg: Config, batch_size: int, gen: torch.Generator, device: torch.device,
                     num_workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless shuffled (images [B, 3, H, W], labels [B]) batches on `device`, pass after pass."""
    from fastssl.data import IndexedSource

    side = cfg.data.image_size
    if len(source) * 3 * side * side * 4 <= CACHE_BYTES:
        images, labels = zip(*eval_loader(source, cfg, batch_size, num_workers))
        images = torch.cat(images).to(device)  # [M, 3, H, W]
        labels = torch.cat([torch.as_tensor(y) for y in labels]).to(device, torch.long)  # [M]
        while True:
            order = torch.randperm(len(labels), generator=gen).to(device)
            for i in range(0, len(order), batch_size):
                yield images[order[i : i + batch_size]], labels[order[i : i + batch_size]]
    while True:
        # A fresh in-order loader over a seeded permutation is a shuffled pass with any backend.
        order = torch.randperm(len(source), generator=gen).numpy()
        for x, y in eval_loader(IndexedSource(source, order), cfg, batch_size, num_workers):
            yield x.to(device, non_blocking=True), torch.as_tensor(y).to(device, torch.long)


def training_steps(cfg: Config, n_images: int, batch_size: int, steps: int | None = None,
                   epochs: int | None = None) -> int:
    """Explicit `steps`, else explicit `epochs` of `n_images`, else `eval.finetune_steps`
    (`eval.finetune_epochs` when that is 0)."""
    per_epoch = max(1, math.ceil(n_images / batch_size))
    if steps is not None:
        return max(1, steps)
    if epochs is not None:
        return max(1, epochs * per_epoch)
    return cfg.eval.finetune_steps if cfg.eval.finetune_steps > 0 else max(1, cfg.eval.finetune_epochs * per_epoch)


def finetune_backbone(backbone: nn.Module, source: Any, cfg: Config, num_classes: int,
                      device: str | torch.device = "auto", steps: int = 500, lr: float | None = None,
                      batch_size: int | None = None, seed: int = 0, num_workers: int = 0,
                      weight_decay: float = 0.0, head_dropout: float = 0.0, every: int = 0,
                      on_eval: Callable[[int, nn.Module], None] | None = None) -> nn.Module:
    """Give `backbone` a fresh `num_classes` head and train all of it on `source` for `steps`, in place.

    `head_dropout` puts dropout before the head (a noised student, fastssl.eval.selftrain). With
    `every` > 0, `on_eval(step, backbone)` runs after every `every` steps and after the last,
    the backbone in eval mode; training resumes afterwards.
    """
    device = resolve_device(device)
    lr = cfg.eval.finetune_lr if lr is None else lr
    batch_size = max(1, min(batch_size or cfg.eval.batch_size, len(source)))
    gen = torch.Generator().manual_seed(seed)
    backbone.to(device)
    head = backbone.reset_head(num_classes)
    if head_dropout > 0:
        backbone.head = nn.Sequential(nn.Dropout(head_dropout), head)
    params = list(backbone.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    backbone.train()
    batches = shuffled_batches(source, cfg, batch_size, gen, device, num_workers)
    step = 0
    while step < steps:
        images, targets = next(batches)
        if len(images) < 2:
            continue  # BatchNorm cannot train on one image
        images = _translate_flip(images, gen, cfg.aug.flip_p > 0)
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = backbone.classify(images)  # [B, num_classes]
        loss = nn.functional.cross_entropy(logits.float(), targets)
        if not torch.isfinite(loss):
            raise FastSSLError(f"fine-tuning diverged (loss {loss.item():.3g}); lower --lr (now {lr:g})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if on_eval is not None and every > 0 and (step % every == 0 or step == steps):
            on_eval(step, backbone.eval())
            backbone.train()
    return backbone.eval()


@torch.no_grad()
def predict(backbone: nn.Module, source: Any, cfg: Config, device: str | torch.device = "auto",
            batch_size: int | None = None, num_workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [N, num_classes] fp32, labels [N]) of `backbone.classify` over a source, in order."""
    device = resolve_device(device)
    backbone.to(device).eval()
    logits, labels = [], []
    for images, targets in eval_loader(source, cfg, batch_size, num_workers):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits.append(backbone.classify(images.to(device, non_blocking=True)).float())
        labels.append(torch.as_tensor(targets).to(device, torch.long))
    return torch.cat(logits), torch.cat(labels)


def classify_accuracy(backbone: nn.Module, source: Any, cfg: Config, device: str | torch.device = "auto",
                      batch_size: int | None = None, num_workers: int = 0) -> dict[str, float]:
    """Top-1 (and top-5) in percent, and the mean cross-entropy, of `backbone.classify` on a source."""
    logits, labels = predict(backbone, source, cfg, device, batch_size, num_workers)
    ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices
    return {**topk_accuracy(ranked, labels), "loss": nn.functional.cross_entropy(logits, labels).item()}
