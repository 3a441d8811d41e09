"""Loader factory: config + view spec -> the pretraining loader of one backend; the eval loader.

The data flows sources -> view spec -> backend -> loader:

    open_pretrain_source(cfg.data)            fastssl.data.sources: an ImageSource
    views_from_aug(cfg.aug, image_size)       fastssl.data.views: a ViewSpec (or the method's own)
    resolve_backend(cfg.data.backend, ...)    the concrete backend, resolved ONCE here
    Torch / Dali / GpuTensor loader           fastssl.data.backends: one module each

Every backend returns a `PretrainLoader`; the resolved backend name is passed to it explicitly
(and is its `.backend`), so nothing downstream re-reads `--data.backend`.
"""

from __future__ import annotations

from typing import Iterator, Protocol

import torch
from torch.utils.data import DataLoader

from fastssl.config import AugConfig, Config
from fastssl.data.backends import dali_loader
from fastssl.data.backends.gpu_tensor import build_gpu_tensor_loader, fits_on_device
from fastssl.data.backends.sharding import per_rank_batch_size
from fastssl.data.backends.torch_augment import build_eval_transform
from fastssl.data.backends.torch_loader import EvalImages, TorchPretrainLoader, UserErrorDataLoader
from fastssl.data.backends.torch_stream import Shards, TorchStreamLoader
from fastssl.data.sources.base import ImageSource
from fastssl.data.sources.factory import digits_path_note, open_pretrain_source, parse_slice, resolve_dataset
from fastssl.data.sources.webdataset import list_wds_tars, shard_sample_count
from fastssl.data.views import ViewSpec, check_spec, views_from_aug
from fastssl.distributed import World
from fastssl.errors import FastSSLError, did_you_mean

BACKENDS = ("auto", "torch", "gpu-tensor", "dali", "dali-cpu")


class PretrainLoader(Protocol):
    """What every pretraining backend returns. The training loop relies on nothing else."""

    backend: str  # the concrete backend ("torch", "gpu-tensor", "dali", "dali-cpu")
    batch_size: int  # per rank
    num_images: int  # images in the (limited) training set, all ranks together
    num_views: int  # len(spec.views)
    # Batches made ahead of the training step after each (re)start of iteration: the first this many
    # steps of an epoch read ready batches, so a time budget must not take their pace as the pace.
    prefetch_depth: int

    def __iter__(self) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        """Yields `(views, labels)`: views = [float [B, 3, S_v, S_v] normalised, ...], labels = long [B]."""
        ...

    def __len__(self) -> int:
        """Steps per epoch (incomplete last batches are dropped)."""
        ...

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Reshuffle for `epoch`; the next iteration starts at `start_step` (resume mid-epoch)."""
        ...

    def state_dict(self, epoch: int, step: int) -> dict:
        """This rank's position when the training loop is at step `step` of `epoch` (what a
        checkpoint saves; the loop may hold one batch more than it trained)."""
        ...

    def load_state_dict(self, states: list[dict]) -> None:
        """Every saved rank's `state_dict`; the next `set_epoch` at that position continues from it."""
        ...

    def close(self) -> None:
        """Stop worker processes and pipelines now (idempotent). Loader workers ignore stop signals
        (fastssl/stop_signals.py), so a run that ends by an exception must not leave them for the
        interpreter's exit, whose SIGTERM they ignore: it would wait for them forever."""
        ...


def resolve_backend(requested: str, device: torch.device, dataset_bytes: int = 0) -> str:
    """The concrete backend for `--data.backend` on `device`; "auto" picks the fastest available.

    auto: DALI on CUDA when installed (GPU decode); else the GPU tensor path on CUDA when the
    decoded dataset fits; else DALI's CPU operators when installed (measured 1.5-20x torchvision on
    2 cores, see benchmarks/results); else torchvision. An explicit backend that cannot run here
    fails with the fix instead of silently falling back.
    """
    if requested not in BACKENDS:
        raise FastSSLError(
            f"unknown --data.backend={requested}.{did_you_mean(requested, BACKENDS)} Valid: {', '.join(BACKENDS)}"
        )
    if requested == "auto":
        requested = _auto_backend(device, dataset_bytes)
    if requested in dali_loader.DALI_BACKENDS:
        reason = dali_loader.dali_unavailable_reason(requested, device)
        if reason:
            raise FastSSLError(reason)
    return requested


def _auto_backend(device: torch.device, dataset_bytes: int) -> str:
    cuda = device.type == "cuda"
    if dali_loader.dali_available():
        return "dali" if cuda else "dali-cpu"
    if cuda and dataset_bytes and fits_on_device(dataset_bytes, device):
        return "gpu-tensor"
    return "torch"


def build_pretrain_loader(
    cfg: Config, world: World, source: ImageSource | None = None, views: ViewSpec | None = None
) -> PretrainLoader:
    """The pretraining loader of `cfg.data.backend`.

    `source` overrides opening `cfg.data.path` (`--data.limit` still applies); `views` overrides
    the default spec `views_from_aug(cfg.aug, cfg.data.image_size)` (a method's own views).
    """
    spec = views if views is not None else views_from_aug(cfg.aug, cfg.data.image_size)
    check_spec(spec)
    batch_size = per_rank_batch_size(cfg.train.batch_size, world.dims.dp_size)
    if source is None:
        note = digits_path_note(cfg.data)
        if note and world.is_main:
            print(note, flush=True)
        if resolve_dataset(cfg.data.dataset, cfg.data.path) == "webdataset":
            return _webdataset_loader(cfg, world, spec)
    source = open_pretrain_source(cfg.data, source)
    if len(source) < cfg.train.batch_size:
        limit = f" (after --data.limit={cfg.data.limit})" if cfg.data.limit else ""
        raise FastSSLError(
            f"only {len(source)} training images{limit}, fewer than one global batch of "
            f"{cfg.train.batch_size}; lower --train.batch_size or use more data"
        )
    size = cfg.data.image_size
    backend = resolve_backend(cfg.data.backend, world.device, dataset_bytes=len(source) * 3 * size * size)
    if backend in dali_loader.DALI_BACKENDS:
        return dali_loader.build_dali_loader(cfg, world, backend, spec, source)
    if backend == "gpu-tensor":
        return build_gpu_tensor_loader(cfg, world, spec, source)
    return TorchPretrainLoader(
        source,
        spec,
        batch_size,
        world,
        seed=cfg.train.seed,
        num_workers=cfg.data.num_workers,
        pin_memory=cfg.data.pin_memory and world.device.type == "cuda" and torch.cuda.is_available(),
    )


def _webdataset_loader(cfg: Config, world: World, spec: ViewSpec) -> PretrainLoader:
    """Webdataset tars have no ImageSource: every backend streams them (fastssl/data/stream/)."""
    path = parse_slice(cfg.data.path)[0]
    tars = list_wds_tars(path)
    if not tars:
        raise FastSSLError(f"no .tar shards at '{path}'; point --data.path at a .tar file or a folder of them")
    if cfg.data.backend == "gpu-tensor":
        raise FastSSLError(f"{path} holds webdataset tars, which --data.backend=gpu-tensor cannot hold decoded; "
                           "use --data.backend=torch, dali or dali-cpu")
    backend = resolve_backend(cfg.data.backend, world.device)
    shards = Shards(tars, [shard_sample_count(t) for t in tars], cfg.data.limit)
    if backend in dali_loader.DALI_BACKENDS:
        return dali_loader.build_dali_webdataset_loader(cfg, world, backend, spec, shards)
    batch_size = per_rank_batch_size(cfg.train.batch_size, world.dims.dp_size)
    return TorchStreamLoader(shards, spec, batch_size, world, cfg.train.seed, cfg.data.num_workers,
                             cfg.data.shuffle_buffer)


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
