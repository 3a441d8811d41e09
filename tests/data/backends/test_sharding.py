"""The per-rank order every backend follows: global batches independent of the number of ranks."""

import numpy as np
import pytest

from fastssl.data.backends.sharding import (
    check_start_step,
    per_rank_batch_size,
    rank_plan,
    sample_seed,
    step_seed,
    steps_per_epoch,
)
from fastssl.errors import FastSSLError


def test_a_global_batch_is_the_same_images_on_1_2_or_4_ranks():
    n, g = 70, 16  # 4 steps, 6 images dropped
    one = rank_plan(n, 1, 0, g, seed=5, epoch=3).reshape(-1, g)
    for world in (2, 4):
        per_rank = [rank_plan(n, world, r, g // world, seed=5, epoch=3).reshape(-1, g // world) for r in range(world)]
        assert np.array_equal(np.concatenate(per_rank, axis=1), one)
    assert one.shape == (steps_per_epoch(n, 1, g), g) and len(set(one.ravel())) == 4 * g
    assert not np.array_equal(rank_plan(n, 1, 0, g, seed=5, epoch=4), one.ravel())


def test_seeds_are_positional():
    assert sample_seed(1, 2, 3) == sample_seed(1, 2, 3) != sample_seed(1, 2, 4)
    assert step_seed(1, 0, 2, 3) != step_seed(1, 1, 2, 3) and 0 <= step_seed(-1, 0, 0, 0) < 2**31


def test_errors_name_the_fix():
    with pytest.raises(FastSSLError, match="--train.batch_size"):
        check_start_step(5, 4)
    with pytest.raises(FastSSLError, match="--train.batch_size=6 is not divisible by the 4 ranks"):
        per_rank_batch_size(6, 4)
    assert per_rank_batch_size(8, 4) == 2
