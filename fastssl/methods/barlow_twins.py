"""Barlow Twins (Zbontar, Jing, Misra, LeCun & Deny, ICML 2021): the cross-correlation of two
views' projections is pushed to the identity; no negatives, no EMA target, no stop-gradient.

The projector follows facebookresearch/barlowtwins main.py (--projector 8192-8192-8192):
Linear(no bias)-BN-ReLU per hidden layer, then a Linear without bias; the affine-free BatchNorm
the reference applies before the cross-correlation is part of the loss
(fastssl.losses.barlow_twins_loss, statistics over the global batch as the reference's
SyncBatchNorm and all_reduce).
"""

from __future__ import annotations

import torch

from fastssl.config.noncontrastive import BarlowTwinsConfig
from fastssl.losses import barlow_twins_loss
from fastssl.methods.expander import ExpanderMethod
from fastssl.registry import METHODS


@METHODS.register("barlowtwins", config=BarlowTwinsConfig)
class BarlowTwins(ExpanderMethod):
    def forward(self, views: list[torch.Tensor], step: int = 0, schedule_len: float = 1.0) -> dict[str, torch.Tensor]:
        z1, z2 = self.project_views(views)  # [N, D] each
        loss = barlow_twins_loss(z1, z2, self.cfg.lambd)
        with torch.no_grad():
            # Mean per-feature std of the raw projections: near 0 signals a collapsed projector.
            z_std = torch.cat([z1, z2]).float().std(0).mean()
        return {"loss": loss, "z_std": z_std}
