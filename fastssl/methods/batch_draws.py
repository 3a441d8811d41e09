"""Random draws for on-device pretext targets that do not depend on the number of ranks.

Rotation (random mode) and jigsaw draw per-image randomness (which rotation, which permutation,
where each tile sits in its cell) inside the method. Drawing from the global RNG would give
every rank the same values for its local rows, so 2 ranks x 8 images would differ from 1 rank x
16. Instead each step draws the whole global batch from a generator seeded by (run seed,
step, salt), and rank r keeps rows [r*n, (r+1)*n): the loader gives rank r the r-th contiguous
slice of the global batch (fastssl/data/backends/sharding.py), so every image gets the same
draw on any number of ranks, and a resumed run redraws the same values.

Under gradient accumulation the step runs K micro-batches per rank (fastssl/train/accumulation.py);
`micro_batch(j, K)` tells the draws which contiguous rows of the rank's batch the method sees, so
an image's draw is also the same for every K.
"""

from __future__ import annotations

import contextlib
import zlib

import numpy as np
import torch

from fastssl.distributed import dp_rank, dp_size


_MICRO = (0, 1)  # (index, count) of the micro-batch the step is running


@contextlib.contextmanager
def micro_batch(index: int, count: int):
    """Within it, `local_rows` describes micro-batch `index` of `count` (set by the training step)."""
    global _MICRO
    before, _MICRO = _MICRO, (index, count)
    try:
        yield
    finally:
        _MICRO = before


def local_rows(n_local: int) -> tuple[int, int, int]:
    """(start, stop, n_global): the rows of the step's global batch that this rank's `n_local`
    images are, rank-major and then micro-batch by micro-batch."""
    index, count = _MICRO
    n_rank = n_local * count
    start = dp_rank() * n_rank + index * n_local
    return start, start + n_local, n_rank * dp_size()


def step_generator(step: int, salt: str) -> torch.Generator:
    """A CPU generator for `step`, identical on every rank; `salt` separates the methods' streams."""
    seed = np.random.SeedSequence([torch.initial_seed() & 0xFFFFFFFF, step, zlib.crc32(salt.encode())])
    return torch.Generator().manual_seed(int(seed.generate_state(1, np.uint64)[0] >> 1))


def sample_generator(step: int, salt: str, index: int) -> torch.Generator:
    """A CPU generator for image `index` of the global batch at `step`: for per-image draws whose
    count is not known in advance (rejection sampling, I-JEPA's blocks), so no slicing can align them."""
    seed = np.random.SeedSequence([torch.initial_seed() & 0xFFFFFFFF, step, zlib.crc32(salt.encode()), index])
    return torch.Generator().manual_seed(int(seed.generate_state(1, np.uint64)[0] >> 1))


def global_randint(high: int, n_local: int, *shape: int, step: int, salt: str,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """Integers in [0, high) for this rank's `n_local` images: int64 [n_local, *shape]."""
    start, stop, n_global = local_rows(n_local)
    draws = torch.randint(high, (n_global, *shape), generator=step_generator(step, salt))
    return draws[start:stop].to(device)
