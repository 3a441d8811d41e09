"""SimCLR/BYOL view augmentation and the deterministic eval transform (torchvision.transforms.v2).

A view is: random resized crop -> horizontal flip -> colour jitter (with prob jitter_p) ->
grayscale -> Gaussian blur (prob blur_p[view]) -> solarize (prob solarize_p[view]) -> float ->
normalize. The two global views differ only in their blur/solarize probabilities (BYOL's
asymmetric pair, e.g. blur (1.0, 0.1), solarize (0.0, 0.2)). Multi-crop (DINO) adds
`aug.local_crops` smaller views at `aug.local_size` with blur `aug.local_blur_p` and no solarize.

Transforms take an RGB PIL image and return a plain float32 tensor `[3, H, W]`. All randomness comes from the
global torch RNG, which the loader seeds per (seed, epoch, index) for reproducibility.
"""

from __future__ import annotations

from typing import Callable

import torch
from PIL import Image
from torchvision.transforms import v2

from fastssl.config import AugConfig
from fastssl.errors import FastSSLError

# DINO's local-crop blur probability; AugConfig has no field for it (yet).
# Solarize inverts pixels >= this uint8 value (0.5 on a [0, 1] scale).
_SOLARIZE_THRESHOLD = 128


def blur_kernel_size(image_size: int) -> int:
    """Odd kernel of ~10% of the image side, at least 3 (SimCLR: 23 px at 224)."""
    k = int(0.1 * image_size)
    return max(3, k if k % 2 == 1 else k + 1)


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


def check_aug(aug: AugConfig, image_size: int) -> None:
    """Reject impossible augmentation settings before any worker starts."""
    if image_size < 2:
        raise FastSSLError(f"--data.image_size={image_size} is too small; set it to at least 2")
    if not 0.0 < aug.crop_scale_min <= aug.crop_scale_max <= 1.0:
        raise FastSSLError(
            f"crop scale range ({aug.crop_scale_min}, {aug.crop_scale_max}) must satisfy "
            "0 < --aug.crop_scale_min <= --aug.crop_scale_max <= 1"
        )
    if not 0.0 < aug.blur_sigma_min <= aug.blur_sigma_max:
        raise FastSSLError("blur sigma range must satisfy 0 < --aug.blur_sigma_min <= --aug.blur_sigma_max")
    for name in ("flip_p", "jitter_p", "grayscale_p"):
        if not 0.0 <= getattr(aug, name) <= 1.0:
            raise FastSSLError(f"--aug.{name}={getattr(aug, name)} is a probability; use a value in [0, 1]")
    if aug.local_crops < 0:
        raise FastSSLError(f"--aug.local_crops={aug.local_crops} must be >= 0")
    if aug.local_crops > 0 and not 0.0 < aug.local_scale_min <= aug.local_scale_max <= 1.0:
        raise FastSSLError("local crop scales must satisfy 0 < --aug.local_scale_min <= --aug.local_scale_max <= 1")
    for name in ("blur_p", "solarize_p"):
        if not all(0.0 <= p <= 1.0 for p in getattr(aug, name)):
            raise FastSSLError(f"--aug.{name}={getattr(aug, name)} are probabilities; use values in [0, 1]")


# Older name, imported by the GPU backends.


def build_view_transform(
    aug: AugConfig,
    size: int,
    scale: tuple[float, float],
    blur_p: float,
    solarize_p: float,
) -> Callable[[Image.Image], torch.Tensor]:
    """One augmentation pipeline: RGB PIL image -> float32 [3, size, size], normalised."""
    steps: list[Callable] = [
        v2.RandomResizedCrop(size, scale=scale, antialias=True),
        v2.RandomHorizontalFlip(p=aug.flip_p),
    ]
    # Disabled stages are left out rather than applied with p=0: same output, less work.
    if aug.jitter_p > 0:
        jitter = v2.ColorJitter(aug.brightness, aug.contrast, aug.saturation, aug.hue)
        steps.append(v2.RandomApply([jitter], p=aug.jitter_p))
    if aug.grayscale_p > 0:
        steps.append(v2.RandomGrayscale(p=aug.grayscale_p))
    # PIL is fastest for the crop and colour ops; blur and solarize are faster on uint8 tensors.
    steps.append(v2.PILToTensor())
    if blur_p > 0:
        blur = v2.GaussianBlur(blur_kernel_size(size), sigma=(aug.blur_sigma_min, aug.blur_sigma_max))
        steps.append(v2.RandomApply([blur], p=blur_p))
    if solarize_p > 0:
        steps.append(v2.RandomSolarize(threshold=_SOLARIZE_THRESHOLD, p=solarize_p))
    steps.append(ToNormalizedFloat(aug.normalize_mean, aug.normalize_std))
    return v2.Compose(steps)


def build_view_transforms(aug: AugConfig, image_size: int) -> list[Callable[[Image.Image], torch.Tensor]]:
    """Two global views at image_size, then `aug.local_crops` local views at `aug.local_size`."""
    check_aug(aug, image_size)
    scale = (aug.crop_scale_min, aug.crop_scale_max)
    views = [build_view_transform(aug, image_size, scale, aug.blur_p[v], aug.solarize_p[v]) for v in range(2)]
    if aug.local_crops > 0:
        local = build_view_transform(
            aug, aug.local_size, (aug.local_scale_min, aug.local_scale_max), aug.local_blur_p, 0.0
        )
        views += [local] * aug.local_crops
    return views


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
