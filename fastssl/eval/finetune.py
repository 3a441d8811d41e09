"""Few-label fine-tuning: N labelled images per class, the whole backbone trained end to end.

This is the semi-supervised protocol of SimCLR / BYOL (1% and 10% ImageNet labels) at any N:
a fixed seeded draw of `labels_per_class` images of every class, a fresh linear head
(`backbone.reset_head`), SGD + momentum with a cosine schedule and a small learning rate, then
top-1 on the full test set. The model passed in is copied, never modified.

Augmentation is a random translation (replicate padding, 1/8 of the side) plus a horizontal
flip only when the recipe flips (`aug.flip_p > 0`; digits are not mirror-symmetric). It runs on
batches on the device, so it works with whatever in-order loader `fastssl.data` provides.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from fastssl.config import Config
from fastssl.errors import FastSSLError
from fastssl.eval.features import eval_loader, num_classes_of, resolve_device, unwrap_backbone
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
# (1% of ImageNet at 224 px is ~7.7 GB) are re-read every epoch.
CACHE_BYTES = 1 << 30


def _epochs_of_batches(source: Any, cfg: Config, batch_size: int, epochs: int, gen: torch.Generator,
                       device: torch.device, num_workers: int):
    """Per epoch, an iterator of shuffled (images [B, 3, H, W], labels [B]) batches on `device`."""
    from fastssl.data.sources import IndexedSource

    side = cfg.data.image_size
    if len(source) * 3 * side * side * 4 <= CACHE_BYTES:
        images, labels = zip(*eval_loader(source, cfg, batch_size, num_workers))
        images, labels = torch.cat(images).to(device), torch.cat(labels).to(device, torch.long)  # [M, 3, H, W], [M]
        for _ in range(epochs):
            order = torch.randperm(len(labels), generator=gen).to(device)
            yield ((images[order[i : i + batch_size]], labels[order[i : i + batch_size]])
                   for i in range(0, len(order), batch_size))
        return
    for _ in range(epochs):
        # A fresh in-order loader over a seeded permutation is a shuffled epoch with any backend.
        order = torch.randperm(len(source), generator=gen).numpy()
        yield ((x.to(device, non_blocking=True), torch.as_tensor(y).to(device, torch.long))
               for x, y in eval_loader(IndexedSource(source, order), cfg, batch_size, num_workers))


def finetune_backbone(backbone: nn.Module, source: Any, cfg: Config, num_classes: int,
                      device: str | torch.device = "auto", epochs: int | None = None, lr: float | None = None,
                      batch_size: int | None = None, seed: int = 0, num_workers: int = 0) -> nn.Module:
    """Give `backbone` a fresh `num_classes` head and train all of it on `source`, in place."""
    device = resolve_device(device)
    epochs = cfg.eval.finetune_epochs if epochs is None else epochs
    lr = cfg.eval.finetune_lr if lr is None else lr
    batch_size = max(1, min(batch_size or cfg.eval.batch_size, len(source)))
    gen = torch.Generator().manual_seed(seed)
    backbone.to(device)
    backbone.reset_head(num_classes)
    params = list(backbone.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=0.0)
    total = max(1, epochs * math.ceil(len(source) / batch_size))
    step = 0
    backbone.train()
    for batches in _epochs_of_batches(source, cfg, batch_size, epochs, gen, device, num_workers):
        for images, targets in batches:
            if len(images) < 2:
                continue  # BatchNorm cannot train on one image
            images = _translate_flip(images, gen, cfg.aug.flip_p > 0)
            for g in opt.param_groups:
                g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = backbone.classify(images)  # [B, num_classes]
            loss = nn.functional.cross_entropy(logits.float(), targets)
            if not torch.isfinite(loss):
                raise FastSSLError(f"fine-tuning diverged (loss {loss.item():.3g}); lower --lr (now {lr:g})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return backbone.eval()


@torch.no_grad()
def classify_accuracy(backbone: nn.Module, source: Any, cfg: Config, device: str | torch.device = "auto",
                      batch_size: int | None = None, num_workers: int = 0) -> dict[str, float]:
    """Top-1 (and top-5) in percent of `backbone.classify` over a labelled source."""
    device = resolve_device(device)
    backbone.to(device).eval()
    ranked, labels = [], []
    for images, targets in eval_loader(source, cfg, batch_size, num_workers):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = backbone.classify(images.to(device, non_blocking=True)).float()  # [B, num_classes]
        ranked.append(logits.topk(min(5, logits.shape[1]), dim=1).indices)
        labels.append(torch.as_tensor(targets).to(device, torch.long))
    return topk_accuracy(torch.cat(ranked), torch.cat(labels))


def few_label_finetune(model: nn.Module, train_source: Any, test_source: Any, cfg: Config,
                       device: str | torch.device = "auto", labels_per_class: int | None = None,
                       epochs: int | None = None, lr: float | None = None, batch_size: int | None = None,
                       seed: int = 0, num_workers: int = 0) -> dict[str, Any]:
    """Fine-tune a copy of `model`'s backbone on N labels per class; test top-1 in percent."""
    from fastssl.data.sources import IndexedSource

    device = resolve_device(device)
    n = cfg.eval.labels_per_class if labels_per_class is None else labels_per_class
    num_classes = num_classes_of(train_source, test_source)
    few = IndexedSource(train_source, sample_per_class(train_source.labels, n, seed))
    backbone = copy.deepcopy(unwrap_backbone(model))
    # Seed the head init and any stochastic layers, without disturbing the caller's RNG.
    # (DataLoader iteration draws from the global RNG too, hence the evaluation is inside.)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        finetune_backbone(backbone, few, cfg, num_classes, device, epochs, lr, batch_size, seed, num_workers)
        result = classify_accuracy(backbone, test_source, cfg, device, batch_size, num_workers)
    return {
        **result,
        "labels_per_class": n,
        "n_labelled": len(few),
        "epochs": cfg.eval.finetune_epochs if epochs is None else epochs,
        "lr": cfg.eval.finetune_lr if lr is None else lr,
    }
