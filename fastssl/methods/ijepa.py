"""I-JEPA (Assran et al. 2023): predict the representations of image blocks from a context block.

One view per image. A context encoder (the backbone) sees only the context block's patches; a
target encoder, an EMA of the context encoder, sees the whole image, and its layer-normed output
tokens at the M target blocks are the targets; a narrow ViT predictor
(`fastssl.models.ijepa_predictor`) maps the context tokens plus the target blocks' positions to
those representations. The loss lives in representation space, with no pixel reconstruction and
no augmentation beyond a random resized crop.

Follows facebookresearch/ijepa src/train.py (train_step): the encoder's ViT has no class token and
fixed sine-cosine positions (src/models/vision_transformer.py); the loss is the smooth L1 the code
uses (the paper writes L2; `method.loss=l2` switches); the EMA momentum rises linearly from 0.996
to 1. Masks: `fastssl.methods.ijepa_masks`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from fastssl.config.ijepa import IJEPAConfig
from fastssl.errors import FastSSLError
from fastssl.methods.base import SSLMethod
from fastssl.methods.ijepa_masks import MaskSpec, multiblock_masks, smallest_block
from fastssl.methods.momentum import frozen_copy
from fastssl.models.backbone import Backbone
from fastssl.models.ijepa_predictor import IJEPAPredictor, gather_tokens
from fastssl.registry import METHODS

if TYPE_CHECKING:
    from fastssl.config import Config
    from fastssl.data.views import ViewSpec


@METHODS.register("ijepa", config=IJEPAConfig)
class IJEPA(SSLMethod):
    needs_vit = True  # Config.validate refuses a ResNet

    def __init__(self, backbone: Backbone, cfg: IJEPAConfig):
        super().__init__(backbone, cfg)
        side = math.isqrt(backbone.num_patches)  # fastssl's images are square
        self.masks = MaskSpec((side, side), cfg.num_targets, tuple(cfg.target_scale), tuple(cfg.target_aspect),
                              tuple(cfg.context_scale), cfg.min_keep)
        self._check_blocks_fit()
        backbone.fix_sincos_positions()
        backbone.drop_class_token()
        self.predictor = IJEPAPredictor(backbone.embed_dim, cfg.pred_dim, cfg.pred_depth, cfg.pred_heads, (side, side))
        self.target_encoder = frozen_copy(backbone)

    def _check_blocks_fit(self) -> None:
        tgt, ctx = smallest_block(self.masks)
        if min(tgt, ctx) <= self.masks.min_keep:
            side = self.masks.grid[0]
            raise FastSSLError(
                f"I-JEPA's blocks do not fit a {side}x{side} patch grid: the smallest target block has {tgt} patches "
                f"and the smallest context block {ctx}, both need more than method.min_keep={self.masks.min_keep}; "
                "use more patches (raise --data.image_size or lower --model.patch_size) or lower --method.min_keep")

    @classmethod
    def view_spec(cls, cfg: "Config") -> "ViewSpec":
        from fastssl.data.views import View, ViewSpec, check_aug

        # src/transforms.py make_transforms: RandomResizedCrop(crop_scale) (bilinear), flip and
        # colour off in every released config; then Normalize.
        check_aug(cfg.aug, cfg.data.image_size)
        view = View(size=cfg.data.image_size, scale=(cfg.aug.crop_scale_min, cfg.aug.crop_scale_max),
                    flip_p=cfg.aug.flip_p, interpolation="bilinear")
        return ViewSpec((view,), tuple(cfg.aug.normalize_mean), tuple(cfg.aug.normalize_std))

    # --- EMA target ------------------------------------------------------------------------------
    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.target_encoder)]

    def momentum_at(self, step: int, schedule_len: float) -> float:
        # src/train.py momentum_scheduler: ema[0] + i * (ema[1] - ema[0]) / total iterations, linear.
        progress = min(max(step / max(schedule_len, 1), 0.0), 1.0)
        return self.cfg.momentum_base + (self.cfg.momentum_final - self.cfg.momentum_base) * progress

    def shard_units(self) -> list[nn.Module]:
        return [*self.backbone.blocks(), *self.target_encoder.blocks(), *self.predictor.blocks]

    # --- the two encoders and the predictor ------------------------------------------------------
    @torch.no_grad()
    def forward_target(self, imgs: torch.Tensor, tgt_idx: torch.Tensor) -> torch.Tensor:
        """imgs [N, 3, H, W], tgt_idx [M, N, Lt] -> targets [M, N, Lt, D], no gradient."""
        enc = self.target_encoder
        h = enc.forward_tokens(enc.embed_patches(imgs), class_token=False)  # [N, L, D]: the whole image
        h = F.layer_norm(h, (h.shape[-1],))  # train.py forward_target: normalise over the features
        return torch.stack([gather_tokens(h, idx) for idx in tgt_idx])  # [M, N, Lt, D]

    def forward_context(self, imgs: torch.Tensor, ctx_idx: torch.Tensor, tgt_idx: torch.Tensor) -> torch.Tensor:
        """imgs [N, 3, H, W], ctx_idx [N, Lc], tgt_idx [M, N, Lt] -> predictions [M, N, Lt, D]."""
        x = gather_tokens(self.backbone.embed_patches(imgs), ctx_idx)  # [N, Lc, D]: the context's patches
        z = self.backbone.forward_tokens(x, class_token=False)  # [N, Lc, D]
        return self.predictor(z, ctx_idx, tgt_idx)  # [M, N, Lt, D]

    def forward_loss(self, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Mean over every target token and feature (train.py loss_fn: F.smooth_l1_loss(z, h))."""
        if self.cfg.loss == "l2":
            return F.mse_loss(z.float(), h.float())
        return F.smooth_l1_loss(z.float(), h.float())

    def forward(self, views: list[torch.Tensor], step: int = 0, schedule_len: float = 1.0) -> dict[str, torch.Tensor]:
        imgs = views[0]  # [N, 3, H, W]: the one view
        ctx_idx, tgt_idx = multiblock_masks(self.masks, imgs.shape[0], step, imgs.device)  # [N, Lc], [M, N, Lt]
        h = self.forward_target(imgs, tgt_idx)  # [M, N, Lt, D]
        z = self.forward_context(imgs, ctx_idx, tgt_idx)  # [M, N, Lt, D]
        loss = self.forward_loss(z, h)
        return {"loss": loss, "momentum": torch.tensor(self.momentum_at(step, schedule_len)),
                "context_patches": torch.tensor(float(ctx_idx.shape[1])),
                "target_patches": torch.tensor(float(tgt_idx.shape[2]))}
