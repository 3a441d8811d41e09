"""Atomic publication: a save killed at any point leaves the previous checkpoint as the newest."""

import subprocess
import sys

import pytest
import torch

from fastssl.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from fastssl.checkpoint.layout import COMPLETE, publish, tmp_dir
from fastssl.train.trainer import train
from tests.train.conftest import tiny_overrides

# Runs `fastssl train` with a checkpoint after every step and dies (os._exit, no clean-up: as
# SIGKILL) while saving step 2, at the point named by argv[1].
_KILLER = r"""
import os, sys
import torch.distributed.checkpoint as dcp
import fastssl.checkpoint.dcp_io as io
where = sys.argv[1]
real_save, real_publish = dcp.save, io.publish

def save(state, checkpoint_id, **kw):
    if where == "mid-write" and checkpoint_id.endswith("step_00000002"):
        real_save({"model": state["model"]}, checkpoint_id=checkpoint_id, **kw)  # part of the shards
        os._exit(9)
    return real_save(state, checkpoint_id=checkpoint_id, **kw)

def publish(out, step, keep_last):
    if where == "before-rename" and step == 2:
        (io.tmp_dir(out, step) / "COMPLETE").write_text("2\n")  # even a marker in the temp folder
        os._exit(9)
    return real_publish(out, step, keep_last)

dcp.save, io.publish = save, publish
from fastssl.cli import main
sys.exit(main(["train", *sys.argv[2:]]))
"""


def test_publish_marks_renames_and_prunes(tmp_path):
    for step in (1, 2, 3):
        tmp_dir(tmp_path, step).mkdir(parents=True)
        publish(tmp_path, step, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000002", "step_00000003"]
    assert all((p / COMPLETE).is_file() for p in list_checkpoints(tmp_path))
    # A temp folder, even with a marker in it, and an unmarked step folder are never picked.
    (tmp_dir(tmp_path, 4)).mkdir()
    (tmp_dir(tmp_path, 4) / COMPLETE).write_text("4\n")
    (tmp_path / "checkpoints" / "step_00000005").mkdir()
    assert latest_checkpoint(tmp_path).name == "step_00000003"


@pytest.mark.parametrize("where", ["mid-write", "before-rename"])
def test_killed_save_leaves_previous_checkpoint_and_resume_finishes(tmp_path, where):
    out = tmp_path / "run"
    args = [*tiny_overrides(out), "--train.epochs=1", "--train.ckpt_every_steps=1", "--optim.name=sgd"]
    r = subprocess.run([sys.executable, "-c", _KILLER, where, *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 9, r.stderr[-2000:]
    assert latest_checkpoint(out).name == "step_00000001"
    assert tmp_dir(out, 2).is_dir()  # the interrupted save is still there, and ignored
    from fastssl.cli import resolve_config

    resumed = train(resolve_config("default", [*args, "--train.resume=true"]))
    assert resumed["step"] == 3 and not tmp_dir(out, 2).exists()
    full = train(resolve_config("default", [*tiny_overrides(tmp_path / "full"), *args[len(tiny_overrides(out)):]]))
    assert full["step"] == 3
    a, b = load_checkpoint(out)["model"], load_checkpoint(tmp_path / "full")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_republishing_a_step_never_loses_it_when_the_rename_fails(tmp_path, monkeypatch):
    import errno
    import os

    import fastssl.checkpoint.layout as layout

    tmp_dir(tmp_path, 7).mkdir(parents=True)
    first = publish(tmp_path, 7, keep_last=3)
    (first / "weights").write_text("first")
    tmp_dir(tmp_path, 7).mkdir()
    real_replace = os.replace

    def replace(src, dst):
        if str(src).endswith(".tmp-step_00000007"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(layout.os, "replace", replace)
    with pytest.raises(OSError):
        publish(tmp_path, 7, keep_last=3)
    assert latest_checkpoint(tmp_path) == first and (first / "weights").read_text() == "first"
