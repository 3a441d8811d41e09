"""DINOv2's method config (Oquab et al. 2023), registered into METHOD_CONFIGS (see methods.py).

It extends DINO's: the image-level loss, its head, EMA teacher and temperature schedule are DINO's
keys with DINOv2's defaults; the iBOT, KoLeo and centring keys are new. Defaults are
facebookresearch/dinov2 dinov2/configs/ssl_default_config.yaml unless cited otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastssl.config.methods import DINOConfig

CENTERINGS = ("sinkhorn_knopp", "centering")


@dataclass
class DINOv2Config(DINOConfig):
    name: str = "dinov2"
    # dino: head_n_prototypes 65536, head_hidden_dim 2048, head_bottleneck_dim 256, head_nlayers 3.
    out_dim: int = 65536
    proj_hidden_dim: int = 2048
    bottleneck_dim: int = 256
    proj_layers: int = 3
    # dinov2/layers/dino_head.py: the last layer's weight norm g starts at 1 and is trained.
    norm_last_layer: bool = False
    # teacher: momentum_teacher 0.992 -> final_momentum_teacher 1 (cosine); warmup_teacher_temp
    # 0.04 -> teacher_temp 0.07 over warmup_teacher_temp_epochs 30; dino_clstoken_loss.py student_temp 0.1.
    momentum_base: float = 0.992
    momentum_final: float = 1.0
    student_temp: float = 0.1
    warmup_teacher_temp: float = 0.04
    teacher_temp: float = 0.07
    warmup_teacher_temp_epochs: int = 30
    # optim: freeze_last_layer_epochs 1 (every head's last layer).
    freeze_last_layer_epochs: int = 1
    # sinkhorn_knopp | centering. Sinkhorn-Knopp as the paper (Sec. 4) and its released models'
    # configs (configs/train/vitl14.yaml, vitg14.yaml: train.centering sinkhorn_knopp); centering is
    # DINO's EMA centre (ssl_default_config.yaml's value), with center_momentum 0.9.
    centering: str = "sinkhorn_knopp"
    sinkhorn_iterations: int = 3  # sinkhorn_knopp_teacher(n_iterations=3)
    center_momentum: float = 0.9
    # dino.koleo_loss_weight 0.1, on the student's class tokens of each global crop.
    koleo_weight: float = 0.1
    # ibot: loss_weight 1.0, mask_ratio_min_max (0.1, 0.5), mask_sample_probability 0.5.
    ibot_weight: float = 1.0
    mask_ratio_min: float = 0.1
    mask_ratio_max: float = 0.5
    mask_sample_probability: float = 0.5
    # ibot.separate_head false: patch tokens go through the DINO head; true builds an iBOT head of
    # ibot_out_dim prototypes (head_n_prototypes 65536; the rest as the DINO head).
    ibot_separate_head: bool = False
    ibot_out_dim: int = 65536

    def check(self) -> list[tuple[str, str]]:
        problems = super().check()
        if self.centering not in CENTERINGS:
            problems.append(("centering", f"must be one of {', '.join(CENTERINGS)}, got {self.centering!r}"))
        if self.sinkhorn_iterations < 1:
            problems.append(("sinkhorn_iterations", f"must be >= 1, got {self.sinkhorn_iterations}"))
        if not 0 <= self.mask_ratio_min <= self.mask_ratio_max <= 1:
            problems.append(("mask_ratio_min", "must satisfy 0 <= mask_ratio_min <= mask_ratio_max <= 1"))
        if not 0 <= self.mask_sample_probability <= 1:
            problems.append(("mask_sample_probability", f"must be in [0, 1], got {self.mask_sample_probability}"))
        for key in ("koleo_weight", "ibot_weight"):
            if getattr(self, key) < 0:
                problems.append((key, f"must be >= 0 (0 turns the term off), got {getattr(self, key)}"))
        if self.ibot_out_dim < 1:
            problems.append(("ibot_out_dim", f"must be >= 1, got {self.ibot_out_dim}"))
        if not 0 <= self.momentum_base <= self.momentum_final <= 1:
            problems.append(("momentum_base", "must satisfy 0 <= momentum_base <= momentum_final <= 1"))
        return problems
