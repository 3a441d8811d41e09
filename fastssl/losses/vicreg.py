"""VICReg: Variance-Invariance-Covariance Regularization (Bardes, Ponce & LeCun, ICLR 2022).

Follows facebookresearch/vicreg main_vicreg.py (`VICReg.forward`) term by term:
- invariance: MSE between the two views, averaged over all N x D entries;
- variance: per-feature std = sqrt(var + 1e-4) with the unbiased (N - 1) variance, hinge
  relu(1 - std) averaged over features, the two branches averaged (each weighted 1/2);
- covariance: per branch the (N - 1) batch covariance, its off-diagonal entries squared, summed
  and divided by D; the two branches summed (not averaged, as in the reference).
loss = sim_weight * invariance + var_weight * variance + cov_weight * covariance.

Math is float32 whatever the input dtype (the reference runs it under autocast, where the
covariance matmul is fp16; variances near the 1e-4 floor need fp32); the gradient reaches the
inputs in their dtype.

Distributed: every statistic is taken over the global batch. The reference all-gathers the
embeddings; here each rank all-reduces sums instead (fastssl/losses/batch_stats.py): first the
per-feature sums, the invariance sum of squares and the row count, then the centred second
moments. Two passes (means, then centred products) avoid the cancellation of E[z^2] - E[z]^2 in
fp32. Each rank therefore returns the 1-process value on the global batch, and DDP's gradient
averaging yields the 1-process gradient, also when ranks hold different numbers of rows.

Limits: builds two [D, D] covariance matrices (the reference does too) and all-reduces them, 2 D^2
floats per step; the reference's all-gather moves 2 N_global D. At the paper's D = 8192 with a
global batch of 2048 that is ~4x more bytes, a cost paid for exactness with uneven batches and
no [N_global, D] copy per rank. Needs N_global >= 2 (checked at world size 1 only).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fastssl.losses.batch_stats import check_pair, off_diagonal, sum_over_ranks

# Paper Sec. 4.1 and main_vicreg.py defaults: lambda = mu = 25 (sim, std), nu = 1 (cov).
SIM_WEIGHT, VAR_WEIGHT, COV_WEIGHT = 25.0, 25.0, 1.0
VAR_EPS = 1e-4  # epsilon under the square root of the variance (paper Eq. 1, main_vicreg.py 0.0001)
STD_TARGET = 1.0  # gamma, the target std of the hinge (paper Sec. 4.1)


@dataclass(frozen=True)
class VICRegLoss:
    """The weighted total (`loss`, what to backpropagate) and its three unweighted terms, all
    float32 scalars still attached to the graph (detach them for logging)."""

    loss: torch.Tensor
    invariance: torch.Tensor
    variance: torch.Tensor
    covariance: torch.Tensor


def vicreg_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    sim_weight: float = SIM_WEIGHT,
    var_weight: float = VAR_WEIGHT,
    cov_weight: float = COV_WEIGHT,
) -> VICRegLoss:
    """VICReg loss of two views' embeddings z1, z2: [N, D] each (this rank's rows)."""
    check_pair("vicreg_loss", z1, z2)
    z1, z2 = z1.float(), z2.float()  # [N, D]
    n_local, d = z1.shape

    # Pass 1, one collective: per-feature sums, the invariance sum of squares, the row count.
    # The invariance is the global mean rather than the reference's local F.mse_loss: the same
    # value once DDP averages equal-size ranks, and still exact when rank sizes differ.
    first = sum_over_ranks(
        torch.cat([z1.sum(0), z2.sum(0), (z1 - z2).pow(2).sum()[None], z1.new_tensor([n_local])])
    )  # [2D + 2]
    n = first[2 * d + 1]
    invariance = first[2 * d] / (n * d)

    # Pass 2, one collective: centred second moments of each branch.
    c1, c2 = z1 - first[:d] / n, z2 - first[d : 2 * d] / n  # [N, D] each
    second = sum_over_ranks(torch.cat([(c1.T @ c1).flatten(), (c2.T @ c2).flatten()]))  # [2 D^2]
    cov1, cov2 = (second[i * d * d : (i + 1) * d * d].view(d, d) / (n - 1) for i in range(2))  # [D, D]

    std1 = torch.sqrt(torch.diagonal(cov1) + VAR_EPS)  # [D]
    std2 = torch.sqrt(torch.diagonal(cov2) + VAR_EPS)  # [D]
    variance = F.relu(STD_TARGET - std1).mean() / 2 + F.relu(STD_TARGET - std2).mean() / 2
    covariance = off_diagonal(cov1).pow(2).sum() / d + off_diagonal(cov2).pow(2).sum() / d

    loss = sim_weight * invariance + var_weight * variance + cov_weight * covariance
    return VICRegLoss(loss=loss, invariance=invariance, variance=variance, covariance=covariance)
