"""Learning-rate schedule: linear warmup then cosine decay, a pure function of the step.

Being a function of the step (not a stateful scheduler) makes resume exact for free.
"""

from __future__ import annotations

import math

from fastssl.config import OptimConfig


def scaled_lr(cfg: OptimConfig, global_batch: int) -> float:
    """The linear scaling rule of Goyal et al.: lr = base_lr * global_batch / 256."""
    return cfg.base_lr * global_batch / 256


def lr_at(step: int, total_steps: int, warmup_steps: int, peak_lr: float, min_lr_ratio: float = 0.0) -> float:
    if warmup_steps > 0 and step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / decay_steps, 1.0)
    min_lr = peak_lr * min_lr_ratio
    return min_lr + (peak_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
