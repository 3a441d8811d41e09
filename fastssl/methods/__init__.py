"""Self-supervised methods. Each takes the batch of views and returns {"loss", ...scalars}.

A method is a single-device `nn.Module` with:
- `backbone`: a `fastssl.models.backbone.Backbone` (the only part kept for downstream use);
- `projector`: the head whose outputs the loss sees (kept in checkpoints for the probe comparison);
- `forward(views, step, max_steps) -> dict`: "loss" plus detached scalars to log;
- optional `on_after_step(step, max_steps)`: work after the optimiser step (EMA targets).
"""

from __future__ import annotations

import difflib

from torch import nn

from fastssl.config import Config
from fastssl.errors import FastSSLError
from fastssl.methods.byol import BYOL
from fastssl.methods.simclr import SimCLR
from fastssl.models.backbone import build_backbone

METHODS: dict[str, type[nn.Module]] = {"simclr": SimCLR, "byol": BYOL}


def build_method(cfg: Config) -> nn.Module:
    name = cfg.method.name
    if name not in METHODS:
        close = difflib.get_close_matches(name, list(METHODS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise FastSSLError(f"unknown method.name '{name}'.{hint} Choose one of: {', '.join(METHODS)}")
    backbone = build_backbone(cfg.model.name, cfg.data.image_size, cfg.model.patch_size, cfg.model.drop_path)
    return METHODS[name](backbone, cfg.method)


__all__ = ["METHODS", "build_method", "BYOL", "SimCLR"]
