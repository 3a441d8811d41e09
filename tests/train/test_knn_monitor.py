import json

import pytest
import torch

from fastssl.checkpoint import latest_checkpoint, load_checkpoint
from fastssl.errors import FastSSLError
from fastssl.config.durations import parse_every
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


def _flat_jpegs(folder, n=40):
    """Unlabelled images: a flat folder of JPEGs, no class sub-folders."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(folder / f"{i:02d}.jpg")
    return folder


def _train_cli(tmp_path, *extra) -> int:
    from fastssl.cli import main
    from tests.train.conftest import tiny_overrides

    return main(["train", *tiny_overrides(tmp_path / "run"), "--train.epochs=1", "--train.knn_at_end=true", *extra])


def _assert_finished_with_a_skip_note(tmp_path, err: str, why: str) -> None:
    notes = [ln for ln in err.splitlines() if ln.startswith("fastssl: kNN at end skipped:")]
    assert len(notes) == 1 and why in notes[0], err[-2000:]
    # The later evaluation it suggests uses flags `fastssl eval knn` has.
    assert f"`fastssl eval knn --ckpt {tmp_path / 'run'} --data.train " in notes[0] and " --data.test " in notes[0]
    assert "fastssl: done step=" in err and "fastssl: error" not in err
    kinds = [json.loads(x)["kind"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert kinds[-2:] == ["knn_skipped", "summary"]
    assert latest_checkpoint(tmp_path / "run") is not None


def test_unlabelled_jpeg_folder_trains_to_status_0_and_skips_the_knn(tmp_path, capsys):
    flat = _flat_jpegs(tmp_path / "flat")
    assert _train_cli(tmp_path, f"--data.path={flat}") == 0
    _assert_finished_with_a_skip_note(tmp_path, capsys.readouterr().err, f"--data.path={flat} has images without labels")


@pytest.mark.dali
def test_webdataset_on_dali_cpu_trains_to_status_0_and_skips_the_knn(tmp_path, capsys):
    pytest.importorskip("nvidia.dali")
    from fastssl.data.tools import convert

    convert.convert(str(_flat_jpegs(tmp_path / "flat")), str(tmp_path / "wds"), "webdataset")
    assert _train_cli(tmp_path, f"--data.path={tmp_path / 'wds'}", "--data.backend=dali-cpu") == 0
    _assert_finished_with_a_skip_note(tmp_path, capsys.readouterr().err, "holds webdataset tars")


def test_periodic_knn_on_unlabelled_images_is_refused_before_any_work(tmp_path, capsys):
    flat = _flat_jpegs(tmp_path / "flat")
    assert _train_cli(tmp_path, f"--data.path={flat}", "--eval.knn_every=2") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "--eval.knn_every=2 needs labelled images" in err and "fastssl eval knn --ckpt" in err
    assert not (tmp_path / "run").exists()  # refused before the run folder, config or any step
