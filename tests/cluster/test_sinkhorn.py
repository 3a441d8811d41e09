"""Sinkhorn-Knopp codes: marginals, agreement with swav's reference loop, and 2 ranks == 1 process."""

import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from fastssl.cluster import sinkhorn_knopp


def _scores(b=24, k=6, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(b, d, generator=g), dim=1)
    c = F.normalize(torch.randn(k, d, generator=g), dim=1)
    return z @ c.T  # [B, K] cosine scores, as SwAV's


def _reference(scores: np.ndarray, eps: float, iters: int) -> np.ndarray:
    """main_swav.py distributed_sinkhorn at world size 1, in float64 numpy."""
    q = np.exp(scores / eps).T
    b, k = q.shape[1], q.shape[0]
    q /= q.sum()
    for _ in range(iters):
        q /= q.sum(axis=1, keepdims=True)
        q /= k
        q /= q.sum(axis=0, keepdims=True)
        q /= b
    return (q * b).T


def test_every_sample_code_sums_to_one():
    q = sinkhorn_knopp(_scores(), epsilon=0.05, iterations=3)
    assert q.shape == (24, 6) and bool((q >= 0).all())
    torch.testing.assert_close(q.sum(1), torch.ones(24), rtol=0, atol=1e-5)


def test_prototype_totals_converge_to_equipartition():
    s = _scores(b=30, k=5)
    q = sinkhorn_knopp(s, epsilon=0.1, iterations=200)
    # Each prototype gets B/K samples' worth of weight: the equipartition constraint.
    torch.testing.assert_close(q.sum(0), torch.full((5,), 30 / 5), rtol=1e-3, atol=1e-3)
    # Softmax of the same scores is far from it: the constraint is doing the work.
    p = torch.softmax(s / 0.1, dim=1).sum(0)
    assert (p - 6).abs().max() > 10 * (q.sum(0) - 6).abs().max()


def test_three_iterations_match_swav_reference():
    s = _scores(b=16, k=7, seed=3)
    ours = sinkhorn_knopp(s, epsilon=0.05, iterations=3).double().numpy()
    np.testing.assert_allclose(ours, _reference(s.double().numpy(), 0.05, 3), rtol=1e-4, atol=1e-6)


def test_smaller_epsilon_gives_sharper_codes():
    s = _scores(b=40, k=4, seed=1)
    soft = sinkhorn_knopp(s, epsilon=0.5).max(1).values.mean()
    sharp = sinkhorn_knopp(s, epsilon=0.02).max(1).values.mean()
    assert sharp > soft + 0.2


def test_input_is_not_modified_and_bf16_scores_are_accepted():
    s = _scores()
    before = s.clone()
    q16 = sinkhorn_knopp(s.bfloat16())
    assert torch.equal(s, before) and q16.dtype == torch.float32
    torch.testing.assert_close(q16.sum(1), torch.ones(len(s)), rtol=0, atol=1e-5)


# --- 2 gloo ranks, uneven shards, reproduce one process on all columns ----------------------

SPLIT = 10  # rank 0 holds 10 rows, rank 1 the other 14: uneven on purpose


def _worker(rank, store, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        s = _scores()
        mine = s[:SPLIT] if rank == 0 else s[SPLIT:]
        torch.save(sinkhorn_knopp(mine, 0.05, 3), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_two_ranks_give_the_single_process_codes(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    both = torch.cat([torch.load(tmp_path / f"rank{r}.pt") for r in range(2)])
    single = sinkhorn_knopp(_scores(), 0.05, 3)
    torch.testing.assert_close(both, single, rtol=1e-5, atol=1e-7)
    # Local-only normalisation would differ: the all-reduce is what makes them equal.
    local = torch.cat([sinkhorn_knopp(_scores()[:SPLIT]), sinkhorn_knopp(_scores()[SPLIT:])])
    assert not torch.allclose(local, single, atol=1e-3)
