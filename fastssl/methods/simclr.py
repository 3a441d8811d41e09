"""SimCLR (Chen et al., 2020): two views, a projection head, NT-Xent over 2N-2 negatives."""

from __future__ import annotations

import torch
from torch import nn

from fastssl.config import SimCLRConfig
from fastssl.losses import nt_xent
from fastssl.methods.base import SSLMethod
from fastssl.models.backbone import Backbone
from fastssl.models.heads import mlp
from fastssl.registry import METHODS


@METHODS.register("simclr", config=SimCLRConfig)
class SimCLR(SSLMethod):
    needs_pairs = True  # the contrastive loss needs >= 2 samples per rank
    couples_samples = True  # every other sample of the global batch is a negative

    def __init__(self, backbone: Backbone, cfg: SimCLRConfig):
        super().__init__(backbone, cfg)
        # The output BatchNorm (scale, no shift) follows SimCLR's own code; see config/methods.py.
        self.projector = mlp(backbone.num_features, cfg.proj_hidden_dim, cfg.proj_dim, cfg.proj_layers,
                             last_bn="scale" if cfg.proj_last_bn else False)

    def forward_encoder(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x))  # [N, proj_dim]

    def embed(self, views: list[torch.Tensor], step: int = 0, schedule_len: float = 1.0) -> list[torch.Tensor]:
        x1, x2 = views[0], views[1]  # [n, 3, H, W] each
        n = x1.shape[0]
        # One pass over both views: SimCLR's code concatenates the views along the batch, so its
        # BatchNorm statistics (global across replicas) cover both views together.
        z = self.forward_encoder(torch.cat([x1, x2], 0))  # [2n, proj_dim]
        return [z[:n], z[n:]]

    def loss_on_embeddings(self, embeddings: list[torch.Tensor], step: int = 0,
                           schedule_len: float = 1.0) -> dict[str, torch.Tensor]:
        z1, z2 = embeddings  # [N, proj_dim] each
        cfg = self.cfg
        loss = nt_xent(z1, z2, cfg.temperature, impl=cfg.loss_impl, gather_distributed=cfg.gather_distributed)
        with torch.no_grad():
            pos_sim = nn.functional.cosine_similarity(z1.float(), z2.float(), dim=1).mean()
        return {"loss": loss, "pos_sim": pos_sim}

    def forward(self, views: list[torch.Tensor], step: int = 0, schedule_len: float = 1.0) -> dict[str, torch.Tensor]:
        return self.loss_on_embeddings(self.embed(views, step, schedule_len), step, schedule_len)
