"""`fastssl export`: the backbone of a checkpoint as a timm state_dict, online or EMA weights."""

import json

import pytest
import torch

from fastssl.checkpoint import save_checkpoint
from fastssl.cli import main
from fastssl.config import Config
from fastssl.methods import build_method


def _checkpoint(out, method_name, model):
    cfg = Config()
    cfg.set_method(method_name)
    cfg.model.name, cfg.data.image_size = model, 32
    cfg.method.proj_hidden_dim, cfg.method.proj_dim = 16, 8
    method = build_method(cfg)
    with torch.no_grad():  # make the EMA target differ from the online backbone
        for p in method.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    save_checkpoint(out, 5, method.state_dict(), {}, {"config": cfg.to_dict(), "step": 5, "epoch": 0}, keep_last=3)
    return method


def test_export_loads_into_timm(tmp_path, capsys):
    timm = pytest.importorskip("timm")
    method = _checkpoint(tmp_path / "run", "simclr", "resnet18")
    assert main(["export", "--ckpt", str(tmp_path / "run"), "--out", str(tmp_path / "bb.pt"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["step"] == 5 and info["weights"] == "online"
    sd = torch.load(tmp_path / "bb.pt")
    model = timm.create_model("resnet18", pretrained=False, num_classes=0)
    model.load_state_dict(sd, strict=True)  # every timm key, no prefix left
    for k, v in method.backbone.trunk.state_dict().items():
        assert torch.equal(sd[k], v), k


def test_export_ema_weights_and_errors(tmp_path, capsys):
    method = _checkpoint(tmp_path / "byol", "byol", "resnet-tiny")
    assert main(["export", "--ckpt", str(tmp_path / "byol"), "--out", str(tmp_path / "t.pt"), "--weights", "ema"]) == 0
    assert "ema resnet-tiny trunk at step 5" in capsys.readouterr().out
    sd = torch.load(tmp_path / "t.pt")
    for k, v in method.target_backbone.trunk.state_dict().items():
        assert torch.equal(sd[k], v), k
    assert not torch.equal(sd["conv1.weight"], method.backbone.trunk.conv1.weight)
    _checkpoint(tmp_path / "simclr", "simclr", "resnet-tiny")
    assert main(["export", "--ckpt", str(tmp_path / "simclr"), "--out", str(tmp_path / "x.pt"), "--weights", "ema"]) == 2
    assert "keeps no EMA copy" in capsys.readouterr().err
    assert main(["export", "--ckpt", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.pt")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
