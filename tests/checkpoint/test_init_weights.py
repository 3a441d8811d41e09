"""`--model.init`: a new run's backbone (and its EMA copy) from a timm state_dict, a `fastssl export`
file or a checkpoint; nothing else carried over, nothing that does not fit accepted."""

import json

import pytest
import torch

from fastssl.checkpoint import save_checkpoint
from fastssl.checkpoint.init_weights import init_backbone
from fastssl.cli import main
from fastssl.config import Config
from fastssl.errors import FastSSLError
from fastssl.methods import build_method
from tests.train.conftest import tiny_overrides


def _config(name="byol", model="resnet-tiny", size=16) -> Config:
    cfg = Config()
    cfg.set_method(name)
    cfg.model.name, cfg.data.image_size, cfg.model.patch_size = model, size, 4
    cfg.method.proj_hidden_dim, cfg.method.proj_dim = 16, 8
    return cfg


def _method(name="byol", model="resnet-tiny", size=16, seed=0):
    torch.manual_seed(seed)
    return build_method(_config(name, model, size)).eval()


def test_export_then_init_gives_the_same_features(tmp_path):
    src = _method(seed=1)
    save_checkpoint(tmp_path / "run", 3, src.state_dict(), {}, {"config": _config().to_dict(), "step": 3, "epoch": 0}, keep_last=1)
    assert main(["export", "--ckpt", str(tmp_path / "run"), "--out", str(tmp_path / "bb.pt")]) == 0
    for path in (tmp_path / "bb.pt", tmp_path / "run"):  # the export file, and the checkpoint itself
        dst = _method(seed=2)
        report = init_backbone(dst, path, "resnet-tiny")
        x = torch.randn(4, 3, 16, 16)
        assert torch.equal(dst.backbone(x), src.backbone(x))
        assert report.missing == report.unexpected == report.mismatched == 0
        # BYOL's target starts as a copy of the online backbone, so from the same weights.
        assert torch.equal(dst.target_backbone(x), src.backbone(x))
        assert not torch.equal(dst.projector[0].weight, src.projector[0].weight)  # heads start afresh


def test_timm_state_dict_with_its_classifier_and_a_ddp_wrapper(tmp_path):
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet18", pretrained=False, num_classes=1000)
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "r18.pt")
    dst = _method("simclr", "resnet18", 32)
    report = init_backbone(dst, tmp_path / "r18.pt", "resnet18")
    assert report.unexpected == 2 and report.missing == 0  # fc.weight and fc.bias, counted
    for k, v in dst.backbone.trunk.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_vit_position_embedding_is_resampled_to_the_new_grid(tmp_path):
    src = _method("simclr", "vit_nano", 16)  # 4 x 4 patches
    torch.save(src.backbone.trunk.state_dict(), tmp_path / "vit.pt")
    dst = _method("simclr", "vit_nano", 32, seed=3)  # 8 x 8 patches
    report = init_backbone(dst, tmp_path / "vit.pt", "vit_nano")
    assert report.reshaped == 1 and report.mismatched == 0
    assert torch.equal(dst.backbone.trunk.blocks[0].attn.qkv.weight, src.backbone.trunk.blocks[0].attn.qkv.weight)


def test_weights_of_another_architecture_are_refused(tmp_path):
    torch.save(_method("simclr", "vit_nano").backbone.trunk.state_dict(), tmp_path / "vit.pt")
    with pytest.raises(FastSSLError, match="matches none of --model.name=resnet-tiny"):
        init_backbone(_method(), tmp_path / "vit.pt", "resnet-tiny")


def test_cli_starts_a_fresh_run_from_the_weights_and_refuses_a_wrong_one(tmp_path, capsys):
    torch.save(_method("simclr").backbone.trunk.state_dict(), tmp_path / "bb.pt")
    out = tmp_path / "run"
    argv = ["train", *tiny_overrides(out), "--train.max_steps=1", f"--model.init={tmp_path / 'bb.pt'}"]
    assert main(argv) == 0
    assert "backbone initialised from" in capsys.readouterr().out
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"][0] == 1  # the step starts afresh
    torch.save(_method("simclr", "vit_nano").backbone.trunk.state_dict(), tmp_path / "vit.pt")
    argv = ["train", *tiny_overrides(tmp_path / "run2"), f"--model.init={tmp_path / 'vit.pt'}"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "matches none of" in err[0]
    assert main(["train", *tiny_overrides(tmp_path / "run3"), "--model.init=/nonexistent.pt"]) == 2
    assert "--model.init='/nonexistent.pt' does not exist" in capsys.readouterr().err
