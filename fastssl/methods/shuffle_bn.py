"""Shuffling BN (He et al. 2020, Sec. 3.3): the key encoder's BatchNorm sees other groups than the query's.

BatchNorm lets the samples of a batch talk to each other, and MoCo's pretext task can exploit it
("cheat"): a query and its positive key normalised with the statistics of the same samples are
easy to match. MoCo therefore computes BN statistics per GPU, and shuffles the key batch across
GPUs before the key encoder, so a query and its key are normalised over different groups.

fastssl makes the groups a property of the *global* batch, not of the hardware:
`shuffle_bn_groups = G` means BN statistics over N / G samples, whatever the number of ranks W.
Each rank splits its n = N / W samples into G / W contiguous groups (`SplitBatchNorm`; on one
rank this emulates G GPUs, as the MoCo CIFAR-10 demo's SplitBatchNorm does), so one rank with G
groups computes exactly what G ranks with one group each compute (tested).

- `shuffle_across_ranks(x, seed)`: the global batch in a shuffled order; this rank's slice.
  The order is drawn from a generator seeded by the step, identically on every rank, so nothing
  needs broadcasting (facebookresearch/moco builder.py `_batch_shuffle_ddp` draws it on rank 0
  and broadcasts it).
- `unshuffle_across_ranks(y, undo)`: every rank's outputs gathered, back in the original
  rank-major order (`_batch_unshuffle_ddp`, but returning the whole global batch: MoCo enqueues it).
- `average_bn_statistics_(module)`: per-rank BN leaves each rank with its own running
  statistics; averaging them after each step keeps the replicas identical (the engines check
  that) and equal to what SplitBatchNorm keeps on one rank, the mean over groups. The reference
  instead evaluates rank 0's statistics alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastssl.distributed import all_gather_no_grad, all_reduce_mean, dp_rank, dp_size
from fastssl.models.batchnorm import like_stats, mixed_batch_norm


@torch.no_grad()
def shuffle_across_ranks(x: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x [n, ...] on each rank -> (this rank's n samples of the shuffled global batch, undo [N])."""
    x_all = all_gather_no_grad(x)  # [N, ...], rank-major
    n_all, world = x_all.shape[0], dp_size()
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_all, generator=g).to(x.device)  # [N], the same on every rank
    mine = order.view(world, -1)[dp_rank()]  # [n]
    return x_all[mine], torch.argsort(order)


@torch.no_grad()
def unshuffle_across_ranks(y: torch.Tensor, undo: torch.Tensor) -> torch.Tensor:
    """y [n, ...] per rank, in shuffled order -> the global batch [N, ...] in the original order."""
    return all_gather_no_grad(y)[undo]


class SplitBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm with statistics per contiguous group of `num_splits` in the batch, as on that many GPUs.

    Training mode only; evaluation uses the running statistics like plain BN. The state dict is
    plain BN's, so checkpoints load into either. The groups are contiguous, like ranks' slices
    of a global batch (the MoCo demo's and lightly's SplitBatchNorm interleave them instead),
    so that one rank with G groups equals G ranks exactly.
    """

    def __init__(self, num_features: int, num_splits: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.num_splits = num_splits

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, n = self.num_splits, x.shape[0]
        # MoCo's own batches always split (its config checks the batch); any other batch, e.g.
        # fine-tuning the pretrained backbone on a few labels, is normalised as plain BN would.
        if not self.training or s == 1 or n % s:
            return mixed_batch_norm(self, x)
        c, rest = x.shape[1], x.shape[2:]
        # Group g's samples become channels g*C .. (g+1)*C of a batch of n / s, so one fused
        # batch_norm call normalises every group with its own statistics.
        xs = x.reshape(s, n // s, c, *rest).transpose(0, 1).reshape(n // s, s * c, *rest)  # [n/s, s*C, ...]
        mean = var = None
        if self.track_running_stats:
            mean, var = self.running_mean.repeat(s), self.running_var.repeat(s)  # [s*C]
        # bf16 parameters (DeepSpeed's bf16, FSDP2's policy) in the fp32 statistics' dtype, as F.batch_norm needs.
        w = None if self.weight is None else like_stats(self, self.weight).repeat(s)
        b = None if self.bias is None else like_stats(self, self.bias).repeat(s)
        momentum = self.momentum if self.momentum is not None else 0.0
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as nn.BatchNorm
                momentum = 1.0 / float(self.num_batches_tracked)
        y = F.batch_norm(xs, mean, var, w, b, True, momentum, self.eps)
        if self.track_running_stats:
            with torch.no_grad():  # the mean over groups of each group's running statistics
                self.running_mean.copy_(mean.view(s, c).mean(0))
                self.running_var.copy_(var.view(s, c).mean(0))
        return y.reshape(n // s, s, c, *rest).transpose(0, 1).reshape(n, c, *rest)


def convert_split_batchnorm(module: nn.Module, num_splits: int) -> nn.Module:
    """Every BatchNorm in `module` -> SplitBatchNorm(num_splits), sharing parameters and buffers."""
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, SplitBatchNorm):
        out = SplitBatchNorm(module.num_features, num_splits, module.eps, module.momentum, module.affine,
                             module.track_running_stats)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        if module.track_running_stats:
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
    for name, child in module.named_children():
        out.add_module(name, convert_split_batchnorm(child, num_splits))
    return out


@torch.no_grad()
def average_bn_statistics_(module: nn.Module) -> None:
    """Running mean and variance of every BatchNorm in `module` := their mean over ranks (one collective)."""
    if dp_size() == 1:
        return
    stats = [b for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
             for b in (m.running_mean, m.running_var)]
    if not stats:
        return
    flat = all_reduce_mean(torch.cat([s.reshape(-1).float() for s in stats]))
    for s, mean in zip(stats, flat.split([s.numel() for s in stats])):
        s.copy_(mean.view_as(s))
