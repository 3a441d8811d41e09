"""The shared shape of Barlow Twins and VICReg: backbone -> expander, each view its own pass.

Both references (facebookresearch/barlowtwins main.py, facebookresearch/vicreg main_vicreg.py)
end the projector ("expander" in VICReg) with a bias-free Linear and no BatchNorm, because their
losses standardise the projections themselves, and run the two views through it one after the
other (`z1 = self.projector(self.backbone(y1))`, then y2), so BatchNorm normalises each view's
batch on its own statistics. Only the loss differs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from fastssl.methods.base import SSLMethod
from fastssl.models.backbone import Backbone
from fastssl.models.heads import mlp

if TYPE_CHECKING:
    from fastssl.config.noncontrastive import BarlowTwinsConfig, VICRegConfig


class ExpanderMethod(SSLMethod):
    needs_pairs = True  # the losses' batch statistics (BatchNorm, variance, covariance) need >= 2 samples

    def __init__(self, backbone: Backbone, cfg: "BarlowTwinsConfig | VICRegConfig"):
        super().__init__(backbone, cfg)
        self.projector = mlp(backbone.num_features, cfg.proj_hidden_dim, cfg.proj_dim, cfg.proj_layers,
                             last_bias=False)

    def forward_encoder(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x))  # [N, proj_dim]

    def project_views(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """views[0], views[1] [N, 3, H, W] -> z1, z2 [N, proj_dim], one pass each."""
        return self.forward_encoder(views[0]), self.forward_encoder(views[1])
