"""`IndexedLoader`: what the loaders that walk `rank_plan` themselves (DALI, gpu-tensor) share.

The per-rank batch size, views and output dtype come from the config and spec; the length is
the full global batches of an epoch (`steps_per_epoch`); `set_epoch` records the position the
next iteration starts at. The torch backend gets these from its DataLoader's batch sampler
instead (torch_loader.py).
"""

from __future__ import annotations

import numpy as np

from fastssl.config import Config
from fastssl.data.backends.sharding import (
    IndexedPosition,
    check_start_step,
    per_rank_batch_size,
    rank_plan,
    steps_per_epoch,
)
from fastssl.data.dtypes import output_dtype
from fastssl.data.views import ViewSpec
from fastssl.distributed import World
from fastssl.errors import FastSSLError


class IndexedLoader(IndexedPosition):
    """Base of a PretrainLoader over `num_images` indexed images; subclasses add `__iter__`, `close`.

    `_epoch, _start` is the (epoch, step) the next iteration begins at; iteration advances it.
    """

    def __init__(self, cfg: Config, world: World, spec: ViewSpec, num_images: int):
        self.world, self.spec, self.seed = world, spec, cfg.train.seed
        self.batch_size = per_rank_batch_size(cfg.train.batch_size, world.dims.dp_size)
        self.num_images = num_images
        self.num_views = len(spec.views)
        self.out_dtype = output_dtype(cfg.data.dtype)
        self._epoch, self._start = 0, 0
        if len(self) == 0:
            raise FastSSLError(
                f"{num_images} images make no full batch of {self.batch_size} per rank on "
                f"{world.dims.dp_size} rank(s); lower --train.batch_size or add data"
            )

    def __len__(self) -> int:
        return steps_per_epoch(self.num_images, self.world.dims.dp_size, self.batch_size)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        check_start_step(start_step, len(self))
        self._epoch, self._start = epoch, start_step

    def _plan(self, epoch: int) -> np.ndarray:
        """This rank's image order for `epoch`: int64 [len(self) * batch_size]."""
        w = self.world.dims
        return rank_plan(self.num_images, w.dp_size, w.dp_rank, self.batch_size, self.seed, epoch)
