"""Recipes: named, complete configs. `--recipe NAME` starts from one; overrides go on top.

One module per method family (simclr.py, byol.py, ...); each exports `RECIPES`, a dict of name ->
function returning a `Config`, whose docstring's first line is the summary `fastssl recipes`
prints. Every recipe says in a comment where its numbers come from (paper or repository).
"""

from __future__ import annotations

import importlib
from typing import Callable

from fastssl.config import Config
from fastssl.errors import FastSSLError, did_you_mean

# Families in the order `fastssl recipes` lists them; a module that is missing is skipped so
# that a family can land later without touching this file.
_FAMILIES = ("simclr", "byol", "mocov2", "mocov3", "mae", "dino", "ijepa", "noncontrastive", "pretext", "clustering",
             "time_to_accuracy")


def _collect() -> dict[str, Callable[[], Config]]:
    out: dict[str, Callable[[], Config]] = {}
    for family in _FAMILIES:
        try:
            mod = importlib.import_module(f"fastssl.recipes.{family}")
        except ModuleNotFoundError as e:
            if e.name != f"fastssl.recipes.{family}":
                raise
            continue
        out.update(mod.RECIPES)
    return out


RECIPES: dict[str, Callable[[], Config]] = _collect()


def get_recipe(name: str) -> Config:
    if name not in RECIPES:
        raise FastSSLError(f"unknown recipe '{name}'.{did_you_mean(name, RECIPES, cutoff=0.4)} Run `fastssl recipes` to list them.")
    cfg = RECIPES[name]()
    cfg.recipe = name
    return cfg


__all__ = ["RECIPES", "get_recipe"]
