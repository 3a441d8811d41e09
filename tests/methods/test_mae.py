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
from fastssl.methods.mae import MAE, patchify, random_masking, unpatchify
from fastssl.models.pos_embed import sincos_pos_embed_2d


def _cfg(image_size=16, patch_size=4, mask_ratio=0.75, norm_pix=True):
    c = Config()
    c.set_method("mae")
    c.model.name, c.model.patch_size, c.data.image_size = "vit_nano", patch_size, image_size
    c.method.decoder_dim, c.method.decoder_depth, c.method.decoder_heads = 32, 1, 2
    c.method.mask_ratio, c.method.norm_pix_loss = mask_ratio, norm_pix
    return c


def test_patchify_unpatchify_round_trip():
    imgs = torch.randn(2, 3, 16, 12)
    x = patchify(imgs, 4)
    assert x.shape == (2, 4 * 3, 4 * 4 * 3)
    torch.testing.assert_close(unpatchify(x, 4, hw=(4, 3)), imgs, rtol=0, atol=0)
    sq = torch.randn(3, 3, 8, 8)
    torch.testing.assert_close(unpatchify(patchify(sq, 2), 2), sq, rtol=0, atol=0)


def test_patchify_layout_is_maes():
    """Patch k is row-major in the grid; inside a patch, pixels are (row, col, channel) as in models_mae.py."""
    imgs = torch.randn(1, 3, 8, 8)
    x = patchify(imgs, 4)  # [1, 4, 48]
    k, (r, c) = 1, (0, 1)  # patch 1 = grid row 0, column 1
    expect = imgs[0, :, r * 4 : r * 4 + 4, c * 4 : c * 4 + 4].permute(1, 2, 0).reshape(-1)
    torch.testing.assert_close(x[0, k], expect)


@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.75, 0.9])
def test_mask_ratio_is_exact_per_sample(ratio):
    n, L, d = 8, 16, 5
    x = torch.randn(n, L, d)
    visible, mask, ids_restore = random_masking(x, ratio)
    keep = int(L * (1 - ratio))
    assert visible.shape == (n, keep, d)
    assert torch.equal(mask.sum(1), torch.full((n,), float(L - keep)))
    for i in range(n):
        # The visible tokens are exactly x's tokens where mask == 0.
        kept = x[i][mask[i] == 0]
        assert sorted(map(tuple, kept.tolist())) == sorted(map(tuple, visible[i].tolist()))
    # ids_restore puts the shuffled sequence (visible first) back in image order.
    filler = torch.zeros(n, L - keep, d)
    restored = torch.gather(torch.cat([visible, filler], 1), 1, ids_restore.unsqueeze(-1).expand(-1, -1, d))
    torch.testing.assert_close(restored * (1 - mask).unsqueeze(-1), x * (1 - mask).unsqueeze(-1))


def test_masks_differ_between_samples():
    _, mask, _ = random_masking(torch.randn(16, 16, 2), 0.75)
    assert len({tuple(m.tolist()) for m in mask}) > 1


def test_encoder_sees_only_visible_tokens():
    m = build_method(_cfg())
    seen = []
    hook = m.backbone.blocks()[0].register_forward_hook(lambda mod, inp, out: seen.append(tuple(inp[0].shape)))
    out = m([torch.randn(4, 3, 16, 16)])
    hook.remove()
    keep = int(16 * (1 - 0.75))
    assert seen == [(4, 1 + keep, 96)]
    assert torch.isfinite(out["loss"])


@pytest.mark.parametrize("norm_pix", [True, False])
def test_loss_ignores_visible_patches(norm_pix):
    m = build_method(_cfg(norm_pix=norm_pix))
    imgs = torch.randn(2, 3, 16, 16)
    pred = torch.randn(2, 16, 48)
    mask = torch.zeros(2, 16)
    mask[:, [1, 5, 6, 12]] = 1
    base = m.forward_loss(imgs, pred, mask)
    visible, masked = 0, 1  # patch 0 is visible, patch 1 masked; patch k covers rows/cols of grid (k // 4, k % 4)
    changed = imgs.clone()
    changed[:, :, 0:4, 0:4] = torch.randn(2, 3, 4, 4) * 5  # patch 0
    torch.testing.assert_close(m.forward_loss(changed, pred, mask), base, rtol=0, atol=0)
    changed = imgs.clone()
    changed[:, :, 0:4, 4:8] = torch.randn(2, 3, 4, 4) * 5  # patch 1
    assert not torch.allclose(m.forward_loss(changed, pred, mask), base)
    assert mask[0, visible] == 0 and mask[0, masked] == 1


def test_loss_is_mse_on_masked_patches_with_normalised_targets():
    m = build_method(_cfg(norm_pix=True))
    imgs, pred = torch.randn(2, 3, 16, 16), torch.randn(2, 16, 48)
    mask = (torch.rand(2, 16) < 0.5).float()
    mask[:, 0] = 1
    t = patchify(imgs, 4)
    t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6).sqrt()
    per_patch = ((pred - t) ** 2).mean(-1)
    torch.testing.assert_close(m.forward_loss(imgs, pred, mask), per_patch[mask.bool()].mean())


def test_gradient_reaches_encoder_decoder_and_mask_token():
    m = build_method(_cfg())
    m([torch.randn(4, 3, 16, 16)])["loss"].backward()
    assert m.decoder.mask_token.grad is not None and m.decoder.mask_token.grad.abs().sum() > 0
    assert m.backbone.blocks()[0].attn.qkv.weight.grad.abs().sum() > 0
    assert m.backbone.trunk.pos_embed.grad is None  # fixed sine-cosine, as MAE's


def test_sincos_position_embeddings():
    m = build_method(_cfg())
    pe = sincos_pos_embed_2d(96, 4, 4)
    torch.testing.assert_close(m.backbone.trunk.pos_embed.detach(), pe)
    assert not m.backbone.trunk.pos_embed.requires_grad
    torch.testing.assert_close(m.decoder.pos_embed, sincos_pos_embed_2d(32, 4, 4))
    # Patch (row 1, col 2) = index 1 + 6: the first half encodes the column, the second the row.
    d = 96
    omega = 1.0 / 10000 ** (torch.arange(d // 4, dtype=torch.float64) / (d / 4))
    expect = torch.cat([torch.sin(2 * omega), torch.cos(2 * omega), torch.sin(1 * omega), torch.cos(1 * omega)])
    torch.testing.assert_close(pe[0, 1 + 6].double(), expect, rtol=1e-6, atol=1e-6)
    assert torch.equal(pe[0, 0], torch.zeros(d))  # the class token's position


def test_shard_units_are_encoder_and_decoder_blocks():
    m = build_method(_cfg())
    units = m.shard_units()
    assert units == [*m.backbone.blocks(), *m.decoder.blocks]
    assert len(units) == 4 + 1


def test_mae_needs_a_vit():
    c = _cfg()
    c.model.name = "resnet-tiny"
    with pytest.raises(FastSSLError, match="--model.name=vit"):
        validate(c)


def test_mask_ratio_leaving_no_patch_is_rejected():
    with pytest.raises(FastSSLError, match="--method.mask_ratio"):
        build_method(_cfg(image_size=8, patch_size=4, mask_ratio=0.8))  # 4 patches, int(0.8) = 0 visible


def test_view_spec_is_one_view_without_colour():
    c = _cfg()
    c.aug.crop_scale_min = 0.2
    spec = MAE.view_spec(c)
    assert len(spec.views) == 1
    v = spec.views[0]
    assert v.size == 16 and v.scale == (0.2, 1.0) and v.interpolation == "bicubic"
    assert v.jitter_p == v.grayscale_p == v.blur_p == v.solarize_p == 0.0


def test_decoder_width_must_split_into_heads():
    c = _cfg()
    c.method.decoder_dim, c.method.decoder_heads = 30, 4
    with pytest.raises(FastSSLError, match="--method.decoder_heads"):
        build_method(c)


def test_recipes_follow_the_papers():
    from fastssl.recipes import get_recipe

    base = get_recipe("mae-vit-base-imagenet")
    assert (base.model.name, base.model.patch_size, base.method.mask_ratio, base.method.norm_pix_loss) == ("vit_base", 16, 0.75, True)
    assert (base.optim.name, base.optim.base_lr, base.optim.betas, base.optim.weight_decay) == ("adamw", 1.5e-4, (0.9, 0.95), 0.05)
    assert (base.train.batch_size, base.train.epochs, base.optim.warmup_epochs, base.dist.strategy) == (4096, 800, 40, "fsdp")
    assert base.aug.crop_scale_min == 0.2
    cpu = get_recipe("mae-cpu")
    assert cpu.data.dataset == "digits" and cpu.model.name == "vit_nano"
    assert get_recipe("mae-vit-small-cifar10").model.patch_size == 4
    build_method(cpu)  # builds as configured


def test_cpu_recipe_trains_end_to_end(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "fastssl", "train", "--recipe", "mae-cpu", f"--train.out={out}", "--train.max_steps=3",
           "--data.limit=64", "--train.batch_size=32", "--data.num_workers=0", "--train.progress=false",
           "--train.tensorboard=false", "--train.knn_at_end=false", "--train.log_every=1"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [row for row in rows if row.get("kind") == "train"]
    assert len(train_rows) == 3 and all(math.isfinite(row["loss"]) for row in train_rows)
    # The loader made MAE's one view per image (MAE.view_spec), not the two-view default.
    assert train_rows[-1]["views_per_s"] == pytest.approx(train_rows[-1]["images_per_s"])


def _strategies():
    from tests.methods.test_dino_distributed import available_strategies

    return available_strategies()


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("strategy", _strategies())
def test_world_size_2_equals_world_size_1(tmp_path, strategy):
    """Masks come from the global batch's noise, so 2 ranks reproduce 1 process step for step,
    under every strategy (FSDP2 per encoder and decoder block, DeepSpeed ZeRO-2)."""
    from tests.methods.test_dino_distributed import assert_same_run, run_cli

    args = ["--recipe", "mae-cpu", "--data.image_size=8", "--method.mask_ratio=0.5", "--method.decoder_dim=16",
            "--method.decoder_depth=1", "--method.decoder_heads=2", "--train.max_steps=2",
            f"--dist.strategy={strategy}"]
    assert_same_run(run_cli(tmp_path / "ws1", 1, *args), run_cli(tmp_path / "ws2", 2, *args))
