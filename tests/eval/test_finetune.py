import numpy as np
import pytest
import torch
from PIL import Image

from fastssl.config import Config
from fastssl.data import ImageSource, open_source
from fastssl.errors import FastSSLError
from fastssl.eval.features import build_random_method
from fastssl.eval.fewlabel import few_label_finetune
from fastssl.eval.finetune import (
    _translate_flip,
    classify_accuracy,
    finetune_backbone,
    sample_per_class,
    training_steps,
)


class ColourSource(ImageSource):
    """Class c = a noisy image of one of three flat colours: learnable in a few steps."""

    COLOURS = np.array([[220, 30, 30], [30, 220, 30], [30, 30, 220]], dtype=np.int16)

    def __init__(self, n: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.labels = np.arange(n, dtype=np.int64) % 3
        noise = rng.integers(-25, 26, size=(n, 8, 8, 3))
        self.pixels = np.clip(self.COLOURS[self.labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
        self.num_classes = 3

    def name(self, i):
        return f"colour[{i}]"

    def image(self, i):
        return Image.fromarray(self.pixels[i])


def tiny_cfg(size: int = 8) -> Config:
    cfg = Config()
    cfg.model.name, cfg.data.image_size = "resnet-tiny", size
    cfg.method.proj_hidden_dim, cfg.method.proj_dim = 32, 16
    cfg.aug.flip_p = 0.0
    cfg.eval.batch_size = 32
    return cfg


def test_sample_per_class_picks_exactly_n_and_is_deterministic():
    labels = np.array([0] * 10 + [1] * 4 + [2] * 7 + [4] * 5)  # class 3 absent
    idx = sample_per_class(labels, 3, seed=5)
    assert np.array_equal(np.bincount(labels[idx], minlength=5), [3, 3, 3, 0, 3])
    assert len(np.unique(idx)) == len(idx) and np.all(np.diff(idx) > 0)
    assert np.array_equal(idx, sample_per_class(labels, 3, seed=5))
    assert not np.array_equal(idx, sample_per_class(labels, 3, seed=6))
    with pytest.raises(FastSSLError, match="labels-per-class=4 or fewer"):
        sample_per_class(labels, 5)
    with pytest.raises(FastSSLError):
        sample_per_class(labels, 0)


def test_translate_flip_keeps_shape_and_content_without_shift_room():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    y = _translate_flip(x, g, flip=False)
    assert y.shape == x.shape
    # Every output row is a (shifted, edge-replicated) row of the input: values stay in range.
    assert y.min() >= x.min() and y.max() <= x.max()
    flat = torch.ones(4, 3, 8, 8) * 3.0
    assert torch.equal(_translate_flip(flat, g, flip=True), flat)


def test_finetune_changes_weights_and_learns_an_easy_task():
    cfg = tiny_cfg()
    backbone = build_random_method(cfg).backbone
    before = {k: v.clone() for k, v in backbone.trunk.state_dict().items() if v.is_floating_point()}
    source = ColourSource(48)
    finetune_backbone(backbone, source, cfg, num_classes=3, device="cpu", steps=18, lr=0.05, batch_size=16)
    after = backbone.trunk.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) > len(before) // 2  # the whole backbone trains, not just the head
    assert isinstance(backbone.head, torch.nn.Linear) and backbone.head.out_features == 3
    assert not backbone.training
    assert classify_accuracy(backbone, ColourSource(30, seed=1), cfg, "cpu")["top1"] > 80.0


def test_training_length_is_in_steps_whatever_the_labelled_set_size():
    cfg = tiny_cfg()
    seen = []
    backbone = build_random_method(cfg).backbone
    # 6 images at batch 16: one "epoch" is one step; 25 steps are 25 optimizer steps regardless.
    finetune_backbone(backbone, ColourSource(6), cfg, 3, "cpu", steps=25, lr=0.01, every=5,
                      on_eval=lambda step, b: seen.append((step, b.training)))
    assert seen == [(5, False), (10, False), (15, False), (20, False), (25, False)]
    cfg.eval.finetune_steps, cfg.eval.finetune_epochs = 500, 30
    assert training_steps(cfg, 200, 256) == 500  # the default: steps, not 30 epochs of 1 step
    assert training_steps(cfg, 200, 256, epochs=3) == 3 and training_steps(cfg, 200, 64, epochs=3) == 12
    assert training_steps(cfg, 200, 256, steps=40, epochs=3) == 40
    cfg.eval.finetune_steps = 0
    assert training_steps(cfg, 1000, 100) == 300  # 0 falls back to finetune_epochs


def test_head_dropout_is_active_in_training_only():
    cfg = tiny_cfg()
    backbone = build_random_method(cfg).backbone
    finetune_backbone(backbone, ColourSource(12), cfg, 3, "cpu", steps=2, lr=0.01, head_dropout=0.5)
    assert isinstance(backbone.head[0], torch.nn.Dropout) and backbone.head[0].p == 0.5
    x = torch.randn(4, 3, 8, 8)
    assert torch.equal(backbone.classify(x), backbone.classify(x))  # eval mode: no dropout


def test_few_label_finetune_on_digits_leaves_the_model_untouched():
    cfg = tiny_cfg()
    method = build_random_method(cfg)
    snapshot = {k: v.clone() for k, v in method.state_dict().items()}
    train, test = open_source("", "digits", "train"), open_source("", "digits", "test")
    rng_before = torch.get_rng_state()
    r = few_label_finetune(method, train, test.subset(0, 60), cfg, "cpu", labels_per_class=2, steps=6, lr=0.01)
    assert 0.0 <= r["top1"] <= 100.0 and 0.0 <= r["top5"] <= 100.0
    assert r["n_labelled"] == 20 and r["labels_per_class"] == 2 and r["steps"] == 6
    assert r["n_val"] == 10 and r["n_fit"] == 10 and 1 <= r["best_step"] <= 6 and r["refit"]
    assert 0.0 <= r["linear"]["top1"] <= 100.0 and r["linear"]["steps"] in (50, 100, 200, 500, 1000)
    assert all(torch.equal(v, method.state_dict()[k]) for k, v in snapshot.items())
    assert isinstance(method.backbone.head, torch.nn.Identity)
    assert torch.equal(rng_before, torch.get_rng_state())
    # Same seed, same labels and init: the same result.
    again = few_label_finetune(method, train, test.subset(0, 60), cfg, "cpu", labels_per_class=2, steps=6, lr=0.01)
    assert again["top1"] == r["top1"] and again["linear"] == r["linear"]
