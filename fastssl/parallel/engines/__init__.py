"""Parallelism engines behind one interface (base.py), chosen by `--dist.strategy`.

    ddp        every rank holds everything; gradients all-reduced (torch DDP)
    fsdp       parameters, gradients and optimizer state sharded per block (FSDP2 fully_shard)
    deepspeed  DeepSpeed ZeRO stage `--dist.zero_stage` (1: optimizer state, 2: + gradients,
               3: + parameters); the `deepspeed` package is imported only when chosen

Each engine class registers itself (`@ENGINES.register("ddp")`, fastssl/registry.py); importing
this package imports all three.
"""

from __future__ import annotations

from fastssl.config import Config
from fastssl.distributed import World
# Imported in the order `--dist.strategy` lists them; each registers its engine.
from fastssl.parallel.engines import ddp as _ddp  # noqa: F401
from fastssl.parallel.engines import fsdp as _fsdp  # noqa: F401, I001
from fastssl.parallel.engines import deepspeed as _deepspeed  # noqa: F401, I001
from fastssl.parallel.engines.base import Engine, StepReport
from fastssl.registry import ENGINES


def build_engine(cfg: Config, world: World) -> Engine:
    """The engine for `cfg.dist.strategy` (checked, with `--dist.zero_stage`, in `Config.validate()`);
    fails early (one line) on what the user can fix, such as a missing DeepSpeed."""
    return ENGINES.get(cfg.dist.strategy)(cfg, world)


__all__ = ["ENGINES", "Engine", "StepReport", "build_engine"]
