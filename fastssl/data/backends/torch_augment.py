"""The torch backend's augmentation: one torchvision.transforms.v2 pipeline per `View`.

A transform takes an RGB PIL image and returns a plain float32 tensor `[3, size, size]`,
normalised. Every operation and probability comes from the View (fastssl.data.views); all
randomness comes from the global torch RNG, which the loader seeds per (seed, epoch, index).
Also here: the deterministic eval transform (resize + centre crop + normalise).
"""

from __future__ import annotations

from typing import Callable

import torch
from PIL import Image
from torchvision.transforms import v2

from fastssl.config import AugConfig
from fastssl.data.views import View, ViewSpec, blur_kernel_size, check_aug

# Solarize inverts pixels >= this uint8 value (0.5 on a [0, 1] scale), as every backend.
SOLARIZE_THRESHOLD = 128
_INTERPOLATION = {"bilinear": v2.InterpolationMode.BILINEAR, "bicubic": v2.InterpolationMode.BICUBIC}


class ToNormalizedFloat:
    """uint8 `[3, H, W]` -> float32 `[3, H, W]`, `(x / 255 - mean) / std`.

    Same result as v2.ToDtype(scale=True) + v2.Normalize, in one call: at 32 px the v2
    dispatch overhead of those two costs more than the arithmetic.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().div_(255.0).sub_(self.mean).div_(self.std)

    def __repr__(self) -> str:
        return f"ToNormalizedFloat(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


def build_view_transform(
    view: View, mean: tuple[float, ...], std: tuple[float, ...]
) -> Callable[[Image.Image], torch.Tensor]:
    """One view's pipeline: RGB PIL image -> float32 [3, size, size], normalised."""
    steps: list[Callable] = [
        v2.RandomResizedCrop(
            view.size, scale=view.scale, ratio=view.ratio, interpolation=_INTERPOLATION[view.interpolation],
            antialias=True,
        ),
    ]
    # Disabled stages are left out rather than applied with p=0: same output, less work.
    if view.flip_p > 0:
        steps.append(v2.RandomHorizontalFlip(p=view.flip_p))
    if view.jitter_p > 0:
        jitter = v2.ColorJitter(view.brightness, view.contrast, view.saturation, view.hue)
        steps.append(v2.RandomApply([jitter], p=view.jitter_p))
    if view.grayscale_p > 0:
        steps.append(v2.RandomGrayscale(p=view.grayscale_p))
    # PIL is fastest for the crop and colour ops; blur and solarize are faster on uint8 tensors.
    steps.append(v2.PILToTensor())
    if view.blur_p > 0:
        blur = v2.GaussianBlur(blur_kernel_size(view.size), sigma=view.blur_sigma)
        steps.append(v2.RandomApply([blur], p=view.blur_p))
    if view.solarize_p > 0:
        steps.append(v2.RandomSolarize(threshold=SOLARIZE_THRESHOLD, p=view.solarize_p))
    steps.append(ToNormalizedFloat(mean, std))
    return v2.Compose(steps)


def build_view_transforms(spec: ViewSpec) -> list[Callable[[Image.Image], torch.Tensor]]:
    """One transform per view of the spec (checked by the loader factory, data/factory.py), in order."""
    return [build_view_transform(v, spec.mean, spec.std) for v in spec.views]


def build_eval_transform(aug: AugConfig, image_size: int) -> Callable[[Image.Image], torch.Tensor]:
    """Resize the shorter side to image_size, center crop, normalise. No randomness."""
    check_aug(aug, image_size)
    return v2.Compose(
        [
            v2.Resize(image_size, antialias=True),
            v2.CenterCrop(image_size),
            v2.PILToTensor(),
            ToNormalizedFloat(aug.normalize_mean, aug.normalize_std),
        ]
    )
