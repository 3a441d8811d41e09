"""MoCo v3 (Chen, Xie, He 2021, "An Empirical Study of Training Self-Supervised Vision Transformers").

A query encoder f_q (backbone, projector, predictor) and a momentum encoder f_k (backbone and
projector, an EMA of f_q's) on a cosine schedule from 0.99 to 1. No queue: the negatives are the
other keys of the global batch, gathered across ranks. Per step (the paper's Algorithm 1,
facebookresearch/moco-v3 builder.py):

    q1, q2 = f_q(x1), f_q(x2)             # [n, d] queries, with gradients
    k1, k2 = f_k(x1), f_k(x2)             # [n, d] keys, no gradient
    loss = ctr(q1, k2) + ctr(q2, k1)      # symmetric
    ctr(q, k) = CE(q @ gather(k).T / T, rank * n + arange(n)) * 2T

The 2T factor (builder.py `contrastive_loss`) makes the gradient's scale independent of T.
For ViTs the patch projection can stay frozen at its random init (Sec. 4.1, `--stop-grad-conv1`),
which the paper found to remove the training instability of ViTs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastssl.config import MoCoV3Config
from fastssl.losses import info_nce
from fastssl.methods.base import SSLMethod
from fastssl.methods.momentum import frozen_copy
from fastssl.models.backbone import Backbone
from fastssl.models.heads import mlp
from fastssl.registry import METHODS


@METHODS.register("mocov3", config=MoCoV3Config)
class MoCoV3(SSLMethod):
    needs_pairs = True  # in-batch negatives: a rank alone needs >= 2 samples
    couples_samples = True  # the other keys of the global batch are the negatives

    def __init__(self, backbone: Backbone, cfg: MoCoV3Config):
        super().__init__(backbone, cfg)
        vit = backbone.is_vit
        if cfg.freeze_patch_embed and vit:  # ResNets have no patch projection; the option is ViT-only
            backbone.freeze_patch_embed()
        # moco-v3 builder.py: the projector has 3 layers for ViT (MoCo_ViT), 2 for ResNet
        # (MoCo_ResNet), BN without affine at the end of both; the predictor has 2 layers and
        # ends with that BN for ViT only.
        layers = cfg.proj_layers or (3 if vit else 2)
        self.projector = mlp(backbone.num_features, cfg.proj_hidden_dim, cfg.proj_dim, layers, last_bn=True)
        self.predictor = mlp(cfg.proj_dim, cfg.pred_hidden_dim, cfg.proj_dim, 2, last_bn=vit)
        self.momentum_backbone, self.momentum_projector = frozen_copy(backbone), frozen_copy(self.projector)

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.momentum_backbone), (self.projector, self.momentum_projector)]

    def forward_query(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.projector(self.backbone(x)))  # [n, d]

    @torch.no_grad()
    def forward_key(self, x: torch.Tensor) -> torch.Tensor:
        return self.momentum_projector(self.momentum_backbone(x))  # [n, d]

    def forward_loss(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """ctr(q, k): q [n, d] against every rank's keys [N, d]; the positive of q_i is k_i."""
        t = self.cfg.temperature
        return info_nce(q, k, temperature=t, impl=self.cfg.loss_impl, gather_distributed=True) * (2 * t)

    def embed(self, views: list[torch.Tensor], step: int = 0, schedule_len: float = 1.0) -> list[torch.Tensor]:
        x1, x2 = views[0], views[1]  # [n, 3, H, W] each
        # Each view is its own pass, as in builder.py, so BN normalises each view's batch alone.
        q1, q2 = self.forward_query(x1), self.forward_query(x2)  # [n, d] each
        k1, k2 = self.forward_key(x1), self.forward_key(x2)  # [n, d] each, no gradient
        return [q1, q2, k1, k2]

    def loss_on_embeddings(self, embeddings: list[torch.Tensor], step: int = 0,
                           schedule_len: float = 1.0) -> dict[str, torch.Tensor]:
        q1, q2, k1, k2 = embeddings  # [N, d] each
        loss = self.forward_loss(q1, k2) + self.forward_loss(q2, k1)
        with torch.no_grad():
            pos_sim = (F.cosine_similarity(q1.float(), k2.float()).mean() + F.cosine_similarity(q2.float(), k1.float()).mean()) / 2
        return {"loss": loss, "pos_sim": pos_sim, "momentum": torch.tensor(self.momentum_at(step, schedule_len))}

    def forward(self, views: list[torch.Tensor], step: int = 0, schedule_len: float = 1.0) -> dict[str, torch.Tensor]:
        return self.loss_on_embeddings(self.embed(views, step, schedule_len), step, schedule_len)
