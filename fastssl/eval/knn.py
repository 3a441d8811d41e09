"""Weighted k-nearest-neighbour classification of frozen features (Wu et al. 2018; DINO).

Each test feature votes with its k most cosine-similar training features; a neighbour of class c
adds exp(sim / T) to c's score. Accuracies are percentages (0-100) everywhere in fastssl.eval.

The test set is processed in chunks so that at most `max_elements` similarities exist at once:
ImageNet's 1.28 M training features never meet all 50 k test features in one matrix.

Determinism: among neighbours with equal similarity at the k-th place the lower training index
wins, and among classes with equal score the lower class id ranks first. torch.topk promises
neither, so both are resolved explicitly; results are then identical on CPU and CUDA and
independent of the chunk size.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

# Similarities held at once per chunk: 2^24 fp32 = 64 MiB, plus bool masks of the same shape.
DEFAULT_MAX_ELEMENTS = 1 << 24


def _topk_neighbours(sim: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k columns of each row of `sim` [C, N], ties at the k-th value broken by lower index.

    Returns (values [C, k], indices [C, k]); the neighbour order inside a row is by index.
    """
    kth = sim.topk(k, dim=1, sorted=True).values[:, -1:]  # [C, 1]
    above = sim > kth  # [C, N]
    tied = sim == kth  # [C, N]
    need = k - above.sum(1, keepdim=True)  # [C, 1] ties to take, >= 1
    if bool((tied.sum(1, keepdim=True) == need).all()):
        take = above | tied  # the usual case: no extra ties, skip the int64 cumsum below
    else:
        # cumsum over the tie mask numbers the tied columns 1, 2, ... from the left.
        take = above | (tied & (tied.cumsum(1) <= need))  # [C, N], exactly k per row
    idx = take.nonzero()[:, 1].view(sim.shape[0], k)  # [C, k], row-major so rows stay grouped
    return sim.gather(1, idx), idx


def knn_classify(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    num_classes: int,
    k: int = 200,
    t: float = 0.1,
    topk: int = 5,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> torch.Tensor:
    """Class ids ranked by weighted vote, best first: `[N_test, min(topk, num_classes)]`.

    Features are L2-normalised here (callers pass raw features). Runs on train_feats' device;
    put both feature sets on the GPU for large sets. k is capped at the number of training
    features.
    """
    if train_feats.ndim != 2 or test_feats.ndim != 2 or train_feats.shape[1] != test_feats.shape[1]:
        raise ValueError(f"feature shapes differ: train {tuple(train_feats.shape)}, test {tuple(test_feats.shape)}")
    if len(train_feats) != len(train_labels):
        raise ValueError(f"{len(train_feats)} train features but {len(train_labels)} labels")
    if len(train_feats) == 0:
        raise ValueError("kNN needs at least one training feature")
    device = train_feats.device
    k = min(k, len(train_feats))
    num_ranked = min(topk, num_classes)
    train = F.normalize(train_feats.float(), dim=1)  # [N, D]
    labels = train_labels.to(device=device, dtype=torch.long)  # [N]
    chunk = max(1, max_elements // len(train))
    ranked = []
    for start in range(0, len(test_feats), chunk):
        test = F.normalize(test_feats[start : start + chunk].to(device).float(), dim=1)  # [C, D]
        sim = test @ train.T  # [C, N]
        values, idx = _topk_neighbours(sim, k)  # [C, k]
        weights = (values / t).exp()  # [C, k]
        votes = torch.zeros(len(test), num_classes, device=device)  # [C, num_classes]
        votes.scatter_add_(1, labels[idx], weights)
        # A stable descending sort keeps equal-score classes in id order.
        ranked.append(votes.sort(dim=1, descending=True, stable=True).indices[:, :num_ranked])
    if not ranked:
        return torch.empty(0, num_ranked, dtype=torch.long, device=device)
    return torch.cat(ranked)  # [N_test, num_ranked]


def topk_accuracy(ranked: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Top-1 (and top-5 when `ranked` holds >= 5 classes) accuracy in percent."""
    labels = labels.to(ranked.device).view(-1, 1)  # [N, 1]
    hits = ranked == labels  # [N, R]
    n = max(len(labels), 1)
    out = {"top1": 100.0 * hits[:, :1].any(1).sum().item() / n}
    if ranked.shape[1] >= 5:
        out["top5"] = 100.0 * hits[:, :5].any(1).sum().item() / n
    return out


def knn_accuracy(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    k: int = 200,
    t: float = 0.1,
) -> dict[str, Any]:
    ranked = knn_classify(train_feats, train_labels, test_feats, num_classes, k, t)
    return {**topk_accuracy(ranked, test_labels), "k": min(k, len(train_feats)), "t": t}


def knn_eval(model: torch.nn.Module, train_source, test_source, cfg, device: str | torch.device = "auto",
             num_workers: int | None = None) -> dict[str, Any]:
    """kNN top-1/top-5 of a method's (or a bare backbone's) features; what training ends with.

    Runs on the calling process alone with no collectives: call it on the main rank only.
    `cfg` is the run's Config (image size, normalisation, eval.knn_k / knn_t / batch_size).
    """
    from fastssl.eval.features import num_classes_of, source_features

    num_classes = num_classes_of(train_source, test_source)
    workers = cfg.data.num_workers if num_workers is None else num_workers
    train_x, train_y = source_features(model, train_source, cfg, device, num_workers=workers)
    test_x, test_y = source_features(model, test_source, cfg, device, num_workers=workers)
    result = knn_accuracy(train_x, train_y, test_x, test_y, num_classes, cfg.eval.knn_k, cfg.eval.knn_t)
    return {**result, "n_train": len(train_y), "n_test": len(test_y)}
