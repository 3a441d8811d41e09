"""BYOL (Grill et al., 2020): an online network predicts an EMA target network's projections.

The target is a slowly moving average of the online backbone and projector, with momentum
following a cosine schedule from `momentum_base` to `momentum_final` (`momentum_pairs`; the
engine runs the shared EMA update after each optimizer step). No gradient reaches it.
"""

from __future__ import annotations

import torch
from torch import nn

from fastssl.config import BYOLConfig
from fastssl.losses import byol_loss
from fastssl.methods.base import SSLMethod
from fastssl.methods.momentum import frozen_copy
from fastssl.models.backbone import Backbone
from fastssl.models.heads import mlp
from fastssl.registry import METHODS


@METHODS.register("byol", config=BYOLConfig)
class BYOL(SSLMethod):
    def __init__(self, backbone: Backbone, cfg: BYOLConfig):
        super().__init__(backbone, cfg)
        self.projector = mlp(backbone.num_features, cfg.proj_hidden_dim, cfg.proj_dim, cfg.proj_layers)
        self.predictor = mlp(cfg.proj_dim, cfg.pred_hidden_dim, cfg.proj_dim, cfg.pred_layers)
        self.target_backbone, self.target_projector = frozen_copy(backbone), frozen_copy(self.projector)

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.target_backbone), (self.projector, self.target_projector)]

    def forward_online(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.projector(self.backbone(x)))  # [N, proj_dim]

    @torch.no_grad()
    def forward_target(self, x: torch.Tensor) -> torch.Tensor:
        return self.target_projector(self.target_backbone(x))  # [N, proj_dim]

    def forward(self, views: list[torch.Tensor], step: int = 0, schedule_len: float = 1.0) -> dict[str, torch.Tensor]:
        x1, x2 = views[0], views[1]  # [N, 3, H, W] each
        # Each view is its own forward pass, as in BYOL's reference code (byol_experiment.py
        # applies the network to view1 and view2 separately), so BatchNorm normalises each
        # view's batch on its own instead of mixing the two views' statistics.
        p1, p2 = self.forward_online(x1), self.forward_online(x2)  # [N, proj_dim] each
        z1, z2 = self.forward_target(x1), self.forward_target(x2)  # [N, proj_dim] each
        # Symmetric: view 1's prediction regresses view 2's target and vice versa.
        loss = byol_loss(p1, z2) + byol_loss(p2, z1)
        return {"loss": loss, "momentum": torch.tensor(self.momentum_at(step, schedule_len))}
