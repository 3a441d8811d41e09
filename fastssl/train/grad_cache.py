"""GradCache (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited
Setup"; luyug/GradCache): exact gradient accumulation for losses that couple samples.

Accumulating loss / K over micro-batches is exact only when the loss is a mean over samples. A
contrastive loss is not: each micro-batch would see only its own negatives. GradCache splits the
step at the embeddings (the method's `embed` and `loss_on_embeddings`, fastssl/methods/base.py):

    1. embed every micro-batch without a graph (memory of one micro-batch's activations);
    2. the loss on the concatenated embeddings of the whole batch (negatives gathered across ranks
       by the loss itself, as in forward), and its gradient with respect to the embeddings;
    3. per micro-batch, embed again with a graph and backpropagate the cached gradient, through
       the surrogate sum(embedding * gradient) (luyug/GradCache `forward_backward`), whose
       gradient with respect to the embedding is the cached one exactly: the engine's own
       backward then runs (DeepSpeed owns its backward), gradients reduced with the last one.

The parameter gradients are those of the large batch's loss, in the memory of one micro-batch
plus the embeddings. Any loss implementation works (torch, chunked, Triton): step 2 is its
ordinary forward and backward. The second forward must equal the first: each micro-batch's CPU
and CUDA RNG states (dropout, drop path) are captured before it and restored (augmentation is
done by the loader, so the views are fixed already). BatchNorm statistics are per micro-batch by
nature (each forward normalises its own micro-batch): the first pass's update of the running
statistics is undone, so they move once per micro-batch as with plain accumulation; use
LayerNorm backbones (ViT) and heads without BN where the large batch must be matched exactly.
"""

from __future__ import annotations

from typing import Callable

import torch

from fastssl.methods.base import SSLMethod
from fastssl.methods.batch_draws import micro_batch
from fastssl.parallel.engines import Engine
from fastssl.train.bn_guard import BatchNormGuard


class RngState:
    """The CPU generator's state and, on CUDA, the device generator's, to replay a forward."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


def grad_cache_step(engine: Engine, method: SSLMethod, micro_batches: list[list[torch.Tensor]], step: int,
                    schedule_len: float, guard: BatchNormGuard,
                    check: Callable[[torch.Tensor], str | None]) -> tuple[dict[str, torch.Tensor], str | None]:
    """Steps 1-3 above; `check(loss)` is the ranks' agreement (None: go on), before any backward.
    Returns the whole batch's outputs and `check`'s verdict."""
    k, device = len(micro_batches), engine.world.device
    rngs, cached = [], []
    with torch.no_grad():
        for j, views in enumerate(micro_batches):
            rngs.append(RngState(device))
            with micro_batch(j, k):
                cached.append(engine.forward(views, step, schedule_len, embed=True))
    guard.restore()  # the second pass moves the BatchNorm statistics, once per micro-batch
    # [n_rank, ...] each, the rank's rows in order; leaves, so the loss's backward stops at them.
    embeddings = [torch.cat(parts).detach().requires_grad_(True) for parts in zip(*cached)]
    del cached
    with engine.autocast():  # the loss in the precision forward would compute it in
        outputs = method.loss_on_embeddings(embeddings, step, schedule_len)
    status = check(outputs["loss"])
    if status is not None:
        return outputs, status
    grads = torch.autograd.grad(outputs["loss"], embeddings, allow_unused=True)
    outputs = {key: value.detach() for key, value in outputs.items()}
    for j, views in enumerate(micro_batches):
        with engine.gradient_sync(j == k - 1), micro_batch(j, k):
            rngs[j].restore()
            parts = engine.forward(views, step, schedule_len, embed=True)
            n = parts[0].shape[0]
            surrogate = sum((e * g[j * n:(j + 1) * n].to(e.dtype)).sum()
                            for e, g in zip(parts, grads) if g is not None and e.requires_grad)
            engine.backward(surrogate)
    return outputs, None
