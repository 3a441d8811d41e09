"""Barlow Twins' redundancy-reduction loss (Zbontar, Jing, Misra, LeCun & Deny, ICML 2021).

Follows facebookresearch/barlowtwins main.py (`BarlowTwins.forward`): each branch goes through a
BatchNorm1d without affine parameters in training mode (batch mean, biased variance, eps 1e-5;
the reference wraps it in SyncBatchNorm, so the statistics span all ranks), the cross-correlation
is c = bn(z1).T @ bn(z2) / N_global, and the loss is
sum_i (1 - c_ii)^2 + lambd * sum_{i != j} c_ij^2.

Math is float32 whatever the input dtype; the gradient reaches the inputs in their dtype.

Distributed: the reference all-reduces c with the plain in-place collective, which autograd does
not see, so its gradient is 1/world_size of the global batch's. Here the statistics are
all-reduced differentiably (fastssl/losses/batch_stats.py): per-feature sums and the row count,
then the centred cross sums sum (z1 - mu1)^T (z2 - mu2) together with each branch's centred sums
of squares, in one [D^2 + 2D] collective (as many bytes as the reference's all_reduce(c)). The
normalisation is applied after the reduction: c_ij = X_ij / (N sqrt(v1_i + eps) sqrt(v2_j + eps)).
Each rank returns the 1-process value on the global batch and DDP's gradient averaging yields its
gradient, also when ranks hold different numbers of rows.

Limits: builds a [D, D] matrix (D = 8192 in the paper). Needs N_global >= 2 (checked at world size
1 only, as BatchNorm1d refuses a single sample in training mode).
"""

from __future__ import annotations

import torch

from fastssl.losses.batch_stats import check_pair, off_diagonal, sum_over_ranks

# Paper Sec. 4 (Implementation details) gives lambda = 5e-3; main.py's default --lambd is 0.0051.
LAMBD = 5.1e-3
BN_EPS = 1e-5  # nn.BatchNorm1d's default eps, as the reference's self.bn = BatchNorm1d(affine=False)


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = LAMBD) -> torch.Tensor:
    """Barlow Twins loss of two views' embeddings z1, z2: [N, D] each (this rank's rows);
    a float32 scalar."""
    check_pair("barlow_twins_loss", z1, z2)
    z1, z2 = z1.float(), z2.float()  # [N, D]
    n_local, d = z1.shape

    first = sum_over_ranks(torch.cat([z1.sum(0), z2.sum(0), z1.new_tensor([n_local])]))  # [2D + 1]
    n = first[2 * d]
    c1, c2 = z1 - first[:d] / n, z2 - first[d : 2 * d] / n  # [N, D] each, centred on the global mean

    second = sum_over_ranks(torch.cat([(c1.T @ c2).flatten(), c1.pow(2).sum(0), c2.pow(2).sum(0)]))  # [D^2 + 2D]
    cross = second[: d * d].view(d, d)  # [D, D]
    inv1 = torch.rsqrt(second[d * d : d * d + d] / n + BN_EPS)  # [D], biased variance as BN in training
    inv2 = torch.rsqrt(second[d * d + d :] / n + BN_EPS)  # [D]
    c = cross * inv1[:, None] * inv2[None, :] / n  # [D, D] cross-correlation

    on_diag = (1 - torch.diagonal(c)).pow(2).sum()
    off_diag = off_diagonal(c).pow(2).sum()
    return on_diag + lambd * off_diag
