"""BEiT / iBOT random block masking, drawn per sample from the step seed (fastssl.methods.block_masking)."""

import random

import pytest
import torch

from fastssl.methods import block_masking
from fastssl.methods.block_masking import block_mask, draw_masks


def _draw(n_local, step=3, world=1, rank=0, monkeypatch=None, h=6, w=6, ratio=(0.1, 0.5), p=0.5):
    monkeypatch.setattr(block_masking, "local_rows", lambda n: (rank * n, (rank + 1) * n, n * world))
    return draw_masks(2, n_local, h, w, ratio, p, step)


def test_masks_do_not_depend_on_the_world_size(monkeypatch):
    one = _draw(8, monkeypatch=monkeypatch)  # [2, 8, 36]
    halves = [_draw(4, world=2, rank=r, monkeypatch=monkeypatch) for r in range(2)]
    assert torch.equal(torch.cat(halves, dim=1), one)
    assert one.any() and not torch.equal(one, _draw(8, step=4, monkeypatch=monkeypatch))  # a new draw per step
    assert torch.equal(one, _draw(8, monkeypatch=monkeypatch))  # and the same one when the step is redone


def test_half_the_crops_are_masked_with_ratios_in_range(monkeypatch):
    n, h, w = 16, 8, 8
    masks = _draw(n, h=h, w=w, monkeypatch=monkeypatch).flatten(0, 1)  # [2 n, L]
    counts = masks.sum(1)
    # int(2 n x 0.5) crops are drawn a ratio; a block may fall short of its target, never exceed it.
    assert (counts > 0).sum() <= n and (counts > 0).sum() >= n - 2
    assert counts.max() <= int(0.5 * h * w)
    assert (counts[counts > 0] >= 4).all()  # blocks of >= 4 patches (MaskingGenerator min_num_patches)
    assert _draw(n, p=0.0, monkeypatch=monkeypatch).sum() == 0


def test_block_mask_is_made_of_rectangles_and_hits_its_target():
    rng = random.Random(0)
    m = block_mask(14, 14, 40, rng)
    assert 30 <= m.sum() <= 40
    for seed in range(5):  # one block fills its bounding box
        one = torch.zeros(14, 14, dtype=torch.bool)
        added = block_masking._add_block(one, 20, random.Random(seed))
        rows, cols = one.nonzero(as_tuple=True)
        box = one[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.all() and added == one.sum() == box.numel() and 1 <= added <= 20


@pytest.mark.parametrize("target", [0, 1, 3])
def test_small_targets_are_never_exceeded(target):
    for seed in range(5):
        assert block_mask(4, 4, target, random.Random(seed)).sum() <= target
