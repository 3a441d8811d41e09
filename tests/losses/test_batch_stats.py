"""Helpers of fastssl/losses/batch_stats.py at world size 1 (the 2-rank behaviour is covered by
test_batch_stats_distributed.py)."""

import pytest
import torch

from fastssl.losses.batch_stats import off_diagonal, sum_over_ranks


@pytest.mark.parametrize("d", [1, 2, 5])
def test_off_diagonal_is_every_entry_but_the_diagonal_in_row_order(d):
    m = torch.arange(d * d, dtype=torch.float32).view(d, d)
    expected = torch.tensor([m[i, j].item() for i in range(d) for j in range(d) if i != j])
    torch.testing.assert_close(off_diagonal(m), expected)


def test_sum_over_ranks_is_the_identity_without_a_process_group():
    x = torch.randn(3, requires_grad=True)
    assert sum_over_ranks(x) is x
