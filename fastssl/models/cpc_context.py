"""CPC's autoregressive context network over a grid of patch features (a PixelCNN-style stack).

Input z [N, D, G, G] (row i = the i-th row of patches from the top); output c [N, D, G, G] where
c[:, :, i, j] depends only on rows 0..i of z (any column). That is what lets CPC predict the
rows below row i from c at row i without seeing them.

Causality comes from padding, not weight masks: each spatial convolution spans rows i-1 and i
(kernel 2 x 3, one row of padding on top and none below), and the 1x1 convolutions mix
channels only. Residual blocks (1x1 down, causal 2x3, 1x1 up) follow CPC v2 (Hénaff et al.
2020, App. A.2) and pl_bolts' PixelCNN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CausalConv2d(nn.Conv2d):
    """A (kh, kw) convolution whose output row i sees input rows i-kh+1..i only."""

    def __init__(self, in_ch: int, out_ch: int, kernel: tuple[int, int] = (2, 3)):
        super().__init__(in_ch, out_ch, kernel, padding=0)
        self.kh, self.kw = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_w = self.kw // 2
        x = F.pad(x, (pad_w, self.kw - 1 - pad_w, self.kh - 1, 0))  # left, right, top, bottom(0)
        return super().forward(x)  # [N, out_ch, G, G]


class ContextBlock(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.down = nn.Conv2d(dim, hidden, 1)
        self.causal = CausalConv2d(hidden, hidden)
        self.up = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.down(F.relu(x)))
        h = F.relu(self.causal(h))
        return x + self.up(h)


class ContextNetwork(nn.Module):
    """z [N, D, G, G] -> context c [N, D, G, G], row i computed from rows <= i."""

    def __init__(self, dim: int, hidden: int = 256, num_blocks: int = 5):
        super().__init__()
        self.blocks = nn.Sequential(*[ContextBlock(dim, hidden) for _ in range(num_blocks)])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.relu(self.blocks(z))
