"""`--train.time_budget`: lay the whole schedule over the steps that fit a wall-clock budget.

A run with a budget starts with a provisional step count (from epochs / max_steps). After
`warmup_steps_to_measure` steps (the first one excluded: it pays for allocation and compilation)
the planner takes the median step time, subtracts what the run still has to do after its last
step (the final checkpoint and the end-of-run evaluation, as a fraction of the budget), and fixes
the total once: the cosine learning rate and EMA momentum then end exactly at the last step,
and the run stops on time with a finished schedule and a checkpoint.

The plan is measured once and never revised, so a run is reproducible from its plan: the chosen
total is saved with every checkpoint, and a resumed run keeps it instead of measuring again.
Measurement happens inside the learning-rate warm-up (linear, independent of the total), so the
steps taken before the plan is fixed follow the same schedule as after it.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from fastssl.errors import FastSSLError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """'90s', '10m', '1.5h', '2h30m', or plain seconds -> seconds. '' or '0' -> 0 (no budget)."""
    s = str(text).strip().lower()
    if s in ("", "0"):
        return 0.0
    try:
        return float(s)
    except ValueError:
        pass
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhd])", s)
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([smhd])", "", s).strip():
        raise FastSSLError(f"--train.time_budget={text!r} is not a duration; write e.g. 10m, 2h, 1h30m or 600 (seconds)")
    return sum(float(n) * _UNITS[u] for n, u in parts)


@dataclass
class TimeBudgetPlanner:
    """Decides the total step count once, from measured step times."""

    # Until the plan is fixed: large enough that no schedule built on it has left its warm-up.
    PROVISIONAL_TOTAL = 10**9

    budget_s: float
    # --train.max_steps: an upper limit on the plan when set (0 = none).
    cap: int = 0
    # Steps timed before deciding (the first is dropped as warm-up).
    measure_steps: int = 6
    # Share of the budget kept for the final checkpoint and evaluation after the last step.
    reserve_fraction: float = 0.05
    planned_total: int | None = None
    _times: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.budget_s <= 0:
            raise FastSSLError("--train.time_budget must be a positive duration such as 10m")
        if self.measure_steps < 2:
            raise ValueError("measure_steps must be >= 2 (the first step is dropped)")

    @property
    def decided(self) -> bool:
        return self.planned_total is not None

    def observe(self, step_seconds: float, steps_done: int, elapsed_s: float) -> int | None:
        """Record one step's time; returns the total step count once it is decided, else None."""
        if self.decided:
            return self.planned_total
        self._times.append(step_seconds)
        if len(self._times) < self.measure_steps:
            return None
        self.per_step_s = statistics.median(self._times[1:])
        total = plan_total_steps(self.budget_s, elapsed_s, steps_done, self.per_step_s, self.reserve_fraction)
        self.planned_total = min(total, self.cap) if self.cap else total
        return self.planned_total

    def describe(self) -> str:
        per_step = getattr(self, "per_step_s", None)
        timed = f" at {per_step:.3f} s/step (median of {len(self._times) - 1} timed steps)" if per_step else ""
        capped = f", capped by --train.max_steps={self.cap}" if self.cap and self.planned_total == self.cap else ""
        return f"{self.planned_total} steps{timed}{capped}; the schedule ends at the last of them"


def plan_total_steps(budget_s: float, elapsed_s: float, steps_done: int, per_step_s: float,
                     reserve_fraction: float = 0.05) -> int:
    """Steps done plus the steps that fit in what remains of the budget after the reserve."""
    remaining = budget_s * (1 - reserve_fraction) - elapsed_s
    more = int(remaining // max(per_step_s, 1e-9)) if remaining > 0 else 0
    return max(steps_done + more, steps_done, 1)


def agree_total(total: int) -> int:
    """Rank 0's plan for every rank: step times differ a little between processes."""
    if not (dist.is_available() and dist.is_initialized()):
        return int(total)
    backend = dist.get_backend()
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    t = torch.tensor([int(total)], dtype=torch.int64, device=device)
    dist.broadcast(t, src=0)
    return int(t.item())
