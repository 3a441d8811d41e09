"""Self-training: the confidence threshold, the student's noise, and no test image in training."""

import argparse
import json

import numpy as np
import pytest
import torch
from torch import nn

import fastssl.eval.fewlabel as fewlabel_mod
import fastssl.eval.selftrain as selftrain_mod
from fastssl.config import Config
from fastssl.errors import FastSSLError
from fastssl.eval.features import build_random_method
from fastssl.eval.selftrain import pseudo_label, self_train, set_stochastic_depth
from fastssl.models.backbone import build_backbone
from tests.eval.test_finetune import ColourSource, tiny_cfg


class MeanColourTeacher(nn.Module):
    """Logits = scale x per-channel mean: confident on saturated images, unsure on grey ones."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale
        self.dummy = nn.Parameter(torch.zeros(1))  # so that it has a device

    def classify(self, x):
        return self.scale * x.mean(dim=(2, 3))  # [B, 3]


def test_pseudo_labels_only_above_the_threshold():
    cfg = tiny_cfg()
    source = ColourSource(60)
    teacher = MeanColourTeacher(scale=2.0)
    from fastssl.eval.finetune import predict

    probs = predict(teacher, source, cfg, "cpu")[0].softmax(1)
    conf = probs.max(1).values.numpy()
    threshold = float(np.median(conf))  # half above, half below
    kept = pseudo_label(teacher, source, cfg, threshold, "cpu")
    assert 0 < len(kept["index"]) < len(source)
    assert np.array_equal(kept["index"], np.flatnonzero(conf >= threshold))
    assert (kept["confidence"] >= threshold).all()
    assert np.array_equal(kept["label"], probs.argmax(1).numpy()[kept["index"]])
    assert len(pseudo_label(teacher, source, cfg, 0.0, "cpu")["index"]) == len(source)
    with pytest.raises(FastSSLError, match="--threshold"):
        pseudo_label(teacher, source, cfg, 1.5, "cpu")


class NoPeekSource(ColourSource):
    """A test set that raises when read outside an evaluation."""

    allowed = False

    def image(self, i):
        if not NoPeekSource.allowed:
            raise AssertionError(f"test image {i} read outside an evaluation")
        return super().image(i)


def _allow_reads_of(test_source, fn):
    def wrapped(backbone, source, *args, **kwargs):
        NoPeekSource.allowed = source is test_source
        try:
            return fn(backbone, source, *args, **kwargs)
        finally:
            NoPeekSource.allowed = False
    return wrapped


def test_student_never_sees_test_images_and_each_round_is_reported(monkeypatch):
    cfg = tiny_cfg()
    train, test = ColourSource(60), NoPeekSource(21, seed=1)
    for mod in (selftrain_mod, fewlabel_mod):  # the evaluations are the only allowed readers
        monkeypatch.setattr(mod, "classify_accuracy", _allow_reads_of(test, mod.classify_accuracy))
    method = build_random_method(cfg)
    before = {k: v.clone() for k, v in method.state_dict().items()}
    r = self_train(method, train, test, cfg, "cpu", labels_per_class=4, rounds=2, threshold=0.5, steps=8, lr=0.05)
    assert [h["round"] for h in r["rounds"]] == [0, 1, 2]
    assert r["n_labelled"] == 12 and r["n_unlabelled"] == 48
    for h in r["rounds"][1:]:
        assert h["n_train"] == 12 + h["n_pseudo"] and 0 <= h["n_pseudo"] <= 48
        assert 0.0 <= h["top1"] <= 100.0
    assert r["top1"] == r["rounds"][-1]["top1"] and r["teacher_top1"] == r["rounds"][0]["top1"]
    assert all(torch.equal(v, method.state_dict()[k]) for k, v in before.items())  # input untouched
    # The check is live: reading the test set outside an evaluation fails.
    with pytest.raises(AssertionError, match="outside an evaluation"):
        test.image(0)


def test_stochastic_depth_on_resnet_and_vit_blocks():
    from timm.layers import DropPath

    resnet = build_backbone("resnet-tiny", 8)
    assert set_stochastic_depth(resnet, 0.3) == 4
    rates = [m.drop_prob for m in resnet.modules() if isinstance(m, DropPath)]
    assert rates == pytest.approx([0.1, 0.2, 0.3])  # linear from 0 at the first block (Identity)
    vit = build_backbone("vit_nano", 8, patch_size=4)
    assert set_stochastic_depth(vit, 0.2) == 4
    x = torch.randn(2, 3, 8, 8)
    vit.train()
    assert not torch.equal(vit(x), vit(x))  # blocks dropped at random in training
    vit.eval()
    assert torch.equal(vit(x), vit(x))


def test_selftrain_command_prints_json_per_round(tmp_path, capsys):
    from fastssl.eval.selftrain_command import add_parser

    parser = argparse.ArgumentParser(prog="fastssl")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["selftrain", "--random-init", "--labels-per-class", "2", "--steps", "3",
                              "--threshold", "0.2", "--device", "cpu", "--num-workers", "0", "--json"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["task"] == "selftrain" and len(out["rounds"]) == 2 and out["n_labelled"] == 20
    assert out["n_test"] == 180 and "backbone" not in out
    with pytest.raises(FastSSLError, match="--dropout"):
        args = parser.parse_args(["selftrain", "--random-init", "--dropout", "1.0"])
        args.func(args)
