"""Register tokens (Darcet et al. 2024) and the ViT token interface of the backbone contract."""

import pytest
import torch

from fastssl.errors import FastSSLError
from fastssl.models.backbone import build_backbone


def _vit(registers=0, seed=0):
    torch.manual_seed(seed)
    return build_backbone("vit_nano", 16, 4, registers=registers).eval()


def test_registers_are_dropped_from_pooled_features():
    b = _vit(registers=3)
    x = torch.randn(2, 3, 16, 16)
    t = b.tokens(x)
    assert (t.cls.shape, t.registers.shape, t.patches.shape) == ((2, 96), (2, 3, 96), (2, 16, 96))
    assert b.num_registers == 3 and b(x).shape == (2, b.num_features)
    torch.testing.assert_close(b(x), t.cls)  # the pooled (and exported, kNN) feature is the class token
    # The registers take part: every block attends to them, so the class token depends on them.
    with torch.no_grad():
        b.trunk.reg_token.add_(1.0)
    assert not torch.allclose(b(x), t.cls)


def test_zero_registers_leaves_the_backbone_unchanged():
    from timm.models.vision_transformer import VisionTransformer

    b = _vit(registers=0)
    torch.manual_seed(0)
    old = VisionTransformer(img_size=16, patch_size=4, num_classes=0, dynamic_img_size=True,
                            embed_dim=96, depth=4, num_heads=3).eval()
    assert b.trunk.state_dict().keys() == old.state_dict().keys() and b.trunk.reg_token is None
    for k, v in old.state_dict().items():
        torch.testing.assert_close(b.trunk.state_dict()[k], v)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(b(x), old(x))
    assert b.tokens(x).registers.shape == (2, 0, 96)


@pytest.mark.parametrize("registers", [0, 2])
def test_token_paths_agree(registers):
    b = _vit(registers=registers)
    x = torch.randn(2, 3, 16, 16)
    t = b.tokens(x)
    full = b.forward_tokens(b.embed_patches(x))  # MAE's path: [N, 1 + R + L, D]
    torch.testing.assert_close(full, torch.cat([t.cls[:, None], t.registers, t.patches], dim=1))
    # 8 px crops (DINO's local crops): the position embedding is resampled.
    assert b.tokens(torch.randn(2, 3, 8, 8)).patches.shape == (2, 4, 96)


def test_mask_token_replaces_the_masked_patches():
    b = _vit()
    x = torch.randn(2, 3, 16, 16)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[0, 5] = True  # patch (1, 1) of image 0: pixels [4:8, 4:8]
    token = torch.randn(96)
    out = b.tokens(x, mask, token)
    y = x.clone()
    y[0, :, 4:8, 4:8] = 9.0  # what lies under a masked patch is never seen
    torch.testing.assert_close(b.tokens(y, mask, token).patches, out.patches)
    assert not torch.allclose(b.tokens(y).patches, b.tokens(x).patches)


def test_stem_params_and_bad_registers():
    b = _vit(registers=2)
    stem = {id(p) for p in b.stem_params()}
    t = b.trunk
    assert {id(t.cls_token), id(t.reg_token), id(t.pos_embed), id(t.patch_embed.proj.weight)} <= stem
    assert not stem & {id(p) for blk in b.blocks() for p in blk.parameters()}
    assert {id(p) for p in build_backbone("resnet-tiny", 16).stem_params()}
    with pytest.raises(FastSSLError, match="--model.registers=0"):
        build_backbone("resnet-tiny", 16, registers=2)
