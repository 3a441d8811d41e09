"""When the trainer writes checkpoints, and what goes into their train state.

Checkpoints are written at `train.ckpt_every_steps`, at each epoch's end, at the run's end and at a
stop (a signal: fastssl/stop_signals.py). Each is collective (every rank writes its shards) and
atomic (fastssl/checkpoint/layout.py); the train state holds what a resume needs beyond the
tensors: the step, epoch, bad-step count, the config, the strategy, the time-budget plan and
every rank's loader position (`loader`: one state per rank, see PretrainLoader.state_dict).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from fastssl.checkpoint import save_checkpoint, step_of
from fastssl.config import Config
from fastssl.distributed import World, is_dist
from fastssl.errors import FastSSLError
from fastssl.parallel.engines import Engine
from fastssl.train.replicas import check_replicas


class Checkpointer:
    def __init__(self, cfg: Config, world: World, engine: Engine, plan: Any, last: Path | None, loader: Any,
                 extra_state: Callable[[], dict[str, Any]] = dict):
        self.cfg, self.world, self.engine, self.plan, self.loader = cfg, world, engine, plan, loader
        self.extra_state = extra_state  # more train-state entries: the online probe's (online_probe.py)
        self.out = Path(cfg.train.out)
        self.last = last  # the newest checkpoint of this run (the resumed one until a save)
        self.seconds = 0.0  # wall time spent saving

    def due(self, step: int) -> bool:
        every = self.cfg.train.ckpt_every_steps
        return bool(every) and step % every == 0

    def has(self, step: int) -> bool:
        return self.last is not None and step_of(self.last) == step

    def save(self, step: int, epoch: int, bad_steps: int) -> Path:
        """Collective: every rank calls it at the same step."""
        t0 = time.perf_counter()
        check_replicas(self.engine)
        plan = self.plan.state_dict()
        loader = _gather(self.loader.state_dict(epoch, step - epoch * len(self.loader)), self.world)
        try:
            self.last = save_checkpoint(self.out, step, self.engine.model_state(), self.engine.optimizer_state(), {
                "config": self.cfg.to_dict(), "step": step, "epoch": epoch, "bad_steps": bad_steps,
                "strategy": self.cfg.dist.strategy, "zero_stage": self.cfg.dist.zero_stage,
                "world_size": self.world.world_size, "time_budget_plan": plan,
                "planned_total_steps": plan.get("planned_total"), "loader": loader, **self.extra_state(),
            }, self.cfg.train.keep_last, dims=self.world.dims)
        except FastSSLError as e:
            # The user's next question is what survived: the save removed its torn folder, nothing else.
            raise FastSSLError(f"{e}; {self.describe_last()}"
                               + (", continue from it with --resume" if self.last else "")) from None
        spent = time.perf_counter() - t0
        self.seconds += spent
        self.plan.account("checkpoint", spent)
        return self.last

    def describe_last(self) -> str:
        return f"the last good checkpoint is {self.last}" if self.last else "no checkpoint was written yet"


def _gather(obj: Any, world: World) -> list[Any]:
    """Every rank's `obj`, in rank order (collective); `[obj]` without a process group."""
    if not is_dist():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world.world_size
    dist.all_gather_object(out, obj)
    return out
