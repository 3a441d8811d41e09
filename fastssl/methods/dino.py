"""DINO (Caron et al., 2021): self-distillation with no labels.

A student (backbone + DINO head) is trained to match, crop for crop, the output distribution of a
teacher that is an EMA of the student (momentum 0.996 -> 1, cosine). Multi-crop: each image gives
2 global views and K small local views; the student sees all 2 + K, the teacher only the 2 global
ones, and every student crop is matched to each teacher crop but its own (local-to-global).

Collapse is avoided by centering and sharpening the teacher: its logits have a centre c
subtracted (an EMA of the teacher's batch mean, all-reduced over ranks so that c is the same on
every rank and equals the single-process centre on the global batch) and are divided by a low
temperature, linearly warmed up over the first epochs. The head's last layer is frozen during
the first epoch(s). Follows facebookresearch/dino main_dino.py (DINOLoss, MultiCropWrapper,
cancel_gradients_last_layer).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from fastssl.config import DINOConfig
from fastssl.distributed import all_reduce_mean
from fastssl.errors import FastSSLError
from fastssl.methods.base import SSLMethod
from fastssl.methods.momentum import frozen_copy
from fastssl.methods.multicrop import forward_multicrop
from fastssl.models.backbone import Backbone
from fastssl.models.dino_head import DINOHead
from fastssl.registry import METHODS

if TYPE_CHECKING:
    from fastssl.config import Config
    from fastssl.data.views import ViewSpec


def dino_loss(student_out: torch.Tensor, teacher_out: torch.Tensor, center: torch.Tensor,
              student_temp: float, teacher_temp: float) -> torch.Tensor:
    """Cross-entropy H(P_t(global j), P_s(crop v)) averaged over all pairs with v != j.

    student_out [(2 + K) n, out], teacher_out [2 n, out] (crop-major), center [1, out].
    """
    p_t = F.softmax((teacher_out.float() - center) / teacher_temp, dim=-1).detach()  # [2 n, out]
    return crop_pairs_loss(student_out, p_t, student_temp)


def crop_pairs_loss(student_out: torch.Tensor, teacher_probs: torch.Tensor, student_temp: float) -> torch.Tensor:
    """DINO's loss on given teacher targets: student_out [(2 + K) n, out], teacher_probs [2 n, out]."""
    n_crops = student_out.shape[0] // (teacher_probs.shape[0] // 2)
    log_p_s = F.log_softmax(student_out.float() / student_temp, dim=-1).chunk(n_crops)  # (2 + K) x [n, out]
    p_t = teacher_probs.float().chunk(2)  # 2 x [n, out]
    total, terms = student_out.new_zeros((), dtype=torch.float32), 0
    for j, q in enumerate(p_t):
        for v, log_p in enumerate(log_p_s):
            if v == j:
                continue  # a crop is never matched to itself
            total = total + torch.sum(-q * log_p, dim=-1).mean()
            terms += 1
    return total / terms


@METHODS.register("dino", config=DINOConfig)
class DINO(SSLMethod):
    def __init__(self, backbone: Backbone, cfg: DINOConfig):
        super().__init__(backbone, cfg)
        self.head = DINOHead(backbone.num_features, cfg.out_dim, cfg.proj_hidden_dim, cfg.bottleneck_dim,
                             cfg.proj_layers, cfg.norm_last_layer, cfg.use_bn_in_head)
        # The teacher starts as a copy of the student (main_dino.py loads the student's weights)
        # and gets no gradient; it has no stochastic depth (main_dino.py builds it without).
        self.teacher_backbone, self.teacher_head = frozen_copy(backbone), frozen_copy(self.head)
        for m in self.teacher_backbone.modules():
            if hasattr(m, "drop_prob"):  # timm DropPath
                m.drop_prob = 0.0
        self.register_buffer("center", torch.zeros(1, cfg.out_dim))  # DINOLoss.center
        self._batch_centers: list[torch.Tensor] = []  # [1, out] per micro-batch, applied in commit_step

    @classmethod
    def view_spec(cls, cfg: "Config") -> "ViewSpec":
        from fastssl.data.views import views_from_aug

        p = cfg.model.patch_size
        if cfg.model.name.startswith("vit") and cfg.aug.local_crops and cfg.aug.local_size % p:
            raise FastSSLError(f"aug.local_size={cfg.aug.local_size} is not a multiple of model.patch_size={p}; "
                               f"set --aug.local_size to a multiple of {p}")
        return views_from_aug(cfg.aug, cfg.data.image_size, num_global=2)

    def fp32_state(self) -> list[torch.Tensor]:
        return [self.center]

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.teacher_backbone), (self.head, self.teacher_head)]

    # --- schedules (in epochs, as DINO's) --------------------------------------------------------
    def teacher_temp_at(self, epoch: int) -> float:
        """main_dino.py: np.linspace(warmup_teacher_temp, teacher_temp, W) over the first W epochs,
        then teacher_temp (so epoch W - 1 already reaches it)."""
        c = self.cfg
        w = c.warmup_teacher_temp_epochs
        if epoch >= w:
            return c.teacher_temp
        if w == 1:
            return c.warmup_teacher_temp
        return c.warmup_teacher_temp + (c.teacher_temp - c.warmup_teacher_temp) * epoch / (w - 1)

    def frozen_params(self, step: int, epoch: int) -> list[nn.Parameter]:
        # main_dino.py cancel_gradients_last_layer: no update of the prototypes in the first
        # epoch(s), which the paper found to help training start. The base class's after_backward
        # drops their gradients (DDP, FSDP2); DeepSpeed ZeRO freezes them in its partitions.
        if epoch < self.cfg.freeze_last_layer_epochs:
            return [p for p in self.head.last_layer.parameters() if p.requires_grad]
        return []

    # --- forward ---------------------------------------------------------------------------------
    def forward_student(self, crops: list[torch.Tensor]) -> torch.Tensor:
        return forward_multicrop(self.backbone, crops, head=self.head)  # [(2 + K) n, out]

    @torch.no_grad()
    def forward_teacher(self, global_crops: list[torch.Tensor]) -> torch.Tensor:
        return forward_multicrop(self.teacher_backbone, global_crops, head=self.teacher_head)  # [2 n, out]

    @torch.no_grad()
    def batch_center(self, teacher_out: torch.Tensor) -> torch.Tensor:
        """The teacher's mean output over the global batch [1, out] (DINOLoss.update_center).

        Ranks hold equal batches, so the mean of the per-rank means is the global mean.
        """
        return all_reduce_mean(teacher_out.float().mean(dim=0, keepdim=True))  # [1, out]

    def start_step(self) -> None:
        self._batch_centers = []

    @torch.no_grad()
    def commit_step(self, step: int, schedule_len: float) -> None:
        """DINOLoss.update_center: c <- m c + (1 - m) mean(teacher_out over the global batch), once
        per step, from the mean of its (equal) micro-batches' centres; only after a successful step
        (a skipped non-finite step leaves it)."""
        if self._batch_centers:
            batch_center = torch.stack(self._batch_centers).mean(dim=0)  # [1, out]
            m = self.cfg.center_momentum
            self.center.copy_(self.center * m + batch_center * (1 - m))
        self._batch_centers = []

    def forward(self, views: list[torch.Tensor], step: int = 0, schedule_len: float = 1.0) -> dict[str, torch.Tensor]:
        if len(views) < 2:
            raise FastSSLError(f"DINO needs 2 global views per image, got {len(views)}; the loader must use DINO.view_spec")
        # views: 2 global [n, 3, G, G], then K local [n, 3, l, l]
        student_out = self.forward_student(views)  # [(2 + K) n, out]
        teacher_out = self.forward_teacher(views[:2])  # [2 n, out]: the teacher sees global crops only
        temp = self.teacher_temp_at(self.epoch_of(step))
        loss = dino_loss(student_out, teacher_out, self.center, self.cfg.student_temp, temp)
        self._batch_centers.append(self.batch_center(teacher_out))
        return {"loss": loss, "teacher_entropy": self.teacher_entropy(teacher_out, temp),
                "teacher_temp": torch.tensor(temp), "momentum": torch.tensor(self.momentum_at(step, schedule_len))}

    @torch.no_grad()
    def teacher_entropy(self, teacher_out: torch.Tensor, temp: float) -> torch.Tensor:
        """Mean entropy of the teacher's targets, DINO's collapse monitor (Caron et al. 2021, Fig. 7):
        ln(out_dim) is uniform collapse (centering won), 0 is one-prototype collapse (sharpening won)."""
        p = F.softmax((teacher_out.float() - self.center) / temp, dim=-1)  # [2 n, out]
        return -(p * p.clamp_min(1e-12).log()).sum(-1).mean()
