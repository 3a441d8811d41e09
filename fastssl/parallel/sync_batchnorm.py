"""BatchNorm whose batch statistics span all ranks, on any device.

torch's `nn.SyncBatchNorm` only runs on GPUs, but SimCLR and BYOL assume statistics over the
global batch, and our CPU/gloo tests check that 2 ranks equal 1 process on the same global batch.
This version all-reduces per-channel sums and sums of squares through the differentiable
`fastssl.distributed.all_reduce_sum_with_grad`, so gradients see the global statistics too.
On CUDA `convert_sync_batchnorm` uses torch's fused implementation instead.

Under a bf16 mode that casts parameters but not buffers, `convert_mixed_batchnorm` turns every
other BatchNorm into fastssl.models.batchnorm.MixedBatchNorm.
"""

from __future__ import annotations

import torch
from torch import nn

from fastssl.distributed import all_reduce_sum_with_grad, dp_size
from fastssl.models.batchnorm import MixedBatchNorm, mixed_batch_norm


class AllReduceBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Drop-in for BatchNorm1d/2d in training mode under torch.distributed; plain BN otherwise."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dp_size() > 1):
            return mixed_batch_norm(self, x)
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        xf = x.float()
        count = torch.tensor([x.numel() / c], dtype=torch.float32, device=x.device)
        stats = torch.cat([xf.sum(dims), (xf * xf).sum(dims), count])  # [2C + 1]
        stats = all_reduce_sum_with_grad(stats)  # the whole data-parallel batch
        n = stats[-1]
        mean = stats[:c] / n  # [C]
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0)  # biased, as BN normalises with
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1).clamp_min(1), alpha=m)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.weight is not None:
            y = y * self.weight.view(shape)
        if self.bias is not None:  # SimCLR's projector ends in a BatchNorm with a scale and no shift
            y = y + self.bias.view(shape)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert(module)


def convert_mixed_batchnorm(module: nn.Module) -> nn.Module:
    """Every plain BatchNorm (AllReduce- and SplitBatchNorm handle bf16 themselves) -> MixedBatchNorm."""
    from fastssl.methods.shuffle_bn import SplitBatchNorm

    return _convert(module, MixedBatchNorm, (AllReduceBatchNorm, MixedBatchNorm, SplitBatchNorm))


def _convert(module: nn.Module, cls: type = AllReduceBatchNorm,
             keep: tuple[type, ...] = (AllReduceBatchNorm,)) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, keep):
        out = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        if module.track_running_stats:
            out.running_mean = module.running_mean
            out.running_var = module.running_var
            out.num_batches_tracked = module.num_batches_tracked
    for name, child in module.named_children():
        out.add_module(name, _convert(child, cls, keep))
    return out
