"""Random block masking of patch grids (BEiT, Bao et al. 2022, Alg. 1), as iBOT and DINOv2 mask
the student's global crops.

Follows facebookresearch/dinov2: `MaskingGenerator` (dinov2/data/masking.py) grows a mask from
rectangles of random area (>= 4 patches) and aspect ratio in (0.3, 1/0.3) until it holds the
target number of patches, at most half the grid (train.py: max_num_patches = 0.5 * L); the
collate (dinov2/data/collate.py) masks int(B * p) of the B global crops of a batch, their ratios
drawn from successive bins of linspace(r_min, r_max), one per masked crop, then shuffles the
masks over the crops.

Independent of the world size (as fastssl/methods/batch_draws.py): B counts the global crops of
the *global* batch; one generator seeded by (run seed, step) shuffles the ratio bins over all of
them and gives each crop a seed of its own, and each rank grows only its own crops' masks.
"""

from __future__ import annotations

import math
import random

import torch

from fastssl.methods.batch_draws import local_rows, step_generator

MIN_PATCHES = 4  # MaskingGenerator(min_num_patches=4)
MIN_ASPECT = 0.3  # MaskingGenerator(min_aspect=0.3); the max is 1 / 0.3
MAX_FRACTION = 0.5  # dinov2/train/train.py: max_num_patches = 0.5 * the patches of a crop
ATTEMPTS = 10  # MaskingGenerator._mask: at most 10 tries per rectangle


def _add_block(mask: torch.Tensor, budget: int, rng: random.Random) -> int:
    """MaskingGenerator._mask: one rectangle that adds 1..budget new patches; returns how many."""
    h, w = mask.shape
    for _ in range(ATTEMPTS):
        area = rng.uniform(MIN_PATCHES, budget)
        aspect = math.exp(rng.uniform(math.log(MIN_ASPECT), math.log(1 / MIN_ASPECT)))
        bh, bw = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if bw < w and bh < h:
            top, left = rng.randint(0, h - bh), rng.randint(0, w - bw)
            block = mask[top : top + bh, left : left + bw]
            new = bh * bw - int(block.sum())
            if 0 < new <= budget:
                block.fill_(True)
                return new
    return 0


def block_mask(h: int, w: int, num_masked: int, rng: random.Random) -> torch.Tensor:
    """A bool mask `[h, w]` of about `num_masked` patches (fewer when no block fits), in blocks."""
    mask = torch.zeros(h, w, dtype=torch.bool)
    max_block = int(MAX_FRACTION * h * w)
    count = 0
    while count < num_masked:
        added = _add_block(mask, min(num_masked - count, max_block), rng)
        if added == 0:
            break
        count += added
    return mask


def draw_masks(n_crops: int, n_local: int, h: int, w: int, ratio_min_max: tuple[float, float],
               sample_probability: float, step: int, salt: str = "dinov2-masks") -> torch.Tensor:
    """Masks `[n_crops, n_local, h * w]` of this rank's images (crop-major, as the views).

    Crop c of global image i is slot c * N + i of the global batch (N = n_local x world size);
    this rank holds images [rank n_local, (rank + 1) n_local).
    """
    first, _, n_global = local_rows(n_local)  # this rank's (micro-batch's) rows of the global batch
    slots = n_crops * n_global
    n_masked = int(slots * sample_probability)
    bins = torch.linspace(ratio_min_max[0], ratio_min_max[1], n_masked + 1).tolist()
    g = step_generator(step, salt)
    order = torch.randperm(slots, generator=g)  # slot k gets ratio bin order[k], or none if >= n_masked
    seeds = torch.randint(2**62, (slots,), generator=g)
    masks = torch.zeros(n_crops, n_local, h * w, dtype=torch.bool)
    for c in range(n_crops):
        for i in range(n_local):
            k = c * n_global + first + i
            b = int(order[k])
            if b < n_masked:
                rng = random.Random(int(seeds[k]))
                ratio = rng.uniform(bins[b], bins[b + 1])
                masks[c, i] = block_mask(h, w, int(h * w * ratio), rng).flatten()
    return masks
