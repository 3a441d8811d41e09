"""I-JEPA's multi-block masks: block geometry, context/target disjointness, truncation, and draws
that do not depend on the number of ranks."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fastssl.methods.ijepa_masks import MaskSpec, block_size, image_blocks, multiblock_masks, smallest_block

# The ijepa-cpu recipe's grid, and in1k_vith14_ep300.yaml's (224 / 14 = 16 patches a side).
CPU = MaskSpec((8, 8), 4, (0.15, 0.2), (0.75, 1.5), (0.85, 1.0), 4)
VITH = MaskSpec((16, 16), 4, (0.15, 0.2), (0.75, 1.5), (0.85, 1.0), 10)


def _grid_mask(idx: torch.Tensor, grid) -> torch.Tensor:
    m = torch.zeros(grid[0] * grid[1], dtype=torch.bool)
    m[idx] = True
    return m.view(grid)


def _rectangle(mask: torch.Tensor) -> tuple[int, int]:
    """(h, w) of a mask that must be one filled rectangle."""
    rows, cols = mask.any(1).nonzero().squeeze(1), mask.any(0).nonzero().squeeze(1)
    h, w = len(rows), len(cols)
    assert rows[-1] - rows[0] + 1 == h and cols[-1] - cols[0] + 1 == w
    assert int(mask.sum()) == h * w, "not a filled rectangle"
    return h, w


@pytest.mark.parametrize("spec", [CPU, VITH], ids=["8x8", "16x16"])
def test_targets_never_overlap_the_context(spec):
    for step in range(40):
        ctx, tgt = multiblock_masks(spec, 16, step)  # [N, Lc], [M, N, Lt]
        assert tgt.shape[0] == spec.num_targets and tgt.shape[1] == ctx.shape[0] == 16
        for i in range(16):
            c = set(ctx[i].tolist())
            assert len(c) == ctx.shape[1] > spec.min_keep
            for m in range(spec.num_targets):
                assert not c & set(tgt[m, i].tolist()), (step, i, m)


@pytest.mark.parametrize("u", [0.0, 0.3, 0.7, 1.0])
def test_untruncated_blocks_are_rectangles_of_the_drawn_size(u):
    g = torch.Generator().manual_seed(3)
    tgt_size = block_size(u, VITH.grid, VITH.target_scale, VITH.target_aspect)
    ctx_size = block_size(1 - u, VITH.grid, VITH.context_scale, (1.0, 1.0))
    targets, ctx = image_blocks(g, VITH, tgt_size, ctx_size)
    for t in targets:
        assert _rectangle(_grid_mask(t, VITH.grid)) == tgt_size
    # The context is its square block minus the targets: inside an h x h box, missing at most the targets.
    full = _grid_mask(ctx, VITH.grid)
    rows, cols = full.any(1).nonzero().squeeze(1), full.any(0).nonzero().squeeze(1)
    h, w = ctx_size
    assert h == w and rows[-1] - rows[0] < h and cols[-1] - cols[0] < w
    assert h * w - sum(len(t) for t in targets) <= len(ctx) < h * w


def test_block_scales_and_aspects_are_in_range():
    """On a fine grid (little rounding) every draw's scale and aspect lie in the configured ranges."""
    grid = (200, 200)
    L = grid[0] * grid[1]
    for k in range(101):
        u = k / 100
        h, w = block_size(u, grid, (0.15, 0.2), (0.75, 1.5))
        assert 0.15 * 0.99 <= h * w / L <= 0.2 * 1.01
        assert 0.75 * 0.99 <= h / w <= 1.5 * 1.01
        h, w = block_size(u, grid, (0.85, 1.0), (1.0, 1.0))
        assert h == w and 0.85 * 0.98 <= h * w / L <= 1.0
    # The reference's shrink: a side never equals the grid's (multiblock.py `while h >= height`).
    assert block_size(1.0, (16, 16), (0.85, 1.0), (1.0, 1.0)) == (15, 15)
    # One uniform draw sets both scale and aspect (as the reference): the smallest block is the squattest.
    assert block_size(0.0, (16, 16), (0.15, 0.2), (0.75, 1.5)) == (5, 7)
    assert block_size(1.0, (16, 16), (0.15, 0.2), (0.75, 1.5)) == (9, 6)


def test_every_image_is_cut_to_the_batch_minimum_in_raster_order():
    ctx, tgt = multiblock_masks(CPU, 16, step=5)
    for i in range(16):
        assert torch.equal(ctx[i], ctx[i].sort().values)
        for m in range(CPU.num_targets):
            assert torch.equal(tgt[m, i], tgt[m, i].sort().values)
    # Some image had more patches than kept: the cut is the smallest of the batch, a prefix of each.
    g_lengths = []
    from fastssl.methods.batch_draws import sample_generator, step_generator

    u_t, u_c = torch.rand(2, generator=step_generator(5, "ijepa/sizes")).tolist()
    tsz = block_size(u_t, CPU.grid, CPU.target_scale, CPU.target_aspect)
    csz = block_size(u_c, CPU.grid, CPU.context_scale, (1.0, 1.0))
    for i in range(16):
        targets, c = image_blocks(sample_generator(5, "ijepa/blocks", i), CPU, tsz, csz)
        assert torch.equal(ctx[i], c[: ctx.shape[1]])
        g_lengths.append(len(c))
    assert min(g_lengths) == ctx.shape[1] < max(g_lengths)


def test_masks_change_with_the_step_and_repeat_for_the_same_step():
    a, b, c = multiblock_masks(CPU, 8, 1), multiblock_masks(CPU, 8, 1), multiblock_masks(CPU, 8, 2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not (a[0].shape == c[0].shape and torch.equal(a[0], c[0]) and torch.equal(a[1], c[1]))


def test_smallest_block_names_grids_that_are_too_small():
    assert smallest_block(VITH) == (35, 225)
    tiny = MaskSpec((4, 4), 4, (0.15, 0.2), (0.75, 1.5), (0.85, 1.0), 10)
    tgt, ctx = smallest_block(tiny)
    assert tgt <= 10 and ctx <= 10


# --- 2 ranks vs 1 process ------------------------------------------------------------------------

WORLD, N = 2, 5


def _worker(rank, store, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        torch.manual_seed(0)  # the run seed: identical on every rank, as the trainer sets it
        torch.save([multiblock_masks(CPU, N, step) for step in range(6)], os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
@pytest.mark.slow
def test_masks_on_2_ranks_equal_1_process(tmp_path):
    """Rank r's images get the global batch's masks for rows [r N, (r + 1) N), cut at the global minimum."""
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    torch.manual_seed(0)
    cut_somewhere = False
    for step in range(6):
        ctx, tgt = multiblock_masks(CPU, WORLD * N, step)
        torch.testing.assert_close(torch.cat([r[step][0] for r in ranks]), ctx, rtol=0, atol=0)
        torch.testing.assert_close(torch.cat([r[step][1] for r in ranks], dim=1), tgt, rtol=0, atol=0)
        # Rank 0's images alone would be cut at their own minimum on some step; the all-reduce
        # makes every rank cut at the global batch's.
        cut_somewhere |= multiblock_masks(CPU, N, step)[0].shape[1] != ctx.shape[1]
    assert cut_somewhere
