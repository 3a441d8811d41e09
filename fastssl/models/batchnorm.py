"""BatchNorm under bf16 modes that cast parameters but not buffers.

DeepSpeed's bf16 mode and FSDP2's `MixedPrecisionPolicy` give a BatchNorm bf16 weights while its
running statistics stay fp32 (buffers are not cast), a mix `F.batch_norm` refuses. `mixed_batch_norm`
casts the affine parameters to the statistics' dtype, which is `F.batch_norm`'s mixed mode (bf16
input and output, fp32 parameters and statistics), as under autocast. Single-device code: the
engines convert plain BatchNorms to `MixedBatchNorm` (fastssl/parallel/sync_batchnorm.py), and the
other BatchNorm classes (synchronised, ShuffleBN's split) call `mixed_batch_norm` themselves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def like_stats(bn: nn.modules.batchnorm._BatchNorm, t: torch.Tensor | None) -> torch.Tensor | None:
    """An affine parameter in the dtype of bn's running statistics (fp32 under the bf16 modes)."""
    if t is None or bn.running_mean is None or t.dtype == bn.running_mean.dtype:
        return t
    return t.to(bn.running_mean.dtype)


def mixed_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """`bn(x)` as `_BatchNorm.forward` computes it, with the affine parameters in the statistics' dtype."""
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
    track = not bn.training or bn.track_running_stats
    return F.batch_norm(x, bn.running_mean if track else None, bn.running_var if track else None,
                        like_stats(bn, bn.weight), like_stats(bn, bn.bias), batch_stats, factor, bn.eps)


class MixedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Plain (per-rank) BatchNorm whose bf16 parameters work with its fp32 statistics."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mixed_batch_norm(self, x)
