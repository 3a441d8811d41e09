import numpy as np
import pytest
import torch
from torch import nn

from fastssl.config import Config
from fastssl.data import open_source
from fastssl.errors import FastSSLError
from fastssl.eval.features import (
    build_random_method,
    extract_features,
    num_classes_of,
    project,
    resolve_device,
    source_features,
    unwrap_backbone,
)
from fastssl.eval.knn import knn_eval


def tiny_cfg() -> Config:
    cfg = Config()
    cfg.model.name, cfg.data.image_size = "resnet-tiny", 8
    cfg.method.proj_hidden_dim, cfg.method.proj_dim = 32, 16
    cfg.eval.batch_size = 16
    return cfg


def test_random_init_is_seeded_and_leaves_the_global_rng_alone():
    cfg = tiny_cfg()
    state = torch.get_rng_state()
    a, b, c = build_random_method(cfg, seed=0), build_random_method(cfg, seed=0), build_random_method(cfg, seed=1)
    assert torch.equal(state, torch.get_rng_state())
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert not a.training


def test_extract_features_uses_eval_mode_and_restores_state():
    cfg = tiny_cfg()
    backbone = build_random_method(cfg).backbone
    backbone.train()
    # Non-trivial running stats, so train-mode (batch stats) and eval-mode outputs differ.
    for m in backbone.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.fill_(0.3)
            m.running_var.fill_(2.0)
    images = torch.randn(10, 3, 8, 8)
    loader = [(images[:4], torch.arange(4)), (images[4:], torch.arange(4, 10))]
    rng = torch.get_rng_state()
    feats, labels = extract_features(backbone, loader, "cpu")
    assert torch.equal(rng, torch.get_rng_state())
    assert backbone.training  # restored
    assert feats.shape == (10, backbone.num_features) and feats.dtype == torch.float32
    assert not feats.requires_grad
    assert torch.equal(labels, torch.arange(10))
    backbone.eval()
    with torch.no_grad():
        assert torch.allclose(feats, backbone(images), atol=1e-5)


def test_source_features_follow_source_order_and_unwrap_methods():
    cfg = tiny_cfg()
    method = build_random_method(cfg)
    source = open_source("", "digits", "test").subset(0, 20)

    class Wrapper(nn.Module):  # stands in for DDP / torch.compile
        def __init__(self, module):
            super().__init__()
            self.module = module

    feats, labels = source_features(Wrapper(method), source, cfg, "cpu", batch_size=7)
    assert unwrap_backbone(Wrapper(method)) is method.backbone
    assert unwrap_backbone(method.backbone) is method.backbone
    assert feats.shape == (20, method.backbone.num_features)
    assert np.array_equal(labels.numpy(), source.labels)


def test_project_applies_the_projector_in_eval_mode():
    projector = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    projector.train()
    x = torch.randn(5, 4)
    z = project(projector, x, batch_size=2)
    assert projector.training
    projector.eval()
    with torch.no_grad():
        assert torch.allclose(z, projector(x), atol=1e-6)


def test_user_errors():
    class Unlabelled:
        labels = np.array([-1, -1])
        num_classes = 0

    with pytest.raises(FastSSLError, match="unlabelled"):
        num_classes_of(Unlabelled())
    with pytest.raises(FastSSLError, match="--device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(FastSSLError, match="--device=cpu"):
            resolve_device("cuda")
    bad = nn.Linear(2, 2)
    with torch.no_grad():
        bad.weight.fill_(float("nan"))
    with pytest.raises(FastSSLError, match="non-finite"):
        extract_features(bad, [(torch.ones(2, 2), torch.zeros(2))], "cpu")


def test_knn_eval_is_what_training_calls():
    cfg = tiny_cfg()
    cfg.eval.knn_k = 20
    method = build_random_method(cfg)
    train = open_source("", "digits", "train").subset(0, 150)
    test = open_source("", "digits", "test").subset(0, 40)
    r = knn_eval(method, train, test, cfg, "cpu", num_workers=0)
    assert 0.0 <= r["top1"] <= 100.0 and r["top5"] >= r["top1"]
    assert (r["k"], r["t"], r["n_train"], r["n_test"]) == (20, cfg.eval.knn_t, 150, 40)
    # A bare backbone works too and gives the same answer.
    assert knn_eval(method.backbone, train, test, cfg, "cpu", num_workers=0) == r
