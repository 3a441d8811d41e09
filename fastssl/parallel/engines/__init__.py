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
from fastssl.errors import FastSSLError
# Imported in the order `--dist.strategy` lists them; each registers its engine.
from fastssl.parallel.engines import ddp as _ddp  # noqa: F401
from fastssl.parallel.engines import fsdp as _fsdp  # noqa: F401, I001
from fastssl.parallel.engines import deepspeed as _deepspeed  # noqa: F401, I001
from fastssl.parallel.engines.base import Engine, StepReport
from fastssl.registry import ENGINES


def check_strategy(cfg: Config) -> None:
    ENGINES.entry(cfg.dist.strategy)
    if cfg.dist.zero_stage not in (1, 2, 3):
        raise FastSSLError(f"--dist.zero_stage={cfg.dist.zero_stage} is not a ZeRO stage; use 1, 2 or 3")


def build_engine(cfg: Config, world: World) -> Engine:
    """The engine for `cfg.dist.strategy`; fails early (one line) on what the user can fix."""
    check_strategy(cfg)
    return ENGINES.get(cfg.dist.strategy)(cfg, world)


__all__ = ["ENGINES", "Engine", "StepReport", "build_engine", "check_strategy"]
