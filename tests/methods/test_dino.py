import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastssl.config import Config
from fastssl.errors import FastSSLError
from fastssl.methods import build_method
from fastssl.methods.dino import DINO, dino_loss
from fastssl.methods.momentum import cosine_momentum, ema_update_
from fastssl.models.dino_head import DINOHead, WeightNormLinear


def _cfg(model="vit_nano", **method):
    c = Config()
    c.set_method("dino")
    c.model.name, c.model.patch_size, c.data.image_size = model, 4, 16
    c.aug.local_crops, c.aug.local_size = 3, 8
    m = c.method
    m.out_dim, m.proj_hidden_dim, m.bottleneck_dim = 32, 24, 16
    for k, v in method.items():
        setattr(m, k, v)
    return c


def _views(n=4, locals_=3):
    return [torch.randn(n, 3, 16, 16) for _ in range(2)] + [torch.randn(n, 3, 8, 8) for _ in range(locals_)]


def test_momentum_schedule_is_cosine_0996_to_1():
    m = build_method(_cfg())
    assert m.momentum_at(0, 100) == pytest.approx(0.996)
    assert m.momentum_at(100, 100) == pytest.approx(1.0)
    assert m.momentum_at(30, 100) == pytest.approx(1 - 0.004 * (math.cos(math.pi * 0.3) + 1) / 2)
    assert [(o, t) for o, t in m.momentum_pairs()] == [(m.backbone, m.teacher_backbone), (m.head, m.teacher_head)]


def test_teacher_gets_no_gradient_and_follows_the_student_by_ema():
    m = build_method(_cfg())
    before = [p.detach().clone() for p in m.teacher_backbone.parameters()]
    m(_views())["loss"].backward()
    assert all(not p.requires_grad and p.grad is None for p in [*m.teacher_backbone.parameters(), *m.teacher_head.parameters()])
    assert m.backbone.blocks()[0].attn.qkv.weight.grad.abs().sum() > 0
    with torch.no_grad():
        for p in m.backbone.parameters():
            p.add_(1.0)
    tau = m.momentum_at(3, 10)
    for online, target in m.momentum_pairs():
        ema_update_(target, online, tau)
    for t, b, o in zip(m.teacher_backbone.parameters(), before, m.backbone.parameters()):
        torch.testing.assert_close(t, tau * b + (1 - tau) * o.detach())


def test_teacher_sees_only_global_crops_and_student_sees_all():
    m = build_method(_cfg())
    teacher_in, student_in = [], []
    h1 = m.teacher_backbone.register_forward_hook(lambda mod, inp, out: teacher_in.append(tuple(inp[0].shape)))
    h2 = m.backbone.register_forward_hook(lambda mod, inp, out: student_in.append(tuple(inp[0].shape)))
    m(_views(n=4, locals_=3))
    h1.remove(), h2.remove()
    assert teacher_in == [(8, 3, 16, 16)]  # both global crops, one pass
    assert student_in == [(8, 3, 16, 16), (12, 3, 8, 8)]  # one pass per resolution (MultiCropWrapper)


def test_last_layer_frozen_in_first_epoch_only():
    m = build_method(_cfg(freeze_last_layer_epochs=1, norm_last_layer=False))
    m.configure_schedule(steps_per_epoch=5, total_steps=20)
    for epoch, step in [(0, 4), (1, 5)]:
        m.zero_grad(set_to_none=True)
        m(_views(), step=step, schedule_len=20)["loss"].backward()
        assert all(p.grad is not None for p in m.head.last_layer.parameters())
        m.after_backward(step, epoch)
        last = list(m.head.last_layer.parameters())
        if epoch == 0:
            assert all(p.grad is None for p in last)
        else:
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in last)
        assert m.head.mlp[0].weight.grad.abs().sum() > 0  # the rest of the head trains in both


def test_norm_last_layer_fixes_the_prototype_norm():
    head = DINOHead(16, 10, hidden_dim=8, bottleneck_dim=4, norm_last_layer=True)
    assert not head.last_layer.weight_g.requires_grad and head.last_layer.weight_v.requires_grad
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(10))
    # Same arithmetic as torch's weight norm, with g free.
    lin = WeightNormLinear(4, 3)
    with torch.no_grad():
        lin.weight_g.copy_(torch.tensor([[2.0], [0.5], [1.0]]))
    ref = torch._weight_norm(lin.weight_v, lin.weight_g, 0)
    x = torch.randn(5, 4)
    torch.testing.assert_close(lin(x), x @ ref.T)


@pytest.mark.parametrize("warmup_epochs", [0, 1, 4])
def test_teacher_temperature_schedule_matches_main_dino(warmup_epochs):
    epochs = 10
    m = build_method(_cfg(warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=warmup_epochs))
    ref = np.concatenate((np.linspace(0.04, 0.07, warmup_epochs), np.ones(epochs - warmup_epochs) * 0.07))
    for e in range(epochs):
        assert m.teacher_temp_at(e) == pytest.approx(ref[e])
    # forward reads the epoch off the step with the schedule set by configure_schedule
    m.configure_schedule(steps_per_epoch=3, total_steps=30)
    out = m(_views(), step=7, schedule_len=30)  # epoch 2
    assert out["teacher_temp"].item() == pytest.approx(ref[2])


def test_loss_matches_dinos_cross_entropy():
    torch.manual_seed(1)
    n, k, crops = 3, 7, 4
    s, t, c = torch.randn(crops * n, k), torch.randn(2 * n, k), torch.randn(1, k)
    total, terms = 0.0, 0
    for j in range(2):
        q = F.softmax((t[j * n : (j + 1) * n] - c) / 0.04, dim=-1)
        for v in range(crops):
            if v != j:
                log_p = F.log_softmax(s[v * n : (v + 1) * n] / 0.1, dim=-1)
                total += (-(q * log_p).sum(-1)).mean()
                terms += 1
    assert terms == 2 * crops - 2
    torch.testing.assert_close(dino_loss(s, t, c, 0.1, 0.04), total / terms)


def test_centre_is_computed_in_forward_and_applied_in_commit_step():
    m = build_method(_cfg(center_momentum=0.9))
    views = _views()
    with torch.no_grad():
        teacher_out = m.forward_teacher(views[:2])
    m(views)
    assert torch.equal(m.center, torch.zeros_like(m.center))  # not before the step succeeds
    m.commit_step(0, 10)
    torch.testing.assert_close(m.center, 0.1 * teacher_out.mean(0, keepdim=True))
    m.commit_step(1, 10)  # no pending centre: unchanged
    torch.testing.assert_close(m.center, 0.1 * teacher_out.mean(0, keepdim=True))
    assert "center" in m.state_dict()  # saved and resumed with the model


def test_teacher_entropy_monitors_collapse():
    m = build_method(_cfg())
    out = m(_views())
    assert 0 < out["teacher_entropy"].item() < math.log(32)
    uniform = torch.zeros(8, 32)
    assert m.teacher_entropy(uniform, 0.04).item() == pytest.approx(math.log(32), rel=1e-5)
    one_hot = torch.zeros(8, 32)
    one_hot[:, 3] = 10.0
    assert m.teacher_entropy(one_hot, 0.04).item() == pytest.approx(0.0, abs=1e-4)


def test_resnet_backbone_and_two_crops_without_locals():
    m = build_method(_cfg(model="resnet-tiny"))
    out = m(_views(locals_=0))
    assert torch.isfinite(out["loss"])


def test_view_spec_is_two_globals_and_the_local_crops():
    c = _cfg()
    spec = DINO.view_spec(c)
    assert [v.size for v in spec.views] == [16, 16, 8, 8, 8]
    assert spec.views[2].scale == (c.aug.local_scale_min, c.aug.local_scale_max)
    c.aug.local_size = 6
    with pytest.raises(FastSSLError, match="--aug.local_size"):
        DINO.view_spec(c)


def test_recipes_follow_the_papers():
    from fastssl.recipes import get_recipe

    vit = get_recipe("dino-vit-small-imagenet")
    m = vit.method
    assert (m.name, m.out_dim, m.teacher_temp, m.warmup_teacher_temp, m.warmup_teacher_temp_epochs) == ("dino", 65536, 0.07, 0.04, 30)
    assert (vit.aug.local_crops, vit.aug.local_size, vit.aug.crop_scale_min) == (10, 96, 0.4)
    assert (vit.optim.name, vit.optim.base_lr, vit.optim.weight_decay, vit.optim.clip_grad) == ("adamw", 5e-4, 0.04, 3.0)
    assert (vit.train.batch_size, vit.optim.warmup_epochs) == (1024, 10)
    assert get_recipe("dino-resnet18-cifar10").method.out_dim == 4096
    cpu = get_recipe("dino-cpu")
    assert cpu.data.dataset == "digits" and cpu.aug.local_crops > 0
    DINO.view_spec(cpu)
    build_method(cpu)


def test_cpu_recipe_trains_end_to_end(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "fastssl", "train", "--recipe", "dino-cpu", f"--train.out={out}", "--train.max_steps=3",
           "--data.limit=64", "--train.batch_size=32", "--data.num_workers=0", "--train.progress=false",
           "--train.tensorboard=false", "--train.knn_at_end=false", "--train.log_every=1"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [row for row in rows if row.get("kind") == "train"]
    assert len(train_rows) == 3 and all(math.isfinite(row["loss"]) for row in train_rows)
    assert train_rows[-1]["momentum"] > train_rows[0]["momentum"]
    # 2 global + the recipe's local crops per image (DINO.view_spec).
    from fastssl.recipes import get_recipe

    crops = 2 + get_recipe("dino-cpu").aug.local_crops
    assert train_rows[-1]["views_per_s"] == pytest.approx(crops * train_rows[-1]["images_per_s"])
