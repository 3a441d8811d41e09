import errno
import json
import os
from pathlib import Path

import pytest
import torch

from fastssl.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from fastssl.cli import main


def _err(capsys):
    return capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["train", "--train.batch_sise=3"], "Did you mean 'train.batch_size'"),
        (["train", "--recipe", "simclr-cifar"], "unknown --recipe="),
        (["train", "--train.epochs"], "has no value"),
        (["train", "stray"], "--section.key=value"),
        (["train", "--data.path=/no/such/folder", "--data.dataset=npz"], "/no/such/folder"),
        (["train", "--config", "/no/such.json"], "does not exist"),
    ],
)
def test_user_errors_are_one_line_with_exit_2(argv, fragment, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv + ["--train.progress=false"] if argv[-1] != "--train.epochs" else argv) == 2
    lines = _err(capsys)
    assert len(lines) == 1 and lines[0].startswith("fastssl: error:") and fragment in lines[0]


def test_config_prints_resolved_values_and_keys(capsys):
    assert main(["config", "--recipe", "byol-resnet18-cifar10", "--train.epochs=3", "--json"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["method"]["name"] == "byol" and cfg["train"]["epochs"] == 3
    assert main(["config", "--keys"]) == 0
    assert "optim.base_lr" in capsys.readouterr().out.split()


def test_config_file_then_overrides(tmp_path, capsys):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"train": {"epochs": 5, "batch_size": 64}, "recipe": "mocov2-cpu"}))
    assert main(["config", "--config", str(f), "--train.epochs=6", "--json"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert (cfg["train"]["epochs"], cfg["train"]["batch_size"]) == (6, 64)
    assert cfg["method"]["name"] == "mocov2"  # the file's recipe is the base ...
    assert main(["config", "--recipe", "default", "--config", str(f), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["method"]["name"] == "simclr"  # ... unless --recipe says
    f.write_text("{broken")
    assert main(["config", "--config", str(f)]) == 2
    assert "not valid JSON" in _err(capsys)[0]
    f.write_text(json.dumps({"train": {"epoch": 5}}))
    assert main(["config", "--config", str(f)]) == 2
    assert "train.epochs" in _err(capsys)[0]


def test_recipes_lists_every_recipe(capsys):
    from fastssl.recipes import RECIPES

    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in RECIPES)


def test_train_out_alias_and_json_summary(tmp_path, capsys):
    from tests.train.conftest import tiny_overrides

    args = [a for a in tiny_overrides(tmp_path / "ignored") if not a.startswith("--train.out")]
    assert main(["train", "--out", str(tmp_path / "alias"), "--json", *args, "--train.epochs=1"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 3 and (tmp_path / "alias" / "config.json").exists()
    # A resume reports what it changes against the run's saved config: here nothing.
    assert main(["train", "--out", str(tmp_path / "alias"), "--resume", *args, "--train.epochs=1"]) == 0
    assert "(no config changes)" in capsys.readouterr().out


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("fastssl: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    return lines[0]


@pytest.mark.parametrize("code, says", [(errno.ENOSPC, "No space left on device"), (errno.EROFS, "read-only")])
def test_a_checkpoint_that_cannot_be_written_ends_the_run_in_one_line(tmp_path, capsys, monkeypatch, code, says):
    import contextlib

    from torch.distributed.checkpoint import filesystem

    from tests.train.conftest import tiny_overrides

    real = filesystem.FileSystem.create_stream

    @contextlib.contextmanager
    def disk_full_at_step_2(self, path, mode):
        if "step_00000002" in str(path):
            Path(path).write_bytes(b"torn")
            raise OSError(code, os.strerror(code), str(path))
        with real(self, path, mode) as stream:
            yield stream

    monkeypatch.setattr(filesystem.FileSystem, "create_stream", disk_full_at_step_2)
    out = tmp_path / "run"
    assert main(["train", *tiny_overrides(out), "--train.ckpt_every_steps=1", "--train.epochs=1"]) == 2
    line = _one_error_line(capsys)
    assert "cannot write checkpoint step_00000002" in line and says in line
    assert "step_00000001, continue from it with --resume" in line
    assert not list((out / "checkpoints").glob(".tmp-*"))
    assert [p.name for p in list_checkpoints(out)] == ["step_00000001"]
    assert load_checkpoint(latest_checkpoint(out))["step"] == 1


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:121] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                 "tried to allocate 8589934592 bytes. Error code 12 (Cannot allocate memory)"),
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 79 GiB"),
])
def test_out_of_memory_names_the_batch_size_and_activation_checkpointing(tmp_path, capsys, monkeypatch, error):
    import fastssl.train.trainer as trainer
    from tests.train.conftest import tiny_overrides

    def step(*args, **kwargs):
        raise error

    monkeypatch.setattr(trainer, "train_step", step)
    assert main(["train", *tiny_overrides(tmp_path / "run")]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("fastssl: error: out of memory (") and "allocate" in line and "enforce fail" not in line
    assert "err == 0" not in line
    assert "--train.batch_size" in line and "--train.activation_checkpointing=true" in line


def test_an_unknown_runtime_error_keeps_its_traceback(tmp_path, monkeypatch):
    import fastssl.train.trainer as trainer
    from tests.train.conftest import tiny_overrides

    def step(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(trainer, "train_step", step)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["train", *tiny_overrides(tmp_path / "run")])


# DCP fails at step 2's shards while two loader workers (persistent, deaf to SIGTERM) are running.
_DISK_FULL_WITH_WORKERS = r"""
import contextlib, errno, os, sys
from torch.distributed.checkpoint import filesystem
real = filesystem.FileSystem.create_stream
@contextlib.contextmanager
def create_stream(self, path, mode):
    if "step_00000002" in str(path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    with real(self, path, mode) as stream:
        yield stream
filesystem.FileSystem.create_stream = create_stream
from fastssl.cli import main
sys.exit(main(["train", *sys.argv[1:]]))
"""


@pytest.mark.slow
def test_a_failed_save_with_loader_workers_exits_instead_of_hanging(tmp_path):
    import subprocess
    import sys

    from tests.train.conftest import tiny_overrides

    args = [*tiny_overrides(tmp_path / "run"), "--data.num_workers=2", "--train.ckpt_every_steps=1", "--train.epochs=1"]
    r = subprocess.run([sys.executable, "-c", _DISK_FULL_WITH_WORKERS, *args], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 2 and "cannot write checkpoint step_00000002" in r.stderr and "Traceback" not in r.stderr


def test_train_json_prints_only_json_on_stdout(tmp_path, capsys):
    from tests.train.conftest import tiny_overrides

    assert main(["train", *tiny_overrides(tmp_path / "run"), "--train.max_steps=1", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["step"] == 1  # the whole of stdout is one JSON object
    assert "fastssl: recipe 'default'" in captured.err and "backend" in captured.err


def test_only_rank_0_prints_an_error_and_every_rank_exits_2(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    assert main(["config", "--data.limit=-3"]) == 2
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    assert main(["config", "--data.limit=-3"]) == 2
    assert "--data.limit=-3 must be >= 0" in capsys.readouterr().err
