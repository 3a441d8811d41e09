"""`--train.time_budget`: lay the whole schedule over the steps that fit a wall-clock budget.

A run with a budget starts with a provisional step count (from max_steps, else unbounded). The
planner times only steps whose data was made while the step ran: the first `prefetch_depth` steps
after the run starts, and after a pause (a checkpoint, a periodic kNN), take batches the loader's
workers made ahead, so they are fast and would make the machine look quicker than it is (and the
first ones of an epoch wait for a queue its end emptied). After `measure_steps` timed steps (the
first dropped: it pays for allocation and compilation) their median fixes the total so that the
last step's checkpoint lands at `budget x (1 - reserve_fraction)`, the summary's `train_seconds`
target; the reserve is kept for the end-of-run evaluation. The cosine learning rate and EMA
momentum then end exactly at the last step, and the run stops on time with a finished schedule and
a checkpoint.

A plan measured once is only as good as the machine stays: a node that gets busier (another job,
thermal throttling, a slower filesystem) makes every later step slower and the run overruns. So the
planner keeps measuring (`PaceMeter`): the pace is the mean time of the recent timed steps, and
pauses are costed apart from it, each kind at the mean of its last few: a checkpoint (its save, plus
what the steps after it took beyond the pace) and an epoch start (the gap since the last step, plus
the refill). The projected end is the time spent plus the remaining steps at the pace plus the
checkpoints and epoch starts still to come (the final checkpoint included). When it misses the
target by more than `--train.time_budget_tolerance` of the budget (half that share by the end: a
miss kept then is not corrected later) and by more than a step, the remaining steps are re-planned,
at any check after the plan, warm-up included. The schedule is not restarted: a re-plan maps the
remaining steps onto the remaining part of the *same* schedule (a piecewise-linear `schedule step`
of the real step), so the learning rate and momentum stay continuous and still end exactly at the
last step; a re-plan inside the warm-up shrinks or stretches what is left of it in proportion. A
first plan too short for the recipe's warm-up (`warmup_epochs` in real steps) shrinks the warm-up to
`WARMUP_MAX_SHARE` of the plan, by the same map. Tolerance 0 plans once and never revises. Periodic
kNN time is kept off the budget's clock.

The plan (its end, its schedule length and the re-plan knots) is saved with every checkpoint, and a
resumed run keeps it as saved: it neither measures again nor re-plans, since the time already spent
before the restart is not known to the new process.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from fastssl.config.durations import parse_duration
from fastssl.errors import FastSSLError

@dataclass
class TimeBudgetPlanner:
    """Decides the total step count from measured step times, and revises it when the pace drifts."""

    # Until the plan is fixed: large enough that no schedule built on it has left its warm-up.
    PROVISIONAL_TOTAL = 10**9
    # Pace checks per run: a re-plan needs a drift that lasts, not one slow checkpoint.
    CHECKS_PER_RUN = 50
    # A short budget should spend most of its steps past the warm-up; one whose warm-up is longer
    # than the plan would end at the peak learning rate.
    WARMUP_MAX_SHARE = 0.25

    budget_s: float
    # --train.max_steps: an upper limit on the plan when set (0 = none).
    cap: int = 0
    # Un-prefetched steps timed before deciding (the first is dropped as warm-up).
    measure_steps: int = 6
    # Share of the budget kept after the last step's checkpoint for the end-of-run evaluation.
    reserve_fraction: float = 0.05
    # Re-plan when the projected end misses the budget by more than this share of it (0 = never).
    tolerance: float = 0.0
    # The learning-rate warm-up in real steps (`--optim.warmup_epochs`), shrunk to fit a short plan.
    warmup_steps: int = 0
    planned_total: int | None = None
    _times: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.budget_s <= 0:
            raise FastSSLError("--train.time_budget must be a positive duration such as 10m")
        if self.measure_steps < 2:
            raise ValueError("measure_steps must be >= 2 (the first step is dropped)")
        if self.tolerance < 0:  # users' values are checked in Config.validate()
            raise ValueError(f"tolerance must be >= 0, got {self.tolerance}")
        # The schedule: real step -> schedule step, piecewise linear through `_knots`, reaching
        # `schedule_total` at `planned_total`.
        self.schedule_total = self.planned_total
        self._knots: list[tuple[int, float]] = [(0, 0.0)]
        self._check_every = 0
        self.replans = 0

    @property
    def decided(self) -> bool:
        return self.planned_total is not None

    @property
    def target_s(self) -> float:
        """Training seconds at which the last step's checkpoint should be written."""
        return self.budget_s * (1 - self.reserve_fraction)

    def observe(self, step_seconds: float, steps_done: int, elapsed_s: float) -> int | None:
        """Record one un-prefetched step's time; returns the total once it is decided, else None."""
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
        warmup, done, total = self.warmup_steps, steps_done, self.planned_total
        if warmup > done and warmup > self.WARMUP_MAX_SHARE * total and total > done:
            # Up to `done` the steps followed the warm-up; from there the rest of the plan covers a
            # longer schedule whose warm-up ends at WARMUP_MAX_SHARE of the plan (or the next step).
            ends = min(max(done + 1, round(self.WARMUP_MAX_SHARE * total)), total)
            self._knots = [(0, 0.0), (done, float(done))]
            self.schedule_total = done + (warmup - done) * (total - done) / (ends - done)

    # --- drift --------------------------------------------------------------------------------
    def replan_due(self, step: int) -> bool:
        """The same answer on every rank: it depends on the step and the agreed plan only."""
        return (self.tolerance > 0 and self._check_every > 0 and step >= 1
                and step < self.planned_total and step % self._check_every == 0)

    def propose(self, steps_done: int, elapsed_s: float, per_step_s: float, still_to_pay_s: float = 0.0) -> int:
        """The total that ends on time at `per_step_s`, or the current one while within tolerance.

        `still_to_pay_s` is time the run spends whatever its length (the final checkpoint).
        """
        if per_step_s <= 0:
            return self.planned_total
        projected = elapsed_s + still_to_pay_s + (self.planned_total - steps_done) * per_step_s
        # The miss accepted shrinks to half the tolerance over the second half of the run: what is
        # left to guess shrinks with it, and a miss kept to the end is not corrected later. A miss
        # under one step is noise to a short budget: re-planning it would only flap.
        time_left = max(self.target_s - elapsed_s, 0.0)
        accepted = self.tolerance * max(min(time_left, self.budget_s), self.budget_s / 2)
        if abs(projected - self.target_s) <= max(accepted, per_step_s):
            return self.planned_total
        total = plan_total_steps(self.budget_s, elapsed_s + still_to_pay_s, steps_done, per_step_s,
                                 self.reserve_fraction)
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
        """The `schedule_len` that puts a `step / schedule_len` schedule (EMA momentum) at `schedule_step`."""
        if len(self._knots) == 1 or step <= 0:
            return self.schedule_total
        return step * self.schedule_total / max(self.schedule_step(step), 1e-12)

    def state_dict(self) -> dict:
        return {"planned_total": self.planned_total, "schedule_total": self.schedule_total,
                "knots": [list(k) for k in self._knots], "replans": self.replans}

    def load_state_dict(self, state: dict) -> None:
        """A resumed run keeps the saved plan and does not re-plan (its earlier time is unknown)."""
        self.planned_total = int(state["planned_total"])
        self.schedule_total = float(state.get("schedule_total") or self.planned_total)
        self._knots = [(int(s), float(v)) for s, v in state.get("knots") or [(0, 0.0)]]
        self.replans = int(state.get("replans", 0))
        self._check_every = 0

    def describe(self) -> str:
        per_step = getattr(self, "per_step_s", None)
        timed = f" at {per_step:.3f} s/step (median of {len(self._times) - 1} timed steps)" if per_step else ""
        capped = f", capped by --train.max_steps={self.cap}" if self.cap and self.planned_total == self.cap else ""
        warmup = ""
        if len(self._knots) > 1:
            warmup = f"; the {self.warmup_steps}-step warm-up is shrunk to fit"
        return f"{self.planned_total} steps{timed}{capped}{warmup}; the schedule ends at the last of them"


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
    schedule_len: float  # the length of step / schedule_len schedules (EMA momentum): see methods/base.py


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


class PaceMeter:
    """Step times on the budget's clock, split into the pace and the cost of each kind of pause.

    A pause (the run's start, an epoch start, a checkpoint, a periodic kNN) owns the steps after it
    that its loader could have made ahead or had to refill: they do not count for the pace, and what
    they took beyond it is the pause's cost, with the pause's own on-clock seconds.
    """

    # The pace is the mean of the last `window` un-prefetched steps, at least this many.
    MIN_WINDOW = 8
    # A pause's cost is the mean of its last few: each is measured against the pace of its time,
    # and the costs from before a change of pace would otherwise stay in the mean.
    COST_WINDOW = 8

    def __init__(self, prefetch_depth: int):
        self.prefetch_depth = max(int(prefetch_depth), 0)
        self.window: deque[float] = deque(maxlen=self.MIN_WINDOW)
        self._costs: dict[str, deque[float]] = {k: deque(maxlen=self.COST_WINDOW) for k in ("epoch", "checkpoint")}
        self._kind: str | None = None
        self._kind_s, self._kind_n, self._owned, self._in_a_row = 0.0, 0, 0, 0
        self._dropped_first = False

    def resize(self, steps: int) -> None:
        self.window = deque(self.window, maxlen=max(self.MIN_WINDOW, steps))

    def pause(self, kind: str, seconds: float, owns: int) -> None:
        """A pause of `seconds` on the budget's clock; the next `owns` steps are its own."""
        self._close()
        self._kind, self._kind_s, self._kind_n, self._owned = kind, seconds, 0, owns
        if owns == 0:
            self._close()

    def step(self, seconds: float) -> bool:
        """Record one step; True when it counts for the pace (its data was made while it ran)."""
        # Pauses closer together than the queue is deep (an epoch of 3 steps, a checkpoint every
        # step) would own every step and the plan would never be made: after `prefetch_depth`
        # owned steps in a row one counts, and closes what owned it.
        if self._owned > 0 and self._in_a_row < self.prefetch_depth:
            self._owned, self._in_a_row = self._owned - 1, self._in_a_row + 1
            self._kind_s, self._kind_n = self._kind_s + seconds, self._kind_n + 1
            if self._owned == 0:
                self._close()
            return False
        self._close()
        self._owned = self._in_a_row = 0
        if self._dropped_first:
            self.window.append(seconds)
        self._dropped_first = True  # the first one pays for allocation and compilation
        return True

    def _close(self) -> None:
        if self._kind in self._costs and self.window:
            # Below 0 when the batches made ahead during the pause saved more than it took.
            self._costs[self._kind].append(self._kind_s - self._kind_n * self.pace)
        self._kind = None

    @property
    def pace(self) -> float:
        return statistics.fmean(self.window) if self.window else 0.0

    def mean_cost(self, kind: str) -> float:
        return statistics.fmean(self._costs[kind]) if self._costs[kind] else 0.0


class TimeBudget(FixedPlan):
    """`--train.time_budget`: a `TimeBudgetPlanner` fed with the trainer's clock by a `PaceMeter`.

    Periodic kNN time is kept off the budget clock (`account("knn", s)`); checkpoints count
    (`account("checkpoint", s)`, from the Checkpointer), and the plan pays for those to come.
    """

    def __init__(self, planner: TimeBudgetPlanner, provisional_total: int, warmup_steps: int,
                 prefetch_depth: int = 0, steps_per_epoch: int = 0, ckpt_every: int = 0):
        super().__init__(provisional_total, warmup_steps)
        self.planner = planner
        self.meter = PaceMeter(prefetch_depth)
        self.steps_per_epoch, self.ckpt_every = steps_per_epoch, ckpt_every
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
            self._t_start = self._t_last = now
            self.meter.pause("start", 0.0, self.meter.prefetch_depth)
            return
        # The gap since the last step (the method's epoch hook; checkpoints and kNN have already
        # moved `_t_last` past themselves) and the refill of the queue the epoch's end emptied.
        self.meter.pause("epoch", now - self._t_last, self.meter.prefetch_depth)
        self._t_last = now

    def account(self, kind: str, seconds: float) -> None:
        self._t_last += seconds
        if kind == "knn":
            self._off_clock += seconds
            self.meter.pause("knn", 0.0, self.meter.prefetch_depth)
        else:
            self.meter.pause("checkpoint", seconds, self.meter.prefetch_depth)

    def after_step(self, step: int, now: float) -> PlanEvent | None:
        p = self.planner
        dt, self._t_last = now - self._t_last, now
        train_s = now - (self._t_start if self._t_start is not None else now) - self._off_clock
        counts = self.meter.step(dt)
        if not p.decided:
            if not counts or p.observe(dt, step, train_s) is None:
                return None
            p.fix(agree_total(p.planned_total), step, train_s)
            self.meter.resize(2 * p._check_every)
            return self._event("plan", p.describe(), train_s)
        if p.replan_due(step):
            before = p.planned_total
            per_step_s, final_s = self._costs()
            if p.apply(step, agree_total(p.propose(step, train_s, per_step_s, final_s))):
                return self._event("replan", f"the pace drifted ({per_step_s:.3f} s/step with pauses); re-planned "
                                   f"{before} -> {p.planned_total} steps at step {step} (the schedule is compressed "
                                   f"or stretched, not restarted)", train_s)
        return None

    def _costs(self) -> tuple[float, float]:
        """Seconds per step with the epoch starts and checkpoints to come spread over the steps,
        and the final checkpoint's seconds."""
        m, spe, every = self.meter, self.steps_per_epoch, self.ckpt_every
        ckpt_s = m.mean_cost("checkpoint")
        # An epoch's end and every `ckpt_every` steps save, once where the two meet.
        saves_per_step = (1 / spe if spe else 0.0) + (1 / every if every else 0.0)
        if spe and every:
            saves_per_step -= 1 / math.lcm(spe, every)
        epoch_s = m.mean_cost("epoch") / spe if spe else 0.0
        return m.pace + epoch_s + ckpt_s * saves_per_step, ckpt_s

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
        return {"time_budget_s": self.planner.budget_s, "time_budget_target_s": round(self.planner.target_s, 2),
                "replans": self.planner.replans}


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
                                warmup_steps=warmup_steps)
    return TimeBudget(planner, cfg.train.max_steps or planner.PROVISIONAL_TOTAL, warmup_steps,
                      prefetch_depth=prefetch_depth, steps_per_epoch=steps_per_epoch,
                      ckpt_every=cfg.train.ckpt_every_steps)
