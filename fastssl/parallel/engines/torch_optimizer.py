"""Engines that step a plain torch optimizer over the method's own parameters (DDP and FSDP2):
their shared step, backward and state (`TorchOptimizerEngine`), and that optimizer's state in the
checkpoint layout.

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
from fastssl.parallel.engines.base import Engine, StepReport, init_optimizer_state


class TorchOptimizerEngine(Engine):
    """DDP and FSDP2: torch's autograd reduces the gradients (DDP's buckets, FSDP2's reduce-scatter)
    and the torch optimizer steps the parameters as the method holds them, so the state dicts of
    the method and the optimizer are already in the checkpoint layout."""

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> StepReport:
        from torch.distributed.tensor import DTensor

        # By now the gradients are reduced: DDP's are identical on every rank, and clip_grad_norm_
        # over FSDP2's DTensor shards all-reduces their squared norms, so the norm (and the skip
        # decision) is the same on every rank either way.
        params = [p for p in self.method.parameters() if p.requires_grad]
        norm = torch.nn.utils.clip_grad_norm_(params, self.max_norm)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        if not torch.isfinite(norm):
            self.zero_grad()
            return StepReport(norm.detach(), False)
        self.optimizer.step()
        self.zero_grad()
        return StepReport(norm.detach(), True)

    def model_state(self) -> dict[str, torch.Tensor]:
        return self.method.state_dict()  # FSDP2: DTensor shards for parameters, full tensors for buffers

    def optimizer_state(self) -> dict[str, dict[str, torch.Tensor]]:
        return named_optimizer_state(self.method, self.optimizer)

    def load_optimizer_state(self, path) -> None:
        load_named_optimizer_state(self.method, self.optimizer, path)


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
