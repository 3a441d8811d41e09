import math

import pytest
import torch
from torch import nn

from fastssl.config import Config
from fastssl.methods import build_method
from fastssl.methods.momentum import cosine_momentum, ema_update_


def _cfg():
    c = Config()
    c.set_method("byol")
    c.model.name, c.data.image_size = "resnet-tiny", 8
    c.method.proj_hidden_dim, c.method.proj_dim, c.method.pred_hidden_dim = 16, 8, 16
    c.method.momentum_base = 0.9
    return c


def test_cosine_momentum_schedule():
    assert cosine_momentum(0, 100, 0.996) == pytest.approx(0.996)
    assert cosine_momentum(100, 100, 0.996) == pytest.approx(1.0)
    assert cosine_momentum(50, 100, 0.99) == pytest.approx(0.995)
    k, K = 30, 100
    expect = 1 - (1 - 0.99) * (math.cos(math.pi * k / K) + 1) / 2
    assert cosine_momentum(k, K, 0.99) == pytest.approx(expect)


def test_ema_arithmetic():
    target, online = nn.Linear(3, 2), nn.Linear(3, 2)
    t0 = [p.detach().clone() for p in target.parameters()]
    o0 = [p.detach().clone() for p in online.parameters()]
    ema_update_(target, online, 0.75)
    for t, a, b in zip(target.parameters(), t0, o0):
        torch.testing.assert_close(t.detach(), 0.75 * a + 0.25 * b)
    bn_t, bn_o = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    bn_o.running_mean.fill_(3.0)
    ema_update_(bn_t, bn_o, 0.5)
    torch.testing.assert_close(bn_t.running_mean, torch.full((2,), 3.0))  # buffers are copied


def test_no_gradient_reaches_target_and_update_moves_it():
    torch.manual_seed(0)
    m = build_method(_cfg())
    target_before = [p.detach().clone() for p in m.target_backbone.parameters()]
    out = m([torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)], step=0, schedule_len=10)
    out["loss"].backward()
    assert all(p.grad is None for p in m.target_backbone.parameters())
    assert all(p.grad is None for p in m.target_projector.parameters())
    assert m.predictor[0].weight.grad is not None
    with torch.no_grad():
        for p in m.backbone.parameters():
            p.add_(1.0)
    tau = m.momentum_at(0, 10)
    assert tau == pytest.approx(cosine_momentum(0, 10, 0.9))
    for online, target in m.momentum_pairs():
        ema_update_(target, online, tau)
    for t, before, o in zip(m.target_backbone.parameters(), target_before, m.backbone.parameters()):
        torch.testing.assert_close(t, tau * before + (1 - tau) * o.detach())


def test_loss_is_symmetric_and_bounded():
    m = build_method(_cfg()).eval()
    x1, x2 = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    a, b = m([x1, x2])["loss"], m([x2, x1])["loss"]
    torch.testing.assert_close(a, b)
    assert 0 <= a.item() <= 8


def test_views_are_forwarded_separately_so_bn_sees_each_view_alone():
    """BYOL's reference applies the network to each view on its own: the online BN statistics of
    view 1 must not depend on view 2 (a concatenated batch would mix them)."""
    torch.manual_seed(0)
    m = build_method(_cfg()).train()
    x1 = torch.randn(4, 3, 8, 8)
    seen = []
    bn = m.backbone.trunk.bn1
    hook = bn.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    m([x1, torch.randn(4, 3, 8, 8)])
    hook.remove()
    assert seen == [4, 4]  # two passes of N, never one of 2N


def test_momentum_pairs_cover_the_target_and_shard_units_include_it():
    m = build_method(_cfg())
    pairs = m.momentum_pairs()
    assert [t for _, t in pairs] == [m.target_backbone, m.target_projector]
    units = m.shard_units()
    assert all(any(u is b for u in units) for b in m.target_backbone.blocks())
    assert all(any(u is b for u in units) for b in m.backbone.blocks())


def test_a_momentum_0_copy_works_on_bf16_parameters():
    """DeepCluster's snapshot is ema_update_ at momentum 0; under DeepSpeed's bf16 mode its
    parameters are bf16 with no fp32 master, and the copy must still be exact."""
    online = torch.nn.Linear(4, 3).to(torch.bfloat16)
    target = torch.nn.Linear(4, 3).to(torch.bfloat16)
    ema_update_(target, online, 0.0)
    assert all(torch.equal(t, o) for t, o in zip(target.parameters(), online.parameters()))
