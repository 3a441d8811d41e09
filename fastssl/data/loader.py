"""Pretraining and evaluation loaders.

`build_pretrain_loader(cfg, world)` returns a `PretrainLoader` for `cfg.data.backend`. The "torch"
backend (here) decodes and augments on CPU in DataLoader workers; "dali", "dali-cpu" and
"gpu-tensor" live in their own modules and receive the same opened `ImageSource`.

Determinism: each rank's batches come from a per-epoch permutation seeded by (seed, epoch), and
the augmentation of image `idx` in `epoch` is seeded by (seed, epoch, idx) alone. A batch is
therefore the same whatever `num_workers` is, and a run resumed with
`set_epoch(epoch, start_step=k)` sees exactly the batches k, k+1, ... of the uninterrupted run,
without decoding the k skipped ones.

Sharding: step s of an epoch uses the global batch `perm[s*G:(s+1)*G]` (G = global batch size),
and rank r takes the r-th contiguous slice of it. The images of a global batch thus do not
depend on the number of ranks, and ranks never overlap.
"""

from __future__ import annotations

import re
from typing import Callable, Iterator, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from fastssl.config import AugConfig, Config
from fastssl.data.augment import build_eval_transform, build_view_transforms
from fastssl.data.sources import ImageSource, open_pretrain_source
from fastssl.distributed import World
from fastssl.errors import FastSSLError

BACKENDS = ("auto", "torch", "gpu-tensor", "dali", "dali-cpu")


def unwrap_worker_error(error: FastSSLError) -> FastSSLError:
    """The original one-line message of a FastSSLError re-raised from a DataLoader worker.

    DataLoader re-raises worker exceptions as `type(e)("Caught ... Original Traceback ...: msg")`,
    which would print the worker's whole traceback as the user-facing one-liner.
    """
    text = str(error)
    if "Original Traceback" not in text:
        return error
    # The traceback ends with "fastssl.<module>.<ErrorType>: <message>".
    return FastSSLError(re.split(r"fastssl(?:\.\w+)+: ", text)[-1])


class UserErrorDataLoader(DataLoader):
    """A DataLoader whose FastSSLErrors from workers keep their one-line message."""

    def __iter__(self) -> Iterator:
        try:
            yield from super().__iter__()
        except FastSSLError as e:
            raise unwrap_worker_error(e) from None


class PretrainLoader(Protocol):
    """What every pretraining backend returns. The training loop relies on nothing else."""

    batch_size: int  # per rank
    num_images: int  # images in the (limited) training set, all ranks together

    def __iter__(self) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        """Yields `(views, labels)`: views = [float [B, 3, H, W] normalised, ...], labels = long [B]."""
        ...

    def __len__(self) -> int:
        """Steps per epoch (incomplete last batches are dropped)."""
        ...

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Reshuffle for `epoch`; the next iteration starts at `start_step` (resume mid-epoch)."""
        ...


def resolve_backend(requested: str, device: torch.device, dataset_bytes: int = 0) -> str:
    """The concrete backend for `--data.backend` on `device`; "auto" picks the fastest available.

    auto: DALI on CUDA when installed (GPU decode); else the GPU tensor path on CUDA when the
    decoded dataset fits; else DALI's CPU operators when installed (measured 1.5-20x torchvision on
    2 cores, see benchmarks/results); else torchvision. An explicit backend that cannot run here
    fails with the fix instead of silently falling back.
    """
    from fastssl.data.dali_loader import dali_available, dali_unavailable_reason

    if requested not in BACKENDS:
        raise FastSSLError(f"unknown --data.backend={requested}; valid: {', '.join(BACKENDS)}")
    if requested in ("dali", "dali-cpu"):
        reason = dali_unavailable_reason(requested, device)
        if reason:
            raise FastSSLError(reason)
        return requested
    if requested != "auto":
        return requested
    if device.type == "cuda":
        if dali_available():
            return "dali"
        from fastssl.data.gpu_tensor import fits_on_device

        if dataset_bytes and fits_on_device(dataset_bytes, device):
            return "gpu-tensor"
        return "torch"
    return "dali-cpu" if dali_available() else "torch"


def _reads_without_source(cfg: Config) -> bool:
    """Webdataset tars and file lists have no ImageSource: only DALI's readers take them."""
    from fastssl.data.convert import list_wds_tars

    d = cfg.data
    if d.dataset in ("webdataset", "filelist"):
        return True
    return d.dataset == "auto" and bool(d.path) and (d.path.endswith(".txt") or bool(list_wds_tars(d.path)))


def check_start_step(start_step: int, steps: int) -> None:
    """A resumed position must fall inside the epoch; otherwise the data changed under the run."""
    if not 0 <= start_step <= steps:
        raise FastSSLError(
            f"cannot resume at step {start_step} of an epoch with {steps} steps; "
            "the checkpoint was written with a different dataset or --train.batch_size"
        )


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 64-bit RNG seed for one image's augmentation in one epoch."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index]).generate_state(1, np.uint64)[0])


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of n images for `epoch`; identical on every rank."""
    return np.random.default_rng([seed & 0xFFFFFFFF, epoch, 0x5EED]).permutation(n)


class ShardedBatchSampler:
    """Per-rank batches of `(index, epoch)` keys for a DataLoader's `batch_sampler`.

    The epoch travels with every key so that persistent workers, which hold their own copy of
    the dataset, need no notification when the epoch changes.
    """

    def __init__(self, num_images: int, batch_size: int, rank: int, world_size: int, seed: int):
        self.num_images = num_images
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.global_batch = batch_size * world_size
        self.steps = num_images // self.global_batch
        self.epoch = 0
        self.start_step = 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        check_start_step(start_step, self.steps)
        self.epoch = epoch
        self.start_step = start_step

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        perm = epoch_permutation(self.num_images, self.seed, self.epoch)
        b, g = self.batch_size, self.global_batch
        for step in range(self.start_step, self.steps):
            mine = perm[step * g + self.rank * b : step * g + (self.rank + 1) * b]
            yield [(int(i), self.epoch) for i in mine]


class AugmentedViews(Dataset):
    """`(index, epoch)` -> `([view tensors], label)`, augmentation seeded by (seed, epoch, index)."""

    def __init__(self, source: ImageSource, transforms: list[Callable], seed: int):
        self.source = source
        self.transforms = transforms
        self.seed = seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int]) -> tuple[list[torch.Tensor], int]:
        index, epoch = key
        image, label = self.source.sample(index)
        # Workers own their RNG; in the main process the training loop's RNG must be left as found.
        saved = torch.get_rng_state() if get_worker_info() is None else None
        # The CPU generator only: torch.manual_seed also queues CUDA/XPU/MTIA seeding, each
        # recording a stack trace (~2 ms per image) when those devices are not initialised.
        torch.default_generator.manual_seed(sample_seed(self.seed, epoch, index))
        views = [t(image) for t in self.transforms]  # [3, H_v, W_v] each
        if saved is not None:
            torch.set_rng_state(saved)
        return views, label


def collate_views(batch: list[tuple[list[torch.Tensor], int]]) -> tuple[list[torch.Tensor], torch.Tensor]:
    views = [torch.stack([sample[0][v] for sample in batch]) for v in range(len(batch[0][0]))]  # [B, 3, H_v, W_v]
    labels = torch.tensor([sample[1] for sample in batch], dtype=torch.long)  # [B]
    return views, labels


class TorchPretrainLoader:
    """The "torch" backend: PIL decode + torchvision augmentation in DataLoader workers."""

    def __init__(
        self,
        source: ImageSource,
        transforms: list[Callable],
        batch_size: int,
        world: World,
        seed: int,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        self.source = source
        self.batch_size = batch_size
        self.num_images = len(source)
        self.num_views = len(transforms)
        self.sampler = ShardedBatchSampler(len(source), batch_size, world.rank, world.world_size, seed)
        self.loader = UserErrorDataLoader(
            AugmentedViews(source, transforms, seed),
            batch_sampler=self.sampler,
            num_workers=num_workers,
            collate_fn=collate_views,
            pin_memory=pin_memory,
            persistent_workers=num_workers > 0,
            # Its own generator: otherwise every epoch's iter() draws from the global torch RNG.
            generator=torch.Generator().manual_seed(seed),
        )

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.sampler.set_epoch(epoch, start_step)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        return iter(self.loader)


def per_rank_batch_size(global_batch: int, world_size: int) -> int:
    if global_batch % world_size:
        raise FastSSLError(
            f"--train.batch_size={global_batch} is not divisible by the {world_size} ranks; "
            f"use a multiple of {world_size}"
        )
    per_rank = global_batch // world_size
    if per_rank < 2:
        # Contrastive losses need in-batch negatives and BatchNorm needs > 1 sample per rank.
        raise FastSSLError(
            f"--train.batch_size={global_batch} gives {per_rank} image(s) per rank over {world_size} ranks; "
            f"set --train.batch_size to at least {2 * world_size}"
        )
    return per_rank


def build_pretrain_loader(cfg: Config, world: World, source: ImageSource | None = None) -> PretrainLoader:
    """The pretraining loader for `cfg.data.backend`. `source` overrides opening `cfg.data.path`."""
    batch_size = per_rank_batch_size(cfg.train.batch_size, world.world_size)
    if source is None and _reads_without_source(cfg):
        requested = cfg.data.backend
        if requested == "auto":
            requested = "dali" if world.device.type == "cuda" else "dali-cpu"
        backend = resolve_backend(requested, world.device)
        if backend not in ("dali", "dali-cpu"):
            raise FastSSLError(f"{cfg.data.path} is a webdataset / file list, which only --data.backend=dali or dali-cpu reads")
        from fastssl.data.dali_loader import build_dali_loader

        return build_dali_loader(cfg, world, None)
    source = (source or open_pretrain_source(cfg.data)).head(cfg.data.limit)
    size = cfg.data.image_size
    backend = resolve_backend(cfg.data.backend, world.device, dataset_bytes=len(source) * 3 * size * size)
    if len(source) < cfg.train.batch_size:
        limit = f" (after --data.limit={cfg.data.limit})" if cfg.data.limit else ""
        raise FastSSLError(
            f"only {len(source)} training images{limit}, fewer than one global batch of "
            f"{cfg.train.batch_size}; lower --train.batch_size or use more data"
        )
    if backend in ("dali", "dali-cpu"):
        from fastssl.data.dali_loader import build_dali_loader

        return build_dali_loader(cfg, world, source)
    if backend == "gpu-tensor":
        from fastssl.data.gpu_tensor import build_gpu_tensor_loader

        return build_gpu_tensor_loader(cfg, world, source)
    if cfg.data.num_workers < 0:
        raise FastSSLError(f"--data.num_workers={cfg.data.num_workers} must be >= 0")
    return TorchPretrainLoader(
        source,
        build_view_transforms(cfg.aug, cfg.data.image_size),
        batch_size,
        world,
        seed=cfg.train.seed,
        num_workers=cfg.data.num_workers,
        pin_memory=cfg.data.pin_memory and world.device.type == "cuda" and torch.cuda.is_available(),
    )


class EvalImages(Dataset):
    def __init__(self, source: ImageSource, transform: Callable):
        self.source = source
        self.transform = transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, label = self.source.sample(i)
        return self.transform(image), label  # [3, H, W], label


def build_eval_loader(
    source: ImageSource, aug: AugConfig, image_size: int, batch_size: int, num_workers: int = 0
) -> DataLoader:
    """`(images [B, 3, H, W], labels [B])` in source order: resize + center crop, no shuffling."""
    return UserErrorDataLoader(
        EvalImages(source, build_eval_transform(aug, image_size)),
        batch_size=batch_size,
        shuffle=False,
        drop_last=False,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        # Keeps iteration from drawing on the global torch RNG (DataLoader seeds workers from it).
        generator=torch.Generator().manual_seed(0),
    )
