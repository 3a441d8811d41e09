"""I-JEPA: what each encoder sees, the stop-gradient on the target, the loss against an fp64
re-derivation, the EMA schedule, bad input, the CPU recipe, and 2 ranks against 1 process."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from fastssl.config import Config, validate
from fastssl.errors import FastSSLError
from fastssl.methods import build_method
from fastssl.methods.ijepa import IJEPA


def _cfg(image_size=16, patch_size=2, min_keep=4, model="vit_nano"):
    c = Config()
    c.set_method("ijepa")
    c.model.name, c.model.patch_size, c.data.image_size = model, patch_size, image_size
    m = c.method
    m.pred_depth, m.pred_dim, m.pred_heads, m.min_keep = 1, 24, 3, min_keep
    return c


def _method(**kw) -> IJEPA:
    torch.manual_seed(0)
    return build_method(_cfg(**kw))


def test_context_encoder_sees_only_context_patches_without_class_token():
    m = _method()
    seen = []
    hook = m.backbone.blocks()[0].register_forward_hook(lambda mod, inp, out: seen.append(tuple(inp[0].shape)))
    out = m([torch.randn(4, 3, 16, 16)], step=3, schedule_len=10)
    hook.remove()
    lc = int(out["context_patches"])
    assert seen == [(4, lc, 96)] and 4 < lc < 64  # the target encoder's blocks are other modules
    assert torch.isfinite(out["loss"])


def test_predictions_do_not_see_target_pixels():
    """Changing only the target blocks' pixels changes the targets but not the predictions."""
    from fastssl.methods.ijepa_masks import multiblock_masks

    m = _method()
    imgs = torch.randn(2, 3, 16, 16)
    ctx, tgt = multiblock_masks(m.masks, 2, step=7)
    changed = imgs.clone()
    for i in range(2):
        for k in tgt[:, i].unique().tolist():  # patch k covers rows/cols 2*(k // 8), 2*(k % 8)
            r, c = divmod(k, 8)
            changed[i, :, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2] = torch.randn(3, 2, 2) * 5
    torch.testing.assert_close(m.forward_context(changed, ctx, tgt), m.forward_context(imgs, ctx, tgt), rtol=0, atol=0)
    assert not torch.allclose(m.forward_target(changed, tgt), m.forward_target(imgs, tgt))


def test_target_encoder_gets_no_gradient():
    m = _method()
    out = m([torch.randn(4, 3, 16, 16)], step=0, schedule_len=10)
    out["loss"].backward()
    assert all(p.grad is None for p in m.target_encoder.parameters())
    assert m.backbone.blocks()[0].attn.qkv.weight.grad.abs().sum() > 0
    assert m.predictor.mask_token.grad.abs().sum() > 0
    # Frozen and never used: the sine-cosine positions and the class token (I-JEPA's ViT has none).
    assert m.backbone.trunk.pos_embed.grad is None and m.backbone.trunk.cls_token.grad is None
    assert m.momentum_pairs() == [(m.backbone, m.target_encoder)]


def _fp64_loss(m: IJEPA, imgs: torch.Tensor, ctx: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """The loss from the paper's pieces in float64, with python loops for the masks."""
    m = m.double()
    imgs = imgs.double()
    with torch.no_grad():
        full = m.target_encoder.forward_tokens(m.target_encoder.embed_patches(imgs), class_token=False)  # [N, L, D]
        mu, var = full.mean(-1, keepdim=True), full.var(-1, unbiased=False, keepdim=True)
        full = (full - mu) / torch.sqrt(var + 1e-5)
        tokens = m.backbone.embed_patches(imgs)
        context = torch.stack([tokens[i, ctx[i]] for i in range(len(imgs))])
        z_ctx = m.backbone.forward_tokens(context, class_token=False)
        preds = m.predictor(z_ctx, ctx, tgt)  # [M, N, Lt, D]
    terms = []
    for b in range(tgt.shape[0]):
        for i in range(len(imgs)):
            d = preds[b, i] - full[i, tgt[b, i]]  # [Lt, D]
            terms.append(torch.where(d.abs() < 1, 0.5 * d**2, d.abs() - 0.5))  # smooth L1, beta 1
    return torch.cat(terms).mean()


def test_loss_matches_an_fp64_rederivation():
    from fastssl.methods.ijepa_masks import multiblock_masks

    m = _method()
    # Targets near zero make smooth L1's quadratic part the only one used; scale the predictor's
    # output so that both branches (|d| < 1 and >= 1) are exercised.
    with torch.no_grad():
        m.predictor.proj.weight.mul_(40)
        # A trained final norm has an affine part, which the targets' extra layer norm removes
        # (at init it is the identity, and the extra norm would change nothing).
        m.target_encoder.trunk.norm.weight.uniform_(0.5, 2.0)
        m.target_encoder.trunk.norm.bias.normal_()
    imgs = torch.randn(3, 3, 16, 16)
    out = m([imgs], step=11, schedule_len=20)
    ctx, tgt = multiblock_masks(m.masks, 3, step=11)
    d = (m.forward_context(imgs, ctx, tgt) - m.forward_target(imgs, tgt)).abs()
    assert (d < 1).any() and (d >= 1).any()
    torch.testing.assert_close(out["loss"].double(), _fp64_loss(m, imgs, ctx, tgt), rtol=1e-5, atol=1e-6)


def test_momentum_rises_linearly_from_0_996_to_1():
    m = _method()
    assert [m.momentum_at(s, 100) for s in (0, 25, 50, 100)] == pytest.approx([0.996, 0.997, 0.998, 1.0])


def test_backbone_features_are_the_mean_patch_token():
    m = _method()
    x = torch.randn(2, 3, 16, 16)
    tokens = m.backbone.forward_tokens(m.backbone.embed_patches(x), class_token=False)
    torch.testing.assert_close(m.backbone(x), tokens.mean(1))


def test_shard_units_are_encoder_target_and_predictor_blocks():
    m = _method()
    assert m.shard_units() == [*m.backbone.blocks(), *m.target_encoder.blocks(), *m.predictor.blocks]


def test_ijepa_on_a_resnet_is_rejected():
    with pytest.raises(FastSSLError, match="--model.name=vit"):
        validate(_cfg(model="resnet-tiny"))


def test_blocks_larger_than_the_grid_are_rejected():
    with pytest.raises(FastSSLError, match="--model.patch_size"):
        _method(image_size=16, patch_size=4, min_keep=10)  # 4x4 patches: no target block has 11


def _cli(*args, timeout=300):
    cmd = [sys.executable, "-m", "fastssl", "train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=timeout)


@pytest.mark.slow  # a fresh process each: ~40 s on a loaded 2-core machine
@pytest.mark.parametrize("args, fix", [
    (["--model.name=resnet-tiny"], "--model.name"),
    (["--model.patch_size=4", "--method.min_keep=10"], "--model.patch_size"),  # 4x4 grid, blocks of 2-3 patches
    (["--method.target_scale=0.3,0.2"], "--method.target_scale"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, fix):
    r = _cli("--recipe", "ijepa-cpu", f"--train.out={tmp_path / 'run'}", "--data.num_workers=0", *args)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and fix in lines[0], r.stderr


def test_recipes_follow_the_reference():
    from fastssl.recipes import get_recipe

    h = get_recipe("ijepa-vit-huge-imagenet")
    m = h.method
    assert (h.model.name, h.model.patch_size, h.data.image_size) == ("vit_huge", 14, 224)
    assert (m.pred_depth, m.pred_dim, m.pred_heads, m.num_targets, m.min_keep) == (12, 384, 16, 4, 10)
    assert (m.target_scale, m.target_aspect, m.context_scale) == ((0.15, 0.2), (0.75, 1.5), (0.85, 1.0))
    assert (m.momentum_base, m.momentum_final, m.loss) == (0.996, 1.0, "smooth_l1")
    assert h.train.batch_size * h.optim.base_lr / 256 == pytest.approx(1e-3)
    assert (h.train.epochs, h.optim.warmup_epochs, h.optim.weight_decay) == (300, 40, 0.04)
    assert (h.aug.crop_scale_min, h.aug.flip_p) == (0.3, 0.0)
    cpu = get_recipe("ijepa-cpu")
    assert cpu.data.dataset == "digits" and cpu.model.name == "vit_nano"
    build_method(cpu)  # the blocks fit its grid


@pytest.mark.slow
def test_cpu_recipe_trains_end_to_end(tmp_path):
    out = tmp_path / "run"
    r = _cli("--recipe", "ijepa-cpu", f"--train.out={out}", "--train.max_steps=3", "--data.limit=64",
             "--train.batch_size=32", "--data.num_workers=0", "--train.progress=false", "--train.tensorboard=false",
             "--train.knn_at_end=false", "--train.log_every=1")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [row for row in rows if row.get("kind") == "train"]
    assert len(train_rows) == 3 and all(math.isfinite(row["loss"]) for row in train_rows)
    assert train_rows[-1]["views_per_s"] == pytest.approx(train_rows[-1]["images_per_s"])  # one view


def _strategies():
    from tests.methods.test_dino_distributed import available_strategies

    return available_strategies()


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("strategy", _strategies())
def test_world_size_2_equals_world_size_1(tmp_path, strategy):
    """Masks are drawn per image of the global batch and cut at the global minimum, so 2 ranks
    reproduce 1 process step for step under DDP, FSDP2 and DeepSpeed (target encoder included)."""
    from tests.methods.test_dino_distributed import assert_same_run, run_cli

    args = ["--recipe", "ijepa-cpu", "--method.pred_depth=1", "--method.pred_dim=24", "--train.max_steps=2",
            "--method.momentum_base=0.5", "--method.momentum_final=0.5", f"--dist.strategy={strategy}"]
    one, two = run_cli(tmp_path / "ws1", 1, *args), run_cli(tmp_path / "ws2", 2, *args)
    assert_same_run(one, two)
    target = [k for k in one[1] if k.startswith("target_encoder.")]
    assert target and any(not torch.equal(one[1][k], one[1][k.replace("target_encoder.", "backbone.")])
                          for k in target if one[1][k].is_floating_point())
