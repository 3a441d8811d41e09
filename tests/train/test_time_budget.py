import pytest

from fastssl.errors import FastSSLError
from fastssl.train.schedule import lr_at
from fastssl.train.time_budget import TimeBudgetPlanner, parse_duration, plan_total_steps


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
    """Run the plan to its (moving) end: 1 s/step up to step 40, then `pace_after_40`."""
    step, elapsed = 2, 2.0
    while step < p.planned_total:
        step += 1
        elapsed += 1.0 if step <= 40 else pace_after_40
        if p.replan_due(step):
            p.apply(step, p.propose(step, elapsed))
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
    # The momentum's step / max_steps form sits on the same remapped schedule.
    for s in (1, first_knot, first_knot + 7, p.planned_total - 1):
        assert cosine_momentum(s, p.schedule_length(s), 0.99) == pytest.approx(cosine_momentum(v[s], 100, 0.99))


def test_no_replan_during_the_warmup_or_after_a_resume():
    p = TimeBudgetPlanner(budget_s=100, measure_steps=2, reserve_fraction=0.0, tolerance=0.1, hold_until=30)
    p.observe(1.0, 1, 1.0)
    p.observe(1.0, 2, 2.0)
    assert not any(p.replan_due(s) for s in range(30)) and p.replan_due(30)
    _simulate(p, 2.0)
    resumed = TimeBudgetPlanner(budget_s=100, tolerance=0.1)
    resumed.load_state_dict(p.state_dict())
    assert resumed.planned_total == p.planned_total and resumed.replans == p.replans
    assert [resumed.schedule_step(s) for s in range(101)] == [p.schedule_step(s) for s in range(101)]
    assert not any(resumed.replan_due(s) for s in range(101))


def test_negative_tolerance_is_refused():
    with pytest.raises(FastSSLError, match="time_budget_tolerance"):
        TimeBudgetPlanner(budget_s=100, tolerance=-0.1)


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
