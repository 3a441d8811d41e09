"""`data.backend=gpu-tensor`: the whole dataset decoded once into a uint8 tensor on the device.

For datasets that fit in device memory (CIFAR-10: 50k x 3 x 32 x 32 = 150 MiB) decoding every
epoch is wasted work. Here images are decoded once at start (threads, Pillow) into
`[N, 3, H, W]` uint8 on `world.device`; each step gathers a batch by index and builds every view
of the ViewSpec with batched torch ops (fastssl.data.backends.tensor_augment).

Randomness comes from a device generator re-seeded from (seed, rank, epoch, step) at every step,
so a batch is a pure function of its position: resume with set_epoch(e, start_step) is exact,
augmentations included. Images of different sizes are resized (shorter side) and centre-cropped
to a square of `resize_size(image_size)` (8/7 of it) when stored. Every rank holds the full
dataset, so each epoch's global shuffle needs no communication.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from fastssl.config import Config
from fastssl.data.backends.indexed_loader import IndexedLoader
from fastssl.data.backends.sharding import step_seed
from fastssl.data.backends.tensor_augment import augment_views
from fastssl.data.dtypes import output_dtype
from fastssl.data.sources.base import ImageSource
from fastssl.data.views import ViewSpec
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


def resize_size(image_size: int) -> int:
    """The side an image is resized to before a centre crop of `image_size`."""
    # The ImageNet eval convention (resize to 256, crop 224): the crop keeps 7/8 = 0.875 of the side.
    return image_size * 8 // 7


def store_size(source: ImageSource, image_size: int) -> tuple[int, int]:
    """(H, W) to store every image at: their own size when all have the same (checked on a
    sample of 16 and the ends), else a square of `resize_size(image_size)`."""
    n = len(source)
    probe = sorted({0, n - 1, *np.random.default_rng(0).integers(0, n, size=min(n, 16)).tolist()})
    # sample() honours skip_corrupt; without it a corrupt probe raises, naming the file.
    sizes = {source.sample(int(i))[0].size for i in probe}
    if len(sizes) == 1:
        w, h = sizes.pop()
        return h, w
    return (resize_size(image_size),) * 2


def decode_all(source: ImageSource, size: tuple[int, int], num_threads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of `source` at `size` (H, W) -> (uint8 [N, 3, H, W], int64 labels [N]) on the CPU."""
    n = len(source)
    h, w = size
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


class GpuTensorLoader(IndexedLoader):
    """PretrainLoader over a decoded uint8 dataset tensor on `world.device`."""

    backend = "gpu-tensor"
    prefetch_depth = 0  # augments on the device in the step's own stream: nothing is made ahead

    def __init__(
        self, cfg: Config, world: World, spec: ViewSpec, images: torch.Tensor, labels: torch.Tensor
    ):
        super().__init__(cfg, world, spec, len(images))
        self.images = images  # uint8 [N, 3, H, W] on world.device
        self.labels = labels  # int64 [N] on world.device

    def __iter__(self) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        epoch, start = self._epoch, self._start
        rank, bsz = self.world.dims.dp_rank, self.batch_size
        plan = torch.from_numpy(self._plan(epoch)).to(self.images.device)
        g = torch.Generator(device=self.images.device)
        for step in range(start, len(self)):
            g.manual_seed(step_seed(self.seed, rank, epoch, step))
            idx = plan[step * bsz : (step + 1) * bsz]
            views = augment_views(self.images[idx], self.spec, g, self.out_dtype)
            nxt = step + 1
            self._epoch, self._start = (epoch, nxt) if nxt < len(self) else (epoch + 1, 0)
            yield views, self.labels[idx]

    def close(self) -> None:
        pass  # no workers or pipelines: the images are a tensor on the device


def build_gpu_tensor_loader(cfg: Config, world: World, spec: ViewSpec, source: ImageSource) -> GpuTensorLoader:
    """Decode `source` once onto world.device; views per `spec` (checked by the caller, data/factory.py)."""
    output_dtype(cfg.data.dtype)  # fail before the decode, not after
    h, w = store_size(source, cfg.data.image_size)
    need = dataset_bytes(len(source), h, w)
    if not fits_on_device(need, world.device):
        raise FastSSLError(
            f"--data.backend=gpu-tensor needs {need / 2**30:.1f} GiB of device memory for {len(source)} "
            f"images at {h}x{w}; use --data.backend=dali or torch, or --data.limit"
        )
    threads = max(1, cfg.data.num_workers or (os.cpu_count() or 1))
    images, labels = decode_all(source, (h, w), threads)
    return GpuTensorLoader(cfg, world, spec, images.to(world.device), labels.to(world.device))
