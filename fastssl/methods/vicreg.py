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
from fastssl.methods.expander import ExpanderMethod
from fastssl.registry import METHODS


@METHODS.register("vicreg", config=VICRegConfig)
class VICReg(ExpanderMethod):
    def forward(self, views: list[torch.Tensor], step: int = 0, schedule_len: float = 1.0) -> dict[str, torch.Tensor]:
        z1, z2 = self.project_views(views)  # [N, D] each
        cfg = self.cfg
        terms = vicreg_loss(z1, z2, cfg.sim_weight, cfg.var_weight, cfg.cov_weight)
        return {"loss": terms.loss, "invariance": terms.invariance.detach(),
                "variance": terms.variance.detach(), "covariance": terms.covariance.detach()}
