"""Batched augmentation of uint8 image tensors, one `View` at a time (the gpu-tensor backend).

    RandomResizedCrop + flip (one affine grid per sample, `grid_sample`) -> colour jitter (p)
    -> grayscale (p) -> Gaussian blur (p, per-sample kernels as a grouped conv) -> solarise (p)
    -> normalise

Everything comes from the ViewSpec. Crop parameters follow torchvision's RandomResizedCrop (10
attempts, then the central fallback). Probabilities are per-sample masks that turn an op into
its identity, so a step has no data-dependent shapes and no host sync; all randomness comes
from the generator passed in. Differences from the torch path: jitter in fixed order
(brightness, contrast, saturation, hue); crops are resampled without antialiasing (downscaled
crops alias slightly; irrelevant at CIFAR scale where crops upsample).
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import torch
import torch.nn.functional as F

from fastssl.data.views import View, ViewSpec, blur_kernel_size

# ITU-R 601 luma, as torchvision's rgb_to_grayscale.
_LUMA = (0.299, 0.587, 0.114)
# Solarize inverts values >= 128 / 255, as every backend.
_SOLARIZE_THRESHOLD = 128 / 255


def _uniform(g: torch.Generator, shape: Sequence[int], lo: float, hi: float, device) -> torch.Tensor:
    return torch.rand(shape, generator=g, device=device) * (hi - lo) + lo


def _coin(g: torch.Generator, b: int, p: float, device) -> torch.Tensor:
    return torch.rand(b, generator=g, device=device) < p


def crop_boxes(
    b: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    g: torch.Generator,
    device,
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
) -> torch.Tensor:
    """torchvision RandomResizedCrop.get_params for a batch: [B, 4] float (top, left, h, w)."""
    area = height * width
    attempts = 10
    target = area * _uniform(g, (b, attempts), scale[0], scale[1], device)
    log_r = _uniform(g, (b, attempts), math.log(ratio[0]), math.log(ratio[1]), device)
    r = torch.exp(log_r)
    cw = torch.round(torch.sqrt(target * r))
    ch = torch.round(torch.sqrt(target / r))
    ok = (cw > 0) & (cw <= width) & (ch > 0) & (ch <= height)
    first = torch.argmax(ok.to(torch.int8), dim=1, keepdim=True)  # first valid attempt
    cw, ch = cw.gather(1, first)[:, 0], ch.gather(1, first)[:, 0]
    # Fallback (no valid attempt): the central crop with the ratio clamped into range.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fw, fh = round(height * ratio[1]), height
    else:
        fw, fh = width, height
    any_ok = ok.any(1)
    cw = torch.where(any_ok, cw, torch.full_like(cw, fw))
    ch = torch.where(any_ok, ch, torch.full_like(ch, fh))
    top = torch.floor(torch.rand(b, generator=g, device=device) * (height - ch + 1))
    left = torch.floor(torch.rand(b, generator=g, device=device) * (width - cw + 1))
    fallback_top, fallback_left = (height - ch) // 2, (width - cw) // 2
    top = torch.where(any_ok, top, fallback_top)
    left = torch.where(any_ok, left, fallback_left)
    return torch.stack([top, left, ch, cw], 1)


def _resized_crop(
    x: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, size: int, mode: str = "bilinear"
) -> torch.Tensor:
    """x float [B, 3, H, W], boxes [B, 4] (top, left, h, w) -> [B, 3, size, size], flipped where `flip`."""
    b, _, height, width = x.shape
    top, left, ch, cw = boxes.unbind(1)
    sx = cw / width
    sy = ch / height
    # Normalised (align_corners=False) centre of the box.
    cx = (left + cw / 2) / width * 2 - 1
    cy = (top + ch / 2) / height * 2 - 1
    sign = 1.0 - 2.0 * flip.to(x.dtype)
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = sx * sign
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = sy
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, [b, 3, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)  # [B, 1, H, W]


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] RGB in [0, 1] -> HSV, hue as a fraction of the colour wheel."""
    r, g, b = x.unbind(1)
    maxc = x.amax(1)
    minc = x.amin(1)
    delta = maxc - minc
    s = delta / torch.where(maxc == 0, torch.ones_like(maxc), maxc)
    d = torch.where(delta == 0, torch.ones_like(delta), delta)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta == 0, torch.zeros_like(h), (h / 6.0) % 1.0)
    return torch.stack([h, s, maxc], 1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of rgb_to_hsv."""
    h, s, v = x.unbind(1)
    # Closed form per channel n in (5, 3, 1) -> (r, g, b): no per-sector gather.
    # arange, not torch.tensor: no host-to-device copy inside the step.
    n = torch.arange(5.0, 0.0, -2.0, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = (n + h.unsqueeze(1) * 6.0) % 6.0
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return v.unsqueeze(1) - (v * s).unsqueeze(1) * ramp


def _color(x: torch.Tensor, view: View, g: torch.Generator) -> torch.Tensor:
    """Colour jitter with prob jitter_p, then grayscale with prob grayscale_p. x in [0, 1]."""
    b, dev = x.shape[0], x.device

    def factor(strength: float, on: torch.Tensor) -> torch.Tensor:
        f = _uniform(g, (b,), max(0.0, 1.0 - strength), 1.0 + strength, dev)
        return torch.where(on, f, torch.ones_like(f)).view(b, 1, 1, 1)

    if view.jitter_p > 0:
        on = _coin(g, b, view.jitter_p, dev)
        bri, con, sat = factor(view.brightness, on), factor(view.contrast, on), factor(view.saturation, on)
        hue = torch.where(on, _uniform(g, (b,), -view.hue, view.hue, dev), torch.zeros(b, device=dev))
        x = (x * bri).clamp_(0, 1)
        mean = _gray(x).mean((1, 2, 3), keepdim=True)
        x = ((x - mean) * con + mean).clamp_(0, 1)
        gray = _gray(x)
        x = ((x - gray) * sat + gray).clamp_(0, 1)
        if view.hue > 0:
            hsv = rgb_to_hsv(x)
            hsv[:, 0] = (hsv[:, 0] + hue.view(b, 1, 1)) % 1.0
            x = hsv_to_rgb(hsv)
    if view.grayscale_p > 0:
        on = _coin(g, b, view.grayscale_p, dev).view(b, 1, 1, 1)
        x = torch.where(on, _gray(x).expand_as(x), x)
    return x


def _blur(x: torch.Tensor, view: View, g: torch.Generator) -> torch.Tensor:
    """Per-sample Gaussian blur (sigma ~ U(blur_sigma)) with prob blur_p; the rest get a delta kernel."""
    b, c, h, w = x.shape
    k = blur_kernel_size(view.size)
    on = _coin(g, b, view.blur_p, x.device)
    sigma = _uniform(g, (b,), view.blur_sigma[0], view.blur_sigma[1], x.device)
    t = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
    kern = torch.exp(-(t[None] ** 2) / (2 * sigma[:, None] ** 2))  # [B, K]
    kern = kern / kern.sum(1, keepdim=True)
    delta = (t == 0).to(x.dtype).expand(b, k)
    kern = torch.where(on[:, None], kern, delta)
    weight = kern.repeat_interleave(c, 0)  # [B*C, K]
    pad = k // 2
    y = x.reshape(1, b * c, h, w)
    # torchvision pads by reflection; a view smaller than the kernel cannot reflect.
    y = F.pad(y, (pad, pad, pad, pad), mode="reflect" if pad < h and pad < w else "replicate")
    y = F.conv2d(y, weight.view(b * c, 1, k, 1), groups=b * c)
    y = F.conv2d(y, weight.view(b * c, 1, 1, k), groups=b * c)
    return y.view(b, c, h, w)


@functools.lru_cache(maxsize=8)
def _norm_constants(mean: tuple, std: tuple, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    # Cached: a fresh torch.tensor(..., device="cuda") per step would be a host-to-device copy.
    return (
        torch.tensor(mean, device=device).view(1, 3, 1, 1),
        torch.tensor(std, device=device).view(1, 3, 1, 1),
    )


def augment_view(x: torch.Tensor, view: View, g: torch.Generator) -> torch.Tensor:
    """x float [B, 3, H, W] in [0, 1] -> one augmented view [B, 3, size, size] in [0, 1]."""
    b, _, height, width = x.shape
    boxes = crop_boxes(b, height, width, view.scale, g, x.device, view.ratio)
    flip = _coin(g, b, view.flip_p, x.device)
    v = _resized_crop(x, boxes, flip, view.size, view.interpolation).clamp_(0, 1)
    if view.jitter_p > 0 or view.grayscale_p > 0:
        v = _color(v, view, g)
    if view.blur_p > 0:
        v = _blur(v, view, g)
    if view.solarize_p > 0:
        on = _coin(g, b, view.solarize_p, x.device).view(b, 1, 1, 1)
        v = torch.where(on & (v >= _SOLARIZE_THRESHOLD), 1.0 - v, v)
    return v


def augment_views(
    images: torch.Tensor, spec: ViewSpec, g: torch.Generator, dtype: torch.dtype = torch.float32
) -> list[torch.Tensor]:
    """uint8 [B, 3, H, W] -> one normalised [B, 3, S_v, S_v] tensor per view of the spec."""
    x = images.float().div_(255.0)
    mean, std = _norm_constants(tuple(spec.mean), tuple(spec.std), str(images.device))
    return [((augment_view(x, view, g) - mean) / std).to(dtype) for view in spec.views]
