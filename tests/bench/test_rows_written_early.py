"""Benchmark rows reach the CSV as each is measured: a run stopped by a time limit keeps them."""

import argparse
import csv

import pytest

from fastssl.bench import backbone, loss


class TimeLimit(BaseException):
    """What `timeout` does to the process, without a process: stop between two measurements."""


def _stop_on_call(n: int, real):
    calls = []

    def fake(*a, **kw):
        calls.append(1)
        if len(calls) == n:
            raise TimeLimit
        return real(*a, **kw)

    return fake


def test_loss_rows_written_before_the_run_ends(monkeypatch, tmp_path):
    out = tmp_path / "loss.csv"
    monkeypatch.setattr(loss, "_measure_case", _stop_on_call(3, loss._measure_case))
    args = argparse.Namespace(sizes="32,64,128", dims="8", dtype="fp32", providers="torch", max_two_n="",
                              temperature=0.1, warmup=0, repeats=1, max_case_s=5.0, mem_budget_mb=64.0,
                              verify_max_s=0.0, device="cpu", threads=None, csv=str(out), plot="", json=True)
    with pytest.raises(TimeLimit):
        loss.run(args)
    rows = list(csv.DictReader(open(out)))
    assert [r["two_n"] for r in rows] == ["32", "64"] and all(r["status"] == "ok" for r in rows)
    assert rows[1]["time_ratio_vs_torch"] == "1"  # ratios are in the row when it is written


def test_backbone_rows_written_before_the_run_ends(monkeypatch, tmp_path):
    out = tmp_path / "backbone.csv"
    monkeypatch.setattr(backbone, "_bench_model", _stop_on_call(2, backbone._bench_model))
    args = argparse.Namespace(models="resnet-tiny,vit_nano", image_size=16, batch=2, amp="none", warmup=1,
                              repeats=1, max_case_s=30.0, memory=False, device="cpu", threads=None, csv=str(out),
                              plot="", json=True)
    with pytest.raises(TimeLimit):
        backbone.run(args)
    assert [r["model"] for r in csv.DictReader(open(out))] == ["resnet-tiny"]


def test_max_two_n_caps_one_provider(tmp_path):
    args = argparse.Namespace(sizes="32,64", dims="8", dtype="fp32", providers="chunked,torch",
                              max_two_n="chunked=32", temperature=0.1, warmup=0, repeats=1, max_case_s=5.0,
                              mem_budget_mb=64.0, verify_max_s=0.0, device="cpu", threads=None,
                              csv=str(tmp_path / "l.csv"), plot="", json=True)
    rows = [r for r in loss.run(args)["rows"] if r["case"] == "timed"]
    status = {(r["provider"], r["two_n"]): r["status"] for r in rows}
    assert status[("chunked", 32)] == "ok" and status[("torch", 64)] == "ok"
    assert status[("chunked", 64)].startswith("skipped: 2N above --max-two-n")
    assert [r["provider"] for r in rows][:2] == ["torch", "chunked"]  # torch first: ratios need it
    assert next(r for r in rows if r["provider"] == "chunked")["time_ratio_vs_torch"] > 0
