"""Self-supervised methods. Each takes the batch of views and returns {"loss", ...scalars}.

Every method subclasses `fastssl.methods.base.SSLMethod` (the protocol the trainer and the
engines rely on) and reads its own config class (`fastssl.config.methods`).
"""

from __future__ import annotations

from fastssl.config import Config
from fastssl.errors import FastSSLError, did_you_mean
from fastssl.methods.base import SSLMethod
from fastssl.methods.byol import BYOL
from fastssl.methods.simclr import SimCLR
from fastssl.models.backbone import build_backbone

METHODS: dict[str, type[SSLMethod]] = {"simclr": SimCLR, "byol": BYOL}


def method_class(name: str) -> type[SSLMethod]:
    if name not in METHODS:
        raise FastSSLError(f"unknown method.name '{name}'.{did_you_mean(name, METHODS)} Choose one of: {', '.join(METHODS)}")
    return METHODS[name]


def build_method(cfg: Config) -> SSLMethod:
    cls = method_class(cfg.method.name)
    backbone = build_backbone(cfg.model.name, cfg.data.image_size, cfg.model.patch_size, cfg.model.drop_path)
    return cls(backbone, cfg.method)


__all__ = ["METHODS", "BYOL", "SSLMethod", "SimCLR", "build_method", "method_class"]
