"""Multi-crop forward: views of the same resolution share one pass through the network.

SwAV's multi-crop (Caron et al. 2020, Sec. 3.2) feeds 2 global crops and V - 2 smaller ones.
facebookresearch/swav (src/resnet50.py, `forward`) concatenates consecutive crops of equal size
and runs each group through the backbone once, so BatchNorm normalises each resolution's batch
on its own statistics and the small crops cost one pass, not V - 2. DINO's MultiCropWrapper
(facebookresearch/dino utils.py) does the same for the backbone and runs its head once after.
"""

from __future__ import annotations

from typing import Callable

import torch


def forward_multicrop(encoder: Callable[[torch.Tensor], torch.Tensor], views: list[torch.Tensor],
                      head: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """`encoder` over views `[B, 3, S_v, S_v]` grouped by size -> `[V * B, D]`, view-major; then
    `head`, if given, once over all of it (DINO's MultiCropWrapper: a head with BatchNorm then
    normalises over every crop together, as the reference's does)."""
    outputs, start = [], 0
    while start < len(views):
        end = start
        while end < len(views) and views[end].shape[-2:] == views[start].shape[-2:]:
            end += 1
        outputs.append(encoder(torch.cat(views[start:end], 0)))  # [(end - start) * B, D]
        start = end
    out = torch.cat(outputs, 0)
    return out if head is None else head(out)
