"""`contrastive_flops`: the fused kernel's count by hand, torch and chunked against torch's counter."""

import pytest
import torch
import torch.nn.functional as F
from fastssl_kernels.pairs import Pairs, dense_loss
from torch.utils.flop_counter import FlopCounterMode

from fastssl.losses import contrastive_flops
from fastssl.losses.chunked import info_nce_chunked, nt_xent_chunked


def test_fused_single_process_nt_xent_is_three_matmul_passes():
    # Forward logits, then one symmetric backward pass: recompute + dQ. 6 (2N)^2 d, not 8.
    two_n, d = 65_536, 128
    assert contrastive_flops("triton", two_n, two_n, d, symmetric=True) == 6 * two_n**2 * d
    assert contrastive_flops("triton", two_n, two_n, d, symmetric=True, backward=False) == 2 * two_n**2 * d
    # Gathered keys: forward, row pass (recompute + dQ), key pass (recompute + dK).
    assert contrastive_flops("triton", 100, 400, 64) == 10 * 100 * 400 * 64
    # A queue is in the forward and the row pass only; frozen keys skip the key pass.
    assert contrastive_flops("triton", 100, 100, 64, negatives=900) == 6 * 100 * 1000 * 64 + 4 * 100 * 100 * 64
    assert contrastive_flops("triton", 100, 100, 64, negatives=900, key_grad=False) == 6 * 100 * 1000 * 64


def test_rejects_inconsistent_arguments():
    with pytest.raises(ValueError, match="impl"):
        contrastive_flops("cuda", 4, 4, 8)
    with pytest.raises(ValueError, match="symmetric"):
        contrastive_flops("torch", 4, 8, 8, symmetric=True)


def _counted(fn, *leaves):
    with FlopCounterMode(display=False) as counter:
        loss = fn()
        if leaves:
            loss.backward()
    return counter.get_total_flops()


def _unit(n, d, grad=True):
    return F.normalize(torch.randn(n, d), dim=1).requires_grad_(grad)


@pytest.mark.parametrize("block", [7, 16, 1000])
@pytest.mark.parametrize("backward", [False, True])
def test_chunked_count_matches_torch_flop_counter(block, backward):
    n, d = 30, 8  # 60 rows: 9 tiles of 7 (a tail), 4 of 16, one of 1000
    z1, z2 = _unit(n, d), _unit(n, d)
    leaves = (z1, z2) if backward else ()
    counted = _counted(lambda: nt_xent_chunked(z1, z2, 0.1, block=block), *leaves)
    assert counted == contrastive_flops("chunked", 2 * n, 2 * n, d, symmetric=True, backward=backward, block=block)

    k1, k2 = _unit(3 * n, d), _unit(3 * n, d)
    counted = _counted(lambda: nt_xent_chunked(z1, z2, 0.1, k1, k2, 0, block=block), *leaves)
    assert counted == contrastive_flops("chunked", 2 * n, 6 * n, d, backward=backward, block=block)

    queue = _unit(45, d, grad=False)
    frozen = _unit(n, d, grad=False)  # a momentum encoder's keys
    counted = _counted(lambda: info_nce_chunked(z1, frozen, 0.1, queue, block=block), *leaves[:1])
    expected = contrastive_flops("chunked", n, n, d, negatives=45, backward=backward, key_grad=False, block=block)
    assert counted == expected


@pytest.mark.parametrize("backward", [False, True])
def test_torch_count_matches_torch_flop_counter(backward):
    m, nk, d = 24, 40, 8
    q, keys = _unit(m, d), _unit(nk, d)
    pos, me = torch.arange(m) + 3, torch.arange(m)
    leaves = (q, keys) if backward else ()
    counted = _counted(lambda: dense_loss(Pairs(q, keys, None, pos, me), 0.1), *leaves)
    assert counted == contrastive_flops("torch", m, nk, d, backward=backward)
