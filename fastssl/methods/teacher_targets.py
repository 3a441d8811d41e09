"""Teacher targets of self-distillation: logits -> probability targets, by centring or Sinkhorn-Knopp.

- `centered_softmax`: DINO's softmax((t - c) / T) with c an EMA of the teacher's mean output
  (Caron et al. 2021); `batch_mean` is that mean over the global batch, which every rank shares.
- `sinkhorn_targets`: DINOv2's replacement (Oquab et al. 2023, Sec. 4, from SwAV): the targets
  are the Sinkhorn-Knopp codes of exp(t / T), equipartitioned over the prototypes across the
  global batch (dinov2/loss/dino_clstoken_loss.py and ibot_patch_loss.py
  `sinkhorn_knopp_teacher`: 3 iterations, the teacher temperature as epsilon).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from fastssl.cluster import sinkhorn_knopp
from fastssl.distributed import is_dist


@torch.no_grad()
def centered_softmax(teacher_logits: torch.Tensor, center: torch.Tensor, temp: float) -> torch.Tensor:
    return F.softmax((teacher_logits.float() - center) / temp, dim=-1)  # [B, K]


@torch.no_grad()
def sinkhorn_targets(teacher_logits: torch.Tensor, temp: float, iterations: int) -> torch.Tensor:
    return sinkhorn_knopp(teacher_logits.float(), epsilon=temp, iterations=iterations)  # [B, K], rows sum to 1


@torch.no_grad()
def batch_mean(teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean row `[1, K]` over every rank's rows, whatever their number (iBOT's masked patches
    differ per rank; DINOv2 averages the per-rank means instead)."""
    total = torch.cat([teacher_logits.float().sum(0), teacher_logits.new_full((1,), teacher_logits.shape[0]).float()])
    if is_dist():
        dist.all_reduce(total)
    return (total[:-1] / total[-1].clamp_min(1)).unsqueeze(0)
