"""Recipes: named, complete configs. `--recipe NAME` starts from one; overrides go on top.

One module per method family (simclr.py, byol.py, ...); each recipe is a function returning a
`Config`, registered at its definition (`@RECIPES.register("simclr-resnet50-imagenet")`,
fastssl/registry.py), whose docstring's first line is the summary `fastssl recipes` prints. Every
recipe says in a comment where its numbers come from (paper or repository). Recipes start from the
data block of the dataset they train on (datasets.py: CIFAR-10, ImageNet, the built-in digits).
"""

from __future__ import annotations

from fastssl.config import Config

# Imported in the order `fastssl recipes` lists the families; each registers its recipes.
from fastssl.recipes import simclr as _simclr  # noqa: F401
from fastssl.recipes import byol as _byol  # noqa: F401, I001
from fastssl.recipes import mocov2 as _mocov2  # noqa: F401, I001
from fastssl.recipes import mocov3 as _mocov3  # noqa: F401, I001
from fastssl.recipes import mae as _mae  # noqa: F401, I001
from fastssl.recipes import dino as _dino  # noqa: F401, I001
from fastssl.recipes import dinov2 as _dinov2  # noqa: F401, I001
from fastssl.recipes import ijepa as _ijepa  # noqa: F401, I001
from fastssl.recipes import noncontrastive as _noncontrastive  # noqa: F401, I001
from fastssl.recipes import pretext as _pretext  # noqa: F401, I001
from fastssl.recipes import clustering as _clustering  # noqa: F401, I001
from fastssl.recipes import time_to_accuracy as _time_to_accuracy  # noqa: F401, I001
from fastssl.registry import RECIPES


def get_recipe(name: str) -> Config:
    cfg = RECIPES.get(name)()
    cfg.recipe = name
    return cfg


__all__ = ["RECIPES", "get_recipe"]
