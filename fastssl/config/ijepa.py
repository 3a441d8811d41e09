"""I-JEPA's method config (Assran et al. 2023). Defaults are facebookresearch/ijepa
configs/in1k_vith14_ep300.yaml (ViT-H/14, ImageNet-1k, 300 epochs) unless cited otherwise."""

from __future__ import annotations

from dataclasses import dataclass

from fastssl.config.methods import MethodConfig


def _range_problem(lo_hi: tuple[float, float], lo: float, hi: float) -> str | None:
    a, b = lo_hi
    if not lo < a <= b <= hi:
        return f"must satisfy {lo} < low <= high <= {hi}, got {lo_hi}"
    return None


@dataclass
class IJEPAConfig(MethodConfig):
    name: str = "ijepa"
    # Predictor: meta.pred_depth 12, meta.pred_emb_dim 384; its heads are the encoder's
    # (src/helper.py init_model: num_heads=encoder.num_heads; 16 for vit_huge).
    pred_depth: int = 12
    pred_dim: int = 384
    pred_heads: int = 16
    # mask.num_pred_masks 4: M target blocks per image.
    num_targets: int = 4
    # mask.pred_mask_scale (0.15, 0.2) and mask.aspect_ratio (0.75, 1.5): target blocks.
    target_scale: tuple[float, float] = (0.15, 0.2)
    target_aspect: tuple[float, float] = (0.75, 1.5)
    # mask.enc_mask_scale (0.85, 1.0): the context block (square, src/masks/multiblock.py).
    context_scale: tuple[float, float] = (0.85, 1.0)
    # mask.min_keep 10: a block needs more patches than this.
    min_keep: int = 10
    # optimization.ema [0.996, 1.0], raised *linearly* over training (src/train.py momentum_scheduler).
    momentum_base: float = 0.996
    momentum_final: float = 1.0
    # smooth_l1 | l2. The paper says L2 (Sec. 3, Eq. 1); the reference code uses
    # F.smooth_l1_loss(z, h) (src/train.py loss_fn, beta 1), which fastssl follows.
    loss: str = "smooth_l1"

    def check(self) -> list[tuple[str, str]]:
        problems = super().check()
        for key in ("pred_depth", "pred_dim", "pred_heads", "num_targets"):
            if getattr(self, key) < 1:
                problems.append((key, f"must be >= 1, got {getattr(self, key)}"))
        if self.min_keep < 0:
            problems.append(("min_keep", f"must be >= 0, got {self.min_keep}"))
        for key, lo, hi in (("target_scale", 0, 1), ("context_scale", 0, 1), ("target_aspect", 0, float("inf"))):
            problem = _range_problem(getattr(self, key), lo, hi)
            if problem:
                problems.append((key, problem))
        if not 0 <= self.momentum_base <= self.momentum_final <= 1:
            problems.append(("momentum_base", "must satisfy 0 <= momentum_base <= momentum_final <= 1"))
        if self.loss not in ("smooth_l1", "l2"):
            problems.append(("loss", f"must be smooth_l1 or l2, got {self.loss!r}"))
        return problems
