import json

import pytest
import torch

from fastssl.checkpoint import latest_checkpoint, load_checkpoint
from fastssl.errors import FastSSLError
from fastssl.train.knn_monitor import parse_every
from fastssl.train.trainer import train


@pytest.mark.parametrize("text, expected", [("", (0, 0.0)), ("0", (0, 0.0)), ("500", (500, 0.0)),
                                            ("2m", (0, 120.0)), ("90s", (0, 90.0))])
def test_parse_every(text, expected):
    assert parse_every(text) == expected


@pytest.mark.parametrize("text", ["often", "-5", "2x"])
def test_bad_cadence_names_the_key(text):
    with pytest.raises(FastSSLError, match="--eval.knn_every"):
        parse_every(text)


def test_periodic_knn_runs_at_the_cadence_and_does_not_change_training(tiny_cfg, tmp_path):
    plain = train(tiny_cfg(out=tmp_path / "plain"))
    watched = train(tiny_cfg("--eval.knn_every=2", "--eval.knn_every_train=30", "--eval.knn_every_test=12",
                             out=tmp_path / "watched"))
    assert plain["step"] == watched["step"] == 6
    records = [json.loads(x) for x in (tmp_path / "watched" / "metrics.jsonl").read_text().splitlines()]
    knn = [r for r in records if r["kind"] == "knn_every"]
    assert [r["step"] for r in knn] == [2, 4, 6]
    assert all((r["n_train"], r["n_test"]) == (30, 12) and 0 <= r["top1"] <= 100 for r in knn)
    assert all(r["train_seconds"] >= 0 for r in knn)
    # The monitored run's weights are bit-identical: eval mode, no_grad, RNG restored.
    a = load_checkpoint(latest_checkpoint(tmp_path / "plain"))["model"]
    b = load_checkpoint(latest_checkpoint(tmp_path / "watched"))["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bad_cadence_fails_before_any_work(tiny_cfg, tmp_path):
    with pytest.raises(FastSSLError, match="--eval.knn_every"):
        train(tiny_cfg("--eval.knn_every=sometimes"))
    assert not (tmp_path / "run" / "checkpoints").exists()
