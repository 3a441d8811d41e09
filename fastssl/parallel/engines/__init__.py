"""Parallelism engines behind one interface (base.py), chosen by `--dist.strategy`.

    ddp        every rank holds everything; gradients all-reduced (torch DDP)
    fsdp       parameters, gradients and optimizer state sharded per block (FSDP2 fully_shard)
    deepspeed  DeepSpeed ZeRO stage `--dist.zero_stage` (1: optimizer state, 2: + gradients,
               3: + parameters), imported only when chosen
"""

from __future__ import annotations

from fastssl.config import Config
from fastssl.distributed import World
from fastssl.errors import FastSSLError, did_you_mean
from fastssl.parallel.engines.base import Engine, StepReport
from fastssl.parallel.parallelize import STRATEGIES


def _ddp():
    from fastssl.parallel.engines.ddp import DDPEngine

    return DDPEngine


def _fsdp():
    from fastssl.parallel.engines.fsdp import FSDPEngine

    return FSDPEngine


def _deepspeed():
    from fastssl.parallel.engines.deepspeed import DeepSpeedEngine

    return DeepSpeedEngine


ENGINES = {"ddp": _ddp, "fsdp": _fsdp, "deepspeed": _deepspeed}
assert tuple(ENGINES) == STRATEGIES


def check_strategy(cfg: Config) -> None:
    s = cfg.dist.strategy
    if s not in ENGINES:
        raise FastSSLError(f"unknown --dist.strategy={s!r}.{did_you_mean(s, STRATEGIES)} Use one of: {', '.join(STRATEGIES)}")
    if cfg.dist.zero_stage not in (1, 2, 3):
        raise FastSSLError(f"--dist.zero_stage={cfg.dist.zero_stage} is not a ZeRO stage; use 1, 2 or 3")


def build_engine(cfg: Config, world: World) -> Engine:
    """The engine for `cfg.dist.strategy`; fails early (one line) on what the user can fix."""
    check_strategy(cfg)
    return ENGINES[cfg.dist.strategy]()(cfg, world)


__all__ = ["ENGINES", "STRATEGIES", "Engine", "StepReport", "build_engine", "check_strategy"]
