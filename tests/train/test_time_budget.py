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


def test_bad_budget_fails_before_any_work(tiny_cfg, tmp_path):
    with pytest.raises(FastSSLError, match="--train.time_budget"):
        train(tiny_cfg("--train.time_budget=soon"))
    assert not (tmp_path / "run" / "checkpoints").exists()
