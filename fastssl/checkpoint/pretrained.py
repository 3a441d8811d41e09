"""A checkpoint's method, rebuilt on one process for evaluation (any strategy, any world size)."""

from __future__ import annotations

from pathlib import Path

import torch

from fastssl.checkpoint.dcp_io import read_tensors, read_train_state
from fastssl.config import Config
from fastssl.errors import FastSSLError


def read_config(path: str | Path) -> Config:
    """The config a checkpoint (or the newest checkpoint of a run folder) was trained with."""
    return Config.from_dict(read_train_state(path)["config"])


def load_pretrained(path: str | Path) -> tuple[torch.nn.Module, Config]:
    """(method in eval mode, its config) with the weights of the checkpoint (or run folder's newest)."""
    from fastssl.methods import build_method

    state = read_train_state(path)
    cfg = Config.from_dict(state["config"])
    method = build_method(cfg)
    weights = read_tensors(state["path"], "model.")
    try:
        method.load_state_dict(weights, strict=True)
    except RuntimeError:
        raise FastSSLError(
            f"checkpoint {state['path']}'s weights do not fit the {cfg.method.name}/{cfg.model.name} model its "
            f"config describes; it was written by another fastssl version"
        ) from None
    return method.eval(), cfg
