"""One training step, written once for every engine (DDP, FSDP2, DeepSpeed ZeRO).

Split as torchtitan's train.py: `forward_backward_step` runs one micro-batch and `train_step` one
optimizer step over K = `train.grad_accum_steps` micro-batches (fastssl/train/accumulation.py):

    lr -> snapshot BatchNorm statistics -> method.start_step
    -> per micro-batch j < K: forward -> agree on (loss finite, stop requested) -> backward of
       loss / K, gradients kept local until the last one (`engine.gradient_sync`)
    -> method.after_backward -> engine.step (clip on the global norm, skip if not finite,
       optimizer step) -> EMA targets -> method.commit_step

or, with GradCache (fastssl/train/grad_cache.py, for losses that couple samples): embed every
micro-batch without a graph -> the loss on the whole batch's embeddings -> agree on (loss finite,
stop requested) -> per micro-batch, embed again with a graph and backpropagate the loss's
gradient with respect to its embeddings -> the same optimizer step onwards.

So a step has one optimizer step, one EMA update and one `commit_step` (MoCo's enqueue, DINO's
centre, accumulated over the micro-batches), whatever K; the schedule counts these steps.

`engine.forward` casts the views to what the engine computes with (`Engine.prepare_inputs`: bf16
for DeepSpeed's bf16 weights; FSDP2's policy and DDP's autocast cast inside the model), so the
caller hands it the loader's fp32 views on the device.

A step skipped for a non-finite loss (of any micro-batch) or gradient restores the BatchNorm
statistics, drops the gradients accumulated so far and never reaches the EMA update or
`commit_step`, so it leaves no trace but the consumed batch. A stop request (SIGTERM) is OR-ed
across ranks in the same all-reduce as the loss check, before the first backward, and also undoes
the forward's BatchNorm update, so the checkpoint written next resumes exactly.
`fastssl bench step` times this same function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from fastssl.methods.base import SSLMethod
from fastssl.methods.batch_draws import micro_batch
from fastssl.parallel.engines import Engine
from fastssl.train.accumulation import split_micro_batches
from fastssl.train.bn_guard import BatchNormGuard
from fastssl.train.grad_cache import grad_cache_step

OK, SKIPPED_LOSS, SKIPPED_GRADIENT, STOPPED = "ok", "loss", "gradient", "stopped"


@dataclass
class StepOutcome:
    status: str  # OK | SKIPPED_LOSS | SKIPPED_GRADIENT | STOPPED
    outputs: dict[str, torch.Tensor] | None = None
    grad_norm: torch.Tensor | None = None


def agree(engine: Engine, loss: torch.Tensor, stop_requested: bool) -> str | None:
    """None to go on, or SKIPPED_LOSS / STOPPED as every rank sees it (one all-reduce)."""
    bad_loss, stop = engine.any_rank([~torch.isfinite(loss.detach()), stop_requested])
    return STOPPED if stop else SKIPPED_LOSS if bad_loss else None


def forward_backward_step(engine: Engine, views: list[torch.Tensor], step: int, schedule_len: float,
                          scale: float, sync: bool, stop_requested: bool) -> tuple[dict[str, torch.Tensor], str | None]:
    """One micro-batch: forward, the ranks' agreement (`agree`), backward of loss x `scale` (only
    if they go on).
    With `sync` False its gradients stay on this rank (DDP no_sync, FSDP2 no reduce-scatter)."""
    with engine.gradient_sync(sync):
        outputs = engine.forward(views, step, schedule_len)
        status = agree(engine, outputs["loss"], stop_requested)
        if status is None:
            engine.backward(outputs["loss"] * scale if scale != 1 else outputs["loss"])
    return outputs, status


def accumulate(engine: Engine, micro_batches: list[list[torch.Tensor]], step: int, schedule_len: float,
               stop_requested: bool) -> tuple[dict[str, torch.Tensor], str | None]:
    """Plain accumulation: the gradient of the mean of the micro-batches' (mean) losses."""
    k, outs = len(micro_batches), []
    for j, views in enumerate(micro_batches):
        with micro_batch(j, k):
            outputs, status = forward_backward_step(engine, views, step, schedule_len, 1 / k, j == k - 1,
                                                    stop_requested)
        outs.append(outputs)
        if status is not None:
            return outputs, status
    return mean_outputs(outs), None


def mean_outputs(outs: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The step's logged scalars: each the mean over micro-batches (one micro-batch: as it is)."""
    if len(outs) == 1:
        return outs[0]
    return {key: torch.stack([o[key].detach().float() for o in outs]).mean() for key in outs[0]}


def train_step(engine: Engine, method: SSLMethod, views: list[torch.Tensor], step: int, schedule_len: float,
               epoch: int, lr: float, guard: BatchNormGuard, stop_requested: bool = False,
               on_grads: Callable[[], None] | None = None, accum_steps: int = 1,
               grad_cache: bool = False) -> StepOutcome:
    """`views`: this rank's whole batch, cut into `accum_steps` micro-batches here. `schedule_len`:
    the length of the methods' step / schedule_len schedules (EMA momentum, fastssl/methods/base.py),
    the plan's `ScheduleAt.schedule_len`, a float after a time-budget re-plan; not --train.max_steps.
    `on_grads` runs between backward and the optimizer step (bench step's memory probe)."""
    engine.set_lr(lr)
    guard.save()
    method.start_step()
    micro_batches = split_micro_batches(views, accum_steps)
    if grad_cache:
        outputs, status = grad_cache_step(engine, method, micro_batches, step, schedule_len, guard,
                                          lambda loss: agree(engine, loss, stop_requested))
    else:
        outputs, status = accumulate(engine, micro_batches, step, schedule_len, stop_requested)
    if status is not None:
        guard.restore()
        engine.discard_gradients()
        return StepOutcome(status, outputs)
    method.after_backward(step, epoch)
    if on_grads is not None:
        on_grads()
    report = engine.step()
    if not report.applied:
        guard.restore()
        return StepOutcome(SKIPPED_GRADIENT, outputs, report.grad_norm)
    engine.ema_update(step, schedule_len)
    method.commit_step(step, schedule_len)
    return StepOutcome(OK, outputs, report.grad_norm)
