"""I-JEPA's multi-block masks (Assran et al. 2023, Sec. 3; facebookresearch/ijepa src/masks/multiblock.py).

Per image: M target blocks (scale 0.15-0.2 of the patch grid, aspect ratio 0.75-1.5) whose
representations are predicted, and one context block (scale 0.85-1, square) from which the target
blocks' patches are removed, so the context never shows what it must predict. Blocks are lists of
patch indices in raster order.

As the reference's MaskCollator:
- the block *sizes* are drawn once per step (one target size shared by the M blocks and every
  image, one context size); `_sample_block_size` uses one uniform draw for both the scale and the
  aspect ratio, and shrinks a side equal to the grid's by one patch; the block's top-left corner is
  drawn in [0, grid - side), so a full-width side is never reached;
- each image draws its own block positions; a target block with no more than `min_keep` patches is
  redrawn; a context block left with no more than `min_keep` patches after removing the targets is
  redrawn, and after 20 failures one more target is no longer removed from it (the reference's
  fallback; the only way a target overlaps the context);
- every image's blocks are cut to the shortest in the batch (the first k indices in raster order),
  so that they stack into tensors: one length for all targets, one for all contexts.

Unlike the reference (a collator per data-loader worker, drawing from the global RNG), the draws
here do not depend on the number of ranks or on how the batch is split: the sizes come from a
generator seeded by (run seed, step) and image i of the global batch from one seeded by (run seed,
step, i) (`fastssl.methods.batch_draws`); the batch minimum is taken over the global batch (an
all-reduce MIN of two integers), so 1 process and 8 ranks cut the same images at the same length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

from fastssl.distributed import dp_group, dp_size, is_dist
from fastssl.methods.batch_draws import local_rows, sample_generator, step_generator

# multiblock.py `_sample_block_mask`: redraws before one more target is allowed into the context.
_RETRIES = 20


@dataclass(frozen=True)
class MaskSpec:
    grid: tuple[int, int]  # (h, w) patches
    num_targets: int  # M
    target_scale: tuple[float, float]
    target_aspect: tuple[float, float]
    context_scale: tuple[float, float]
    min_keep: int  # a block needs more patches than this


def block_size(u: float, grid: tuple[int, int], scale: tuple[float, float], aspect: tuple[float, float]) -> tuple[int, int]:
    """(h, w) of a block for the uniform draw u (multiblock.py `_sample_block_size`)."""
    gh, gw = grid
    s = scale[0] + u * (scale[1] - scale[0])
    area = int(gh * gw * s)
    a = aspect[0] + u * (aspect[1] - aspect[0])  # the same u as the scale, as the reference
    h, w = int(round(math.sqrt(area * a))), int(round(math.sqrt(area / a)))
    return min(h, gh - 1), min(w, gw - 1)


def smallest_block(spec: MaskSpec) -> tuple[int, int]:
    """(smallest target block, smallest context block) in patches over the range of draws."""
    us = [i / 100 for i in range(101)]
    tgt = min(h * w for h, w in (block_size(u, spec.grid, spec.target_scale, spec.target_aspect) for u in us))
    ctx = min(h * w for h, w in (block_size(u, spec.grid, spec.context_scale, (1.0, 1.0)) for u in us))
    return tgt, ctx


def _place(g: torch.Generator, size: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
    """[gh, gw] bool: a block of `size` at a random top-left corner in [0, grid - size)."""
    (h, w), (gh, gw) = size, grid
    top = int(torch.randint(0, gh - h, (1,), generator=g))
    left = int(torch.randint(0, gw - w, (1,), generator=g))
    block = torch.zeros(gh, gw, dtype=torch.bool)
    block[top : top + h, left : left + w] = True
    return block


def image_blocks(g: torch.Generator, spec: MaskSpec, tgt_size: tuple[int, int],
                 ctx_size: tuple[int, int]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One image's M target blocks and its context block, as patch indices in raster order."""
    targets = []
    for _ in range(spec.num_targets):
        block = _place(g, tgt_size, spec.grid)
        while int(block.sum()) <= spec.min_keep:  # unreachable once IJEPA checked the smallest block
            block = _place(g, tgt_size, spec.grid)
        targets.append(block)
    allowed, fails = len(targets), 0
    while True:
        ctx = _place(g, ctx_size, spec.grid)
        for t in targets[:allowed]:
            ctx &= ~t  # the context never sees a target patch
        if int(ctx.sum()) > spec.min_keep:
            break
        fails += 1
        if fails == _RETRIES:  # the reference's fallback: one target fewer is kept out of the context
            allowed, fails = max(allowed - 1, 0), 0
    return [t.flatten().nonzero().squeeze(1) for t in targets], ctx.flatten().nonzero().squeeze(1)


def _global_min(lengths: torch.Tensor, device: torch.device) -> torch.Tensor:
    """[2] int64 minima over this rank's images -> over the global batch."""
    if is_dist() and dp_size() > 1:
        lengths = lengths.to(device)
        dist.all_reduce(lengths, op=dist.ReduceOp.MIN, group=dp_group())
    return lengths.cpu()


def multiblock_masks(spec: MaskSpec, n_local: int, step: int,
                     device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's masks: context indices [N, Lc] and target indices [M, N, Lt] (int64, raster order)."""
    sizes = step_generator(step, "ijepa/sizes")
    u_tgt, u_ctx = torch.rand(2, generator=sizes).tolist()  # the reference draws the two in this order
    tgt_size = block_size(u_tgt, spec.grid, spec.target_scale, spec.target_aspect)
    ctx_size = block_size(u_ctx, spec.grid, spec.context_scale, (1.0, 1.0))
    first = local_rows(n_local)[0]  # this rank's (micro-batch's) rows of the global batch
    per_image = [image_blocks(sample_generator(step, "ijepa/blocks", first + i), spec, tgt_size, ctx_size)
                 for i in range(n_local)]
    local_min = torch.tensor([min(len(t) for ts, _ in per_image for t in ts), min(len(c) for _, c in per_image)])
    lt, lc = _global_min(local_min, torch.device(device)).tolist()
    targets = torch.stack([torch.stack([t[:lt] for t in ts]) for ts, _ in per_image], dim=1)  # [M, N, Lt]
    context = torch.stack([c[:lc] for _, c in per_image])  # [N, Lc]
    return context.to(device), targets.to(device)
