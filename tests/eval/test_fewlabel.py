"""The few-label protocol: the label split, step selection on validation, the linear probe."""

import numpy as np
import pytest
import torch

from fastssl.errors import FastSSLError
from fastssl.eval.features import build_random_method
from fastssl.eval.fewlabel import best_of, few_label_linear, few_label_run, split_labelled
from tests.eval.test_finetune import ColourSource, tiny_cfg


def test_split_holds_out_a_share_of_each_class_and_never_all_of_it():
    labels = np.repeat(np.arange(4), 30)
    s = split_labelled(labels, 10, 0.2, seed=3)
    assert len(s.labelled) == 40 and len(s.val) == 8 and len(s.fit) == 32
    assert set(s.fit).isdisjoint(s.val) and set(s.fit) | set(s.val) == set(s.labelled)
    assert np.array_equal(np.bincount(labels[s.val]), [2, 2, 2, 2])
    two = split_labelled(labels, 2, 0.2)
    assert np.array_equal(np.bincount(labels[two.val]), [1, 1, 1, 1])  # at least one, never both
    one = split_labelled(labels, 1, 0.2)
    assert len(one.val) == 0 and len(one.fit) == 4  # nothing to hold out
    # The labelled draw is the same whatever the held-out share.
    assert np.array_equal(split_labelled(labels, 10, 0.0, seed=3).labelled, s.labelled)
    with pytest.raises(FastSSLError, match="val-fraction"):
        split_labelled(labels, 2, 1.0)


def test_best_step_prefers_accuracy_then_loss():
    assert best_of([(10, 50.0, 1.0), (20, 70.0, 0.9), (30, 70.0, 0.5), (40, 60.0, 0.1)]) == (30, 70.0)


def test_early_stopping_keeps_the_best_validation_step_and_refits_on_all_labels():
    cfg = tiny_cfg()
    method = build_random_method(cfg)
    run = few_label_run(method, ColourSource(60), ColourSource(30, seed=1), cfg, "cpu", labels_per_class=5,
                        steps=20, lr=0.05, linear=False)
    r = run.result
    assert r["n_val"] == 3 and r["n_fit"] == 12 and r["steps"] == 20 and r["refit"]
    assert r["best_step"] in range(1, 21) and r["val_top1"] is not None
    assert r["top1"] > 80.0  # the easy colour task is learnt
    assert isinstance(run.backbone.head, torch.nn.Linear)
    no_refit = few_label_run(method, ColourSource(60), ColourSource(30, seed=1), cfg, "cpu", labels_per_class=5,
                             steps=20, lr=0.05, linear=False, refit=False).result
    assert not no_refit["refit"] and no_refit["best_step"] == r["best_step"]


def test_linear_probe_on_few_labels_separates_separable_features():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 16, generator=g) * 3
    labels = torch.arange(3).repeat(4)  # 4 labelled per class
    feats = centres[labels] + torch.randn(12, 16, generator=g)
    test_y = torch.arange(3).repeat(20)
    test_x = centres[test_y] + torch.randn(60, 16, generator=g)
    is_val = np.zeros(12, dtype=bool)
    is_val[:3] = True  # one per class
    r = few_label_linear(feats, labels, is_val, test_x, test_y, 3, step_grid=(5, 50))
    assert r["top1"] > 90.0 and r["steps"] in (5, 50) and r["val_top1"] is not None
    # Without a validation slice the longest schedule is used.
    assert few_label_linear(feats, labels, np.zeros(12, bool), test_x, test_y, 3, step_grid=(5, 50))["steps"] == 50
