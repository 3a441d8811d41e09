"""BYOL (Grill et al., 2020): an online network predicts an EMA target network's projections.

The target is a slowly moving average of the online backbone and projector, with momentum
following a cosine schedule from `momentum_base` to `momentum_final`. No gradient reaches it.
The EMA update runs after each optimiser step (`on_after_step`), identically on every rank
because DDP keeps the online weights identical.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from fastssl.config import MethodConfig
from fastssl.losses import byol_loss
from fastssl.models.backbone import Backbone
from fastssl.models.heads import mlp


def cosine_momentum(step: int, max_steps: int, base: float, final: float = 1.0) -> float:
    """tau_k = final - (final - base) * (cos(pi k / K) + 1) / 2."""
    if max_steps <= 0:
        return base
    progress = min(max(step / max_steps, 0.0), 1.0)
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target = m * target + (1 - m) * online, for parameters; buffers (BN stats) are copied."""
    t_params = [p for p in target.parameters()]
    o_params = [p.detach() for p in online.parameters()]
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, o_params, alpha=1 - momentum)
    for tb, ob in zip(target.buffers(), online.buffers()):
        tb.copy_(ob)


class BYOL(nn.Module):
    needs_pairs = False

    def __init__(self, backbone: Backbone, cfg: MethodConfig):
        super().__init__()
        self.backbone = backbone
        self.projector = mlp(backbone.num_features, cfg.proj_hidden_dim, cfg.proj_dim, cfg.proj_layers)
        self.predictor = mlp(cfg.proj_dim, cfg.pred_hidden_dim, cfg.proj_dim, 2)
        self.target_backbone = copy.deepcopy(backbone)
        self.target_projector = copy.deepcopy(self.projector)
        for p in [*self.target_backbone.parameters(), *self.target_projector.parameters()]:
            p.requires_grad_(False)
        self.momentum_base = cfg.momentum_base
        self.momentum_final = cfg.momentum_final
        self.momentum = cfg.momentum_base

    def forward_online(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.projector(self.backbone(x)))  # [N, proj_dim]

    @torch.no_grad()
    def forward_target(self, x: torch.Tensor) -> torch.Tensor:
        return self.target_projector(self.target_backbone(x))  # [N, proj_dim]

    def forward(self, views: list[torch.Tensor], step: int = 0, max_steps: int = 1) -> dict[str, torch.Tensor]:
        x1, x2 = views[0], views[1]  # [N, 3, H, W] each
        n = x1.shape[0]
        p = self.forward_online(torch.cat([x1, x2], 0))  # [2N, proj_dim]
        z = self.forward_target(torch.cat([x1, x2], 0))  # [2N, proj_dim]
        # Symmetric: view 1's prediction regresses view 2's target and vice versa.
        loss = byol_loss(p[:n], z[n:]) + byol_loss(p[n:], z[:n])
        self.momentum = cosine_momentum(step, max_steps, self.momentum_base, self.momentum_final)
        return {"loss": loss, "momentum": torch.tensor(self.momentum)}

    @torch.no_grad()
    def on_after_step(self, step: int, max_steps: int) -> None:
        m = cosine_momentum(step, max_steps, self.momentum_base, self.momentum_final)
        ema_update(self.target_backbone, self.backbone, m)
        ema_update(self.target_projector, self.projector, m)
