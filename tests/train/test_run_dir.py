"""The run folder: a bare --resume keeps the run's config; a folder holding a run is refused."""

import errno
import json
import os

import pytest

from fastssl.cli import main
from fastssl.errors import FastSSLError
from fastssl.train.run_dir import RunDir
from fastssl.distributed import World
from tests.train.conftest import tiny_overrides


def _train(out, *extra, capsys=None):
    return main(["train", *tiny_overrides(out), *extra])


def test_bare_resume_keeps_the_runs_config_and_records_the_change(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, "--train.max_steps=2", "--train.batch_size=8", "--optim.base_lr=0.01") == 0
    capsys.readouterr()
    # As a user follows the stop message: only --resume and the out folder (plus one extension).
    assert main(["train", "--resume", f"--train.out={out}", "--train.max_steps=4"]) == 0
    text = capsys.readouterr().out
    assert "train.max_steps: 2 -> 4" in text and "batch_size" not in text
    saved = json.loads((out / "config.json").read_text())
    assert saved["train"]["batch_size"] == 8 and saved["optim"]["base_lr"] == 0.01  # not the recipe's 128 / lr
    assert saved["train"]["max_steps"] == 4 and saved["train"]["resume"] is False
    assert [h["changes"] for h in saved["history"]] == [{"train.max_steps": [2, 4]}]
    assert saved["history"][0]["resumed_at_step"] == 2
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    lrs = {r["step"]: r["lr"] for r in records if r["kind"] == "train"}
    assert sorted(lrs) == [1, 2, 3, 4]


def test_resume_refuses_what_it_cannot_honour(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, "--train.max_steps=1") == 0
    for flag, key in [("--train.batch_size=32", "train.batch_size"), ("--model.name=resnet18-cifar", "model.name"),
                      ("--data.limit=32", "data.limit"), ("--method.temperature=0.3", "method.temperature")]:
        capsys.readouterr()
        assert main(["train", "--resume", f"--train.out={out}", flag]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--{key}" in err, err
    assert main(["train", "--resume", f"--train.out={out}", "--recipe", "mocov2-cpu"]) == 2
    assert "drop --recipe" in capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["history"] == []  # refusals change nothing


def test_a_folder_with_logs_but_no_checkpoint_is_refused_then_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"kind": "train", "step": 1}\n')
    (out / "notes.txt").write_text("mine")
    assert _train(out, "--train.max_steps=1") == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _train(out, "--train.max_steps=1", "--overwrite") == 0
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["kind"] == "train" and "loss" in records[0]  # the old record is gone
    assert (out / "notes.txt").read_text() == "mine"  # nothing but run files is removed
    assert _train(out, "--resume", "--overwrite") == 2


def test_start_prints_only_what_differs_from_the_recipe(tmp_path, capsys):
    assert _train(tmp_path / "run", "--train.max_steps=1") == 0
    text = capsys.readouterr().out
    assert "  train.max_steps: 0 -> 1\n" in text and "aug." not in text
    assert len([ln for ln in text.splitlines() if " -> " in ln]) == len(tiny_overrides(tmp_path)) + 1


def test_resume_of_an_empty_folder_starts_at_step_zero(tmp_path, tiny_cfg):
    cfg = tiny_cfg("--train.resume=true")
    assert RunDir(cfg, World()).open() is None
    # What SLURM's first start does (the sbatch always passes --resume): a first start, no history.
    assert json.loads((tmp_path / "run" / "config.json").read_text())["history"] == []


@pytest.mark.parametrize("where", ["the folder", "a parent"])
def test_an_out_path_that_is_a_file_is_one_line(tmp_path, capsys, where):
    (tmp_path / "taken").write_text("mine")
    out = tmp_path / "taken" if where == "the folder" else tmp_path / "taken" / "run"
    assert _train(out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{tmp_path / 'taken'} is a file; choose another --train.out" in err
    assert (tmp_path / "taken").read_text() == "mine"


@pytest.mark.parametrize("code, says", [(errno.EROFS, "Read-only file system"), (errno.EACCES, "Permission denied")])
def test_an_unwritable_out_folder_is_one_line(tmp_path, capsys, monkeypatch, code, says):
    # Tests run as root, whom chmod does not stop: the file system's refusal is simulated.
    from pathlib import Path

    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if str(self).startswith(str(tmp_path / "ro")):
            raise OSError(code, os.strerror(code), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    assert _train(tmp_path / "ro" / "run") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"cannot use {tmp_path / 'ro' / 'run'} as the run folder ({says}); choose another --train.out" in err
