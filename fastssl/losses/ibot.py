"""iBOT's masked-patch loss (Zhou et al. 2022, Eq. 2), as DINOv2 computes it.

For every masked patch m of crop b, the cross-entropy between the teacher's target distribution
on the unmasked crop (centred and sharpened upstream) and the student's prediction on the masked
crop; each crop's patches are averaged, then the crops: `masks_weight` = 1 / (masked patches of
the crop), summed, divided by the number of crops B (dinov2/loss/ibot_patch_loss.py
`forward_masked`, whose weights come from dinov2/data/collate.py). Crops without a masked patch
count in B with a zero term, as there. Only masked patches enter: the inputs are their rows.

Data parallel: every rank holds B / R crops, so the mean of the per-rank losses (DDP's gradient
average) is the loss of the global batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ibot_patch_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, masks: torch.Tensor,
                    student_temp: float) -> torch.Tensor:
    """student_logits, teacher_probs: [M, K], the masked patches of `masks` [B, L] in row-major
    order (`masks.nonzero()`); a float32 scalar."""
    per_crop = masks.sum(dim=1, keepdim=True).clamp_min(1).float()  # [B, 1]
    weight = (1.0 / per_crop).expand_as(masks)[masks]  # [M]
    ce = -(teacher_probs.float() * F.log_softmax(student_logits.float() / student_temp, dim=-1)).sum(-1)  # [M]
    return (ce * weight).sum() / masks.shape[0]
