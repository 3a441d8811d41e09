import pytest
import torch
from torch import nn

from fastssl.config import OptimConfig
from fastssl.errors import FastSSLError
from fastssl.train.optim import LARS, build_optimizer, param_groups


def test_groups_exclude_bias_and_norm():
    m = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    decay, no_decay = param_groups(m, 0.1)
    assert len(decay["params"]) == 1 and decay["params"][0] is m[0].weight
    assert len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0.0


def test_lars_step_matches_formula():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))
    w.grad = torch.tensor([0.6, 0.8])
    opt = LARS([{"params": [w], "weight_decay": 0.0, "lars_exclude": False}], lr=0.1, momentum=0.9, eta=0.02)
    opt.step()
    trust = 0.02 * 5.0 / 1.0
    torch.testing.assert_close(w.detach(), torch.tensor([3.0, 4.0]) - 0.1 * trust * torch.tensor([0.6, 0.8]))


def test_lars_excluded_group_is_plain_sgd():
    b = nn.Parameter(torch.tensor([1.0]))
    b.grad = torch.tensor([2.0])
    opt = LARS([{"params": [b], "weight_decay": 0.5, "lars_exclude": True}], lr=0.1, eta=0.02)
    opt.step()
    torch.testing.assert_close(b.detach(), torch.tensor([0.8]))


@pytest.mark.parametrize("name, cls", [("lars", LARS), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)])
def test_build(name, cls):
    assert isinstance(build_optimizer(nn.Linear(2, 2), OptimConfig(name=name), 0.1), cls)


def test_unknown_optimizer():
    with pytest.raises(FastSSLError, match="lars, adamw or sgd"):
        build_optimizer(nn.Linear(2, 2), OptimConfig(name="adam"), 0.1)


def test_lars_clip_lr_caps_the_step_at_plain_sgd():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))
    w.grad = torch.tensor([0.006, 0.008])  # tiny gradient: trust 0.02 * 5 / 0.01 = 10 > 1 / lr
    opt = LARS([{"params": [w], "weight_decay": 0.0, "lars_exclude": False}], lr=0.5, eta=0.02, clip_lr=True)
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([3.0, 4.0]) - 0.5 * (1 / 0.5) * torch.tensor([0.006, 0.008]))


@pytest.mark.parametrize("recipe", ["simclr-resnet50-imagenet", "simclr-resnet18-cifar10", "byol-resnet18-cifar10"])
def test_first_lars_step_moves_each_layer_by_at_most_lr_times_eta(recipe):
    """SimCLR and BYOL use eta = 1e-3: the first step of a decayed layer moves it by at most
    lr * 1e-3 of its norm (solo-learn's eta 0.02 comes with clip_lr, which bounds it too)."""
    from fastssl.methods import build_method
    from fastssl.recipes import get_recipe
    from fastssl.train.schedule import scaled_lr

    cfg = get_recipe(recipe)
    cfg.data.image_size = 32
    method = build_method(cfg)
    lr = scaled_lr(cfg.optim, cfg.train.batch_size)
    opt = build_optimizer(method, cfg.optim, lr)
    decayed = opt.param_groups[0]["params"]
    before = [p.detach().clone() for p in decayed]
    torch.manual_seed(0)
    for p in method.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    eta = cfg.optim.lars_eta
    for p, b in zip(decayed, before):
        moved = (p.detach() - b).norm() / b.norm()
        if cfg.optim.lars_clip_lr:
            assert (p.detach() - b).norm() <= lr * p.grad.norm() * (1 + 1e-5)
        else:
            assert moved <= lr * eta * (1 + 1e-4), (recipe, float(moved), lr * eta)
