"""Multi-crop forward: views of the same resolution share one pass through the network.

SwAV's multi-crop (Caron et al. 2020, Sec. 3.2) feeds 2 global crops and V - 2 smaller ones.
facebookresearch/swav (src/resnet50.py, `forward`) concatenates consecutive crops of equal size
and runs each group through the backbone once, so BatchNorm normalises each resolution's batch
on its own statistics and the small crops cost one pass, not V - 2.
"""

from __future__ import annotations

from typing import Callable

import torch


def forward_multicrop(encoder: Callable[[torch.Tensor], torch.Tensor], views: list[torch.Tensor]) -> torch.Tensor:
    """`encoder` over views `[B, 3, S_v, S_v]` grouped by size -> `[V * B, D]`, view-major."""
    outputs, start = [], 0
    while start < len(views):
        end = start
        while end < len(views) and views[end].shape[-2:] == views[start].shape[-2:]:
            end += 1
        outputs.append(encoder(torch.cat(views[start:end], 0)))  # [(end - start) * B, D]
        start = end
    return torch.cat(outputs, 0)
