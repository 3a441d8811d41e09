"""Linear probe on frozen, precomputed features, and the backbone-vs-projector comparison.

Features are standardised with the training set's mean and std, so one learning rate works for
backbones whose feature scales differ by orders of magnitude (BN-ReLU pooled ResNet features vs
ViT tokens vs projector outputs). The classifier is trained with SGD + momentum and a cosine
schedule, as in MoCo v3's and solo-learn's linear evaluation, but on cached features: no
augmentation, so a probe over CIFAR-sized sets takes seconds.

SimCLR (Chen et al. 2020, Fig. 8) found the representation *before* the projection head to be
far better for downstream tasks than the projector's output, which is why the projector is
discarded after pretraining. `compare_backbone_projector` measures that gap on your model.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from fastssl.eval.knn import topk_accuracy


def standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Zero mean, unit variance per dimension, with statistics from `train` only."""
    mean = train.mean(0, keepdim=True)  # [1, D]
    std = train.std(0, keepdim=True).clamp_min(1e-6)  # [1, D], constant dims stay finite
    return [(x - mean) / std for x in (train, *others)]


def train_linear(feats: torch.Tensor, labels: torch.Tensor, num_classes: int, epochs: int = 30,
                 lr: float = 0.1, batch_size: int = 256, weight_decay: float = 0.0, seed: int = 0) -> nn.Linear:
    """Fit a linear classifier to (standardised) features `[N, D]` on their device."""
    device = feats.device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    head = nn.Linear(feats.shape[1], num_classes).to(device)
    with torch.no_grad():
        # Seeded here, not from the global RNG, so a probe's result depends only on its inputs.
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.01)
        head.bias.zero_()
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    steps_per_epoch = max(1, math.ceil(len(feats) / batch_size))
    total = max(1, epochs * steps_per_epoch)
    labels = labels.to(device, torch.long)
    step = 0
    for _ in range(epochs):
        order = torch.randperm(len(feats), generator=gen).to(device)
        for i in range(0, len(feats), batch_size):
            idx = order[i : i + batch_size]
            for g in opt.param_groups:
                g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = nn.functional.cross_entropy(head(feats[idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return head


@torch.no_grad()
def predict_ranked(head: nn.Module, feats: torch.Tensor, topk: int = 5, batch_size: int = 4096) -> torch.Tensor:
    """Class ids ranked by logit, best first: `[N, min(topk, num_classes)]`."""
    logits = torch.cat([head(feats[i : i + batch_size]) for i in range(0, len(feats), batch_size)])
    return logits.topk(min(topk, logits.shape[1]), dim=1).indices


def linear_probe(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                 test_labels: torch.Tensor, num_classes: int, epochs: int = 30, lr: float = 0.1,
                 batch_size: int = 256, weight_decay: float = 0.0, seed: int = 0) -> dict[str, Any]:
    """Train on standardised train features, report test top-1 (and top-5) in percent."""
    train_x, test_x = standardise(train_feats.float(), test_feats.float().to(train_feats.device))
    with torch.enable_grad():
        head = train_linear(train_x, train_labels, num_classes, epochs, lr, batch_size, weight_decay, seed)
    ranked = predict_ranked(head, test_x)
    return {**topk_accuracy(ranked, test_labels), "epochs": epochs, "lr": lr}


def compare_backbone_projector(projector: nn.Module | None, train_feats: torch.Tensor, train_labels: torch.Tensor,
                               test_feats: torch.Tensor, test_labels: torch.Tensor, num_classes: int,
                               **probe_kwargs: Any) -> dict[str, Any]:
    """Linear-probe top-1 on backbone features and on the projector's outputs of them.

    Returns {"backbone": {...}, "projector": {...} or None when the model has no projector}.
    """
    from fastssl.eval.features import project

    out: dict[str, Any] = {
        "backbone": linear_probe(train_feats, train_labels, test_feats, test_labels, num_classes, **probe_kwargs),
        "projector": None,
    }
    if projector is not None:
        train_z, test_z = project(projector, train_feats), project(projector, test_feats)  # [N, proj_dim]
        out["projector"] = linear_probe(train_z, train_labels, test_z, test_labels, num_classes, **probe_kwargs)
    return out
