"""The chunked (memory-linear, plain torch) loss: exact gradients across tiles and no rows x keys tensor.

Its accuracy against fp64 references over the kernel's shape matrix lives in
tests/kernels/test_nt_xent.py (the `chunked` parameter); here are the properties of its own.
"""

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from fastssl.errors import FastSSLError
from fastssl.losses.chunked import block_size, info_nce_chunked, nt_xent_chunked, tile_ranges


def unit64(n, d):
    return F.normalize(torch.randn(n, d, dtype=torch.float64), dim=1).requires_grad_()


@pytest.mark.parametrize("block", [1, 2, 3, 64])
def test_gradcheck_symmetric_path_across_tiles(block):
    # 2N = 10 rows in tiles of 1, 2, 3 (a tail) and 64 (one tile): diagonal and off-diagonal tiles.
    z1, z2 = unit64(5, 4), unit64(5, 4)
    assert torch.autograd.gradcheck(lambda a, b: nt_xent_chunked(a, b, 0.3, block=block), (z1, z2))


@pytest.mark.parametrize("block", [2, 3])
def test_gradcheck_gathered_keys_reach_every_key(block):
    # This rank's 3 pairs sit at offset 2 of 7 gathered ones; every key has a gradient.
    z1, z2, k1, k2 = unit64(3, 4), unit64(3, 4), unit64(7, 4), unit64(7, 4)

    def loss(a, b, c1, c2):
        g1, g2 = torch.cat([c1[:2], a, c1[5:]]), torch.cat([c2[:2], b, c2[5:]])
        return nt_xent_chunked(a, b, 0.5, g1, g2, 2, block=block)

    assert torch.autograd.gradcheck(loss, (z1, z2, k1, k2))


@pytest.mark.parametrize("block", [2, 5])
def test_gradcheck_info_nce_with_queue(block):
    q, k = unit64(4, 3), unit64(6, 3)
    queue = F.normalize(torch.randn(7, 3, dtype=torch.float64), dim=1)
    assert torch.autograd.gradcheck(lambda a, b: info_nce_chunked(a, b, 0.4, queue, 1, block=block), (q, k))


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any op produces while active (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("gathered", [False, True])
def test_never_builds_a_rows_by_keys_tensor(gathered):
    # 2N = 300 rows and keys (600 gathered), d = 8, tiles of 16: the logits would be 90,000+
    # numbers; the largest tensor may be a tile or an [rows, d] / [keys, d] operand.
    n, d, block = 150, 8, 16
    z1, z2 = (F.normalize(torch.randn(n, d), dim=1).requires_grad_() for _ in range(2))
    k1, k2 = (torch.cat([z, F.normalize(torch.randn(n, d), dim=1)]) for z in (z1, z2))
    queue = F.normalize(torch.randn(50, d), dim=1)
    with _LargestTensor() as mode:
        if gathered:
            loss = nt_xent_chunked(z1, z2, 0.1, k1, k2, 0, block=block)
            loss = loss + info_nce_chunked(z1, k1, 0.1, queue, block=block)
        else:
            loss = nt_xent_chunked(z1, z2, 0.1, block=block)
        loss.backward()
    keys = 4 * n if gathered else 2 * n
    assert z1.grad.abs().sum() > 0
    assert mode.largest <= max(block * block, keys * d), f"a tensor of {mode.largest} numbers"


def test_block_size_keeps_a_tile_within_the_byte_budget():
    assert block_size(16 * 2**20) == 2048  # 2048^2 fp32 = 16 MiB
    for budget in (2**20, 10**7, 3 * 2**24):
        b = block_size(budget)
        assert b % 64 == 0 and b * b * 4 <= budget < (b + 64) ** 2 * 4
    assert block_size(100) == 64  # never below one 64-row tile


def test_tile_ranges_cover_every_row_once():
    assert tile_ranges(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert tile_ranges(8, 8) == [(0, 8)]
    assert tile_ranges(0, 8) == []


def test_rejects_bad_arguments():
    z = F.normalize(torch.randn(4, 8), dim=1)
    with pytest.raises(FastSSLError, match="both k1 and k2"):
        nt_xent_chunked(z, z, 0.1, k1=z)
    with pytest.raises(FastSSLError, match="offset=3"):
        nt_xent_chunked(z, z, 0.1, z, z, 3)
    with pytest.raises(FastSSLError, match="offset=1"):
        info_nce_chunked(z, z, 0.1, None, 1)
    with pytest.raises(FastSSLError, match="block=0"):
        nt_xent_chunked(z, z, 0.1, block=0)
