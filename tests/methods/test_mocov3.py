import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastssl.config import Config, apply_overrides, validate
from fastssl.methods import build_method
from fastssl.methods.momentum import ema_update_

N = 6


def _cfg(model="resnet-tiny", *overrides):
    c = Config()
    c.set_method("mocov3")
    c.model.name, c.model.patch_size, c.data.image_size = model, 4, 8
    apply_overrides(c, ["--method.proj_hidden_dim=16", "--method.proj_dim=8", "--method.pred_hidden_dim=16",
                        *overrides])
    return validate(c)


def _views(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(N, 3, 8, 8, generator=g), torch.randn(N, 3, 8, 8, generator=g)]


def test_momentum_follows_the_cosine_schedule_from_099_to_1():
    m = build_method(_cfg())
    assert m.momentum_at(0, 100) == pytest.approx(0.99)
    assert m.momentum_at(50, 100) == pytest.approx(0.995)
    assert m.momentum_at(100, 100) == pytest.approx(1.0)
    # moco-v3 main_moco.py adjust_moco_momentum: 1 - 0.5 (1 + cos(pi e / E)) (1 - m)
    assert m.momentum_at(30, 100) == pytest.approx(1 - 0.5 * (1 + math.cos(math.pi * 0.3)) * (1 - 0.99))
    assert [t for _, t in m.momentum_pairs()] == [m.momentum_backbone, m.momentum_projector]


def test_no_gradient_reaches_the_momentum_encoder_and_ema_moves_it():
    torch.manual_seed(0)
    m = build_method(_cfg()).train()
    m(_views())["loss"].backward()
    assert all(p.grad is None for p in [*m.momentum_backbone.parameters(), *m.momentum_projector.parameters()])
    assert m.predictor[0].weight.grad is not None and m.projector[0].weight.grad is not None
    before = [p.clone() for p in m.momentum_projector.parameters()]
    with torch.no_grad():
        for p in m.projector.parameters():
            p.add_(1.0)
    tau = m.momentum_at(3, 10)
    for online, target in m.momentum_pairs():
        ema_update_(target, online, tau)
    for t, b, o in zip(m.momentum_projector.parameters(), before, m.projector.parameters()):
        torch.testing.assert_close(t, tau * b + (1 - tau) * o.detach())


@pytest.mark.parametrize("temperature", [0.2, 1.0])
def test_loss_is_symmetric_contrastive_scaled_by_2t(temperature):
    torch.manual_seed(0)
    m = build_method(_cfg("resnet-tiny", f"--method.temperature={temperature}")).train()
    x1, x2 = _views()
    loss = m([x1, x2])["loss"]
    q1, q2 = m.forward_query(x1), m.forward_query(x2)
    k1, k2 = m.forward_key(x1), m.forward_key(x2)

    def ctr(q, k):  # moco-v3 builder.py contrastive_loss, by hand
        logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / temperature
        return -torch.log_softmax(logits, 1).diagonal().mean() * 2 * temperature

    torch.testing.assert_close(loss, ctr(q1, k2) + ctr(q2, k1))
    # Swapping the views swaps the two terms: the loss is symmetric.
    torch.testing.assert_close(m([x2, x1])["loss"], loss)


def test_heads_follow_moco_v3_builder():
    vit, res = build_method(_cfg("vit_nano")), build_method(_cfg())
    linears = lambda s: [x for x in s if isinstance(x, nn.Linear)]  # noqa: E731
    assert len(linears(vit.projector)) == 3 and len(linears(res.projector)) == 2
    for m in (vit, res):  # the projector ends in BN without affine parameters
        assert isinstance(m.projector[-1], nn.BatchNorm1d) and not m.projector[-1].affine
    assert isinstance(vit.predictor[-1], nn.BatchNorm1d) and isinstance(res.predictor[-1], nn.Linear)


def test_frozen_patch_embedding_gets_no_gradient_and_stays_put():
    torch.manual_seed(0)
    m = build_method(_cfg("vit_nano")).train()
    patch = list(m.backbone.trunk.patch_embed.parameters())
    assert patch and all(not p.requires_grad for p in patch)
    m(_views())["loss"].backward()
    assert all(p.grad is None for p in patch)
    assert m.backbone.trunk.blocks[0].attn.qkv.weight.grad is not None  # the rest trains
    learned = build_method(_cfg("vit_nano", "--method.freeze_patch_embed=false"))
    assert all(p.requires_grad for p in learned.backbone.trunk.patch_embed.parameters())
    # The option is ViT-only: a ResNet keeps its stem trainable.
    assert build_method(_cfg()).backbone.trunk.conv1.weight.requires_grad


@pytest.mark.slow
def test_mocov3_cpu_recipe_trains(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "fastssl", "train", "--recipe", "mocov3-cpu", f"--train.out={out}",
           "--train.max_steps=3", "--train.log_every=1", "--train.progress=false", "--train.tensorboard=false",
           "--train.knn_at_end=false", "--data.num_workers=0"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [x for x in rows if x["kind"] == "train"]
    assert len(train) == 3 and all(math.isfinite(x["loss"]) and x["loss"] > 0 for x in train)
    assert train[0]["momentum"] < train[-1]["momentum"] <= 1
