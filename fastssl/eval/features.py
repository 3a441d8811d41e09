"""Frozen features for evaluation, and the models they come from.

Every evaluator works on features extracted once here: the backbone in eval mode (BatchNorm
uses its running statistics), no autograd, batches in dataset order. The projector is applied
to those features afterwards, since a method's projector input is exactly its backbone output.

Models come from a checkpoint (`load_pretrained`) or, as the untrained baseline every SSL
result should beat, from a recipe with a fixed seed (`--random-init`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastssl.config import Config
from fastssl.distributed import resolve_device as _resolve_device
from fastssl.errors import FastSSLError

# The seed of --random-init weights, so two random-init baselines are the same model.
RANDOM_INIT_SEED = 0


def resolve_device(requested: str | torch.device = "auto") -> torch.device:
    """The eval commands' `--device`: fastssl.distributed.resolve_device with that flag's name."""
    return _resolve_device(requested, flag="--device")


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP/FSDP (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def unwrap_backbone(model: nn.Module) -> nn.Module:
    """A method's backbone, or the model itself when it already is a backbone."""
    model = unwrap(model)
    backbone = getattr(model, "backbone", None)
    return unwrap(backbone) if isinstance(backbone, nn.Module) else model


def projector_of(model: nn.Module) -> nn.Module | None:
    projector = getattr(unwrap(model), "projector", None)
    return unwrap(projector) if isinstance(projector, nn.Module) else None


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def num_classes_of(*sources: Any) -> int:
    """Classes across labelled sources; unlabelled images (-1) cannot be evaluated."""
    n = 0
    for source in sources:
        labels = np.asarray(source.labels)
        if len(labels) and labels.min() < 0:
            raise FastSSLError(
                "the evaluation data has unlabelled images (label -1); point --data.train / --data.test "
                "at labelled data"
            )
        n = max(n, int(source.num_classes or 0), int(labels.max()) + 1 if len(labels) else 0)
    return n


def eval_loader(source: Any, cfg: Config, batch_size: int | None = None, num_workers: int = 0):
    """Deterministic, in-order loader at the run's image size and normalisation."""
    from fastssl.data import build_eval_loader

    return build_eval_loader(source, cfg.aug, cfg.data.image_size, batch_size or cfg.eval.batch_size, num_workers)


def _check_finite(feats: torch.Tensor, what: str) -> torch.Tensor:
    if not bool(torch.isfinite(feats).all()):
        raise FastSSLError(f"the model produces non-finite {what}; the checkpoint diverged, evaluate an earlier one")
    return feats


@torch.no_grad()
def extract_features(model: nn.Module, loader, device: str | torch.device = "auto",
                     amp: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `model` over `loader` ((images, labels) batches) in eval mode.

    Returns (features [N, D] fp32, labels [N] int64), both on `device`. The model is moved to
    `device` and its train/eval mode restored afterwards. On CUDA `amp` runs it in bf16.
    """
    device = resolve_device(device)
    was_training = model.training
    model.to(device).eval()
    feats, labels = [], []
    # Iterating a DataLoader draws its base seed from the global RNG; a mid-training evaluation
    # must leave the training's random stream exactly as it found it.
    with torch.random.fork_rng(devices=[]):
        try:
            for images, targets in loader:
                images = images.to(device, non_blocking=True)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
                    out = model(images)  # [B, D]
                feats.append(out.float())
                labels.append(torch.as_tensor(targets).to(device, torch.long))
        finally:
            model.train(was_training)
    if not feats:
        raise FastSSLError("no images to evaluate; check --data.train / --data.test and --limit-train")
    return _check_finite(torch.cat(feats), "features"), torch.cat(labels)


def source_features(model: nn.Module, source: Any, cfg: Config, device: str | torch.device = "auto",
                    batch_size: int | None = None, num_workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`extract_features` of a method's backbone (or a backbone) over an ImageSource."""
    loader = eval_loader(source, cfg, batch_size, num_workers)
    return extract_features(unwrap_backbone(model), loader, device)


@torch.no_grad()
def project(projector: nn.Module, feats: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Projector outputs `[N, proj_dim]` of backbone features `[N, D]`, in eval mode."""
    was_training = projector.training
    projector.to(feats.device).eval()
    try:
        out = torch.cat([projector(feats[i : i + batch_size]).float() for i in range(0, len(feats), batch_size)])
    finally:
        projector.train(was_training)
    return _check_finite(out, "projector outputs")


def build_random_method(cfg: Config, seed: int = RANDOM_INIT_SEED) -> nn.Module:
    """`build_method(cfg)` with weights drawn from `seed`, leaving the global RNG untouched."""
    from fastssl.methods import build_method

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        method = build_method(cfg)
    return method.eval()


def load_eval_model(ckpt: str | Path | None = None, recipe: str | None = None, overrides: list[str] = (),
                    seed: int = RANDOM_INIT_SEED) -> tuple[nn.Module, Config, str | None]:
    """(method, config, checkpoint file) from a checkpoint, or a seeded random init of a recipe.

    `overrides` (`section.key=value`) adjust the recipe before a random init is built.
    """
    if ckpt is not None:
        from fastssl.checkpoint import load_pretrained, resolve_checkpoint

        # Any strategy's checkpoint (DDP, FSDP shards, DeepSpeed ZeRO) on this one process.
        path = resolve_checkpoint(ckpt)
        method, cfg = load_pretrained(path)
        return method, cfg, str(path)
    from fastssl.recipes import get_recipe

    from fastssl.config import apply_overrides

    cfg = apply_overrides(get_recipe(recipe or "default"), list(overrides))
    return build_random_method(cfg, seed), cfg, None
