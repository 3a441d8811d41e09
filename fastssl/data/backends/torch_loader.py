"""The "torch" backend: PIL decode + torchvision augmentation in DataLoader workers.

Batches follow `rank_plan` (fastssl.data.backends.sharding), as every backend; the augmentation
of image `idx` in `epoch` is seeded by (seed, epoch, idx) alone, so a batch is the same whatever
`num_workers` is, and `set_epoch(epoch, start_step=k)` sees exactly the batches k, k+1, ... of
the uninterrupted run without decoding the k skipped ones. Corrupt images that skip_corrupt
passes over come back with their batch and are reported from the main process
(corrupt_report.py). Also here: the in-order dataset the
eval loader wraps, and the DataLoader that keeps workers' error messages to one line.
"""

from __future__ import annotations

import re
from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from fastssl.data.backends.corrupt_report import CorruptReport
from fastssl.data.backends.sharding import IndexedPosition, check_start_step, rank_plan, sample_seed, steps_per_epoch
from fastssl.data.backends.torch_augment import build_view_transforms
from fastssl.data.sources.base import ImageSource
from fastssl.data.views import ViewSpec
from fastssl.distributed import World
from fastssl.errors import FastSSLError
from fastssl.stop_signals import ignore_stop_signals, kill_workers_at_exit


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
    """A DataLoader whose FastSSLErrors from workers keep their one-line message, and whose
    workers outlive a stop signal sent to the whole process group (fastssl/stop_signals.py)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("worker_init_fn", ignore_stop_signals)
        kill_workers_at_exit()  # workers that ignore SIGTERM must not block the interpreter's exit
        super().__init__(*args, **kwargs)

    def __iter__(self) -> Iterator:
        try:
            yield from super().__iter__()
        except FastSSLError as e:
            raise unwrap_worker_error(e) from None


class ShardedBatchSampler:
    """Per-rank batches of `(index, epoch)` keys in `rank_plan` order, for a DataLoader.

    The epoch travels with every key so that persistent workers, which hold their own copy of
    the dataset, need no notification when the epoch changes.
    """

    def __init__(self, num_images: int, batch_size: int, rank: int, world_size: int, seed: int):
        self.num_images = num_images
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.steps = steps_per_epoch(num_images, world_size, batch_size)
        self.epoch = 0
        self.start_step = 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        check_start_step(start_step, self.steps)
        self.epoch = epoch
        self.start_step = start_step

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        plan = rank_plan(self.num_images, self.world_size, self.rank, self.batch_size, self.seed, self.epoch)
        b = self.batch_size
        for step in range(self.start_step, self.steps):
            yield [(int(i), self.epoch) for i in plan[step * b : (step + 1) * b]]


class AugmentedViews(Dataset):
    """`(index, epoch)` -> `([view tensors], label, skipped)`, augmentation seeded by (seed, epoch,
    index); `skipped` holds `(name, reason)` of the corrupt images skip_corrupt passed over."""

    def __init__(self, source: ImageSource, transforms: list[Callable], seed: int):
        self.source = source
        self.transforms = transforms
        self.seed = seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int]) -> tuple[list[torch.Tensor], int, list[tuple[str, str]]]:
        index, epoch = key
        skipped: list[tuple[str, str]] = []
        image, label = self.source.sample(index, on_skip=lambda *skip: skipped.append(skip))
        return seeded_views(self.transforms, image, sample_seed(self.seed, epoch, index)), label, skipped


def seeded_views(transforms: list[Callable], image, seed: int) -> list[torch.Tensor]:
    """Every view of `image`, its randomness drawn from `seed` alone: `[3, H_v, W_v]` each."""
    # Workers own their RNG; in the main process the training loop's RNG must be left as found.
    saved = torch.get_rng_state() if get_worker_info() is None else None
    # The CPU generator only: torch.manual_seed also queues CUDA/XPU/MTIA seeding, each
    # recording a stack trace (~2 ms per image) when those devices are not initialised.
    torch.default_generator.manual_seed(seed)
    views = [t(image) for t in transforms]
    if saved is not None:
        torch.set_rng_state(saved)
    return views


def collate_views(batch: list[tuple[list[torch.Tensor], int]]) -> tuple[list[torch.Tensor], torch.Tensor]:
    views = [torch.stack([sample[0][v] for sample in batch]) for v in range(len(batch[0][0]))]  # [B, 3, H_v, W_v]
    labels = torch.tensor([sample[1] for sample in batch], dtype=torch.long)  # [B]
    return views, labels


def collate_views_and_skips(
    batch: list[tuple[list[torch.Tensor], int, list[tuple[str, str]]]],
) -> tuple[list[torch.Tensor], torch.Tensor, list[tuple[str, str]]]:
    """`collate_views`, plus every `(name, reason)` the batch's samples skipped."""
    views, labels = collate_views([(sample[0], sample[1]) for sample in batch])
    return views, labels, [skip for sample in batch for skip in sample[2]]


class TorchPretrainLoader(IndexedPosition):
    """PretrainLoader: yields `(views, labels)`, views float32 `[B, 3, S_v, S_v]` on the CPU."""

    backend = "torch"

    def __init__(
        self,
        source: ImageSource,
        spec: ViewSpec,
        batch_size: int,
        world: World,
        seed: int,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        if num_workers < 0:
            raise FastSSLError(f"--data.num_workers={num_workers} must be >= 0")
        transforms = build_view_transforms(spec)
        self.world = world
        self.source = source
        self.batch_size = batch_size
        self.num_images = len(source)
        self.num_views = len(transforms)
        # DataLoader's default prefetch_factor (2) batches per worker; none without workers.
        self.prefetch_depth = 2 * num_workers
        self.sampler = ShardedBatchSampler(len(source), batch_size, world.dims.dp_rank, world.dims.dp_size, seed)
        self.loader = UserErrorDataLoader(
            AugmentedViews(source, transforms, seed),
            batch_sampler=self.sampler,
            num_workers=num_workers,
            collate_fn=collate_views_and_skips,
            pin_memory=pin_memory,
            persistent_workers=num_workers > 0,
            # Its own generator: otherwise every epoch's iter() draws from the global torch RNG.
            generator=torch.Generator().manual_seed(seed),
        )
        self.corrupt = CorruptReport()

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.sampler.set_epoch(epoch, start_step)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        for views, labels, skipped in self.loader:
            # Reported here, in the main process, which outlives the workers' epochs.
            for name, reason in skipped:
                self.corrupt.skipped(name, reason)
            yield views, labels
        self.corrupt.end_epoch()

    def close(self) -> None:
        # Persistent workers live in the DataLoader's cached iterator; shutting it down sends each
        # worker its end-of-work sentinel, which they obey (unlike SIGTERM, which they ignore).
        it = getattr(self.loader, "_iterator", None)
        if it is not None:
            it._shutdown_workers()
            self.loader._iterator = None


class EvalImages(Dataset):
    """`i` -> `(transform(image i), label i)`: the dataset of the in-order eval loader."""

    def __init__(self, source: ImageSource, transform: Callable):
        self.source = source
        self.transform = transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, label = self.source.sample(i)
        return self.transform(image), label  # [3, H, W], label
