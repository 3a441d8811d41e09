"""VICReg (Bardes, Ponce & LeCun, ICLR 2022): invariance, variance and covariance terms on the
expander outputs of two views; no negatives, no EMA target, no stop-gradient.

The expander follows facebookresearch/vicreg main_vicreg.py `Projector` (--mlp 8192-8192-8192):
Linear-BN-ReLU per hidden layer, then a Linear without bias and without BN. The reference's hidden
Linears carry a bias that the BatchNorm right after cancels; here they have none (the same
function, one fewer parameter per unit). The loss (fastssl.losses.vicreg_loss) takes its
statistics over the global batch, as the reference's all-gather does.
"""

from __future__ import annotations

import torch

from fastssl.config.noncontrastive import VICRegConfig
from fastssl.losses import vicreg_loss
from fastssl.methods.base import SSLMethod
from fastssl.models.backbone import Backbone
from fastssl.models.heads import mlp
from fastssl.registry import METHODS


@METHODS.register("vicreg", config=VICRegConfig)
class VICReg(SSLMethod):
    needs_pairs = True  # variance and covariance need >= 2 samples

    def __init__(self, backbone: Backbone, cfg: VICRegConfig):
        super().__init__(backbone, cfg)
        self.projector = mlp(backbone.num_features, cfg.proj_hidden_dim, cfg.proj_dim, cfg.proj_layers,
                             last_bias=False)

    def forward_encoder(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x))  # [N, proj_dim]

    def forward(self, views: list[torch.Tensor], step: int = 0, schedule_len: float = 1.0) -> dict[str, torch.Tensor]:
        x1, x2 = views[0], views[1]  # [N, 3, H, W] each
        # Each view is its own pass, as main_vicreg.py (`x = self.projector(self.backbone(x))`,
        # then the same for y), so BatchNorm normalises each view's batch on its own.
        z1, z2 = self.forward_encoder(x1), self.forward_encoder(x2)  # [N, D] each
        cfg = self.cfg
        terms = vicreg_loss(z1, z2, cfg.sim_weight, cfg.var_weight, cfg.cov_weight)
        return {"loss": terms.loss, "invariance": terms.invariance.detach(),
                "variance": terms.variance.detach(), "covariance": terms.covariance.detach()}
