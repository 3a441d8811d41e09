"""`--train.time_budget`: lay the whole schedule over the steps that fit a wall-clock budget.

A run with a budget starts with a provisional step count (from epochs / max_steps). After
`warmup_steps_to_measure` steps (the first one excluded: it pays for allocation and compilation)
the planner takes the median step time, subtracts what the run still has to do after its last
step (the final checkpoint and the end-of-run evaluation, as a fraction of the budget), and fixes
the total: the cosine learning rate and EMA momentum then end exactly at the last step, and the
run stops on time with a finished schedule and a checkpoint. Measurement happens inside the
learning-rate warm-up (linear, independent of the total), so the steps taken before the plan is
fixed follow the same schedule as after it.

A plan measured once is only as good as the machine stays: a node that gets busier (another job,
thermal throttling, a slower filesystem) makes every later step slower and the run overruns. So the
planner keeps measuring the pace (training seconds per step over the last few checks, checkpoints
and epoch starts included) and, when the projected end drifts from the budget by more than
`--train.time_budget_tolerance` of it, re-plans the remaining steps. The schedule is not restarted:
a re-plan maps the remaining steps onto the remaining part of the *same* schedule (a piecewise-
linear `schedule step` of the real step), so the learning rate and momentum stay continuous and
still end exactly at the last step. Tolerance 0 plans once and never revises.

The plan (its end, its schedule length and the re-plan knots) is saved with every checkpoint, and a
resumed run keeps it as saved: it neither measures again nor re-plans, since the time already spent
before the restart is not known to the new process.
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
    """Decides the total step count from measured step times, and revises it when the pace drifts."""

    # Until the plan is fixed: large enough that no schedule built on it has left its warm-up.
    PROVISIONAL_TOTAL = 10**9
    # Pace checks per run: a re-plan needs a drift that lasts, not one slow checkpoint.
    CHECKS_PER_RUN = 50
    # The pace is measured over this many check intervals (about 4% of the run): long enough that
    # an epoch start or a checkpoint does not read as a drift, short enough to follow one quickly.
    PACE_WINDOW = 2

    budget_s: float
    # --train.max_steps: an upper limit on the plan when set (0 = none).
    cap: int = 0
    # Steps timed before deciding (the first is dropped as warm-up).
    measure_steps: int = 6
    # Share of the budget kept for the final checkpoint and evaluation after the last step.
    reserve_fraction: float = 0.05
    # Re-plan when the projected end misses the budget by more than this share of it (0 = never).
    tolerance: float = 0.0
    # No re-plan before this step: the learning-rate warm-up is counted in real steps.
    hold_until: int = 0
    planned_total: int | None = None
    _times: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.budget_s <= 0:
            raise FastSSLError("--train.time_budget must be a positive duration such as 10m")
        if self.measure_steps < 2:
            raise ValueError("measure_steps must be >= 2 (the first step is dropped)")
        if self.tolerance < 0:
            raise FastSSLError(f"--train.time_budget_tolerance={self.tolerance} must be >= 0 (0 = plan once)")
        # The schedule: real step -> schedule step, piecewise linear through `_knots`, reaching
        # `schedule_total` (the first plan's length) at `planned_total`.
        self.schedule_total = self.planned_total
        self._knots: list[tuple[int, float]] = [(0, 0.0)]
        self._paces: list[tuple[int, float]] = []
        self._check_every = 0
        self.replans = 0

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
        self.fix(min(total, self.cap) if self.cap else total, steps_done, elapsed_s)
        return self.planned_total

    def fix(self, total: int, steps_done: int, elapsed_s: float) -> None:
        """Adopt `total` (rank 0's, on every rank) as the plan the schedule is laid over."""
        self.planned_total = self.schedule_total = int(total)
        self._knots = [(0, 0.0)]
        self._check_every = max(1, self.planned_total // self.CHECKS_PER_RUN)
        self._paces = [(steps_done, elapsed_s)]

    # --- drift --------------------------------------------------------------------------------
    def replan_due(self, step: int) -> bool:
        """The same answer on every rank: it depends on the step and the agreed plan only."""
        return (self.tolerance > 0 and self._check_every > 0 and step >= max(self.hold_until, 1)
                and step < self.planned_total and step % self._check_every == 0)

    def propose(self, steps_done: int, elapsed_s: float) -> int:
        """The total that ends on time at the recent pace, or the current one while within tolerance."""
        self._paces = (self._paces + [(steps_done, elapsed_s)])[-(self.PACE_WINDOW + 1):]
        (s0, t0), (s1, t1) = self._paces[0], self._paces[-1]
        if s1 <= s0:
            return self.planned_total
        pace = (t1 - t0) / (s1 - s0)
        projected = elapsed_s + (self.planned_total - steps_done) * pace
        if abs(projected - self.budget_s * (1 - self.reserve_fraction)) <= self.tolerance * self.budget_s:
            return self.planned_total
        total = plan_total_steps(self.budget_s, elapsed_s, steps_done, pace, self.reserve_fraction)
        total = min(total, self.cap) if self.cap else total
        return max(total, steps_done + 1)  # at least one more step, on which the schedule ends

    def apply(self, steps_done: int, total: int) -> bool:
        """Move the end to `total`, keeping the schedule continuous at `steps_done`."""
        if total == self.planned_total:
            return False
        self._knots.append((steps_done, self.schedule_step(steps_done)))
        self.planned_total = int(total)
        self.replans += 1
        return True

    # --- the schedule -------------------------------------------------------------------------
    def schedule_step(self, step: int) -> float:
        """Where real step `step` sits on the schedule of length `schedule_total`."""
        if len(self._knots) == 1:
            return float(step)
        for (s0, v0), (s1, v1) in zip(self._knots, self._knots[1:]):
            if step < s1:  # a stretch that ended at a later re-plan
                return v0 + (step - s0) * (v1 - v0) / (s1 - s0)
        s_k, v_k = self._knots[-1]
        return v_k + (step - s_k) * (self.schedule_total - v_k) / max(self.planned_total - s_k, 1)

    def schedule_length(self, step: int) -> float:
        """The `max_steps` that puts a `step / max_steps` schedule (EMA momentum) at `schedule_step`."""
        if len(self._knots) == 1 or step <= 0:
            return self.schedule_total
        return step * self.schedule_total / max(self.schedule_step(step), 1e-12)

    def state_dict(self) -> dict:
        return {"planned_total": self.planned_total, "schedule_total": self.schedule_total,
                "knots": [list(k) for k in self._knots], "replans": self.replans}

    def load_state_dict(self, state: dict) -> None:
        """A resumed run keeps the saved plan and does not re-plan (its earlier time is unknown)."""
        self.planned_total = int(state["planned_total"])
        self.schedule_total = int(state.get("schedule_total") or self.planned_total)
        self._knots = [(int(s), float(v)) for s, v in state.get("knots") or [(0, 0.0)]]
        self.replans = int(state.get("replans", 0))
        self._check_every = 0

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


# --- the step plan the trainer asks (fastssl/train/trainer.py) ------------------------------------
@dataclass
class ScheduleAt:
    """Where a real step sits on the lr / momentum schedule."""

    step: float
    total: float
    warmup: float
    momentum_len: float  # the `max_steps` of step/max_steps schedules (EMA momentum)


@dataclass
class PlanEvent:
    kind: str  # "plan" (fixed after the first measured steps) | "replan"
    total_steps: int
    message: str
    record: dict


class FixedPlan:
    """No budget: the step count follows from epochs / max_steps and never changes."""

    def __init__(self, total_steps: int, warmup_steps: int):
        self.total_steps, self.warmup_steps = total_steps, warmup_steps

    def at(self, step: int) -> ScheduleAt:
        return ScheduleAt(step, self.total_steps, self.warmup_steps, self.total_steps)

    def on_loader_start(self, step: int, now: float) -> None:
        pass

    def after_step(self, step: int, now: float) -> PlanEvent | None:
        return None

    def account(self, kind: str, seconds: float) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def summary(self) -> dict:
        return {}


class TimeBudget(FixedPlan):
    """`--train.time_budget`: a `TimeBudgetPlanner` fed with the trainer's clock.

    Periodic kNN time is kept off the budget clock (`account("knn", s)`); checkpoints count.
    """

    def __init__(self, planner: TimeBudgetPlanner, provisional_total: int, warmup_steps: int):
        super().__init__(provisional_total, warmup_steps)
        self.planner = planner
        self._t_start: float | None = None
        self._t_last = 0.0
        self._off_clock = 0.0

    def at(self, step: int) -> ScheduleAt:
        p = self.planner
        if not p.decided:
            return super().at(step)
        return ScheduleAt(p.schedule_step(step), p.schedule_total, self.warmup_steps, p.schedule_length(step))

    def on_loader_start(self, step: int, now: float) -> None:
        if self._t_start is None:
            self._t_start = now
        self._t_last = now  # an epoch start's set-up is not a step's time

    def account(self, kind: str, seconds: float) -> None:
        if kind == "knn":
            self._off_clock += seconds
            self._t_last += seconds

    def after_step(self, step: int, now: float) -> PlanEvent | None:
        p = self.planner
        dt, self._t_last = now - self._t_last, now
        train_s = now - (self._t_start if self._t_start is not None else now) - self._off_clock
        if not p.decided:
            if p.observe(dt, step, train_s) is None:
                return None
            p.fix(agree_total(p.planned_total), step, train_s)
            return self._event("plan", p.describe(), train_s)
        if p.replan_due(step):
            before = p.planned_total
            if p.apply(step, agree_total(p.propose(step, train_s))):
                return self._event("replan", f"the pace drifted; re-planned {before} -> {p.planned_total} steps at "
                                   f"step {step} (the schedule is compressed or stretched, not restarted)", train_s)
        return None

    def _event(self, kind: str, message: str, train_s: float) -> PlanEvent:
        self.total_steps = self.planner.planned_total
        return PlanEvent(kind, self.total_steps, message,
                         {"planned_total_steps": self.total_steps, "train_seconds": round(train_s, 2)})

    def state_dict(self) -> dict:
        return self.planner.state_dict() if self.planner.decided else {}

    def load_state_dict(self, state: dict) -> None:
        """The saved plan, kept (with its re-plans) and not revised."""
        if state.get("planned_total"):
            self.planner.load_state_dict(state)
            self.total_steps = self.planner.planned_total

    def summary(self) -> dict:
        return {"time_budget_s": self.planner.budget_s, "replans": self.planner.replans}


def build_plan(cfg, steps_per_epoch: int, warmup_steps: int, prefetch_depth: int, now: float) -> FixedPlan:
    """The trainer's step plan: fixed, or laid over `--train.time_budget`."""
    total = cfg.train.epochs * steps_per_epoch
    if cfg.train.max_steps:
        total = min(total, cfg.train.max_steps) if cfg.train.epochs else cfg.train.max_steps
    budget_s = parse_duration(cfg.train.time_budget)
    if not budget_s:
        return FixedPlan(total, warmup_steps)
    # The budget decides the step count; --train.max_steps, if set, still caps it. Until the plan is
    # fixed the total is provisional; the warm-up measured meanwhile does not depend on it.
    planner = TimeBudgetPlanner(budget_s, cap=cfg.train.max_steps, tolerance=cfg.train.time_budget_tolerance,
                                hold_until=warmup_steps)
    return TimeBudget(planner, cfg.train.max_steps or planner.PROVISIONAL_TOTAL, warmup_steps)
