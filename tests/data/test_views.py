"""The view specification: AugConfig -> ViewSpec for SimCLR/BYOL/DINO and MAE, and its checks."""

import dataclasses

import pytest

from fastssl.config import AugConfig
from fastssl.data.views import View, ViewSpec, blur_kernel_size, check_spec, single_view, views_from_aug
from fastssl.errors import FastSSLError


def test_views_from_aug_global_pair_and_local_crops():
    aug = AugConfig(blur_p=(1.0, 0.1), solarize_p=(0.0, 0.2), local_crops=3, local_size=12, local_blur_p=0.3,
                    local_scale_min=0.1, local_scale_max=0.3)
    spec = views_from_aug(aug, 32)
    assert [v.size for v in spec.views] == [32, 32, 12, 12, 12]
    g0, g1, loc = spec.views[0], spec.views[1], spec.views[2]
    assert (g0.blur_p, g0.solarize_p, g1.blur_p, g1.solarize_p) == (1.0, 0.0, 0.1, 0.2)
    assert g0.scale == (aug.crop_scale_min, aug.crop_scale_max) and g0.ratio == (3 / 4, 4 / 3)
    # The local views' blur is --aug.local_blur_p (the DALI/gpu-tensor backends once hard-coded 0.5).
    assert (loc.blur_p, loc.solarize_p, loc.scale) == (0.3, 0.0, (0.1, 0.3))
    for v in spec.views:
        assert (v.flip_p, v.jitter_p, v.brightness, v.contrast, v.saturation, v.hue, v.grayscale_p) == (
            aug.flip_p, aug.jitter_p, aug.brightness, aug.contrast, aug.saturation, aug.hue, aug.grayscale_p)
        assert v.blur_sigma == (aug.blur_sigma_min, aug.blur_sigma_max) and v.interpolation == "bilinear"
    assert (spec.mean, spec.std) == (aug.normalize_mean, aug.normalize_std)
    check_spec(spec)


def test_num_global_cycles_the_per_view_pair():
    spec = views_from_aug(AugConfig(blur_p=(1.0, 0.1), solarize_p=(0.0, 0.2)), 16, num_global=3)
    assert [v.blur_p for v in spec.views] == [1.0, 0.1, 1.0]
    assert [v.solarize_p for v in spec.views] == [0.0, 0.2, 0.0]
    assert len(views_from_aug(AugConfig(), 16, num_global=1).views) == 1


def test_single_view_is_maes_crop_and_flip():
    aug = AugConfig(crop_scale_min=0.2, crop_scale_max=1.0, local_crops=4)
    spec = single_view(aug, 24)
    (v,) = spec.views
    assert (v.size, v.scale, v.flip_p, v.interpolation) == (24, (0.2, 1.0), 0.5, "bicubic")
    assert v.jitter_p == v.grayscale_p == v.blur_p == v.solarize_p == 0.0


def test_specs_are_frozen_and_hashable():
    spec = views_from_aug(AugConfig(), 8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.views[0].size = 4
    assert hash(spec) == hash(views_from_aug(AugConfig(), 8))


@pytest.mark.parametrize(
    "change, option",
    [(dict(crop_scale_min=0.0), "--aug.crop_scale_min"), (dict(flip_p=1.5), "--aug.flip_p"),
     (dict(solarize_p=(0.0, 2.0)), "--aug.solarize_p"), (dict(blur_sigma_min=3.0), "--aug.blur_sigma_min"),
     (dict(local_blur_p=-0.1), "--aug.local_blur_p"), (dict(hue=0.7), "--aug.hue"),
     (dict(local_crops=2, local_size=1), "--aug.local_size"), (dict(normalize_std=(0.2, 0.0, 0.2)), "--aug.normalize_std")],
)
def test_bad_settings_name_the_option(change, option):
    with pytest.raises(FastSSLError, match=option):
        views_from_aug(dataclasses.replace(AugConfig(), **change), 8)
    with pytest.raises(FastSSLError, match="--data.image_size"):
        single_view(AugConfig(), 1)


def test_check_spec_names_the_view_and_field():
    ok = View(8)
    check_spec(ViewSpec((ok,), (0.5,) * 3, (0.5,) * 3))
    for bad, field in [(View(8, scale=(0.5, 0.2)), "scale"), (View(1), "size"), (View(8, ratio=(0.0, 1.0)), "ratio"),
                       (View(8, interpolation="nearest"), "interpolation"), (View(8, blur_sigma=(0.0, 1.0)), "blur_sigma")]:
        with pytest.raises(ValueError, match=f"view 1 .*{field}"):
            check_spec(ViewSpec((ok, bad), (0.5,) * 3, (0.5,) * 3))


def test_blur_kernel_is_odd_and_about_a_tenth():
    assert [blur_kernel_size(s) for s in (8, 32, 96, 224)] == [3, 3, 9, 23]
