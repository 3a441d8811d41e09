"""Sinkhorn-Knopp codes: soft assignments of samples to prototypes, equipartitioned over a batch.

SwAV (Caron et al. 2020, Sec. 3.1, "Online clustering") maps B samples to K prototypes with a
transport plan Q that maximises Tr(Q^T C^T Z) + eps * H(Q) under the constraint that every
prototype receives B/K samples and every sample one unit. Starting from exp(scores / eps), a few
alternating row and column normalisations (3 in the paper) approximate the solution.

Data parallel: the constraint is over the *global* batch. Every sum over samples (the total and
the per-prototype row sums) is all-reduced, and the per-sample column sums are local, so R ranks
holding disjoint columns produce exactly the codes one process computes on all columns. This
is `distributed_sinkhorn` of facebookresearch/swav main_swav.py; B counts the columns of every
rank (all-reduced here, so ranks may hold different numbers, e.g. uneven queue slices).

Limits: fp32 throughout (exp(1/eps) = e^20 at eps 0.05 fits; bf16 would lose the marginals).
Scores must be bounded (cosine similarities in [-1, 1]); unbounded logits overflow exp.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from fastssl.distributed import dp_group, is_dist


def _sum_all_ranks(x: torch.Tensor) -> torch.Tensor:
    if is_dist():
        dist.all_reduce(x, op=dist.ReduceOp.SUM, group=dp_group())
    return x


@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """Codes `[B, K]` of scores `[B, K]` (this rank's columns); each row sums to 1.

    After the final column step every sample's code sums to 1 exactly; each prototype's total
    over the global batch tends to B/K as `iterations` grows (exact right after a row step).
    Under torch.distributed every rank must call this with the same K and iterations.
    """
    q = torch.exp(scores.float() / epsilon).t()  # [K, B]: swav's orientation, prototypes as rows
    k = q.shape[0]
    b = _sum_all_ranks(torch.tensor([float(q.shape[1])], device=q.device))  # [1] samples on all ranks
    q /= _sum_all_ranks(q.sum())  # the whole plan sums to 1
    for _ in range(iterations):
        # Each prototype's total weight must be 1/K: a sum over samples, so over every rank.
        q /= _sum_all_ranks(q.sum(dim=1, keepdim=True))  # [K, 1]
        q /= k
        # Each sample's total weight must be 1/B: a sum over prototypes, local to the column.
        q /= q.sum(dim=0, keepdim=True)  # [1, B]
        q /= b
    q *= b  # columns sum to 1: a code per sample
    return q.t()  # [B, K]
