"""Self-supervised methods. Each takes the batch of views and returns {"loss", ...scalars}.

Every method subclasses `fastssl.methods.base.SSLMethod` (the protocol the trainer and the
engines rely on) and reads its own config class (`fastssl.config.methods`).
"""

from __future__ import annotations

from fastssl.config import Config
from fastssl.errors import FastSSLError, did_you_mean
from fastssl.methods.barlow_twins import BarlowTwins
from fastssl.methods.base import SSLMethod
from fastssl.methods.byol import BYOL
from fastssl.methods.colorize import Colorize
from fastssl.methods.cpc import CPC
from fastssl.methods.deepcluster import DeepClusterV2
from fastssl.methods.dino import DINO
from fastssl.methods.ijepa import IJEPA
from fastssl.methods.jigsaw import Jigsaw
from fastssl.methods.mae import MAE
from fastssl.methods.mocov2 import MoCoV2
from fastssl.methods.mocov3 import MoCoV3
from fastssl.methods.rotation import Rotation
from fastssl.methods.simclr import SimCLR
from fastssl.methods.simsiam import SimSiam
from fastssl.methods.swav import SwAV
from fastssl.methods.vicreg import VICReg
from fastssl.models.backbone import build_backbone

METHODS: dict[str, type[SSLMethod]] = {"simclr": SimCLR, "byol": BYOL, "mae": MAE, "dino": DINO,
                                     "mocov2": MoCoV2, "mocov3": MoCoV3}
METHODS.update({"swav": SwAV, "deepcluster": DeepClusterV2})
METHODS.update({"rotation": Rotation, "jigsaw": Jigsaw, "colorize": Colorize, "cpc": CPC})
METHODS.update({"vicreg": VICReg, "barlowtwins": BarlowTwins, "simsiam": SimSiam})
METHODS.update({"ijepa": IJEPA})


def method_class(name: str) -> type[SSLMethod]:
    if name not in METHODS:
        raise FastSSLError(f"unknown method.name '{name}'.{did_you_mean(name, METHODS)} Choose one of: {', '.join(METHODS)}")
    return METHODS[name]


def build_method(cfg: Config) -> SSLMethod:
    cls = method_class(cfg.method.name)
    backbone = build_backbone(cfg.model.name, cfg.data.image_size, cfg.model.patch_size, cfg.model.drop_path)
    return cls(backbone, cfg.method)


__all__ = ["METHODS", "BarlowTwins", "SimSiam", "VICReg", "CPC", "Colorize", "Jigsaw", "Rotation", "BYOL", "DeepClusterV2", "SwAV", "DINO", "IJEPA", "MAE", "MoCoV2", "MoCoV3", "SSLMethod", "SimCLR", "build_method", "method_class"]
