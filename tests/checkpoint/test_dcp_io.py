"""Checkpoint folders on one process: round trip, what is refused, legacy files, eval loading."""

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


def test_legacy_single_file_checkpoint_still_evaluates(tmp_path):
    cfg = _cfg()
    m = build_method(cfg)
    (tmp_path / "checkpoints").mkdir()
    torch.save({"format": "fastssl-ckpt-v1", "config": cfg.to_dict(), "model": m.state_dict(), "step": 3},
               tmp_path / "checkpoints" / "step_00000003.pt")
    m2, _ = load_pretrained(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))


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
