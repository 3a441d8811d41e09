"""DINOv2 (Oquab et al. 2023): DINO's image-level self-distillation + iBOT's masked-patch
self-distillation + KoLeo, on a ViT (optionally with registers, Darcet et al. 2024).

Per image: 2 global crops and K local crops (DINO's multi-crop). The teacher (an EMA of the
student, DINO's) sees the 2 global crops whole; the student sees all crops, its global crops with
random blocks of patches (`fastssl.methods.block_masking`) replaced by a learnable mask token.

    loss = L_DINO(class tokens, every crop vs the other global crop)          (Caron et al. 2021)
         + ibot_weight  * L_iBOT(patch tokens, masked patches only)          (Zhou et al. 2022)
         + koleo_weight * sum over the 2 global crops of KoLeo(student class tokens)

The teacher's head outputs become targets by Sinkhorn-Knopp over the global batch (default) or
DINO's EMA centring, both sharpened by the teacher temperature (`fastssl.methods.teacher_targets`).
Patch tokens share the DINO head unless `ibot_separate_head`. Follows facebookresearch/dinov2
dinov2/train/ssl_meta_arch.py `forward_backward`. KoLeo looks for neighbours among this rank's
crops only (as there), so it is the one term whose value depends on the world size.
"""

from __future__ import annotations

import torch
from torch import nn

from fastssl.config.dinov2 import DINOv2Config
from fastssl.errors import FastSSLError
from fastssl.losses.ibot import ibot_patch_loss
from fastssl.losses.koleo import koleo_loss
from fastssl.methods.block_masking import draw_masks
from fastssl.methods.dino import DINO, crop_pairs_loss
from fastssl.methods.momentum import frozen_copy
from fastssl.methods.multicrop import forward_multicrop
from fastssl.methods.teacher_targets import batch_mean, centered_softmax, sinkhorn_targets
from fastssl.models.backbone import Backbone
from fastssl.models.dino_head import DINOHead
from fastssl.registry import METHODS


@METHODS.register("dinov2", config=DINOv2Config)
class DINOv2(DINO):
    needs_pairs = True  # KoLeo needs a neighbour on every rank
    needs_vit = True  # masked patch tokens (iBOT); Config.validate refuses a ResNet

    def __init__(self, backbone: Backbone, cfg: DINOv2Config):
        dim = backbone.embed_dim
        super().__init__(backbone, cfg)
        # dinov2/models/vision_transformer.py: mask_token = zeros(1, embed_dim). Kept here, not in
        # the backbone, so that exported backbones are plain timm ViTs.
        self.mask_token = nn.Parameter(torch.zeros(dim))
        self.ibot_head: DINOHead | None = None
        if cfg.ibot_separate_head:
            self.ibot_head = DINOHead(dim, cfg.ibot_out_dim, cfg.proj_hidden_dim, cfg.bottleneck_dim,
                                      cfg.proj_layers, cfg.norm_last_layer, cfg.use_bn_in_head)
            self.teacher_ibot_head = frozen_copy(self.ibot_head)
        patch_dim = cfg.ibot_out_dim if cfg.ibot_separate_head else cfg.out_dim
        self.register_buffer("ibot_center", torch.zeros(1, patch_dim))  # iBOTPatchLoss.center
        self._next_centers: tuple[torch.Tensor, torch.Tensor] | None = None

    # --- protocol --------------------------------------------------------------------------------
    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        pairs = super().momentum_pairs()
        return pairs + [(self.ibot_head, self.teacher_ibot_head)] if self.ibot_head is not None else pairs

    def fp32_state(self) -> list[torch.Tensor]:
        return [self.center, self.ibot_center]

    def frozen_params(self, step: int, epoch: int) -> list[nn.Parameter]:
        # dinov2 param_groups.py marks every "last_layer" (DINO and iBOT heads) is_last_layer,
        # whose lr is 0 during freeze_last_layer_epochs.
        frozen = super().frozen_params(step, epoch)
        if self.ibot_head is not None and frozen:
            frozen += [p for p in self.ibot_head.last_layer.parameters() if p.requires_grad]
        return frozen

    @torch.no_grad()
    def commit_step(self, step: int, schedule_len: float) -> None:
        if self._next_centers is not None:
            self.center.copy_(self._next_centers[0])
            self.ibot_center.copy_(self._next_centers[1])
            self._next_centers = None

    # --- heads -----------------------------------------------------------------------------------
    def heads(self, cls: torch.Tensor, patches: torch.Tensor, teacher: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(class-token logits, patch logits). A shared head takes both in one pass, as dinov2's."""
        head = self.teacher_head if teacher else self.head
        if self.ibot_head is None:
            out = head(torch.cat([cls, patches]))  # [B + M, out]
            return out[: cls.shape[0]], out[cls.shape[0] :]
        return head(cls), (self.teacher_ibot_head if teacher else self.ibot_head)(patches)

    # --- forward ---------------------------------------------------------------------------------
    @torch.no_grad()
    def teacher_targets(self, global_crops: torch.Tensor, masks: torch.Tensor, temp: float):
        """Targets of the class tokens [2 n, out] and of the masked patches [M, out'] (unmasked crops)."""
        t = self.teacher_backbone.tokens(global_crops)  # cls [2 n, D], patches [2 n, L, D]
        cls_logits, patch_logits = self.heads(t.cls, t.patches[masks], teacher=True)  # [2 n, out], [M, out']
        cfg = self.cfg
        if cfg.centering == "sinkhorn_knopp":
            return (sinkhorn_targets(cls_logits, temp, cfg.sinkhorn_iterations),
                    sinkhorn_targets(patch_logits, temp, cfg.sinkhorn_iterations))
        m = cfg.center_momentum
        self._next_centers = (self.center * m + batch_mean(cls_logits) * (1 - m),
                              self.ibot_center * m + batch_mean(patch_logits) * (1 - m))
        return centered_softmax(cls_logits, self.center, temp), centered_softmax(patch_logits, self.ibot_center, temp)

    def draw_masks(self, global_crops: list[torch.Tensor], step: int) -> torch.Tensor:
        """Bool [2 n, L], crop-major as the crops; the same for an image on any number of ranks."""
        cfg, p = self.cfg, self.backbone.patch_size
        n, (h, w) = global_crops[0].shape[0], global_crops[0].shape[-2:]
        masks = draw_masks(2, n, h // p, w // p, (cfg.mask_ratio_min, cfg.mask_ratio_max),
                           cfg.mask_sample_probability, step)  # [2, n, L]
        return masks.flatten(0, 1).to(global_crops[0].device)

    def forward(self, views: list[torch.Tensor], step: int = 0, schedule_len: float = 1.0) -> dict[str, torch.Tensor]:
        if len(views) < 2:
            raise FastSSLError(f"DINOv2 needs 2 global views per image, got {len(views)}; "
                               "the loader must use DINOv2.view_spec")
        cfg = self.cfg
        # views: 2 global [n, 3, G, G], then K local [n, 3, l, l]
        globals_, locals_ = torch.cat(views[:2]), views[2:]  # [2 n, 3, G, G]
        masks = self.draw_masks(views[:2], step)  # [2 n, L]
        temp = self.teacher_temp_at(self.epoch_of(step))
        t_cls, t_patch = self.teacher_targets(globals_, masks, temp)  # [2 n, out], [M, out']

        s = self.backbone.tokens(globals_, masks, self.mask_token)  # the student sees masked globals
        local_cls = [forward_multicrop(lambda x: self.backbone.tokens(x).cls, locals_)] if locals_ else []  # [K n, D]
        cls = [s.cls] + local_cls  # [2 n, D], [K n, D]
        s_cls, s_patch = self.heads(torch.cat(cls), s.patches[masks], teacher=False)  # [(2 + K) n, out], [M, out']

        dino = crop_pairs_loss(s_cls, t_cls, cfg.student_temp)
        ibot = ibot_patch_loss(s_patch, t_patch, masks, cfg.student_temp)
        koleo = sum(koleo_loss(c) for c in s.cls.chunk(2)) if cfg.koleo_weight > 0 else dino.new_zeros(())
        loss = dino + cfg.ibot_weight * ibot + cfg.koleo_weight * koleo
        return {"loss": loss, "dino_loss": dino.detach(), "ibot_loss": ibot.detach(), "koleo_loss": koleo.detach(),
                "masked_fraction": masks.float().mean(), "teacher_temp": torch.tensor(temp),
                "momentum": torch.tensor(self.momentum_at(step, schedule_len))}
