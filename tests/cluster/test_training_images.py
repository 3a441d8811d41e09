"""This rank's share of the training set: disjoint, covering, in order, opened lazily."""

import numpy as np
import torch

from fastssl.cluster.training_images import rank_slice, training_images
from fastssl.config import Config
from fastssl.distributed import World
from tests.eval.test_finetune import ColourSource


def test_rank_slices_partition_the_set_in_order():
    for n, world in [(10, 3), (7, 2), (2, 4), (0, 2)]:
        parts = [rank_slice(n, r, world) for r in range(world)]
        assert np.array_equal(np.concatenate(parts), np.arange(n))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_each_rank_gets_its_images_at_the_run_size():
    cfg = Config()
    cfg.data.image_size, cfg.data.num_workers, cfg.eval.batch_size = 8, 0, 4
    source = ColourSource(10)
    opened = []

    class Spy(ColourSource):
        def image(self, i):
            opened.append(i)
            return super().image(i)

    spy = Spy(10)
    images = training_images(cfg, World(rank=1, world_size=2), source=spy)
    assert opened == []  # building the callable reads nothing
    batches = list(images())
    assert [b.shape for b in batches] == [(4, 3, 8, 8), (1, 3, 8, 8)]
    assert opened == [5, 6, 7, 8, 9]  # rank 1 of 2: the second half, in order
    whole = torch.cat(list(training_images(cfg, World(rank=0, world_size=1), source=source)()))
    assert torch.equal(torch.cat(batches), whole[5:])
