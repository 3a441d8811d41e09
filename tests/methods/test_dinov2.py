import json
import math
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from fastssl.config import Config, validate
from fastssl.errors import FastSSLError
from fastssl.losses.ibot import ibot_patch_loss
from fastssl.losses.koleo import koleo_loss
from fastssl.methods import build_method
from fastssl.methods.teacher_targets import sinkhorn_targets
from fastssl.parallel.engines.base import Engine
from fastssl.train.optim import build_optimizer


def _cfg(**method):
    c = Config()
    c.set_method("dinov2")
    c.model.name, c.model.patch_size, c.data.image_size = "vit_nano", 4, 16
    c.aug.local_crops, c.aug.local_size = 2, 8
    m = c.method
    m.out_dim, m.ibot_out_dim, m.proj_hidden_dim, m.bottleneck_dim = 32, 24, 24, 16
    for k, v in method.items():
        setattr(m, k, v)
    return c


def _views(n=4, locals_=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, 16, 16, generator=g) for _ in range(2)] + \
           [torch.randn(n, 3, 8, 8, generator=g) for _ in range(locals_)]


# --- iBOT: only masked patches count -------------------------------------------------------------

def test_ibot_loss_ignores_unmasked_patches():
    torch.manual_seed(0)
    b, l, k = 3, 6, 5
    masks = torch.zeros(b, l, dtype=torch.bool)
    masks[0, [1, 2]] = True
    masks[2, 4] = True  # crop 1 has no masked patch: it counts in B with a zero term
    s, t = torch.randn(b, l, k), F.softmax(torch.randn(b, l, k), -1)
    loss = ibot_patch_loss(s[masks], t[masks], masks, 0.1)
    ce = -(t * F.log_softmax(s / 0.1, -1)).sum(-1)  # [B, L]
    ref = ((ce * masks).sum(1) / masks.sum(1).clamp_min(1)).sum() / b
    torch.testing.assert_close(loss, ref)
    s2, t2 = s.clone(), t.clone()
    s2[~masks], t2[~masks] = 100.0, 1.0 / k
    torch.testing.assert_close(ibot_patch_loss(s2[masks], t2[masks], masks, 0.1), loss)


@pytest.mark.parametrize("centering", ["sinkhorn_knopp", "centering"])
def test_dinov2_ibot_term_sees_masked_patches_only(centering):
    """In the method: the teacher's unmasked patch tokens do not move the loss, and the student's
    unmasked patch tokens get no gradient (they feed only the iBOT term)."""
    torch.manual_seed(0)
    m = build_method(_cfg(centering=centering, koleo_weight=0.0))
    views, step = _views(), 5
    masks = m.draw_masks(views[:2], step)
    assert masks.any() and not masks.all()
    teacher_tokens, student_tokens, kept = m.teacher_backbone.tokens, m.backbone.tokens, {}

    def noisy_teacher(x, *a):
        t = teacher_tokens(x, *a)
        return t._replace(patches=torch.where(masks[..., None], t.patches, torch.randn_like(t.patches)))

    def spying_student(x, mask=None, token=None):
        t = student_tokens(x, mask, token)
        if mask is not None:
            t.patches.retain_grad()
            kept["patches"] = t.patches
        return t

    ref = m(views, step=step)["ibot_loss"]
    m.teacher_backbone.tokens = noisy_teacher
    m.backbone.tokens = spying_student
    out = m(views, step=step)
    torch.testing.assert_close(out["ibot_loss"], ref)
    out["loss"].backward()
    grad = kept["patches"].grad  # [2 n, L, D]
    assert grad[~masks].abs().max() == 0 and grad[masks].abs().sum(-1).min() > 0


# --- teacher targets --------------------------------------------------------------------------------

def test_sinkhorn_codes_sum_to_one_per_sample_and_spread_over_prototypes():
    torch.manual_seed(0)
    logits = F.normalize(torch.randn(64, 16), dim=1) @ F.normalize(torch.randn(8, 16), dim=1).T  # cosines [64, 8]
    q = sinkhorn_targets(logits + 0.5 * torch.arange(8.0) / 8, temp=0.07, iterations=3)
    torch.testing.assert_close(q.sum(1), torch.ones(64))
    assert (q >= 0).all()
    soft = F.softmax((logits + 0.5 * torch.arange(8.0) / 8) / 0.07, -1)
    # Equipartition: prototype totals are near 64 / 8, far closer than the plain softmax's.
    assert (q.sum(0) - 8).abs().max() < 0.5 * (soft.sum(0) - 8).abs().max()


def test_centering_option_moves_both_centres_only_on_commit():
    m = build_method(_cfg(centering="centering", center_momentum=0.5))
    m(_views())
    assert m.center.abs().sum() == 0 and m.ibot_center.abs().sum() == 0
    m.commit_step(0, 10)
    assert m.center.abs().sum() > 0 and m.ibot_center.abs().sum() > 0
    s = build_method(_cfg())  # Sinkhorn-Knopp (the default) keeps no centre
    s(_views())
    s.commit_step(0, 10)
    assert s.center.abs().sum() == 0 and s.cfg.centering == "sinkhorn_knopp"


# --- KoLeo ------------------------------------------------------------------------------------------

def test_koleo_is_finite_with_duplicate_rows():
    x = torch.randn(4, 8).repeat(2, 1).requires_grad_()  # every row has an exact duplicate
    loss = koleo_loss(x)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    m = build_method(_cfg())
    same = [v[:1].expand_as(v).contiguous() for v in _views()]  # 4 copies of one image
    out = m(same)
    out["loss"].backward()
    assert torch.isfinite(out["koleo_loss"]) and out["koleo_loss"] > 0
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


# --- the method -------------------------------------------------------------------------------------

@pytest.mark.parametrize("separate", [False, True])
def test_heads_teacher_and_frozen_last_layers(separate):
    m = build_method(_cfg(ibot_separate_head=separate))
    out = m(_views(), step=0, schedule_len=10)
    expected = out["dino_loss"] + m.cfg.ibot_weight * out["ibot_loss"] + 0.1 * out["koleo_loss"]
    torch.testing.assert_close(out["loss"].detach(), expected)
    out["loss"].backward()
    assert m.mask_token.grad.abs().sum() > 0
    assert all(p.grad is None for _, t in m.momentum_pairs() for p in t.parameters())
    assert len(m.momentum_pairs()) == (3 if separate else 2)
    heads = [m.head] + ([m.ibot_head] if separate else [])
    frozen = {id(p) for p in m.frozen_params(0, 0)}
    assert frozen == {id(p) for h in heads for p in h.last_layer.parameters()}
    assert m.frozen_params(0, 1) == []
    if separate:
        assert m.ibot_head.last_layer.weight_v.grad.abs().sum() > 0
        assert m.teacher_ibot_head.last_layer.weight_v.shape[0] == 24  # ibot_out_dim prototypes


def test_registers_work_with_dinov2():
    c = _cfg()
    c.model.registers = 2
    m = build_method(c)
    assert m.backbone.num_registers == 2 and m.teacher_backbone.num_registers == 2
    assert torch.isfinite(m(_views())["loss"])


# --- layer-wise lr decay ----------------------------------------------------------------------------

@pytest.mark.parametrize("optim", ["adamw", "sgd", "lars"])
def test_layer_decay_gives_each_block_its_lr(optim):
    m = build_method(_cfg())
    c = _cfg()
    c.optim.name, c.optim.layer_decay = optim, 0.5
    opt = build_optimizer(m, c.optim, lr=0.1)
    Engine.set_lr(SimpleNamespace(optimizer=opt), 0.01)  # what the schedule does every step
    lr = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    blocks = m.backbone.blocks()
    for i, block in enumerate(blocks):  # 4 blocks: 0.5^4, 0.5^3, 0.5^2, 0.5
        assert all(lr[id(p)] == pytest.approx(0.01 * 0.5 ** (4 - i)) for p in block.parameters())
    vit = m.backbone.trunk
    for p in (vit.pos_embed, vit.cls_token, vit.patch_embed.proj.weight):
        assert lr[id(p)] == pytest.approx(0.01 * 0.5**5)
    for p in (vit.norm.weight, m.head.mlp[0].weight, m.mask_token):
        assert lr[id(p)] == pytest.approx(0.01)
    Engine.set_lr(SimpleNamespace(optimizer=opt), 0.0)
    assert all(g["lr"] == 0 for g in opt.param_groups)
    # Off by default: the two groups as before.
    assert len(build_optimizer(m, _cfg().optim, lr=0.1).param_groups) == 2


# --- config, recipes, CLI ---------------------------------------------------------------------------

def test_bad_values_name_the_key():
    with pytest.raises(FastSSLError, match="--method.centering"):
        validate(_cfg(centering="mean"))
    with pytest.raises(FastSSLError, match="--method.mask_ratio_min"):
        validate(_cfg(mask_ratio_min=0.6, mask_ratio_max=0.5))
    c = _cfg()
    c.optim.layer_decay = 0.0
    with pytest.raises(FastSSLError, match="--optim.layer_decay"):
        validate(c)


def test_recipes_follow_the_reference():
    from fastssl.recipes import get_recipe

    big = get_recipe("dinov2-vit-large-imagenet")
    m = big.method
    assert (big.model.name, big.model.patch_size, big.model.drop_path) == ("vit_large", 16, 0.3)
    assert (m.out_dim, m.koleo_weight, m.mask_sample_probability, m.momentum_base) == (65536, 0.1, 0.5, 0.992)
    assert (big.optim.layer_decay, big.optim.clip_grad, big.train.batch_size) == (0.9, 3.0, 2048)
    assert big.optim.base_lr * big.train.batch_size / 256 == pytest.approx(0.004 * math.sqrt(2))
    assert (big.dist.strategy, big.train.precision, big.train.activation_checkpointing) == ("fsdp", "bf16", True)
    validate(big)
    cpu = get_recipe("dinov2-cpu")
    assert (cpu.data.dataset, cpu.model.name, cpu.data.image_size) == ("digits", "vit_nano", 16)
    build_method(cpu)


def _train(tmp_path, *args):
    cmd = [sys.executable, "-m", "fastssl", "train", f"--train.out={tmp_path / 'run'}", "--data.num_workers=0",
           "--train.progress=false", "--train.tensorboard=false", "--train.knn_at_end=false", "--train.log_every=1",
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)


@pytest.mark.parametrize("command", ["train", "config"])
@pytest.mark.parametrize("recipe", ["dinov2-cpu", "mae-cpu", "ijepa-cpu"])
def test_token_methods_on_a_resnet_are_one_line_exit_2(tmp_path, capsys, command, recipe):
    from fastssl.cli import main

    assert main([command, "--recipe", recipe, "--model.name=resnet-tiny", f"--train.out={tmp_path}",
                 "--train.progress=false", "--data.num_workers=0"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fastssl: error:")]
    assert len(errors) == 1 and "needs a ViT" in errors[0] and "--model.name=vit" in errors[0]


@pytest.mark.slow  # ~15 s idle, 45 s at load 16 on 2 cores
def test_cpu_recipe_trains_end_to_end(tmp_path):
    r = _train(tmp_path, "--recipe", "dinov2-cpu", "--train.max_steps=3", "--data.limit=64", "--train.batch_size=32",
               "--model.registers=1")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [row for row in rows if row.get("kind") == "train"]
    assert len(train) == 3 and all(math.isfinite(row["loss"]) for row in train)
    assert all(row["ibot_loss"] > 0 and 0 < row["masked_fraction"] < 0.5 for row in train)
