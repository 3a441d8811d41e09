"""Every EMA target starts as a copy of its online module that takes no gradient (momentum.frozen_copy)."""

import pytest
import torch

from fastssl.config import Config
from fastssl.methods import build_method

SMALL = {"proj_hidden_dim": 16, "proj_dim": 8, "pred_hidden_dim": 16, "out_dim": 32, "bottleneck_dim": 8,
         "queue_size": 64}


@pytest.mark.parametrize("name", ["byol", "mocov2", "mocov3", "dino"])
def test_targets_start_as_frozen_copies(name):
    c = Config()
    c.set_method(name)
    c.model.name, c.data.image_size = "resnet-tiny", 16
    for key, value in SMALL.items():
        if hasattr(c.method, key):
            setattr(c.method, key, value)
    m = build_method(c)
    pairs = m.momentum_pairs()
    assert pairs
    for online, target in pairs:
        assert target is not online
        assert any(p.requires_grad for p in online.parameters())  # the copy leaves the online module learning
        assert not any(p.requires_grad for p in target.parameters())
        a, b = online.state_dict(), target.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
