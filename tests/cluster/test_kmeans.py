"""Spherical k-means: recovers separated clusters, is seeded, and 2 ranks agree with 1 process."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from fastssl.cluster import assign_nearest, spherical_kmeans


def _blobs(n_per=20, k=4, d=16, noise=0.05, seed=0):
    """k tight clusters of unit vectors around random directions; labels by cluster."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(k, d, generator=g), dim=1)
    labels = torch.arange(k).repeat_interleave(n_per)
    x = F.normalize(centres[labels] + noise * torch.randn(k * n_per, d, generator=g), dim=1)
    perm = torch.randperm(len(x), generator=g)
    return x[perm], labels[perm]


def _reference_kmeans(x, k, iters, seed):
    """main_deepclusterv2.py cluster_memory at world size 1 (init from a global randperm)."""
    centroids = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:k]].clone()
    for _ in range(iters):
        assign = (x @ centroids.T).max(dim=1).indices
        for c in range(k):
            members = x[assign == c]
            if len(members):
                centroids[c] = F.normalize(members.mean(0), dim=0)
    return centroids, (x @ centroids.T).max(dim=1).indices


def _objective(x, centroids, assign):
    return (x * centroids[assign]).sum(1).mean().item()  # mean cosine to the own centroid


def test_matches_the_reference_loop():
    x, _ = _blobs(k=5, noise=0.4)
    ours_c, ours_a = spherical_kmeans(x, 6, 10, seed=4)
    ref_c, ref_a = _reference_kmeans(x, 6, 10, seed=4)
    torch.testing.assert_close(ours_c, ref_c, rtol=1e-5, atol=1e-6)
    assert torch.equal(ours_a, ref_a)


def test_iterations_improve_the_objective_and_centroids_are_unit():
    x, _ = _blobs(k=4, noise=0.3)
    one = spherical_kmeans(x, 4, 1, seed=0)
    ten = spherical_kmeans(x, 4, 10, seed=0)
    assert _objective(x, *ten) >= _objective(x, *one) - 1e-6
    torch.testing.assert_close(ten[0].norm(dim=1), torch.ones(4))
    assert torch.equal(ten[1], assign_nearest(x, ten[0]))


def test_seeded_and_deterministic():
    x, _ = _blobs(seed=2)
    c1, a1 = spherical_kmeans(x, 5, 10, seed=7)
    c2, a2 = spherical_kmeans(x, 5, 10, seed=7)
    assert torch.equal(c1, c2) and torch.equal(a1, a2)
    c3, _ = spherical_kmeans(x, 5, 10, seed=8)
    assert not torch.equal(c1, c3)


def test_empty_clusters_keep_a_finite_centroid():
    # 6 distinct points (each repeated), k = 6: clusters may empty out; nothing becomes NaN.
    x = F.normalize(torch.randn(6, 3), dim=1).repeat(3, 1)
    centroids, assign = spherical_kmeans(x, 6, 10, seed=0)
    assert bool(torch.isfinite(centroids).all()) and assign.max() < 6


def test_too_few_features_is_an_error():
    with pytest.raises(ValueError, match="lower k"):
        spherical_kmeans(torch.randn(3, 4), 5)


def test_chunked_assignment_equals_one_matrix():
    x, _ = _blobs(n_per=30)
    c = F.normalize(torch.randn(7, 16), dim=1)
    assert torch.equal(assign_nearest(x, c, max_elements=7 * 5), assign_nearest(x, c))


# --- 2 gloo ranks -------------------------------------------------------------------------------

SPLIT = 33  # uneven shards: rank 0 holds 33 of the 80 features


def _worker(rank, store, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        x, _ = _blobs(seed=5)
        mine = x[:SPLIT] if rank == 0 else x[SPLIT:]
        centroids, assign = spherical_kmeans(mine, 4, 10, seed=3)
        # What every rank believes the whole set's assignments are (all-gather of the pieces).
        sizes = [SPLIT, len(x) - SPLIT]
        parts = [torch.zeros(s, dtype=torch.long) for s in sizes]
        _gather_uneven(parts, assign, rank)
        torch.save({"centroids": centroids, "assign": assign, "all": torch.cat(parts)},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _gather_uneven(parts, mine, rank):
    # gloo's all_gather needs equal sizes: broadcast each rank's piece instead.
    for r, p in enumerate(parts):
        if r == rank:
            p.copy_(mine)
        dist.broadcast(p, src=r)


@pytest.mark.distributed
def test_assignments_identical_on_every_rank_and_equal_one_process(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert torch.equal(r0["centroids"], r1["centroids"])
    assert torch.equal(r0["all"], r1["all"])
    x, _ = _blobs(seed=5)
    centroids, assign = spherical_kmeans(x, 4, 10, seed=3)
    torch.testing.assert_close(r0["centroids"], centroids, rtol=1e-5, atol=1e-6)
    assert torch.equal(r0["all"], assign)
    assert torch.equal(torch.cat([r0["assign"], r1["assign"]]), assign)
