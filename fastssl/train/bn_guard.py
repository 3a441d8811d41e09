"""Undo what a skipped step's forward changed: BatchNorm running statistics, and nothing else.

A forward in train mode moves every BatchNorm's running mean and variance (possibly to NaN when
the step turns out non-finite). Those are the only state a skipped step can corrupt: weights and
optimizer state change only in the engine's step, EMA targets after it, and methods apply their
queue or centre updates in `commit_step`, which a skipped step never reaches. So the guard copies
just the BatchNorm statistics into storage allocated once, never a method's queue (MoCo keeps
65,536 keys) or any other buffer.
"""

from __future__ import annotations

import torch
from torch import nn


class BatchNormGuard:
    def __init__(self, model: nn.Module):
        self.names: list[str] = []
        self.tensors: list[torch.Tensor] = []
        for name, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
                for stat in ("running_mean", "running_var", "num_batches_tracked"):
                    t = module.get_buffer(stat)
                    if t is not None:
                        self.names.append(f"{name}.{stat}")
                        self.tensors.append(t)
        self.saved = [t.detach().clone() for t in self.tensors]

    def save(self) -> None:
        if self.tensors:
            torch._foreach_copy_(self.saved, self.tensors)

    def restore(self) -> None:
        if self.tensors:
            torch._foreach_copy_(self.tensors, self.saved)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.saved)
