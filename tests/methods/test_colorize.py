import pytest
import torch

from fastssl.config import Config, validate
from fastssl.errors import FastSSLError
from fastssl.methods import build_method, method_class
from fastssl.recipes import get_recipe
from fastssl.methods.colorize import Colorize
from fastssl.methods.lab_colour import (
    ab_bin_centres,
    annealed_mean,
    gray_rgb,
    lab_to_rgb,
    nearest_bin,
    rebalance_weights,
    rgb_to_lab,
    soft_encode,
)
from tests.methods.pretext_runs import assert_two_ranks_equal_one, train_cli

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _cfg(**method):
    c = Config()
    c.set_method("colorize")
    c.model.name, c.data.image_size = "resnet-tiny", 8
    c.method.ab_grid, c.method.out_cells, c.method.decoder_hidden_dim = 20.0, 2, 16
    for k, v in method.items():
        setattr(c.method, k, v)
    return c


def _normalise(rgb):
    return (rgb - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def test_rgb_lab_round_trip_and_reference_values():
    torch.manual_seed(0)
    rgb = torch.rand(4, 3, 6, 6)
    torch.testing.assert_close(lab_to_rgb(rgb_to_lab(rgb)), rgb, atol=1e-4, rtol=0)
    ref = torch.tensor([[[[1.0]], [[1.0]], [[1.0]]], [[[0.0]], [[0.0]], [[0.0]]], [[[1.0]], [[0.0]], [[0.0]]]])
    lab = rgb_to_lab(ref)[:, :, 0, 0]
    # White, black and sRGB red under D65 (skimage.color.rgb2lab: red = 53.24, 80.09, 67.20).
    torch.testing.assert_close(lab[0], torch.tensor([100.0, 0.0, 0.0]), atol=1e-3, rtol=0)
    torch.testing.assert_close(lab[1], torch.zeros(3), atol=1e-3, rtol=0)
    torch.testing.assert_close(lab[2], torch.tensor([53.2408, 80.0925, 67.2032]), atol=2e-2, rtol=0)


def test_grey_rgb_of_lightness_replicates_grey_images_exactly():
    grey = torch.rand(3, 1, 5, 5).expand(-1, 3, -1, -1)
    lab = rgb_to_lab(grey)
    assert lab[:, 1:].abs().max() < 1e-3  # grey has no colour
    torch.testing.assert_close(gray_rgb(lab[:, :1]), grey, atol=1e-5, rtol=0)


def test_in_gamut_bins_cover_srgb_and_nothing_else():
    c10, c20 = ab_bin_centres(10.0), ab_bin_centres(20.0)
    assert 200 < len(c10) <= 313 and len(c20) < len(c10)
    assert torch.equal(c10.min(0).values, torch.tensor([-90.0, -110.0]))
    assert torch.equal(c10.max(0).values, torch.tensor([100.0, 90.0]))
    # Every sRGB colour's ab lies within half a grid step of some centre.
    ab = rgb_to_lab(torch.rand(1, 3, 50, 50))[0, 1:].flatten(1).T
    assert torch.cdist(ab, c10).min(1).values.max() <= 5 * 2**0.5 + 1e-4


def test_bin_encoding_and_decoding():
    centres = ab_bin_centres(10.0)
    assert torch.equal(nearest_bin(centres, centres), torch.arange(len(centres)))
    ab = torch.tensor([[3.0, -7.0], [42.0, 18.0], [-22.0, 53.0]])  # no ties between bins
    soft = soft_encode(ab, centres, k=5, sigma=5.0)  # Sec. 2.1: 5 neighbours, sigma 5
    assert torch.allclose(soft.sum(1), torch.ones(3)) and (soft > 0).sum(1).tolist() == [5, 5, 5]
    assert torch.equal(soft.argmax(1), nearest_bin(ab, centres))
    # Decoding: the mean (T = 1) of the soft encoding lies near the encoded ab; T -> 0 is the mode.
    assert (annealed_mean(soft, centres, 1.0) - ab).norm(dim=1).max() < 5.0
    torch.testing.assert_close(annealed_mean(soft, centres, 0.01), centres[nearest_bin(ab, centres)])
    one_hot = torch.zeros(1, len(centres))
    one_hot[0, 17] = 1
    torch.testing.assert_close(annealed_mean(one_hot, centres, 0.38), centres[17:18])


def test_rebalancing_weights_boost_rare_colours():
    centres = ab_bin_centres(20.0)
    counts = torch.ones(len(centres))
    counts[0] = 1000.0  # one very common colour
    w = rebalance_weights(counts, centres, lam=0.5, sigma=5.0)
    kernel = torch.exp(-torch.cdist(centres, centres) ** 2 / 50)
    smoothed = kernel @ (counts / counts.sum())
    smoothed = smoothed / smoothed.sum()
    torch.testing.assert_close((smoothed * w).sum(), torch.tensor(1.0))  # E_p~[w] = 1 (Sec. 2.2)
    assert w[0] < w[1:].min()
    torch.testing.assert_close(rebalance_weights(counts, centres, lam=1.0), torch.ones(len(centres)))
    assert torch.equal(rebalance_weights(torch.zeros(len(centres)), centres), torch.ones(len(centres)))


def test_prior_buffer_counts_colourful_cells_after_successful_steps_only():
    torch.manual_seed(0)
    m = build_method(_cfg())
    colour = _normalise(torch.rand(4, 3, 8, 8))
    out = m([colour])
    assert m.ab_counts.sum() == 0  # forward alone changes nothing: a skipped step leaves no trace
    m.commit_step(0, 10)
    assert m.ab_counts.sum().item() == 4 * 2 * 2  # every cell of every colourful image
    assert out["colourful"].item() == 1.0 and out["loss"].item() > 0
    grey = _normalise(torch.rand(4, 1, 8, 8).expand(-1, 3, -1, -1))
    out = m([grey])
    m.commit_step(1, 10)
    assert out["loss"].item() == 0.0 and out["colourful"].item() == 0.0  # grey images carry no loss
    assert m.ab_counts.sum().item() == 16
    assert "ab_counts" in m.state_dict() and "rgb_mean" not in m.state_dict()


def test_backbone_sees_only_lightness():
    torch.manual_seed(0)
    m = build_method(_cfg()).eval()
    rgb = torch.rand(2, 3, 8, 8)
    L = rgb_to_lab(rgb)[:, :1]
    seen = []
    hook = m.backbone.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    m([_normalise(rgb)])
    hook.remove()
    torch.testing.assert_close(seen[0], _normalise(gray_rgb(L)), atol=1e-4, rtol=0)


def test_loss_is_weighted_soft_cross_entropy():
    torch.manual_seed(0)
    m = build_method(_cfg(skip_gray=False)).eval()
    x = _normalise(torch.rand(3, 3, 8, 8))
    out = m([x])
    L, ab = m.split_lab(x)
    soft, hard, _ = m.make_targets(ab)
    counts = torch.bincount(hard, minlength=m.num_bins).float()
    w = rebalance_weights(counts, m.ab_centres)[hard]
    logits = m.forward_logits(m.grey_input(L))
    expect = (w * -(soft * logits.log_softmax(1)).sum(1)).mean()
    torch.testing.assert_close(out["loss"], expect)
    assert m.predict_ab(x).shape == (3, 2, 2, 2)


def test_view_spec_requires_the_loaders_normalisation():
    c = _cfg()
    assert len(Colorize.view_spec(c).views) == 1
    c.aug.normalize_mean = (0.5, 0.5, 0.5)
    with pytest.raises(FastSSLError, match="--method.rgb_mean"):
        Colorize.view_spec(c)


@pytest.mark.parametrize("recipe", ['colorize-cpu', 'colorize-cifar10-cpu', 'colorize-resnet50-imagenet'])
def test_recipes_validate_and_build_their_views(recipe):
    cfg = validate(get_recipe(recipe))
    assert cfg.method.name == "colorize" and len(method_class("colorize").view_spec(cfg).views) == 1

def test_trains_a_short_run_through_the_cli(tmp_path):
    rows, weights = train_cli(tmp_path / "run", "colorize-cpu", "--train.max_steps=3", "--method.out_cells=2",
                              "--method.decoder_hidden_dim=16", "--method.skip_gray=false")
    assert len(rows) == 3 and all("colour_acc" in r for r in rows)
    assert weights["ab_counts"].sum().item() == 3 * 16 * 2 * 2  # 3 committed steps of 16 images, 4 cells


@pytest.mark.distributed
@pytest.mark.slow
def test_world_size_2_equals_world_size_1(tmp_path):
    # Digits are grey; skip_gray=false keeps their (neutral) targets so the step has gradients.
    assert_two_ranks_equal_one(tmp_path, "colorize-cpu", "--method.out_cells=2", "--method.decoder_hidden_dim=16",
                               "--method.skip_gray=false")
