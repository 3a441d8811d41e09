"""Self-supervised methods. Each takes the batch of views and returns {"loss", ...scalars}.

Every method subclasses `fastssl.methods.base.SSLMethod` (the protocol the trainer and the
engines rely on) and registers itself with its config class at the class
(`@METHODS.register("simclr", config=SimCLRConfig)`, fastssl/registry.py). Importing this package
imports every method module, which fills the registry.
"""

from __future__ import annotations

from fastssl.config import Config
from fastssl.methods.barlow_twins import BarlowTwins
from fastssl.methods.base import SSLMethod
from fastssl.methods.byol import BYOL
from fastssl.methods.colorize import Colorize
from fastssl.methods.cpc import CPC
from fastssl.methods.deepcluster import DeepClusterV2
from fastssl.methods.dino import DINO
from fastssl.methods.dinov2 import DINOv2
from fastssl.methods.ijepa import IJEPA
from fastssl.methods.jigsaw import Jigsaw
from fastssl.methods.mae import MAE
from fastssl.methods.mocov2 import MoCoV2
from fastssl.methods.mocov3 import MoCoV3
from fastssl.methods.nnclr import NNCLR
from fastssl.methods.rotation import Rotation
from fastssl.methods.simclr import SimCLR
from fastssl.methods.simsiam import SimSiam
from fastssl.methods.swav import SwAV
from fastssl.methods.vicreg import VICReg
from fastssl.models.backbone import build_backbone
from fastssl.registry import METHODS


def method_class(name: str) -> type[SSLMethod]:
    return METHODS.get(name)


def build_method(cfg: Config) -> SSLMethod:
    cls = method_class(cfg.method.name)
    backbone = build_backbone(cfg.model.name, cfg.data.image_size, cfg.model.patch_size, cfg.model.drop_path,
                              cfg.model.registers)
    return cls(backbone, cfg.method)


__all__ = ["METHODS", "BarlowTwins", "NNCLR", "SimSiam", "VICReg", "CPC", "Colorize", "Jigsaw", "Rotation",
           "BYOL", "DeepClusterV2", "SwAV", "DINO", "DINOv2", "IJEPA", "MAE", "MoCoV2", "MoCoV3", "SSLMethod",
           "SimCLR", "build_method", "method_class"]
