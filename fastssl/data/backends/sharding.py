"""Which images each rank reads at each step, and the seeds of their augmentations.

Every backend uses these, so all of them feed the same images at the same step:

- Order: step s of an epoch uses the global batch `perm[s*G:(s+1)*G]` of a per-epoch
  permutation seeded by (seed, epoch) (G = global batch size), and rank r takes the r-th
  contiguous slice of it (`rank_plan`). The images of a global batch thus do not depend on the
  number of ranks, ranks never overlap, and incomplete last batches are dropped.
- Resume: a position is (epoch, step); `set_epoch(epoch, start_step)` continues at step
  start_step of that order without reading the skipped images (`check_start_step` guards it).
- Augmentation seeds: the torch backend seeds image `idx` of `epoch` by (seed, epoch, idx)
  (`sample_seed`), so a batch does not depend on the number of workers; batched backends (DALI,
  gpu-tensor) seed a whole step by (seed, rank, epoch, step) (`step_seed`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fastssl.errors import FastSSLError


def data_parallel_coords(world) -> tuple[int, int]:
    """(rank, ranks) the data is split over: the mesh's data-parallel coordinates
    (fastssl/parallel_dims.py). The one place loaders read them."""
    return world.dims.dp_rank, world.dims.dp_size


def per_rank_batch_size(global_batch: int, world_size: int) -> int:
    """`--train.batch_size` split over the ranks; each rank needs at least 2 images."""
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


def steps_per_epoch(num_images: int, world_size: int, batch: int) -> int:
    """Full global batches (batch * world_size) in an epoch: the last incomplete one is dropped."""
    return num_images // (batch * world_size)


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of n images for `epoch`; identical on every rank."""
    return np.random.default_rng([seed & 0xFFFFFFFF, epoch, 0x5EED]).permutation(n)


def rank_plan(num_images: int, world_size: int, rank: int, batch: int, seed: int, epoch: int) -> np.ndarray:
    """This rank's image order for `epoch`: int64 [steps * batch]; step s is plan[s*batch:(s+1)*batch]."""
    g = batch * world_size
    steps = num_images // g
    perm = epoch_permutation(num_images, seed, epoch)[: steps * g]
    return perm.reshape(steps, world_size, batch)[:, rank, :].reshape(-1).astype(np.int64)


class IndexedPosition:
    """`state_dict` / `load_state_dict` of loaders over an indexed source (every backend but streams).

    Their order is a function of (seed, epoch) and the global batch alone (`rank_plan`), so the
    training loop's (epoch, step) is the whole position, on any world size: a resume on another
    world size reads the same global batches, split differently, none repeated or dropped.
    Subclasses set `world` and `batch_size`.
    """

    world: Any
    batch_size: int

    def state_dict(self, epoch: int, step: int) -> dict:
        rank, ranks = data_parallel_coords(self.world)
        return {"kind": "indexed", "epoch": epoch, "step": step, "rank": rank, "ranks": ranks,
                "global_batch": self.batch_size * ranks}

    def load_state_dict(self, states: list[dict]) -> None:
        saved = next((s for s in states if s and s.get("kind") == "indexed"), None)
        if saved is None:
            return
        rank, ranks = data_parallel_coords(self.world)
        if saved["global_batch"] != self.batch_size * ranks:
            raise FastSSLError(
                f"the checkpoint was taken at a global batch of {saved['global_batch']}, this run's is "
                f"{self.batch_size * ranks}; resume with --train.batch_size={saved['global_batch']}"
            )
        if saved["ranks"] != ranks and rank == 0 and saved["step"]:
            print(f"fastssl: epoch {saved['epoch']} continues at step {saved['step']} on {ranks} rank(s) (saved on "
                  f"{saved['ranks']}): its global batches do not depend on the world size, none repeated, none dropped",
                  flush=True)


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


def step_seed(seed: int, rank: int, epoch: int, step: int) -> int:
    """A 31-bit seed for one rank's batched augmentation from position (epoch, step) on."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, rank, epoch, step, 0xDA11]).generate_state(1)[0] & 0x7FFFFFFF)
