import os

import pytest
import torch

from fastssl.config import Config
from fastssl.errors import FastSSLError
from fastssl.methods import build_method
from fastssl.train.checkpoint import (
    atomic_save,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_pretrained,
    resolve_checkpoint,
    save_checkpoint,
)


def _cfg(model="resnet-tiny"):
    c = Config()
    c.model.name, c.data.image_size = model, 8
    c.method.proj_hidden_dim, c.method.proj_dim = 16, 8
    return c


def test_keep_last_and_latest(tmp_path):
    for step in [1, 2, 3, 4, 5]:
        save_checkpoint(tmp_path, {"step": step}, step, keep_last=2)
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["step_00000004.pt", "step_00000005.pt"]
    assert latest_checkpoint(tmp_path).name == "step_00000005.pt"
    assert resolve_checkpoint(tmp_path / "checkpoints") == latest_checkpoint(tmp_path)


def test_atomic_save_leaves_old_file_when_write_fails(tmp_path):
    path = tmp_path / "x.pt"
    atomic_save({"a": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_save({"a": Unpicklable()}, path)
    assert torch.load(path)["a"] == 1
    assert sorted(os.listdir(tmp_path)) == ["x.pt"]  # no temporary file left behind


def test_load_pretrained_round_trip(tmp_path):
    cfg = _cfg()
    m = build_method(cfg)
    save_checkpoint(tmp_path, {"config": cfg.to_dict(), "model": m.state_dict(), "step": 3}, 3)
    m2, cfg2 = load_pretrained(tmp_path)
    assert cfg2 == cfg
    for a, b in zip(m.state_dict().values(), m2.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_bad_checkpoints(tmp_path):
    with pytest.raises(FastSSLError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(FastSSLError, match="no checkpoints"):
        load_checkpoint(tmp_path)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(FastSSLError, match="corrupt"):
        load_checkpoint(junk)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(FastSSLError, match="not a fastssl checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_checkpoint_from_another_model(tmp_path):
    cfg = _cfg("resnet-tiny")
    save_checkpoint(tmp_path, {"config": cfg.to_dict(), "model": build_method(cfg).state_dict(), "step": 1}, 1)
    state = load_checkpoint(tmp_path)
    from fastssl.train.checkpoint import load_model_state

    other = _cfg("resnet18-cifar")
    with pytest.raises(FastSSLError, match="simclr/resnet-tiny.*simclr/resnet18-cifar"):
        load_model_state(build_method(other), state["model"], state["config"], other, state["path"])
