"""SimSiam (Chen & He, CVPR 2021): one network predicts its own projection of the other view,
which is held fixed by a stop-gradient; no negatives, no EMA target.

    z1, z2 = f(x1), f(x2)           # projections
    p1, p2 = h(z1), h(z2)           # predictions
    L = D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2,  D = negative cosine similarity

(the paper's Algorithm 1). Heads follow facebookresearch/simsiam builder.py: a 3-layer projector
ending in an affine-free BatchNorm, a 2-layer bottleneck predictor. The predictor keeps the peak
learning rate throughout (`fixed_lr_params`, main_simsiam.py --fix-pred-lr).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastssl.config.noncontrastive import SimSiamConfig
from fastssl.methods.base import SSLMethod
from fastssl.models.backbone import Backbone
from fastssl.models.heads import mlp
from fastssl.registry import METHODS


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """D(p, z) of the paper, with z already detached by the caller: -mean cosine similarity."""
    return -F.cosine_similarity(p.float(), z.float(), dim=1).mean()


@METHODS.register("simsiam", config=SimSiamConfig)
class SimSiam(SSLMethod):
    def __init__(self, backbone: Backbone, cfg: SimSiamConfig):
        super().__init__(backbone, cfg)
        # builder.py: Linear(no bias)-BN-ReLU x2, Linear, BatchNorm1d(dim, affine=False); the
        # output Linear's bias is frozen there ("followed by BN"), so here it has none.
        self.projector = mlp(backbone.num_features, cfg.proj_hidden_dim, cfg.proj_dim, cfg.proj_layers,
                             last_bn=True)
        # builder.py: Linear(dim, pred_dim, no bias)-BN-ReLU-Linear(pred_dim, dim) with a bias.
        self.predictor = mlp(cfg.proj_dim, cfg.pred_hidden_dim, cfg.proj_dim, 2)

    def fixed_lr_params(self) -> list[nn.Parameter]:
        return list(self.predictor.parameters()) if self.cfg.fix_pred_lr else []

    def forward(self, views: list[torch.Tensor], step: int = 0, schedule_len: float = 1.0) -> dict[str, torch.Tensor]:
        x1, x2 = views[0], views[1]  # [N, 3, H, W] each
        # Each view is its own pass, as builder.py (`z1 = self.encoder(x1)`, then x2).
        z1, z2 = self.projector(self.backbone(x1)), self.projector(self.backbone(x2))  # [N, D] each
        p1, p2 = self.predictor(z1), self.predictor(z2)  # [N, D] each
        # Stop-gradient on the targets: the paper's key ingredient (Sec. 4.1; without it the
        # representation collapses).
        loss = negative_cosine(p1, z2.detach()) / 2 + negative_cosine(p2, z1.detach()) / 2
        with torch.no_grad():
            # Paper Fig. 2 (middle): per-channel std of the l2-normalised output; ~1/sqrt(D) when
            # healthy, 0 when collapsed.
            z_std = F.normalize(z1.float(), dim=1).std(0).mean()
        return {"loss": loss, "z_std": z_std}
