"""`data.backend=gpu-tensor`: the whole dataset decoded once into a uint8 tensor on the device.

For datasets that fit in device memory (CIFAR-10: 50k x 3 x 32 x 32 = 150 MiB) decoding every
epoch is wasted work. Here images are decoded once at start (threads, Pillow) into
`[N, 3, H, W]` uint8 on `world.device`; each step gathers a batch by index and builds every view
of the ViewSpec with batched torch ops (fastssl.data.backends.tensor_augment).

Randomness comes from a device generator re-seeded from (seed, rank, epoch, step) at every step,
so a batch is a pure function of its position: resume with set_epoch(e, start_step) is exact,
augmentations included. Images of different sizes are resized (shorter side) and centre-cropped
to a square of `image_size * 8 / 7` when stored. Every rank holds the full dataset, so each
epoch's global shuffle needs no communication.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from fastssl.config import Config
from fastssl.data.backends.sharding import (
    IndexedPosition,
    check_start_step,
    per_rank_batch_size,
    rank_plan,
    step_seed,
    steps_per_epoch,
)
from fastssl.data.backends.tensor_augment import augment_views
from fastssl.data.dtypes import output_dtype
from fastssl.data.sources.base import ImageSource
from fastssl.data.views import ViewSpec, check_spec
from fastssl.distributed import World
from fastssl.errors import FastSSLError

# Refuse to fill more than this fraction of free device memory with the dataset.
MAX_MEMORY_FRACTION = 0.5


def dataset_bytes(num_images: int, height: int, width: int) -> int:
    return num_images * 3 * height * width


def fits_on_device(num_bytes: int, device: torch.device) -> bool:
    """Whether a uint8 dataset of num_bytes leaves room for training on `device`."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return num_bytes <= MAX_MEMORY_FRACTION * free


# --- decode once -------------------------------------------------------------------------------


def _store_size(source: ImageSource, image_size: int) -> tuple[int, int] | None:
    """(H, W) when every image has the same size (checked on a sample), else None."""
    n = len(source)
    probe = sorted({0, n - 1, *np.random.default_rng(0).integers(0, n, size=min(n, 16)).tolist()})
    # sample() honours skip_corrupt; without it a corrupt probe raises, naming the file.
    sizes = {source.sample(int(i))[0].size for i in probe}
    if len(sizes) == 1:
        w, h = sizes.pop()
        return h, w
    return None


def decode_all(source: ImageSource, image_size: int, num_threads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of `source` -> (uint8 [N, 3, H, W], int64 labels [N]) on the CPU."""
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


# --- loader ------------------------------------------------------------------------------------


class GpuTensorLoader(IndexedPosition):
    """PretrainLoader over a decoded uint8 dataset tensor on `world.device`."""

    backend = "gpu-tensor"
    prefetch_depth = 0  # augments on the device in the step's own stream: nothing is made ahead

    def __init__(
        self, cfg: Config, world: World, spec: ViewSpec, images: torch.Tensor, labels: torch.Tensor
    ):
        self.world, self.spec, self.seed = world, spec, cfg.train.seed
        self.batch_size = per_rank_batch_size(cfg.train.batch_size, world.dims.dp_size)
        self.images = images  # uint8 [N, 3, H, W] on world.device
        self.labels = labels  # int64 [N] on world.device
        self.num_images = len(images)
        self.num_views = len(spec.views)
        self.dtype = output_dtype(cfg.data.dtype)
        self._epoch, self._start = 0, 0
        if len(self) == 0:
            raise FastSSLError(
                f"{self.num_images} images make no full batch of {self.batch_size} per rank on "
                f"{world.dims.dp_size} rank(s); lower --train.batch_size or add data"
            )

    def __len__(self) -> int:
        return steps_per_epoch(self.num_images, self.world.dims.dp_size, self.batch_size)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        check_start_step(start_step, len(self))
        self._epoch, self._start = epoch, start_step

    def __iter__(self) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        epoch, start = self._epoch, self._start
        w, dev, bsz = self.world, self.images.device, self.batch_size
        plan = torch.from_numpy(rank_plan(self.num_images, w.dims.dp_size, w.dims.dp_rank, bsz, self.seed, epoch)).to(dev)
        g = torch.Generator(device=dev)
        for step in range(start, len(self)):
            g.manual_seed(step_seed(self.seed, w.dims.dp_rank, epoch, step))
            idx = plan[step * bsz : (step + 1) * bsz]
            views = augment_views(self.images[idx], self.spec, g, self.dtype)
            nxt = step + 1
            self._epoch, self._start = (epoch, nxt) if nxt < len(self) else (epoch + 1, 0)
            yield views, self.labels[idx]

    def close(self) -> None:
        pass  # no workers or pipelines: the images are a tensor on the device


def build_gpu_tensor_loader(cfg: Config, world: World, spec: ViewSpec, source: ImageSource) -> GpuTensorLoader:
    """Decode `source` once onto world.device; views per `spec`."""
    check_spec(spec)
    output_dtype(cfg.data.dtype)  # fail before the decode, not after
    fixed = _store_size(source, cfg.data.image_size)
    h, w = fixed if fixed else (cfg.data.image_size * 8 // 7,) * 2
    need = dataset_bytes(len(source), h, w)
    if not fits_on_device(need, world.device):
        raise FastSSLError(
            f"--data.backend=gpu-tensor needs {need / 2**30:.1f} GiB of device memory for {len(source)} "
            f"images at {h}x{w}; use --data.backend=dali or torch, or --data.limit"
        )
    threads = max(1, cfg.data.num_workers or (os.cpu_count() or 1))
    images, labels = decode_all(source, cfg.data.image_size, threads)
    return GpuTensorLoader(cfg, world, spec, images.to(world.device), labels.to(world.device))
