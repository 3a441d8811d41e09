"""SimCLR (Chen et al., 2020): two views, a projection head, NT-Xent over 2N-2 negatives."""

from __future__ import annotations

import torch
from torch import nn

from fastssl.config import MethodConfig
from fastssl.losses import nt_xent
from fastssl.models.backbone import Backbone
from fastssl.models.heads import mlp


class SimCLR(nn.Module):
    needs_pairs = True  # the contrastive loss needs >= 2 samples per rank

    def __init__(self, backbone: Backbone, cfg: MethodConfig):
        super().__init__()
        self.backbone = backbone
        self.projector = mlp(backbone.num_features, cfg.proj_hidden_dim, cfg.proj_dim, cfg.proj_layers)
        self.temperature = cfg.temperature
        self.loss_impl = cfg.loss_impl
        self.gather_distributed = cfg.gather_distributed

    def forward_encoder(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x))  # [N, proj_dim]

    def forward(self, views: list[torch.Tensor], step: int = 0, max_steps: int = 1) -> dict[str, torch.Tensor]:
        x1, x2 = views[0], views[1]  # [N, 3, H, W] each
        n = x1.shape[0]
        # One backbone pass over both views keeps BatchNorm statistics shared, as in the paper.
        z = self.forward_encoder(torch.cat([x1, x2], 0))  # [2N, proj_dim]
        z1, z2 = z[:n], z[n:]
        loss = nt_xent(z1, z2, self.temperature, impl=self.loss_impl, gather_distributed=self.gather_distributed)
        with torch.no_grad():
            z1n = nn.functional.normalize(z1.float(), dim=1)
            z2n = nn.functional.normalize(z2.float(), dim=1)
            pos_sim = (z1n * z2n).sum(1).mean()
        return {"loss": loss, "pos_sim": pos_sim}
