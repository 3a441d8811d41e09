"""Method configs of the non-contrastive family (VICReg, Barlow Twins, SimSiam) and NNCLR; each
method registers its class with it (fastssl/registry.py).

Every default cites its paper or reference repository. Range checks run in `check()` (called by `Config.validate()`).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastssl.config.methods import MethodConfig


@dataclass
class VICRegConfig(MethodConfig):
    name: str = "vicreg"
    # Bardes, Ponce & LeCun 2022, Sec. 4.1; facebookresearch/vicreg main_vicreg.py --mlp
    # "8192-8192-8192": the expander is Linear-BN-ReLU, Linear-BN-ReLU, Linear (no bias, no BN).
    proj_hidden_dim: int = 8192
    proj_dim: int = 8192
    proj_layers: int = 3
    # main_vicreg.py --sim-coeff 25 --std-coeff 25 --cov-coeff 1 (lambda, mu, nu; paper Sec. 4.1).
    sim_weight: float = 25.0
    var_weight: float = 25.0
    cov_weight: float = 1.0

    def check(self) -> list[tuple[str, str]]:
        problems = super().check()
        for key in ("sim_weight", "var_weight", "cov_weight"):
            if getattr(self, key) < 0:
                problems.append((key, f"must be >= 0, got {getattr(self, key)}"))
        return problems


@dataclass
class BarlowTwinsConfig(MethodConfig):
    name: str = "barlowtwins"
    # Zbontar et al. 2021, Sec. 4; facebookresearch/barlowtwins main.py --projector 8192-8192-8192:
    # Linear(no bias)-BN-ReLU twice, then Linear(no bias); the loss's affine-free BN follows it.
    proj_hidden_dim: int = 8192
    proj_dim: int = 8192
    proj_layers: int = 3
    # main.py --lambd 0.0051 (the paper rounds it to 5e-3), weight of the off-diagonal terms.
    lambd: float = 0.0051

    def check(self) -> list[tuple[str, str]]:
        problems = super().check()
        if self.lambd < 0:
            problems.append(("lambd", f"must be >= 0, got {self.lambd}"))
        return problems


@dataclass
class SimSiamConfig(MethodConfig):
    name: str = "simsiam"
    # Chen & He 2021, Sec. 4.1 / facebookresearch/simsiam builder.py: a 3-layer projector
    # (Linear-BN-ReLU twice at the backbone's width, 2048 for ResNet-50, then Linear and a BN
    # without affine), output dim 2048 (main_simsiam.py --dim 2048).
    proj_hidden_dim: int = 2048
    proj_dim: int = 2048
    proj_layers: int = 3
    # builder.py predictor: Linear(2048, 512, no bias)-BN-ReLU-Linear(512, 2048) (--pred-dim 512,
    # the paper's bottleneck, Sec. 4.1).
    pred_hidden_dim: int = 512
    # main_simsiam.py --fix-pred-lr (paper Sec. 4.1, Table 1: "lr with cosine decay for the
    # predictor" does worse): the predictor keeps the peak lr, the rest follows the schedule.
    fix_pred_lr: bool = True


@dataclass
class NNCLRConfig(MethodConfig):
    name: str = "nnclr"
    # Dwibedi et al. 2021, Sec. 4 (implementation details) and solo-learn methods/nnclr.py: a
    # 3-layer projector (Linear-BN-ReLU twice at 2048, then Linear and BN) with a 256-d output.
    proj_hidden_dim: int = 2048
    proj_dim: int = 256
    proj_layers: int = 3
    # Sec. 4 / solo-learn: a 2-layer predictor, Linear(256, 4096)-BN-ReLU-Linear(4096, 256).
    pred_hidden_dim: int = 4096
    # Sec. 4: a support set (a FIFO queue of past projections) of 98,304 entries, temperature 0.1
    # (solo-learn's ImageNet-100 and CIFAR configs use 65,536 and 0.2). The queue takes whole
    # global batches, so the size must be a multiple of the global batch (checked at the step).
    queue_size: int = 98304
    temperature: float = 0.1
    loss_impl: str = "auto"  # auto | torch | chunked | triton (fastssl.losses.info_nce)
