"""Batch statistics over the global batch, shared by the VICReg and Barlow Twins losses.

Both losses need per-feature means and second moments of the whole (all-rank) batch. Each rank
sums its rows and the sums are all-reduced with `fastssl.distributed.all_reduce_sum_with_grad`,
whose backward all-reduces the incoming gradients too. A loss built only from these global sums
is then the same number on every rank, and every rank's input gradient is
d(sum over ranks of the loss)/d(its rows) = world_size x d(global loss)/d(its rows); DDP's
gradient averaging divides by world_size, giving exactly the gradient of the 1-process loss on
the global batch. Ranks may hold different numbers of rows: the row count is all-reduced too.

At world size 1 (or without torch.distributed) the sums are used as they are, with no collective.
"""

from __future__ import annotations

import torch
from fastssl.distributed import all_reduce_sum_with_grad, dp_size
from fastssl.errors import FastSSLError


def sum_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """Sum of `x` over ranks, differentiable (backward sums the gradients over ranks too)."""
    return all_reduce_sum_with_grad(x)


def off_diagonal(m: torch.Tensor) -> torch.Tensor:
    """The D*(D-1) off-diagonal entries of a square [D, D] matrix, flattened (exact, no masking
    arithmetic): drop the last entry, view as [D-1, D+1] rows that each start on the diagonal."""
    d = m.shape[0]
    return m.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()  # [D*(D-1)]


def check_pair(name: str, z1: torch.Tensor, z2: torch.Tensor) -> None:
    """Both views [N, D] with the same shape, D > 0; N >= 2 when this process is the whole batch."""
    if z1.dim() != 2 or z1.shape != z2.shape or z1.shape[1] == 0:
        raise FastSSLError(
            f"{name} needs two [N, D] embeddings of the same shape with D > 0, "
            f"got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    if z1.shape[0] == 0:
        raise FastSSLError(f"{name}: the embeddings are empty, the batch has no samples")
    if dp_size() == 1 and z1.shape[0] < 2:
        raise FastSSLError(f"{name} needs at least 2 samples for batch statistics, got {z1.shape[0]}")
