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
