"""Every registered backbone's export loads outside fastssl and gives the trained features.

Non-custom backbones load from the exact `timm.create_model(...)` call the export prints, and from
the `--format hf` folder through timm's `local-dir:`; every backbone, custom ones included, loads
through `fastssl.load_backbone` from the export, the hf folder and the run folder.
"""

import json

import pytest
import torch

from fastssl.checkpoint import save_checkpoint
from fastssl.checkpoint.export import load_backbone
from fastssl.cli import main
from fastssl.config import Config
from fastssl.models.backbone import build_backbone
from fastssl.registry import BACKBONES

timm = pytest.importorskip("timm")

_SLOW = {"vit_base", "vit_small", "resnet50", "resnet50-cifar"}  # 13-57 s each at load 13 on 2 cores
NAMES = [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW else n for n, _ in BACKBONES.items()]


def _run(out, name):
    """A run folder holding a checkpoint of `name` (random weights, BN statistics moved off their init)."""
    cfg = Config()
    cfg.model.name, cfg.data.image_size, cfg.model.patch_size = name, 16, 4
    backbone = build_backbone(name, 16, 4)
    with torch.no_grad():
        for b in backbone.buffers():
            if b.is_floating_point():
                b.add_(torch.rand_like(b))
    model = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    save_checkpoint(out, 7, model, {}, {"config": cfg.to_dict(), "step": 7, "epoch": 0}, keep_last=1)
    (out / "metrics.jsonl").write_text(json.dumps({"kind": "summary", "step": 7, "knn_top1": 0.4213}) + "\n")
    return backbone.eval()


def _export(capsys, run, out, *extra):
    assert main(["export", "--ckpt", str(run), "--out", str(out), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("name", NAMES)
def test_every_backbone_export_loads_with_the_same_features(tmp_path, capsys, name):
    backbone = _run(tmp_path / "run", name)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        want = backbone(x)
        info = _export(capsys, tmp_path / "run", tmp_path / "bb.pt")
        assert (tmp_path / "bb.config.json").is_file()
        assert info["custom"] == (name == "resnet-tiny" or name.endswith("-cifar"))
        if info["custom"]:
            assert info["timm"] is None
        else:
            model = eval(info["timm"], {"timm": timm}).eval()  # the printed call, as a user pastes it
            torch.testing.assert_close(model(x), want, rtol=0, atol=0)
        for source in (tmp_path / "bb.pt", tmp_path / "run"):
            loaded, spec = load_backbone(source)
            torch.testing.assert_close(loaded(x), want, rtol=0, atol=0)
            assert spec["model"] == name and spec["img_size"] == 16

        hf = _export(capsys, tmp_path / "run", tmp_path / "hf", "--format", "hf")
        assert "42.1% kNN top-1" in (tmp_path / "hf" / "README.md").read_text()
        if not hf["custom"]:
            model = timm.create_model(f"local-dir:{tmp_path / 'hf'}", pretrained=True).eval()
            torch.testing.assert_close(model(x), want, rtol=0, atol=0)
            assert model.num_features == backbone.num_features
        torch.testing.assert_close(load_backbone(tmp_path / "hf")[0](x), want, rtol=0, atol=0)


def test_export_message_names_the_call(tmp_path, capsys):
    _run(tmp_path / "tiny", "resnet-tiny")
    assert main(["export", "--ckpt", str(tmp_path / "tiny"), "--out", str(tmp_path / "t.pt")]) == 0
    out = capsys.readouterr().out
    assert "custom backbone timm cannot build by name" in out and "fastssl.load_backbone(" in out
    _run(tmp_path / "nano", "vit_nano")
    assert main(["export", "--ckpt", str(tmp_path / "nano"), "--out", str(tmp_path / "n.pt")]) == 0
    out = capsys.readouterr().out
    assert 'timm.create_model("vit_tiny_patch16_224", pretrained=True' in out and "embed_dim=96" in out
    config = json.loads((tmp_path / "n.config.json").read_text())
    assert config["architecture"] == "vit_tiny_patch16_224" and config["num_features"] == 96
    assert config["fastssl"]["patch_size"] == 4 and config["fastssl"]["img_size"] == 16


def test_load_backbone_refuses_a_foreign_file(tmp_path):
    from fastssl.errors import FastSSLError

    torch.save({}, tmp_path / "x.pt")
    with pytest.raises(FastSSLError, match="no x.config.json beside it"):
        load_backbone(tmp_path / "x.pt")
