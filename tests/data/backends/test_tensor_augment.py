"""Batched tensor augmentation (gpu-tensor backend) on CPU tensors: torchvision-equivalent crop
parameters and colour conversions. Per-op rates are in tests/data/test_view_agreement.py."""

import numpy as np
import torch

from fastssl.data.backends.tensor_augment import crop_boxes, hsv_to_rgb, rgb_to_hsv


def test_crop_boxes_follow_torchvision_distribution():
    g = torch.Generator().manual_seed(0)
    boxes = crop_boxes(4000, 48, 64, (0.08, 1.0), g, "cpu")
    top, left, h, w = boxes.unbind(1)
    assert bool(((top >= 0) & (left >= 0) & (top + h <= 48) & (left + w <= 64)).all())
    from torchvision.transforms import v2

    torch.manual_seed(0)
    ref = [v2.RandomResizedCrop.get_params(torch.zeros(1, 48, 64), [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(4000)]
    ref_area = np.mean([hh * ww for _, _, hh, ww in ref]) / (48 * 64)
    assert abs(float((h * w).mean()) / (48 * 64) - ref_area) < 0.02


def test_crop_boxes_honour_the_aspect_ratio_range():
    g = torch.Generator().manual_seed(1)
    top, left, h, w = crop_boxes(2000, 64, 64, (0.2, 0.6), g, "cpu", ratio=(1.0, 2.0)).unbind(1)
    r = w / h
    # Rounding the sides to whole pixels moves the ratio by at most ~1 px / side.
    assert float(r.min()) > 1.0 - 0.1 and float(r.max()) < 2.0 + 0.2 and float(r.mean()) > 1.3


def test_hsv_round_trip_and_hue_shift_matches_torchvision():
    x = torch.rand(4, 3, 8, 8)
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-5)
    from torchvision.transforms.v2 import functional as TF

    hsv = rgb_to_hsv(x)
    hsv[:, 0] = (hsv[:, 0] + 0.2) % 1.0
    assert torch.allclose(hsv_to_rgb(hsv), TF.adjust_hue(x, 0.2), atol=1e-3)
