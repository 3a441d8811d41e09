"""This rank's share of the training set, for methods that cluster all of it each epoch.

DeepCluster v2 runs k-means on the features of the whole training set at every epoch start
(`SSLMethod.on_epoch_start`). Each rank encodes a disjoint contiguous slice of the (limited)
training source, in order, with the evaluation transform (resize + centre crop at the run's
image size and normalisation): the features are of the images, not of one random augmentation.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch

from fastssl.config import Config
from fastssl.distributed import World


def rank_slice(n: int, rank: int, world_size: int) -> np.ndarray:
    """Indices of rank `rank`'s contiguous slice of `n` items; slices differ in size by <= 1."""
    return np.array_split(np.arange(n), world_size)[rank]


def training_images(cfg: Config, world: World, source=None) -> Callable[[], Iterator[torch.Tensor]]:
    """A callable that yields this rank's training images `[B, 3, S, S]` each time it is called.

    `source` defaults to the run's training source (`--data.path`, `--data.limit` applied), the
    one the pretraining loader reads; it is opened on the first call, so methods that never
    call it (all but DeepCluster v2) cost nothing.
    """
    from fastssl.data import IndexedSource, build_eval_loader, open_pretrain_source

    opened: list = []  # the source is opened on the first call: building this costs nothing

    def batches() -> Iterator[torch.Tensor]:
        if not opened:
            full = open_pretrain_source(cfg.data, source)
            opened.append(IndexedSource(full, rank_slice(len(full), world.dims.dp_rank, world.dims.dp_size)))
        loader = build_eval_loader(opened[0], cfg.aug, cfg.data.image_size, cfg.eval.batch_size,
                                   cfg.data.num_workers)
        for images, _labels in loader:
            yield images

    return batches
