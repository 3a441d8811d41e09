"""The view specification: what every data backend produces for one image.

A `ViewSpec` is a tuple of `View`s plus the normalisation. Each `View` is one augmentation
pipeline, applied in this order by every backend (torch, dali, dali-cpu, gpu-tensor):

    RandomResizedCrop(size, scale, ratio) -> horizontal flip (flip_p)
    -> colour jitter (jitter_p; brightness, contrast, saturation, hue) -> grayscale (grayscale_p)
    -> Gaussian blur (blur_p, sigma ~ U(blur_sigma), kernel `blur_kernel_size(size)`)
    -> solarize (solarize_p, pixels >= 128 of 255 inverted) -> normalise (mean, std)

A backend reads only the spec: no probability, size or scale is decided anywhere else. A
method that needs other views (one for MAE, 2 + K for DINO) builds its own spec and passes it
to `build_pretrain_loader(cfg, world, views=spec)`; the default is `views_from_aug`.

`AugConfig` -> spec:
- `views_from_aug`: SimCLR (Chen et al. 2020, Appendix A) / BYOL (Grill et al. 2020, Table 6)
  global views, whose blur and solarize odds differ per view (BYOL's asymmetric pair), plus
  DINO's (Caron et al. 2021) multi-crop local views;
- `single_view`: MAE (He et al. 2022, main_pretrain.py): crop + flip only, bicubic.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastssl.config import AugConfig
from fastssl.errors import FastSSLError

# torchvision RandomResizedCrop's defaults (also SimCLR's Appendix A): area fraction and w/h range.
DEFAULT_SCALE = (0.08, 1.0)
DEFAULT_RATIO = (3.0 / 4.0, 4.0 / 3.0)
# SimCLR Appendix A: blur sigma ~ U(0.1, 2.0).
DEFAULT_BLUR_SIGMA = (0.1, 2.0)
INTERPOLATIONS = ("bilinear", "bicubic")


@dataclass(frozen=True)
class View:
    """One augmented view. Probabilities are per image; 0 switches an operation off."""

    size: int
    scale: tuple[float, float] = DEFAULT_SCALE
    ratio: tuple[float, float] = DEFAULT_RATIO
    flip_p: float = 0.5
    jitter_p: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    grayscale_p: float = 0.0
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = DEFAULT_BLUR_SIGMA
    solarize_p: float = 0.0
    # Resampling of the crop. MAE uses bicubic (main_pretrain.py); everything else bilinear.
    interpolation: str = "bilinear"


@dataclass(frozen=True)
class ViewSpec:
    """Everything a backend needs to make a batch's views: the views and the normalisation."""

    views: tuple[View, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def blur_kernel_size(size: int) -> int:
    """Odd kernel of ~10% of the view side, at least 3 (SimCLR Appendix A: 23 px at 224)."""
    k = int(0.1 * size)
    return max(3, k if k % 2 == 1 else k + 1)


def check_aug(aug: AugConfig, image_size: int) -> None:
    """Reject impossible augmentation settings, naming the `--aug.key` / `--data.key` to change."""
    if image_size < 2:
        raise FastSSLError(f"--data.image_size={image_size} is too small; set it to at least 2")
    if not 0.0 < aug.crop_scale_min <= aug.crop_scale_max <= 1.0:
        raise FastSSLError(
            f"crop scale range ({aug.crop_scale_min}, {aug.crop_scale_max}) must satisfy "
            "0 < --aug.crop_scale_min <= --aug.crop_scale_max <= 1"
        )
    if not 0.0 < aug.blur_sigma_min <= aug.blur_sigma_max:
        raise FastSSLError("blur sigma range must satisfy 0 < --aug.blur_sigma_min <= --aug.blur_sigma_max")
    for name in ("flip_p", "jitter_p", "grayscale_p", "local_blur_p"):
        if not 0.0 <= getattr(aug, name) <= 1.0:
            raise FastSSLError(f"--aug.{name}={getattr(aug, name)} is a probability; use a value in [0, 1]")
    for name in ("brightness", "contrast", "saturation"):
        if getattr(aug, name) < 0:
            raise FastSSLError(f"--aug.{name}={getattr(aug, name)} is a jitter strength; use a value >= 0")
    if not 0.0 <= aug.hue <= 0.5:
        raise FastSSLError(f"--aug.hue={aug.hue} is a fraction of the colour wheel; use a value in [0, 0.5]")
    if aug.local_crops < 0:
        raise FastSSLError(f"--aug.local_crops={aug.local_crops} must be >= 0")
    if aug.local_crops > 0 and not 0.0 < aug.local_scale_min <= aug.local_scale_max <= 1.0:
        raise FastSSLError("local crop scales must satisfy 0 < --aug.local_scale_min <= --aug.local_scale_max <= 1")
    if aug.local_crops > 0 and aug.local_size < 2:
        raise FastSSLError(f"--aug.local_size={aug.local_size} is too small; set it to at least 2")
    for name in ("blur_p", "solarize_p"):
        if not all(0.0 <= p <= 1.0 for p in getattr(aug, name)):
            raise FastSSLError(f"--aug.{name}={getattr(aug, name)} are probabilities; use values in [0, 1]")
    for name in ("normalize_mean", "normalize_std"):
        if len(getattr(aug, name)) != 3:
            raise FastSSLError(f"--aug.{name} needs 3 values (R, G, B), got {getattr(aug, name)}")
    if min(aug.normalize_std) <= 0:
        raise FastSSLError(f"--aug.normalize_std={aug.normalize_std} must be > 0 per channel")


def _colour(aug: AugConfig) -> dict:
    return dict(
        flip_p=aug.flip_p, jitter_p=aug.jitter_p, brightness=aug.brightness, contrast=aug.contrast,
        saturation=aug.saturation, hue=aug.hue, grayscale_p=aug.grayscale_p,
        blur_sigma=(aug.blur_sigma_min, aug.blur_sigma_max),
    )


def views_from_aug(aug: AugConfig, image_size: int, num_global: int = 2) -> ViewSpec:
    """`num_global` global views at image_size, then `aug.local_crops` local views at `aug.local_size`.

    Global view v takes `aug.blur_p[v]` and `aug.solarize_p[v]` (cycling through the pair when
    num_global > 2). Local views take `aug.local_blur_p`, no solarisation (DINO's local
    transform) and the same flip and colour parameters.
    """
    check_aug(aug, image_size)
    if num_global < 1:
        raise ValueError(f"num_global={num_global}: a spec needs at least one global view")
    scale = (aug.crop_scale_min, aug.crop_scale_max)
    views = [
        View(
            size=image_size, scale=scale, **_colour(aug),
            blur_p=float(aug.blur_p[v % len(aug.blur_p)]), solarize_p=float(aug.solarize_p[v % len(aug.solarize_p)]),
        )
        for v in range(num_global)
    ]
    local = View(
        size=aug.local_size, scale=(aug.local_scale_min, aug.local_scale_max), **_colour(aug),
        blur_p=aug.local_blur_p, solarize_p=0.0,
    )
    views += [local] * aug.local_crops
    return ViewSpec(tuple(views), tuple(aug.normalize_mean), tuple(aug.normalize_std))


def single_view(aug: AugConfig, image_size: int) -> ViewSpec:
    """MAE's one view (He et al. 2022, main_pretrain.py): RandomResizedCrop(scale, bicubic) + flip.

    No colour jitter, grayscale, blur or solarisation: MAE found them unnecessary (Sec. 4,
    "Data augmentation"). The crop range is `--aug.crop_scale_min/max` (MAE: 0.2, 1.0).
    """
    check_aug(aug, image_size)
    view = View(
        size=image_size, scale=(aug.crop_scale_min, aug.crop_scale_max), flip_p=aug.flip_p,
        interpolation="bicubic",
    )
    return ViewSpec((view,), tuple(aug.normalize_mean), tuple(aug.normalize_std))


def check_spec(spec: ViewSpec) -> None:
    """A spec every backend can run. Specs from `views_from_aug` always pass (check_aug ran)."""
    if not spec.views:
        raise ValueError("a ViewSpec needs at least one view")
    if len(spec.mean) != 3 or len(spec.std) != 3 or min(spec.std) <= 0:
        raise ValueError(f"ViewSpec mean/std need 3 values and std > 0, got {spec.mean}, {spec.std}")
    for k, v in enumerate(spec.views):
        problems = []
        if v.size < 2:
            problems.append(f"size={v.size} < 2")
        if not 0.0 < v.scale[0] <= v.scale[1] <= 1.0:
            problems.append(f"scale={v.scale} not within (0, 1]")
        if not 0.0 < v.ratio[0] <= v.ratio[1]:
            problems.append(f"ratio={v.ratio} not an increasing positive range")
        if not 0.0 < v.blur_sigma[0] <= v.blur_sigma[1]:
            problems.append(f"blur_sigma={v.blur_sigma} not an increasing positive range")
        for name in ("flip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p"):
            if not 0.0 <= getattr(v, name) <= 1.0:
                problems.append(f"{name}={getattr(v, name)} not in [0, 1]")
        if min(v.brightness, v.contrast, v.saturation) < 0 or not 0.0 <= v.hue <= 0.5:
            problems.append("jitter strengths must be >= 0 and hue in [0, 0.5]")
        if v.interpolation not in INTERPOLATIONS:
            problems.append(f"interpolation={v.interpolation!r} not one of {', '.join(INTERPOLATIONS)}")
        if problems:
            raise ValueError(f"view {k} of the ViewSpec is invalid: {'; '.join(problems)}")
