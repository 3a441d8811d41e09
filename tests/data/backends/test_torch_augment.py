"""The torch backend's transforms: shapes, per-view rates on probe images, the eval transform."""

import numpy as np
import torch
from PIL import Image

from fastssl.config import AugConfig
from fastssl.data.backends.torch_augment import build_eval_transform, build_view_transforms
from fastssl.data.views import views_from_aug

N = 300  # samples per rate estimate: std of a rate near 0.5 is ~0.03, tolerances are ~3x that
OFF = dict(jitter_p=0.0, grayscale_p=0.0, blur_p=(0.0, 0.0), solarize_p=(0.0, 0.0), flip_p=0.0)
# Identity normalisation so outputs are pixel / 255 and easy to inspect.
RAW = dict(normalize_mean=(0.0, 0.0, 0.0), normalize_std=(1.0, 1.0, 1.0))


def _aug(**kw) -> AugConfig:
    # A full-image "crop" so only the augmentation under test changes the probe.
    return AugConfig(**{**dict(crop_scale_min=1.0, crop_scale_max=1.0), **OFF, **RAW, **kw})


def _probe() -> Image.Image:
    """8x8, left half pure red, right half pure blue: flips, grayscale and jitter all show."""
    px = np.zeros((8, 8, 3), np.uint8)
    px[:, :4, 0] = 255
    px[:, 4:, 2] = 255
    return Image.fromarray(px)


def _views(aug: AugConfig, view: int, image=None, size=8) -> list[torch.Tensor]:
    t = build_view_transforms(views_from_aug(aug, size))[view]
    image = image or _probe()
    return [t(image) for _ in range(N)]


def test_view_shapes_dtypes_and_normalisation():
    aug = AugConfig(local_crops=2, local_size=8)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 14, 3), dtype=np.uint8))
    ts = build_view_transforms(views_from_aug(aug, 16))
    assert len(ts) == 4
    outs = [t(img) for t in ts]
    assert [tuple(o.shape) for o in outs] == [(3, 16, 16), (3, 16, 16), (3, 8, 8), (3, 8, 8)]
    assert all(type(o) is torch.Tensor and o.dtype == torch.float32 for o in outs)
    lo = (0 - np.array(aug.normalize_mean)) / np.array(aug.normalize_std)
    hi = (1 - np.array(aug.normalize_mean)) / np.array(aug.normalize_std)
    for o in outs:
        assert (o.amin(dim=(1, 2)).numpy() >= lo - 1e-5).all() and (o.amax(dim=(1, 2)).numpy() <= hi + 1e-5).all()


def test_two_calls_give_different_views():
    t = build_view_transforms(views_from_aug(AugConfig(), 8))[0]
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8))
    assert not torch.equal(t(img), t(img))


def test_same_seed_same_view():
    t = build_view_transforms(views_from_aug(AugConfig(), 8))[1]
    img = _probe()
    torch.manual_seed(7)
    a = t(img)
    torch.manual_seed(7)
    assert torch.equal(a, t(img))


def test_flip_rate():
    flipped = [v[2, 0, 0] > 0.5 for v in _views(_aug(flip_p=0.5), 0)]  # blue on the left
    assert abs(np.mean(flipped) - 0.5) < 0.1


def test_grayscale_rate():
    gray = [torch.allclose(v[0], v[1], atol=1e-6) and torch.allclose(v[1], v[2], atol=1e-6)
            for v in _views(_aug(grayscale_p=0.3), 0)]
    assert abs(np.mean(gray) - 0.3) < 0.1


def test_jitter_rate():
    base = build_view_transforms(views_from_aug(_aug(), 8))[0](_probe())
    changed = [not torch.equal(v, base) for v in _views(_aug(jitter_p=0.6), 0)]
    assert abs(np.mean(changed) - 0.6) < 0.1


def test_solarize_rate_per_view():
    light = Image.new("RGB", (8, 8), (200, 200, 200))  # >= 128, so solarized -> 55
    aug = _aug(solarize_p=(0.0, 0.3))
    rate = [np.mean([abs(float(v.mean()) - 55 / 255) < 1e-3 for v in _views(aug, k, light)]) for k in (0, 1)]
    assert rate[0] == 0.0 and abs(rate[1] - 0.3) < 0.1


def test_blur_per_view():
    aug = _aug(blur_p=(1.0, 0.0), blur_sigma_min=1.0, blur_sigma_max=2.0)
    base = build_view_transforms(views_from_aug(_aug(), 8))[0](_probe())
    blurred = [[not torch.equal(v, base) for v in _views(aug, k)[:50]] for k in (0, 1)]
    assert all(blurred[0]) and not any(blurred[1])



def test_eval_transform_is_deterministic_resize_and_center_crop():
    img = Image.fromarray(np.random.default_rng(2).integers(0, 256, (20, 40, 3), dtype=np.uint8))
    t = build_eval_transform(AugConfig(), 8)
    a, b = t(img), t(img)
    assert a.shape == (3, 8, 8) and a.dtype == torch.float32 and torch.equal(a, b)
    raw = build_eval_transform(_aug(), 10)(Image.fromarray(np.full((10, 10, 3), 51, np.uint8)))
    assert torch.allclose(raw, torch.full((3, 10, 10), 0.2))
