"""Random draws for on-device pretext targets that do not depend on the number of ranks.

Rotation (random mode) and jigsaw draw per-image randomness (which rotation, which permutation,
where each tile sits in its cell) inside the method. Drawing from the global RNG would give
every rank the same values for its local rows, so 2 ranks x 8 images would differ from 1 rank x
16. Instead each step draws the whole global batch from a generator seeded by (run seed,
step, salt), and rank r keeps rows [r*n, (r+1)*n): the loader gives rank r the r-th contiguous
slice of the global batch (fastssl/data/backends/sharding.py), so every image gets the same
draw on any number of ranks, and a resumed run redraws the same values.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

from fastssl.distributed import dp_rank, dp_size


def step_generator(step: int, salt: str) -> torch.Generator:
    """A CPU generator for `step`, identical on every rank; `salt` separates the methods' streams."""
    seed = np.random.SeedSequence([torch.initial_seed() & 0xFFFFFFFF, step, zlib.crc32(salt.encode())])
    return torch.Generator().manual_seed(int(seed.generate_state(1, np.uint64)[0] >> 1))


def global_randint(high: int, n_local: int, *shape: int, step: int, salt: str,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """Integers in [0, high) for this rank's `n_local` images: int64 [n_local, *shape]."""
    world, rank = dp_size(), dp_rank()
    draws = torch.randint(high, (n_local * world, *shape), generator=step_generator(step, salt))
    return draws[rank * n_local : (rank + 1) * n_local].to(device)
