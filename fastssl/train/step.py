"""One training step, written once for every engine (DDP, FSDP2, DeepSpeed ZeRO).

    lr -> snapshot BatchNorm statistics -> forward -> agree on (loss finite, stop requested)
    -> backward -> method.after_backward -> engine.step (clip on the global norm, skip if not
    finite, optimizer step) -> EMA targets -> method.commit_step

`engine.forward` casts the views to what the engine computes with (`Engine.prepare_inputs`: bf16
for DeepSpeed's bf16 weights; FSDP2's policy and DDP's autocast cast inside the model), so the
caller hands it the loader's fp32 views on the device.

A step skipped for a non-finite loss or gradient restores the BatchNorm statistics and never
reaches the EMA update or `commit_step`, so it leaves no trace but the consumed batch. A stop
request (SIGTERM) is OR-ed across ranks in the same all-reduce as the loss check, and also undoes
the forward's BatchNorm update, so the checkpoint written next resumes exactly.
`fastssl bench step` times this same function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from fastssl.methods.base import SSLMethod
from fastssl.parallel.engines import Engine
from fastssl.train.bn_guard import BatchNormGuard

OK, SKIPPED_LOSS, SKIPPED_GRADIENT, STOPPED = "ok", "loss", "gradient", "stopped"


@dataclass
class StepOutcome:
    status: str  # OK | SKIPPED_LOSS | SKIPPED_GRADIENT | STOPPED
    outputs: dict[str, torch.Tensor] | None = None
    grad_norm: torch.Tensor | None = None


def train_step(engine: Engine, method: SSLMethod, views: list[torch.Tensor], step: int, total_steps: int,
               epoch: int, lr: float, guard: BatchNormGuard, stop_requested: bool = False,
               on_grads: Callable[[], None] | None = None) -> StepOutcome:
    """`on_grads` runs between backward and the optimizer step (bench step's memory probe)."""
    engine.set_lr(lr)
    guard.save()
    outputs = engine.forward(views, step, total_steps)
    loss = outputs["loss"]
    bad_loss, stop = engine.any_rank([~torch.isfinite(loss.detach()), stop_requested])
    if stop or bad_loss:
        guard.restore()
        engine.zero_grad()
        return StepOutcome(STOPPED if stop else SKIPPED_LOSS, outputs)
    engine.backward(loss)
    method.after_backward(step, epoch)
    if on_grads is not None:
        on_grads()
    report = engine.step()
    if not report.applied:
        guard.restore()
        return StepOutcome(SKIPPED_GRADIENT, outputs, report.grad_norm)
    engine.ema_update(step, total_steps)
    method.commit_step(step, total_steps)
    return StepOutcome(OK, outputs, report.grad_norm)
