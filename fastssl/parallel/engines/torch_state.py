"""Optimizer state of a plain torch optimizer in the checkpoint layout (DDP and FSDP2).

The optimizer holds the parameters exactly as the method does (full tensors, or FSDP2's DTensor
shards), so its per-parameter state already has each parameter's logical shape; it only needs
the method's parameter names as keys. Loading goes into the state tensors in place, after a
no-op step has created them (`init_optimizer_state`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fastssl.checkpoint.dcp_io import check_matches, has_optimizer_state, load_in_place
from fastssl.parallel.engines.base import init_optimizer_state


def named_optimizer_state(method: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, dict[str, torch.Tensor]]:
    names = {id(p): n for n, p in method.named_parameters()}
    out = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p)
            if state:
                out[names[id(p)]] = {k: v for k, v in state.items() if torch.is_tensor(v)}
    return out


def load_named_optimizer_state(method: nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> None:
    if not has_optimizer_state(path):  # saved before the first step: there is nothing to restore
        return
    init_optimizer_state(optimizer)
    template = named_optimizer_state(method, optimizer)
    template = check_matches(path, "optim", template, "optimizer (--optim.name)", strict=False)
    load_in_place(path, {"optim": template})
