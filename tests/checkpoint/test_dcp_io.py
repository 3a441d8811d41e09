"""Checkpoint folders on one process: round trip, what is refused (single-file checkpoints of older
fastssl included), eval loading."""

import errno
import os

import pytest
import torch

from fastssl.checkpoint import (
    check_resumable,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_model_weights,
    load_pretrained,
    read_config,
    resolve_checkpoint,
    save_checkpoint,
)
from fastssl.config import Config
from fastssl.errors import FastSSLError
from fastssl.methods import build_method


def _cfg(model="resnet-tiny"):
    c = Config()
    c.model.name, c.data.image_size = model, 8
    c.method.proj_hidden_dim, c.method.proj_dim = 16, 8
    return c


def _save(out, cfg, step, method=None, keep_last=3, optim=None):
    method = method or build_method(cfg)
    return save_checkpoint(out, step, method.state_dict(), optim or {},
                           {"config": cfg.to_dict(), "step": step, "epoch": 0, "bad_steps": 0, "strategy": "ddp",
                            "world_size": 1}, keep_last)


def test_round_trip_and_keep_last(tmp_path):
    cfg = _cfg()
    m = build_method(cfg)
    opt = {"backbone.trunk.conv1.weight": {"momentum_buffer": torch.randn(32, 3, 3, 3)}}
    for step in [1, 2, 3, 4, 5]:
        _save(tmp_path, cfg, step, m, keep_last=2, optim=opt)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000004", "step_00000005"]
    assert resolve_checkpoint(tmp_path / "checkpoints") == latest_checkpoint(tmp_path)
    state = load_checkpoint(tmp_path, optimizer=True)
    assert state["step"] == 5 and len(state["rng"]) == 1
    assert torch.equal(state["optim"]["backbone.trunk.conv1.weight.momentum_buffer"],
                       opt["backbone.trunk.conv1.weight"]["momentum_buffer"])
    m2, cfg2 = load_pretrained(tmp_path)
    assert cfg2 == cfg and read_config(tmp_path) == cfg
    for (k, a), b in zip(m.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k
    fresh = build_method(cfg)
    load_model_weights(fresh, latest_checkpoint(tmp_path))
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), fresh.state_dict().values()))


def test_bad_checkpoints(tmp_path):
    with pytest.raises(FastSSLError, match="does not exist"):
        load_checkpoint(tmp_path / "missing")
    with pytest.raises(FastSSLError, match="no checkpoints"):
        load_checkpoint(tmp_path)
    (tmp_path / "checkpoints" / "step_00000007").mkdir(parents=True)  # no COMPLETE marker
    with pytest.raises(FastSSLError, match="incomplete checkpoint"):
        load_checkpoint(tmp_path / "checkpoints" / "step_00000007")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(FastSSLError, match="corrupt"):
        load_checkpoint(junk)


def _single_file_checkpoint(run):
    """A checkpoint as fastssl wrote them before DCP folders: one torch.save file (format v1)."""
    cfg = _cfg()
    (run / "checkpoints").mkdir(parents=True)
    path = run / "checkpoints" / "step_00000003.pt"
    torch.save({"format": "fastssl-ckpt-v1", "config": cfg.to_dict(), "model": build_method(cfg).state_dict(),
                "step": 3, "epoch": 0}, path)
    return path


SINGLE_FILE_REFUSAL = (r"step_00000003\.pt was written by fastssl 0\.1\.0 \(single-file format fastssl-ckpt-v1\), "
                       r"which this version no longer reads; re-export it with fastssl 0\.1\.0 .*`fastssl export`.* "
                       r"or retrain$")


def _export(path):
    from fastssl.checkpoint.export import load_backbone

    return load_backbone(path)


@pytest.mark.parametrize("use", ["eval", "resume", "weights", "init", "export"])
def test_single_file_checkpoint_is_refused_naming_the_version_that_wrote_it(tmp_path, use):
    from fastssl.checkpoint import read_train_state
    from fastssl.checkpoint.init_weights import read_backbone_weights

    load = {"eval": load_pretrained, "resume": read_train_state, "init": read_backbone_weights, "export": _export,
            "weights": lambda p: load_model_weights(build_method(_cfg()), p)}[use]
    path = _single_file_checkpoint(tmp_path / "run")
    for given in (path, tmp_path / "run"):  # the file itself, or the run folder that holds it
        with pytest.raises(FastSSLError, match=SINGLE_FILE_REFUSAL):
            load(given)


@pytest.mark.parametrize("command", ["export", "eval", "resume"])
def test_single_file_checkpoint_at_the_cli_is_one_line_and_exit_2(tmp_path, capsys, command):
    from fastssl.cli import main

    run = tmp_path / "run"
    _single_file_checkpoint(run)
    argv = {"export": ["export", "--ckpt", str(run), "--out", str(tmp_path / "backbone.pt")],
            "eval": ["eval", "knn", "--ckpt", str(run), "--device", "cpu"],
            "resume": ["train", "--out", str(run), "--resume", "--train.max_steps=1", "--train.progress=false"]}[command]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "written by fastssl 0.1.0 (single-file format" in lines[0], lines


def test_checkpoint_from_another_model_names_the_key(tmp_path):
    cfg = _cfg("resnet-tiny")
    _save(tmp_path, cfg, 1)
    state = load_checkpoint(tmp_path)
    other = _cfg("resnet18-cifar")
    with pytest.raises(FastSSLError, match=r"simclr/resnet-tiny model but this run builds simclr/resnet18-cifar: "
                                           r"--model.name is 'resnet-tiny' there"):
        check_resumable(state["config"], other, state["path"])
    other = _cfg()
    other.method.proj_dim = 4
    with pytest.raises(FastSSLError, match="--method.proj_dim is 8 there and 4 here"):
        check_resumable(state["config"], other, state["path"])
    # The step counts global batches of the checkpoint's size: another batch is refused by name.
    other = _cfg()
    other.train.batch_size = 64
    with pytest.raises(FastSSLError, match="--train.batch_size=.* a resume cannot change it"):
        check_resumable(state["config"], other, state["path"])
    # What only changes how the run proceeds is accepted.
    longer = _cfg()
    longer.train.max_steps, longer.dist.strategy = 99, "fsdp"
    check_resumable(state["config"], longer, state["path"])
    # Weights of another shape are refused by name too, before anything is loaded.
    with pytest.raises(FastSSLError, match=r"holds model\.backbone\.trunk\.\S+ of shape \(32, "):
        load_model_weights(build_method(_cfg("resnet18-cifar")), latest_checkpoint(tmp_path))


def _fail_dcp_writes_for(monkeypatch, step: int, err: BaseException):
    """DCP's file writer raises `err` for the shards of `step` after the first file is created, as a
    disk that fills up mid-save does; other steps write normally."""
    import contextlib

    from torch.distributed.checkpoint import filesystem

    real = filesystem.FileSystem.create_stream

    @contextlib.contextmanager
    def create_stream(self, path, mode):
        if f"step_{step:08d}" in str(path):
            with open(path, "wb") as f:
                f.write(b"torn")
            raise err
        with real(self, path, mode) as stream:
            yield stream

    monkeypatch.setattr(filesystem.FileSystem, "create_stream", create_stream)


@pytest.mark.parametrize("code, says", [(errno.ENOSPC, "No space left on device"),
                                        (errno.EROFS, "Read-only file system")])
def test_a_failed_save_is_one_line_and_leaves_no_torn_folder(tmp_path, monkeypatch, code, says):
    cfg = _cfg()
    _save(tmp_path, cfg, 1)
    _fail_dcp_writes_for(monkeypatch, 2, OSError(code, os.strerror(code)))
    with pytest.raises(FastSSLError) as e:
        _save(tmp_path, cfg, 2)
    assert says in str(e.value) and "step_00000002" in str(e.value) and "\n" not in str(e.value)
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000001"]
    assert load_checkpoint(latest_checkpoint(tmp_path))["step"] == 1  # the previous one is intact


def test_a_short_write_of_the_train_state_names_the_disk(tmp_path, monkeypatch):
    import fastssl.checkpoint.dcp_io as io

    def torn(path, state):  # what torch.save says on a full disk: no errno, a C++ assertion
        path.write_bytes(b"PK")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(io, "_write_train_state", torn)
    with pytest.raises(FastSSLError, match=r"step_00000001 .*the write failed with \d+ MiB free.*--train.out"):
        _save(tmp_path, _cfg(), 1)
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_a_bug_in_a_save_keeps_its_traceback_but_not_its_torn_folder(tmp_path, monkeypatch):
    _fail_dcp_writes_for(monkeypatch, 1, ValueError("a bug"))
    with pytest.raises(BaseException, match="a bug") as e:
        _save(tmp_path, _cfg(), 1)
    assert not isinstance(e.value, FastSSLError)
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


# Rank 0 alone cannot write its train state at step 2 (its disk filled up); rank 1 writes fine.
_RANK0_DISK_FULL = r"""
import errno, os, sys
import fastssl.checkpoint.dcp_io as io
real = io._write_train_state
def write(path, state):
    if "step_00000002" in str(path) and os.environ["RANK"] == "0":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return real(path, state)
io._write_train_state = write
from fastssl.cli import main
sys.exit(main(["train", *sys.argv[1:]]))
"""


@pytest.mark.slow
@pytest.mark.distributed
def test_a_save_failing_on_rank_0_ends_every_rank_without_a_hang(tmp_path):
    import subprocess
    import sys

    from tests.train.conftest import tiny_overrides

    script = tmp_path / "disk_full.py"
    script.write_text(_RANK0_DISK_FULL)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           *tiny_overrides(out), "--train.ckpt_every_steps=1", "--train.epochs=1", "--dist.backend=gloo",
           "--dist.timeout_s=120"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("fastssl: error:")]
    # torchrun stops the other rank once one exits, so it may not get to print; neither hangs. The
    # only traceback allowed is torchrun's own report of a child's exit status.
    frames = [ln for ln in r.stderr.splitlines() if ln.strip().startswith('File "') and "fastssl" in ln]
    assert r.returncode != 0 and errors and not frames, r.stderr[-3000:]
    assert all("No space left on device" in ln and "step_00000001, continue from it" in ln for ln in errors)
    assert [p.name for p in list_checkpoints(out)] == ["step_00000001"]
    assert not list((out / "checkpoints").glob(".tmp-*"))
