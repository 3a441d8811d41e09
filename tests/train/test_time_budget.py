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
