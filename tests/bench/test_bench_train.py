"""`fastssl bench train`: steady images/s from metrics.jsonl, FLOPs per image counted, MFU per GPU."""

import json

import pytest

from fastssl.bench import train as bench_train
from fastssl.cli import main
from fastssl.config import Config


def _run_dir(tmp_path, records, name="simclr-ddp"):
    cfg = Config()
    cfg.model.name, cfg.data.image_size, cfg.train.batch_size = "resnet-tiny", 16, 64
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(cfg.to_json())
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return d


TRAIN = [{"kind": "train", "step": 10, "time": 100.0}, {"kind": "train", "step": 20, "time": 102.0},
         {"kind": "train", "step": 30, "time": 104.0}, {"kind": "summary", "step": 30, "time": 110.0}]


def test_steady_rate_leaves_out_the_steps_before_the_first_record():
    # 20 steps of 64 images in 4 s; the summary's time (checkpoint, kNN) is not a step.
    assert bench_train.steady_rate(TRAIN, 64) == (320.0, 20)
    assert bench_train.steady_rate(TRAIN[:1], 64) is None


def test_bench_train_row(tmp_path, monkeypatch, capsys):
    d = _run_dir(tmp_path, TRAIN)
    monkeypatch.setattr(bench_train, "device_peak_flops", lambda device: 1e12)
    assert main(["bench", "train", "--run", str(d), "--gpus", "2", "--csv", str(tmp_path / "t.csv"), "--plot", "",
                 "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["rows"][0]
    assert row["status"] == "ok" and row["method"] == "simclr" and row["images_per_s"] == 320.0
    assert row["gflops_per_image"] > 0
    # Per GPU: the run's FLOP/s over 2 x the (mocked) 1 TFLOP/s peak.
    assert row["mfu"] == pytest.approx(row["gflops_per_image"] * 1e9 * 320.0 / 2e12)


def test_a_run_without_figures_fails_the_command(tmp_path, capsys):
    d = _run_dir(tmp_path, TRAIN[:1])
    assert main(["bench", "train", "--run", str(d), str(tmp_path / "missing"), "--csv", "", "--plot", "",
                 "--json"]) == 1
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert rows[0]["status"].startswith("failed: fewer than two") and rows[1]["status"].startswith("failed:")
