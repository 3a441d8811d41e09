"""`data.backend=gpu-tensor`: the whole dataset decoded once into a uint8 tensor on the device.

For datasets that fit in device memory (CIFAR-10: 50k x 3 x 32 x 32 = 150 MiB) decoding every
epoch is wasted work. Here images are decoded once at start (threads, Pillow) into
`[N, 3, H, W]` uint8 on `world.device`; each step gathers a batch by index and builds every view
with batched torch ops:

    RandomResizedCrop + flip (one affine grid per sample, `grid_sample`) -> colour jitter (p)
    -> grayscale (p) -> gaussian blur (p, per-sample kernels as a grouped conv) -> solarise (p)
    -> normalise -> cfg.data.dtype

Crop parameters follow torchvision's RandomResizedCrop (10 attempts, then the central fallback).
Probabilities are per-sample masks that turn an op into its identity, so a step has no
data-dependent shapes and no host sync. Randomness comes from a device generator re-seeded from
(seed, rank, epoch, step) at every step, so a batch is a pure function of its position: resume
with set_epoch(e, start_step) is exact, augmentations included. Differences from the torch path:
jitter in fixed order (brightness, contrast, saturation, hue); crops are bilinear without
antialiasing (downscaled crops alias slightly; irrelevant at CIFAR scale where crops upsample).

Images of different sizes are resized (shorter side) and centre-cropped to a square of
`image_size * 8 / 7` when stored. Every rank holds the full dataset, so each epoch's global
shuffle needs no communication.
"""

from __future__ import annotations

import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fastssl.config import AugConfig, Config
from fastssl.data.augment import blur_kernel_size
from fastssl.data.dali_pipeline import (
    CROP_RATIO,
    ViewSpec,
    pipeline_seed,
    rank_plan,
    steps_per_epoch,
    view_specs,
)
from fastssl.data.loader import check_start_step, per_rank_batch_size
from fastssl.distributed import World
from fastssl.errors import FastSSLError

_TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Refuse to fill more than this fraction of free device memory with the dataset.
MAX_MEMORY_FRACTION = 0.5
# ITU-R 601 luma, as torchvision's rgb_to_grayscale.
_LUMA = (0.299, 0.587, 0.114)


def dataset_bytes(num_images: int, height: int, width: int) -> int:
    return num_images * 3 * height * width


def fits_on_device(num_bytes: int, device: torch.device) -> bool:
    """Whether a uint8 dataset of num_bytes leaves room for training on `device`."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return num_bytes <= MAX_MEMORY_FRACTION * free


# --- decode once -------------------------------------------------------------------------------


def _store_size(source: Any, image_size: int) -> tuple[int, int] | None:
    """(H, W) when every image has the same size (checked on a sample), else None."""
    n = len(source)
    probe = sorted({0, n - 1, *np.random.default_rng(0).integers(0, n, size=min(n, 16)).tolist()})
    # sample() honours skip_corrupt; without it a corrupt probe raises, naming the file.
    sizes = {source.sample(int(i))[0].size for i in probe}
    if len(sizes) == 1:
        w, h = sizes.pop()
        return h, w
    return None


def decode_all(source: Any, image_size: int, num_threads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of `source` -> (uint8 [N, 3, H, W], int64 labels [N]) on the CPU."""
    from PIL import Image

    n = len(source)
    fixed = _store_size(source, image_size)
    h, w = fixed if fixed else (image_size * 8 // 7,) * 2
    out = np.empty((n, h, w, 3), dtype=np.uint8)  # NHWC: what Pillow hands out
    labels = np.empty(n, dtype=np.int64)

    def load(i: int) -> None:
        # sample() raises FastSSLError naming the file, or substitutes the next good image when
        # data.skip_corrupt is set.
        img, label = source.sample(i)
        if img.size != (w, h):
            s = max(h / img.height, w / img.width)
            img = img.resize((max(w, round(img.width * s)), max(h, round(img.height * s))), Image.BILINEAR)
            left, top = (img.width - w) // 2, (img.height - h) // 2
            img = img.crop((left, top, left + w, top + h))
        out[i] = np.asarray(img, dtype=np.uint8)
        labels[i] = label

    with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
        list(pool.map(load, range(n)))
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)


# --- batched augmentation ----------------------------------------------------------------------


def _uniform(g: torch.Generator, shape: Sequence[int], lo: float, hi: float, device) -> torch.Tensor:
    return torch.rand(shape, generator=g, device=device) * (hi - lo) + lo


def _coin(g: torch.Generator, b: int, p: float, device) -> torch.Tensor:
    return torch.rand(b, generator=g, device=device) < p


def crop_boxes(
    b: int, height: int, width: int, scale: tuple[float, float], g: torch.Generator, device
) -> torch.Tensor:
    """torchvision RandomResizedCrop.get_params for a batch: [B, 4] float (top, left, h, w)."""
    area = height * width
    attempts = 10
    target = area * _uniform(g, (b, attempts), scale[0], scale[1], device)
    log_r = _uniform(g, (b, attempts), math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]), device)
    ratio = torch.exp(log_r)
    cw = torch.round(torch.sqrt(target * ratio))
    ch = torch.round(torch.sqrt(target / ratio))
    ok = (cw > 0) & (cw <= width) & (ch > 0) & (ch <= height)
    first = torch.argmax(ok.to(torch.int8), dim=1, keepdim=True)  # first valid attempt
    cw, ch = cw.gather(1, first)[:, 0], ch.gather(1, first)[:, 0]
    # Fallback (no valid attempt): the central crop with the ratio clamped into range.
    in_ratio = width / height
    if in_ratio < CROP_RATIO[0]:
        fw, fh = width, round(width / CROP_RATIO[0])
    elif in_ratio > CROP_RATIO[1]:
        fw, fh = round(height * CROP_RATIO[1]), height
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


def _resized_crop(x: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, size: int) -> torch.Tensor:
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
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)  # [B, 1, H, W]


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
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


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(1)
    # Closed form per channel n in (5, 3, 1) -> (r, g, b): no per-sector gather.
    # arange, not torch.tensor: no host-to-device copy inside the step.
    n = torch.arange(5.0, 0.0, -2.0, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = (n + h.unsqueeze(1) * 6.0) % 6.0
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return v.unsqueeze(1) - (v * s).unsqueeze(1) * ramp


def _color(x: torch.Tensor, aug: AugConfig, g: torch.Generator) -> torch.Tensor:
    """Colour jitter with prob jitter_p, then grayscale with prob grayscale_p. x in [0, 1]."""
    b, dev = x.shape[0], x.device

    def factor(strength: float, on: torch.Tensor) -> torch.Tensor:
        f = _uniform(g, (b,), max(0.0, 1.0 - strength), 1.0 + strength, dev)
        return torch.where(on, f, torch.ones_like(f)).view(b, 1, 1, 1)

    if aug.jitter_p > 0:
        on = _coin(g, b, aug.jitter_p, dev)
        bri, con, sat = factor(aug.brightness, on), factor(aug.contrast, on), factor(aug.saturation, on)
        hue = torch.where(on, _uniform(g, (b,), -aug.hue, aug.hue, dev), torch.zeros(b, device=dev))
        x = (x * bri).clamp_(0, 1)
        mean = _gray(x).mean((1, 2, 3), keepdim=True)
        x = ((x - mean) * con + mean).clamp_(0, 1)
        gray = _gray(x)
        x = ((x - gray) * sat + gray).clamp_(0, 1)
        if aug.hue > 0:
            hsv = _rgb_to_hsv(x)
            hsv[:, 0] = (hsv[:, 0] + hue.view(b, 1, 1)) % 1.0
            x = _hsv_to_rgb(hsv)
    if aug.grayscale_p > 0:
        on = _coin(g, b, aug.grayscale_p, dev).view(b, 1, 1, 1)
        x = torch.where(on, _gray(x).expand_as(x), x)
    return x


def _blur(x: torch.Tensor, p: float, aug: AugConfig, g: torch.Generator) -> torch.Tensor:
    """Per-sample gaussian blur (sigma ~ U(min, max)) with prob p; the rest get a delta kernel."""
    b, c, h, w = x.shape
    k = blur_kernel_size(h)
    on = _coin(g, b, p, x.device)
    sigma = _uniform(g, (b,), aug.blur_sigma_min, aug.blur_sigma_max, x.device)
    t = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
    kern = torch.exp(-(t[None] ** 2) / (2 * sigma[:, None] ** 2))  # [B, K]
    kern = kern / kern.sum(1, keepdim=True)
    delta = (t == 0).to(x.dtype).expand(b, k)
    kern = torch.where(on[:, None], kern, delta)
    weight = kern.repeat_interleave(c, 0)  # [B*C, K]
    pad = k // 2
    y = x.reshape(1, b * c, h, w)
    if pad < h and pad < w:
        y = F.pad(y, (pad, pad, pad, pad), mode="reflect")
    else:
        y = F.pad(y, (pad, pad, pad, pad), mode="replicate")
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


def augment_views(
    images: torch.Tensor, specs: Sequence[ViewSpec], aug: AugConfig, g: torch.Generator, dtype=torch.float32
) -> list[torch.Tensor]:
    """uint8 [B, 3, H, W] -> one normalised [B, 3, S, S] tensor per view spec."""
    b, _, height, width = images.shape
    dev = images.device
    x = images.float().div_(255.0)
    mean, std = _norm_constants(tuple(aug.normalize_mean), tuple(aug.normalize_std), str(dev))
    views = []
    for spec in specs:
        boxes = crop_boxes(b, height, width, spec.scale, g, dev)
        flip = _coin(g, b, aug.flip_p, dev)
        v = _resized_crop(x, boxes, flip, spec.size).clamp_(0, 1)
        if aug.jitter_p > 0 or aug.grayscale_p > 0:
            v = _color(v, aug, g)
        if spec.blur_p > 0:
            v = _blur(v, spec.blur_p, aug, g)
        if spec.solarize_p > 0:
            on = _coin(g, b, spec.solarize_p, dev).view(b, 1, 1, 1)
            v = torch.where(on & (v >= 128 / 255), 1.0 - v, v)
        views.append(((v - mean) / std).to(dtype))
    return views


# --- loader ------------------------------------------------------------------------------------


class GpuTensorLoader:
    """PretrainLoader over a decoded uint8 dataset tensor on `world.device`."""

    def __init__(self, cfg: Config, world: World, images: torch.Tensor, labels: torch.Tensor):
        self.cfg, self.world = cfg, world
        self.batch_size = per_rank_batch_size(cfg.train.batch_size, world.world_size)
        self.images = images  # uint8 [N, 3, H, W] on world.device
        self.labels = labels  # int64 [N] on world.device
        self.num_images = len(images)
        self.specs = view_specs(cfg)
        self.dtype = _TORCH_DTYPES[cfg.data.dtype]
        self._epoch, self._start = 0, 0
        if len(self) == 0:
            raise FastSSLError(
                f"{self.num_images} images make no full batch of {self.batch_size} per rank on "
                f"{world.world_size} rank(s); lower --train.batch_size or add data"
            )

    def __len__(self) -> int:
        return steps_per_epoch(self.num_images, self.world.world_size, self.batch_size)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        check_start_step(start_step, len(self))
        self._epoch, self._start = epoch, start_step

    def __iter__(self) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        epoch, start = self._epoch, self._start
        w, dev, bsz = self.world, self.images.device, self.batch_size
        plan = torch.from_numpy(
            rank_plan(self.num_images, w.world_size, w.rank, bsz, self.cfg.train.seed, epoch)
        ).to(dev)
        g = torch.Generator(device=dev)
        for step in range(start, len(self)):
            g.manual_seed(pipeline_seed(self.cfg.train.seed, w.rank, epoch, step))
            idx = plan[step * bsz : (step + 1) * bsz]
            views = augment_views(self.images[idx], self.specs, self.cfg.aug, g, self.dtype)
            nxt = step + 1
            self._epoch, self._start = (epoch, nxt) if nxt < len(self) else (epoch + 1, 0)
            yield views, self.labels[idx]


def build_gpu_tensor_loader(cfg: Config, world: World, source: Any = None) -> GpuTensorLoader:
    """Decode `source` (default: the pretraining source of cfg.data) once onto world.device."""
    from fastssl.data.augment import check_aug

    check_aug(cfg.aug, cfg.data.image_size)
    if cfg.data.dtype not in _TORCH_DTYPES:
        raise FastSSLError(f"data.dtype={cfg.data.dtype!r} is not one of fp32, bf16, fp16; fix --data.dtype")
    if source is None:
        from fastssl.data.sources import open_pretrain_source

        source = open_pretrain_source(cfg.data)
    fixed = _store_size(source, cfg.data.image_size)
    h, w = fixed if fixed else (cfg.data.image_size * 8 // 7,) * 2
    need = dataset_bytes(len(source), h, w)
    if not fits_on_device(need, world.device):
        raise FastSSLError(
            f"data.backend=gpu-tensor needs {need / 2**30:.1f} GiB of device memory for {len(source)} "
            f"images at {h}x{w}; use --data.backend=dali or torch, or --data.limit"
        )
    threads = max(1, cfg.data.num_workers or (os.cpu_count() or 1))
    images, labels = decode_all(source, cfg.data.image_size, threads)
    return GpuTensorLoader(cfg, world, images.to(world.device), labels.to(world.device))
