import pytest
import torch

from fastssl.config import Config, validate
from fastssl.errors import FastSSLError
from fastssl.losses import info_nce
from fastssl.methods import build_method, method_class
from fastssl.recipes import get_recipe
from fastssl.methods.cpc import CPC, grid_size, patch_grid, prediction_offsets
from fastssl.models.cpc_context import ContextNetwork
from tests.methods.pretext_runs import assert_two_ranks_equal_one, train_cli


def _cfg(size=12, **method):
    c = Config()
    c.set_method("cpc")
    c.model.name, c.data.image_size = "resnet-tiny", size
    c.method.patch_size, c.method.patch_stride, c.method.pred_steps = 4, 2, 2  # 5x5 grid, rows 2, 3 ahead
    c.method.context_dim, c.method.context_blocks, c.method.directions = 16, 2, 1
    for k, v in method.items():
        setattr(c.method, k, v)
    return c


def test_context_network_is_causal_top_to_bottom():
    torch.manual_seed(0)
    net = ContextNetwork(8, hidden=16, num_blocks=3)
    z = torch.randn(2, 8, 6, 6)
    c = net(z)
    for row in range(5):
        changed = z.clone()
        changed[:, :, row + 1 :] = torch.randn_like(changed[:, :, row + 1 :])  # every row below `row`
        c2 = net(changed)
        torch.testing.assert_close(c2[:, :, : row + 1], c[:, :, : row + 1])  # rows <= row: untouched
        assert not torch.allclose(c2[:, :, row + 1 :], c[:, :, row + 1 :])  # rows below do see it


def test_prediction_ignores_patches_below_the_context_row():
    """End to end in eval mode (BatchNorm from running statistics, so patches stay independent):
    changing the image below row 0's patches changes no prediction made from row 0's context."""
    torch.manual_seed(0)
    m = build_method(_cfg()).eval()  # 4 px patches, stride 2: row 0 covers pixels 0..3
    x = torch.randn(3, 3, 12, 12)
    changed = x.clone()
    changed[:, :, 4:] = torch.randn_like(changed[:, :, 4:])
    z, z2 = m.encode_patches(x), m.encode_patches(changed)
    for (pred, target), (pred2, target2) in zip(m.predict(z, 0), m.predict(z2, 0)):
        g = 5
        first_row = pred.view(3, -1, g, pred.shape[-1])[:, 0]  # predictions from context row 0
        torch.testing.assert_close(pred2.view(3, -1, g, pred.shape[-1])[:, 0], first_row)
        assert not torch.allclose(target2, target)  # ...of targets that did change


def test_patch_grid_and_non_overlapping_offsets():
    x = torch.randn(2, 3, 12, 12)
    p = patch_grid(x, 4, 2)  # [2, 5, 5, 3, 4, 4]
    assert p.shape == (2, 5, 5, 3, 4, 4) and grid_size(12, 4, 2) == 5
    assert torch.equal(p[1, 3, 2], x[1, :, 6:10, 4:8])
    c = _cfg().method
    assert prediction_offsets(c) == [2, 3]  # row i+1 shares pixels with row i at half-patch stride
    c.patch_stride = 4
    assert prediction_offsets(c)[0] == 1  # no overlap: the next row is fair game


def test_loss_is_info_nce_of_predictions_against_true_patches():
    torch.manual_seed(0)
    m = build_method(_cfg(temperature=0.3)).eval()
    x = torch.randn(2, 3, 12, 12)
    out = m([x])
    z = m.encode_patches(x)
    expect = torch.stack([info_nce(p, t, temperature=0.3, impl="torch") for p, t in m.predict(z, 0)]).mean()
    torch.testing.assert_close(out["loss"], expect)
    pairs = m.predict(z, 0)
    assert [p.shape[0] for p, _ in pairs] == [2 * 3 * 5, 2 * 2 * 5]  # N * (G - k) * G queries per offset
    # The target of the first query at offset 2 is patch (2, 0) of image 0.
    torch.testing.assert_close(pairs[0][1][0], z[0, :, 2, 0])


def test_four_directions_turn_the_grid():
    torch.manual_seed(0)
    m = build_method(_cfg(directions=4)).eval()
    assert m.turns == (0, 2, 1, 3) and len(m.context) == 4
    z = torch.randn(1, m.backbone.num_features, 5, 5)
    # Direction "up" (2 quarter turns): the first target at offset 2 is row G-1-2 read backwards.
    _, target = m.predict(z, 1)[0]
    torch.testing.assert_close(target[0], z[0, :, 2, 4])
    out = m([torch.randn(2, 3, 12, 12)])
    out["loss"].backward()
    assert all(p.grad is not None for p in m.parameters())  # every direction and offset is trained


def test_grid_too_small_names_the_fix():
    with pytest.raises(FastSSLError, match="--method.pred_steps to 3"):
        CPC.view_spec(_cfg(pred_steps=4))
    with pytest.raises(FastSSLError, match="--data.image_size"):
        CPC.view_spec(_cfg(size=6))
    assert len(CPC.view_spec(_cfg()).views) == 1


@pytest.mark.parametrize("recipe", ['cpc-cpu', 'cpc-resnet18-cifar10', 'cpc-resnet50-imagenet'])
def test_recipes_validate_and_build_their_views(recipe):
    cfg = validate(get_recipe(recipe))
    assert cfg.method.name == "cpc" and len(method_class("cpc").view_spec(cfg).views) == 1

def test_trains_a_short_run_through_the_cli(tmp_path):
    rows, weights = train_cli(tmp_path / "run", "cpc-cpu", "--train.max_steps=3", "--data.image_size=12",
                              "--method.patch_size=4", "--method.patch_stride=2", "--method.pred_steps=2",
                              "--method.context_dim=16", "--method.context_blocks=1")
    assert len(rows) == 3 and all("cpc_acc" in r for r in rows)
    assert any(k.startswith("context.3.") for k in weights)  # the recipe predicts in 4 directions


@pytest.mark.distributed
@pytest.mark.slow
def test_world_size_2_equals_world_size_1(tmp_path):
    # Negatives come from both ranks (gather_distributed), so the loss is the global batch's.
    assert_two_ranks_equal_one(tmp_path, "cpc-cpu", "--data.image_size=12", "--method.patch_size=4",
                               "--method.patch_stride=2", "--method.pred_steps=2", "--method.context_dim=16",
                               "--method.context_blocks=1", "--method.directions=2")
