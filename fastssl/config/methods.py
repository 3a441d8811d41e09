"""Per-method configs: the `method` section of a run is one of these, chosen by `method.name`.

Each method reads only its own keys, so a key that the chosen method does not use is rejected
(`--method.queue_size` on SimCLR names the method that has it). `--method.name=X` is applied before
the other `--method.*` overrides and switches the section to X's class; keys both classes have
keep a value that was set away from the old class's default (a recipe's projector width, say).

Every default is the paper's or its reference repository's, cited beside it. Recipes
(fastssl/recipes/) change them for smaller budgets.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

from fastssl.config.typed import Section

from fastssl.registry import METHODS


@dataclass
class MethodConfig(Section):
    """Fields every method has. Subclasses add their own."""

    section: ClassVar[str] = "method"

    # The method (`fastssl recipes` lists them); setting it switches this section's keys.
    name: str = ""

    def check(self) -> list[tuple[str, str]]:
        """(key, problem) pairs for values out of range; the CLI names `--method.<key>` in the error."""
        problems = []
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in _POSITIVE and not v > 0:
                problems.append((f.name, f"must be > 0, got {v}"))
            if f.name in _UNIT and not 0 <= v < 1:
                problems.append((f.name, f"must be in [0, 1), got {v}"))
        return problems


# Keys that must be positive / in [0, 1), whichever method has them.
_POSITIVE = {"temperature", "student_temp", "teacher_temp", "warmup_teacher_temp", "proj_dim", "proj_hidden_dim",
             "pred_hidden_dim", "queue_size", "out_dim", "bottleneck_dim", "decoder_dim", "decoder_depth",
             "decoder_heads", "proj_layers", "pred_layers"}
_UNIT = {"mask_ratio", "center_momentum"}


@dataclass
class SimCLRConfig(MethodConfig):
    name: str = "simclr"
    # Chen et al. 2020 (SimCLR v1, Sec. 2.1 and B.9): a 2-layer MLP head, 2048 wide, 128-d output.
    proj_hidden_dim: int = 2048
    proj_dim: int = 128
    proj_layers: int = 2
    # google-research/simclr (tf2/model.py ProjectionHead): the output layer has BatchNorm with
    # scale and no centring (use_bias=False, use_bn=True, center=False).
    proj_last_bn: bool = True
    # google-research/simclr run.py: --temperature=0.1 (the ImageNet setting; CIFAR uses 0.5).
    temperature: float = 0.1
    loss_impl: str = "auto"  # auto | torch | chunked | triton (fastssl.losses)
    # Negatives from every rank, as SimCLR's TPU implementation (cross-replica, Sec. 2.2).
    gather_distributed: bool = True


@dataclass
class BYOLConfig(MethodConfig):
    name: str = "byol"
    # Grill et al. 2020, Sec. 3.3: projector and predictor are Linear(4096)-BN-ReLU-Linear(256).
    proj_hidden_dim: int = 4096
    proj_dim: int = 256
    proj_layers: int = 2
    pred_hidden_dim: int = 4096
    pred_layers: int = 2  # Sec. 3.3: the predictor is Linear-BN-ReLU-Linear (1 = one Linear, no BN)
    # Sec. 3.3: tau_base = 0.996, raised to 1 with a cosine schedule.
    momentum_base: float = 0.996
    momentum_final: float = 1.0


@dataclass
class MoCoV2Config(MethodConfig):
    name: str = "mocov2"
    # facebookresearch/moco main_moco.py with --mlp: fc(2048)-ReLU-fc(128), no BatchNorm in the head.
    proj_hidden_dim: int = 2048
    proj_dim: int = 128
    # main_moco.py: --moco-k 65536, --moco-m 0.999, --moco-t 0.2 (with --mlp --aug-plus --cos).
    queue_size: int = 65536
    momentum_base: float = 0.999
    momentum_final: float = 0.999  # MoCo v2 keeps the momentum constant
    temperature: float = 0.2
    # "shuffle": ShuffleBN (He et al. 2020, Sec. 3.3) for the key encoder; "sync": SyncBatchNorm.
    bn: str = "shuffle"
    # ShuffleBN's BatchNorm groups over the global batch (a multiple of the world size): the paper
    # trains on 8 GPUs, so BN sees 256 / 8 = 32 images; the MoCo CIFAR-10 demo emulates those 8
    # GPUs on one with --bn-splits 8 (facebookresearch/moco colab/moco_cifar10_demo.ipynb).
    shuffle_bn_groups: int = 8
    # Both views as queries and keys (solo-learn / MoCo v3 style); the paper's v2 is asymmetric.
    # solo-learn's mocov2plus.py keeps one queue per view; so does fastssl.
    symmetric: bool = False
    # Negatives: the queue only, as MoCo's Algorithm 1 and builder.py (l_pos and l_neg = q @ queue),
    # solo-learn (losses/moco.py) and lightly. True adds the global batch's other keys
    # (fastssl.losses.info_nce with gather_distributed=True, the Triton kernel on GPU).
    in_batch_negatives: bool = False
    loss_impl: str = "auto"  # for info_nce (in_batch_negatives=True)

    def check(self) -> list[tuple[str, str]]:
        problems = super().check()
        if self.bn not in ("shuffle", "sync"):
            problems.append(("bn", f"must be shuffle or sync, got {self.bn!r}"))
        if self.shuffle_bn_groups < 1:
            problems.append(("shuffle_bn_groups", f"must be >= 1, got {self.shuffle_bn_groups}"))
        if not 0 <= self.momentum_base <= self.momentum_final <= 1:
            problems.append(("momentum_base", "must satisfy 0 <= momentum_base <= momentum_final <= 1"))
        return problems


@dataclass
class MoCoV3Config(MethodConfig):
    name: str = "mocov3"
    # facebookresearch/moco-v3 main_moco.py: --moco-dim 256 --moco-mlp-dim 4096; the projector has
    # 3 layers for ViT and 2 for ResNet, the predictor 2 (moco-v3 builder.py); BN ends each MLP.
    proj_hidden_dim: int = 4096
    proj_dim: int = 256
    proj_layers: int = 0  # 0 = by backbone: 3 for ViT, 2 for ResNet (moco-v3 builder.py)
    pred_hidden_dim: int = 4096
    # main_moco.py: --moco-m 0.99 raised to 1 by a cosine schedule (--moco-m-cos); --moco-t 0.2
    # for ViT (1.0 for ResNet-50 in the paper's Table 15; the ResNet recipe sets it).
    momentum_base: float = 0.99
    momentum_final: float = 1.0
    temperature: float = 0.2
    # Chen, Xie, He 2021, Sec. 4.1: a frozen random patch projection stabilises ViT training
    # (main_moco.py --stop-grad-conv1).
    freeze_patch_embed: bool = True
    loss_impl: str = "auto"  # auto | torch | chunked | triton (fastssl.losses)

    def check(self) -> list[tuple[str, str]]:
        problems = [(k, p) for k, p in super().check() if k != "proj_layers"]  # 0 means "by backbone"
        if self.proj_layers < 0:
            problems.append(("proj_layers", f"must be >= 1, or 0 for the backbone's default, got {self.proj_layers}"))
        if not 0 <= self.momentum_base <= self.momentum_final <= 1:
            problems.append(("momentum_base", "must satisfy 0 <= momentum_base <= momentum_final <= 1"))
        return problems


@dataclass
class MAEConfig(MethodConfig):
    name: str = "mae"
    # He et al. 2022 (facebookresearch/mae main_pretrain.py): --mask_ratio 0.75.
    mask_ratio: float = 0.75
    # models_mae.py mae_vit_base_patch16_dec512d8b: decoder 512 wide, 8 blocks, 16 heads.
    decoder_dim: int = 512
    decoder_depth: int = 8
    decoder_heads: int = 16
    # Per-patch normalised pixels as targets (paper Table 1d; the released checkpoints use it).
    norm_pix_loss: bool = True


@dataclass
class DINOConfig(MethodConfig):
    name: str = "dino"
    # Caron et al. 2021 (facebookresearch/dino main_dino.py): --out_dim 65536, a 3-layer head
    # (hidden 2048, bottleneck 256), weight-normalised last layer with its norm fixed.
    out_dim: int = 65536
    proj_hidden_dim: int = 2048
    bottleneck_dim: int = 256
    proj_layers: int = 3
    norm_last_layer: bool = True
    # main_dino.py: --use_bn_in_head False (no BatchNorm in the head, ViT or ResNet).
    use_bn_in_head: bool = False
    # main_dino.py: --freeze_last_layer 1 (epochs), --momentum_teacher 0.996 -> 1 (cosine).
    freeze_last_layer_epochs: int = 1
    momentum_base: float = 0.996
    momentum_final: float = 1.0
    # main_dino.py: student 0.1; teacher 0.04 warmed up to --teacher_temp over
    # --warmup_teacher_temp_epochs (0.04 -> 0.07 over 30 epochs is the README's ViT-S/16 setting).
    student_temp: float = 0.1
    warmup_teacher_temp: float = 0.04
    teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 0
    # DINOLoss center_momentum=0.9.
    center_momentum: float = 0.9


def method_configs() -> dict[str, type[MethodConfig]]:
    """method.name -> its config class, as each method registered it (fastssl/registry.py)."""
    return {e.name: e.meta["config"] for e in METHODS.entries()}


def method_config_class(name: str) -> type[MethodConfig]:
    return METHODS.entry(name).meta["config"]


def method_keys() -> dict[str, list[str]]:
    """key -> the methods that have it."""
    out: dict[str, list[str]] = {}
    for name, cls in method_configs().items():
        for f in fields(cls):
            out.setdefault(f.name, []).append(name)
    return out
