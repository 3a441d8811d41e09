import pytest

from fastssl.errors import FastSSLError
from fastssl.train.schedule import lr_at
from fastssl.config.durations import parse_duration
from fastssl.train.time_budget import TimeBudgetPlanner, plan_total_steps


@pytest.mark.parametrize("text, seconds", [
    ("10m", 600), ("2h", 7200), ("90s", 90), ("1h30m", 5400), ("1.5h", 5400), ("600", 600), ("", 0), ("0", 0),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["ten minutes", "10x", "m", "5m extra"])
def test_bad_durations_name_the_key(text):
    with pytest.raises(FastSSLError, match="--train.time_budget"):
        parse_duration(text)


def test_step_count_follows_from_the_measured_step_time():
    # 600 s budget, 5% reserve -> 570 s; 30 s already spent on 6 steps at 0.5 s -> 1080 more steps.
    assert plan_total_steps(600, 30, 6, 0.5) == 6 + 1080
    # Over budget already: the run ends where it is.
    assert plan_total_steps(600, 700, 40, 0.5) == 40


def test_planner_drops_the_first_step_and_decides_once():
    p = TimeBudgetPlanner(budget_s=100, measure_steps=4, reserve_fraction=0.0)
    assert p.observe(10.0, 1, 10.0) is None  # slow first step (allocation, compile)
    assert p.observe(1.0, 2, 11.0) is None
    assert p.observe(1.0, 3, 12.0) is None
    total = p.observe(1.0, 4, 13.0)
    assert total == 4 + 87  # median of the last three is 1 s; 87 s remain
    assert p.observe(5.0, 5, 20.0) == total  # fixed from then on


def test_schedule_ends_at_the_planned_last_step():
    total = plan_total_steps(600, 30, 6, 0.5)
    peak = 1.0
    assert lr_at(total - 1, total, 10, peak) > 0
    assert lr_at(total, total, 10, peak) == pytest.approx(0.0, abs=1e-12)


def test_resumed_plan_is_kept():
    p = TimeBudgetPlanner(budget_s=100, planned_total=321)
    assert p.decided and p.observe(99.0, 50, 90.0) == 321


# --- re-planning when the pace drifts ------------------------------------------------------------

from fastssl.methods.momentum import cosine_momentum  # noqa: E402


def _planned(tolerance, budget=100.0):
    """A plan of 100 steps at 1 s/step (no reserve), decided after step 2."""
    p = TimeBudgetPlanner(budget_s=budget, measure_steps=2, reserve_fraction=0.0, tolerance=tolerance)
    p.observe(1.0, 1, 1.0)
    assert p.observe(1.0, 2, 2.0) == 100
    return p


def _simulate(p, pace_after_40):
    """Run the plan to its (moving) end: 1 s/step up to step 40, then `pace_after_40`.

    The pace each check sees is the one measured since the previous check.
    """
    step, elapsed = 2, 2.0
    last = (step, elapsed)
    while step < p.planned_total:
        step += 1
        elapsed += 1.0 if step <= 40 else pace_after_40
        if p.replan_due(step):
            pace = (elapsed - last[1]) / (step - last[0])
            p.apply(step, p.propose(step, elapsed, pace))
            last = (step, elapsed)
    return step, elapsed


@pytest.mark.parametrize("pace", [2.0, 0.5])
def test_a_fixed_plan_misses_the_budget_when_the_pace_drifts(pace):
    steps, elapsed = _simulate(_planned(tolerance=0.0), pace)
    assert steps == 100 and abs(elapsed - 100) > 25  # 160 s or 70 s for a 100 s budget


@pytest.mark.parametrize("pace", [2.0, 0.5])
def test_replanning_ends_within_the_tolerance(pace):
    p = _planned(tolerance=0.1)
    steps, elapsed = _simulate(p, pace)
    assert p.replans >= 1 and abs(elapsed - 100) <= 10
    assert (steps < 100) if pace > 1 else (steps > 100)


def test_a_small_drift_keeps_the_plan():
    p = _planned(tolerance=0.1)
    assert _simulate(p, 1.05) == (100, pytest.approx(103.0)) and p.replans == 0


def test_a_replan_remaps_the_schedule_without_a_jump():
    p = _planned(tolerance=0.1)
    _simulate(p, 2.0)
    first_knot = p.state_dict()["knots"][1][0]
    v = [p.schedule_step(s) for s in range(p.planned_total + 1)]
    assert v[:first_knot + 1] == list(range(first_knot + 1))  # untouched up to the re-plan
    # Continuous and increasing, about twice as fast once steps take twice as long.
    assert all(0 < b - a <= 2.5 for a, b in zip(v, v[1:]))
    assert v[-1] == pytest.approx(p.schedule_total)  # the same schedule still ends at the last step
    assert lr_at(v[-1], p.schedule_total, 10, 1.0) == pytest.approx(0.0, abs=1e-9)
    # The momentum's step / schedule_len form sits on the same remapped schedule.
    for s in (1, first_knot, first_knot + 7, p.planned_total - 1):
        assert cosine_momentum(s, p.schedule_length(s), 0.99) == pytest.approx(cosine_momentum(v[s], 100, 0.99))


def test_a_replan_inside_the_warmup_shrinks_what_is_left_of_it():
    # A 20-step warm-up in a 100-step plan (fixed at step 2); the pace halves the plan at step 10.
    p = TimeBudgetPlanner(budget_s=100, measure_steps=2, reserve_fraction=0.0, tolerance=0.1, warmup_steps=20)
    p.observe(1.0, 1, 1.0)
    assert p.observe(1.0, 2, 2.0) == 100 and p.replan_due(4)  # no hold until the warm-up's end (step 20)
    assert p.apply(10, 55)
    v = [p.schedule_step(s) for s in range(56)]
    assert v[:11] == list(range(11)) and v[55] == pytest.approx(100)
    # The 10 warm-up steps left take 5 real steps now: the warm-up ends at step 15, not 20.
    assert v[15] == pytest.approx(20) and v[14] < 20
    lrs = [lr_at(x, p.schedule_total, 20, 1.0) for x in v]
    assert max(abs(b - a) for a, b in zip(lrs, lrs[1:])) <= 0.1  # no jump: at most two warm-up steps' rise


def test_a_first_plan_shorter_than_the_warmup_shrinks_it():
    # A 40-step warm-up (2 epochs of a small dataset) and a budget that fits 60 steps, fixed at step 5.
    p = TimeBudgetPlanner(budget_s=60, measure_steps=2, reserve_fraction=0.0, tolerance=0.1, warmup_steps=40)
    p.observe(1.0, 4, 4.0)
    assert p.observe(1.0, 5, 5.0) == 60
    v = [p.schedule_step(s) for s in range(61)]
    assert v[:6] == list(range(6))  # the steps before the plan keep their warm-up lr
    assert v[15] == pytest.approx(40)  # the warm-up now ends at a quarter of the plan
    assert v[60] == pytest.approx(p.schedule_total)
    lrs = [lr_at(x, p.schedule_total, 40, 1.0) for x in v]
    assert lrs[-1] == pytest.approx(0.0, abs=1e-9) and lrs[16] > 0.99  # finished, and it left the warm-up
    assert max(abs(b - a) for a, b in zip(lrs, lrs[1:])) <= 0.15
    for s in (3, 5, 9, 30, 59):  # the momentum's step / schedule_len form sits on the same map
        assert cosine_momentum(s, p.schedule_length(s), 0.99) == pytest.approx(cosine_momentum(v[s], p.schedule_total, 0.99))


def test_a_resumed_plan_is_kept_and_never_revised():
    p = _planned(tolerance=0.1)
    _simulate(p, 2.0)
    resumed = TimeBudgetPlanner(budget_s=100, tolerance=0.1)
    resumed.load_state_dict(p.state_dict())
    assert resumed.planned_total == p.planned_total and resumed.replans == p.replans
    assert [resumed.schedule_step(s) for s in range(101)] == [p.schedule_step(s) for s in range(101)]
    assert not any(resumed.replan_due(s) for s in range(101))


def test_negative_tolerance_is_refused():
    from fastssl.config import Config, validate

    cfg = Config()
    cfg.train.time_budget, cfg.train.time_budget_tolerance = "10m", -0.1
    with pytest.raises(FastSSLError, match="time_budget_tolerance"):
        validate(cfg)
    with pytest.raises(ValueError):  # and the planner itself never takes one
        TimeBudgetPlanner(budget_s=100, tolerance=-0.1)


# --- a whole run on a simulated clock -------------------------------------------------------------

import random  # noqa: E402

from fastssl.train.time_budget import PaceMeter, TimeBudget  # noqa: E402


class _Machine:
    """A 2-core CPU as the default recipe sees it: 0.45 s steps, 12 steps per epoch, 2 loader workers,
    a 24-step warm-up (2 epochs); or, `long_warmup`, a 40,000-image set (312 steps per epoch) with
    the config's default 10-epoch warm-up, longer than any of these budgets.

    Batches the workers made during a pause make the next `prefetch` steps 4x faster (issue 16
    measured 74 img/s at step 10 against about 20 later); each epoch ends with a 0.3 s checkpoint,
    and the next starts with an empty queue (persistent workers idle between epochs: one step's
    wait); a periodic kNN (off the budget's clock) takes 3 s. `busy` is a (start, end) share of the
    budget during which every step takes twice as long, another job having taken half the cores.
    """

    STEP_S, PREFETCH, CKPT_S, KNN_S = 0.45, 4, 0.3, 3.0

    def __init__(self, budget_s, busy=None, knn_every_s=0.0, long_warmup=False, seed=0):
        self.budget_s, self.busy, self.knn_every_s = budget_s, busy, knn_every_s
        self.SPE, self.WARMUP = (312, 3120) if long_warmup else (12, 24)
        self.rng = random.Random(seed)
        self.now = self.off_clock = 0.0
        self.queue = 0

    def step_s(self):
        train_share = (self.now - self.off_clock) / self.budget_s
        slow = 2.0 if self.busy and self.busy[0] <= train_share < self.busy[1] else 1.0
        dt = self.STEP_S * slow * self.rng.uniform(0.9, 1.1)
        if self.queue:
            self.queue -= 1
            return dt / 4
        return dt

    def pause(self, plan, kind, seconds, mid_epoch=True):
        self.now += seconds
        if kind == "knn":
            self.off_clock += seconds
        self.queue = self.PREFETCH if mid_epoch else 0  # the workers fill the queue meanwhile
        plan.account(kind, seconds)


def _run_on_the_machine(m, tolerance=0.05):
    """The trainer's calls to the plan (`Trainer._loop` / `_after_step`), on `m`'s clock."""
    planner = TimeBudgetPlanner(m.budget_s, tolerance=tolerance, warmup_steps=m.WARMUP)
    plan = TimeBudget(planner, planner.PROVISIONAL_TOTAL, m.WARMUP, prefetch_depth=m.PREFETCH, steps_per_epoch=m.SPE)
    step, next_knn, lrs = 0, m.knn_every_s, []
    m.queue = m.PREFETCH  # filled while the first step allocated (below)
    plan.on_loader_start(step, m.now)
    m.now += 2.0  # the first step's allocation
    while step < plan.total_steps:
        if step:
            m.now += 0.02  # the epoch hook
            plan.on_loader_start(step, m.now)
            m.now += m.STEP_S  # the emptied queue's first batch
        for _ in range(step % m.SPE, m.SPE):
            if step >= plan.total_steps:
                break
            at = plan.at(step)
            lrs.append(lr_at(at.step, at.total, at.warmup, 1.0))
            m.now += m.step_s()
            step += 1
            plan.after_step(step, m.now)
            if m.knn_every_s and m.now - m.off_clock >= next_knn:
                next_knn += m.knn_every_s
                m.pause(plan, "knn", m.KNN_S)
        m.pause(plan, "checkpoint", m.CKPT_S, mid_epoch=False)  # the epoch's end, or the run's
    return plan, step, m.now - m.off_clock, lrs


_BUDGETS = [30, 60, 600, 1800]
_MACHINES = {
    "idle": {},
    "busy-then-idle": {"busy": (0.3, 0.7)},
    "busy-to-the-end": {"busy": (0.5, 2.0)},
    "busy-from-the-start-with-knn": {"busy": (0.02, 2.0), "knn_every_s": None},
    "long-warmup-busy-to-the-end": {"busy": (0.3, 2.0), "long_warmup": True},
}


def _machine(budget_s, kind):
    kwargs = dict(_MACHINES[kind])
    if "knn_every_s" in kwargs:  # two in a run, as `--eval.knn_every=15s` on a 40 s budget
        kwargs["knn_every_s"] = budget_s * 0.35
    return _Machine(budget_s, **kwargs)


def _check_on_time_and_finished(plan, steps, train_s, lrs, budget_s):
    target = plan.planner.target_s
    assert abs(train_s - target) <= max(0.05 * budget_s, 10.0), (train_s, target, steps, plan.planner.replans)
    at = plan.at(steps)
    assert at.step == pytest.approx(at.total)  # the schedule's end is the last step
    last = plan.at(steps - 1)
    assert last.step >= last.warmup  # the last step is past the warm-up
    assert lrs[-1] <= 0.25 * max(lrs)  # and low on the cosine (the next would be at 0)


@pytest.mark.parametrize("kind", list(_MACHINES))
@pytest.mark.parametrize("budget_s", _BUDGETS)
def test_a_budget_ends_on_time_with_a_finished_schedule(budget_s, kind):
    plan, steps, train_s, lrs = _run_on_the_machine(_machine(budget_s, kind))
    _check_on_time_and_finished(plan, steps, train_s, lrs, budget_s)


@pytest.mark.parametrize("budget_s", [30, 60])
def test_a_plan_made_once_is_timed_on_steps_the_loader_did_not_make_ahead(budget_s):
    # Without re-plans the first plan is the only one: timed on the 4x faster prefetched steps it
    # would take 4x the budget. (Longer budgets need re-plans: the pauses' cost is not known yet.)
    plan, steps, train_s, lrs = _run_on_the_machine(_machine(budget_s, "idle"), tolerance=0.0)
    assert plan.planner.replans == 0
    _check_on_time_and_finished(plan, steps, train_s, lrs, budget_s)


def test_pauses_closer_than_the_queue_is_deep_still_leave_steps_to_time():
    # 3-step epochs and a 4-batch queue: were every epoch start to own 4 steps, none would count.
    m = PaceMeter(prefetch_depth=4)
    counted = 0
    for step in range(30):
        if step % 3 == 0:
            m.pause("epoch", 0.1, 4)
        counted += m.step(0.5)
    assert counted >= 5 and m.pace == pytest.approx(0.5)


# --- the trainer with a budget -------------------------------------------------------------------

import json  # noqa: E402
import shutil  # noqa: E402

import torch  # noqa: E402

from fastssl.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, read_train_state  # noqa: E402
from fastssl.train import time_budget  # noqa: E402
from fastssl.train.trainer import train  # noqa: E402


def _fixed_plan(total):
    """A planner that always decides `total`: step times on a loaded CI machine are not data."""
    return lambda budget_s, elapsed_s, steps_done, per_step_s, reserve_fraction=0.05: total


def _train_records(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_budget_decides_the_step_count_and_the_schedule_finishes(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(time_budget, "plan_total_steps", _fixed_plan(10))
    summary = train(tiny_cfg("--train.time_budget=1h", "--train.epochs=0", "--optim.min_lr_ratio=0"))
    out = tmp_path / "run"
    assert summary["step"] == 10 and summary["time_budget_s"] == 3600
    state = read_train_state(latest_checkpoint(out))
    assert state["step"] == 10 and state["planned_total_steps"] == 10
    lrs = {r["step"]: r["lr"] for r in _train_records(out) if r["kind"] == "train"}
    # lr is logged before the step it drives: the last step runs at the end of the cosine, the
    # first steps in the linear warm-up, which does not depend on the (then provisional) total.
    assert lrs[10] < 0.05 * max(lrs.values())
    assert lrs[1] < lrs[2] < lrs[3]


def test_max_steps_caps_the_plan(tiny_cfg, monkeypatch):
    monkeypatch.setattr(time_budget, "plan_total_steps", _fixed_plan(50))
    assert train(tiny_cfg("--train.time_budget=1h", "--train.max_steps=8"))["step"] == 8


def test_resume_keeps_the_plan(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(time_budget, "plan_total_steps", _fixed_plan(10))
    train(tiny_cfg("--train.time_budget=1h", "--train.epochs=0", out=tmp_path / "full"))
    train(tiny_cfg("--train.time_budget=1h", "--train.epochs=0", "--train.ckpt_every_steps=1",
                   "--train.keep_last=20", out=tmp_path / "part"))
    for p in list_checkpoints(tmp_path / "part")[7:]:  # killed at step 7, after the plan (step 6)
        shutil.rmtree(p)
    # Were the plan measured again, this one would be chosen; the saved plan must win.
    monkeypatch.setattr(time_budget, "plan_total_steps", _fixed_plan(99))
    summary = train(tiny_cfg("--train.time_budget=1h", "--train.epochs=0", "--train.resume=true", out=tmp_path / "part"))
    assert summary["step"] == 10
    a = load_checkpoint(latest_checkpoint(tmp_path / "full"))["model"]
    b = load_checkpoint(latest_checkpoint(tmp_path / "part"))["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_real_budget_plans_from_measured_steps(tiny_cfg, tmp_path):
    summary = train(tiny_cfg("--train.time_budget=3s", "--train.epochs=0"))
    state = read_train_state(latest_checkpoint(tmp_path / "run"))
    assert summary["step"] == state["planned_total_steps"] >= 6  # decided after 6 measured steps


@pytest.mark.parametrize("bad", ["--train.time_budget=soon", "--train.time_budget_tolerance=-0.1"])
def test_bad_budget_fails_before_any_work(tiny_cfg, tmp_path, bad):
    with pytest.raises(FastSSLError, match=bad.split("=")[0]):
        train(tiny_cfg("--train.time_budget=1m", bad))
    assert not (tmp_path / "run").exists()



def _plans(first, then):
    """The first plan is `first` steps; every re-plan proposes `then` (the pace 'drifted')."""
    calls = []

    def plan(budget_s, elapsed_s, steps_done, per_step_s, reserve_fraction=0.05):
        calls.append(steps_done)
        return first if len(calls) == 1 else then
    return plan


def test_trainer_replans_without_a_jump_in_the_schedule(tiny_cfg, tmp_path, monkeypatch):
    from fastssl.train.schedule import scaled_lr

    monkeypatch.setattr(time_budget, "plan_total_steps", _plans(12, 9))
    cfg = tiny_cfg("--train.time_budget=1h", "--train.epochs=0", "--optim.min_lr_ratio=0")
    summary = train(cfg)
    out = tmp_path / "run"
    # Planned at step 6 (12 steps), re-planned at the first check after the 3-step warm-up.
    assert summary["step"] == 9 and summary["replans"] == 1
    records = _train_records(out)
    assert [(r["step"], r["planned_total_steps"]) for r in records if r["kind"] == "replan"] == [(7, 9)]
    plan = read_train_state(latest_checkpoint(out))["time_budget_plan"]
    assert plan["planned_total"] == 9 and plan["schedule_total"] == 12 and plan["knots"] == [[0, 0.0], [7, 7.0]]
    # lr of step s is logged at s + 1. Up to the re-plan it is the 12-step schedule's; then the
    # remaining 2 steps take the rest of that schedule (7 -> 12) instead of jumping to a 9-step one.
    peak = scaled_lr(cfg.optim, cfg.train.batch_size)
    lrs = {r["step"] - 1: r["lr"] for r in records if r["kind"] == "train"}
    assert lrs[7] == pytest.approx(lr_at(7, 12, 3, peak), rel=0.05)  # logged rounded
    assert lrs[8] == pytest.approx(lr_at(9.5, 12, 3, peak), rel=0.05)
    assert abs(lrs[7] - lr_at(7, 9, 3, peak)) > 0.2 * peak  # what restarting the schedule would do


def test_tolerance_zero_never_replans(tiny_cfg, monkeypatch):
    monkeypatch.setattr(time_budget, "plan_total_steps", _plans(12, 9))
    summary = train(tiny_cfg("--train.time_budget=1h", "--train.epochs=0", "--train.time_budget_tolerance=0"))
    assert summary["step"] == 12 and summary["replans"] == 0


def test_resume_after_a_replan_keeps_it(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(time_budget, "plan_total_steps", _plans(12, 9))
    train(tiny_cfg("--train.time_budget=1h", "--train.epochs=0", out=tmp_path / "full"))
    monkeypatch.setattr(time_budget, "plan_total_steps", _plans(12, 9))
    train(tiny_cfg("--train.time_budget=1h", "--train.epochs=0", "--train.ckpt_every_steps=1",
                   "--train.keep_last=20", out=tmp_path / "part"))
    for p in list_checkpoints(tmp_path / "part")[8:]:  # killed at step 8, after the re-plan at 7
        shutil.rmtree(p)
    monkeypatch.setattr(time_budget, "plan_total_steps", _plans(99, 99))
    summary = train(tiny_cfg("--train.time_budget=1h", "--train.epochs=0", "--train.resume=true", out=tmp_path / "part"))
    assert summary["step"] == 9
    a = load_checkpoint(latest_checkpoint(tmp_path / "full"))["model"]
    b = load_checkpoint(latest_checkpoint(tmp_path / "part"))["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_real_30s_budget_ends_on_time_with_a_finished_schedule(tmp_path):
    """The CLI on the built-in digits, with 2 loader workers so that the prefetch is real."""
    import os
    import subprocess
    import sys

    out = tmp_path / "run"
    argv = [sys.executable, "-m", "fastssl", "train", "--train.time_budget=30s", f"--train.out={out}",
            "--data.limit=512", "--data.num_workers=2", "--train.batch_size=32", "--train.progress=false",
            "--train.tensorboard=false", "--train.knn_at_end=false", "--train.log_every=1", "--optim.min_lr_ratio=0"]
    r = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    records = _train_records(out)
    summary = records[-1]
    assert summary["kind"] == "summary"
    budget = summary["time_budget_s"]
    miss = summary["train_seconds"] - summary["time_budget_target_s"]
    assert abs(miss) <= max(0.05 * budget, 10.0), (summary, r.stderr[-2000:])
    state = read_train_state(latest_checkpoint(out))
    assert summary["step"] == state["planned_total_steps"]  # the plan's last step was reached
    # lr of each step, logged after it: it reached the peak (the warm-up ended) and the last step
    # ran at the end of the cosine.
    lrs = [x["lr"] for x in records if x["kind"] == "train"]
    assert lrs.index(max(lrs)) < len(lrs) - 1 and lrs[-1] <= 0.05 * max(lrs)
