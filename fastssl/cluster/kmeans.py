"""Spherical k-means on L2-normalised features sharded over ranks (DeepCluster v2).

As `cluster_memory` of facebookresearch/swav main_deepclusterv2.py: similarity is the dot
product of unit vectors, the E step assigns each feature to its most similar centroid (local to
the rank that holds it), the M step averages each cluster's features (sums and counts
all-reduced) and renormalises; a cluster that lost every member keeps its old centroid. After
the last M step one more E step gives the final assignments, as in the reference.

Deviation: the reference draws the initial centroids from rank 0's features only. Here they are
drawn from the *global* feature set (a seeded permutation of global indices; each rank
contributes the rows it owns and the sum is all-reduced), so the result does not depend on the
number of ranks: R ranks reproduce one process on the concatenated features.

Similarities are computed in chunks of rows so that at most `max_elements` exist at once
(ImageNet's 1.28 M features against 3,000 centroids would otherwise need 15 GB).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from fastssl.distributed import dp_group, dp_rank, dp_size, is_dist

DEFAULT_MAX_ELEMENTS = 1 << 24  # similarities held at once: 64 MiB of fp32


def _all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    if is_dist():
        dist.all_reduce(x, op=dist.ReduceOp.SUM, group=dp_group())
    return x


def _rank_sizes(n_local: int, device: torch.device) -> list[int]:
    """Number of features on every rank, in rank order."""
    sizes = torch.zeros(dp_size(), dtype=torch.long, device=device)
    sizes[dp_rank()] = n_local
    return _all_reduce_sum(sizes).tolist()


@torch.no_grad()
def assign_nearest(x: torch.Tensor, centroids: torch.Tensor,
                   max_elements: int = DEFAULT_MAX_ELEMENTS) -> torch.Tensor:
    """Index of the most similar centroid `[N]` for unit features `x` `[N, D]`, `centroids` `[K, D]`.

    Ties go to the lower centroid index (torch.max's documented choice), on every rank alike.
    """
    chunk = max(1, max_elements // max(len(centroids), 1))
    out = [(x[i : i + chunk].float() @ centroids.float().t()).argmax(dim=1) for i in range(0, len(x), chunk)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=x.device)


@torch.no_grad()
def _initial_centroids(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k distinct features drawn uniformly from the global set `[K, D]`, identical on every rank."""
    sizes = _rank_sizes(len(x), x.device)
    total = sum(sizes)
    if total < k:
        raise ValueError(f"k-means with k={k} needs at least k features, got {total}; lower k")
    picked = torch.randperm(total, generator=generator)[:k].to(x.device)  # [K] global indices
    start = sum(sizes[: dp_rank()])
    mine = (picked >= start) & (picked < start + len(x))  # [K] rows this rank holds
    centroids = torch.zeros(k, x.shape[1], device=x.device, dtype=torch.float32)
    centroids[mine] = x[picked[mine] - start].float()
    return _all_reduce_sum(centroids)


@torch.no_grad()
def spherical_kmeans(x: torch.Tensor, k: int, iterations: int = 10, seed: int = 0,
                     max_elements: int = DEFAULT_MAX_ELEMENTS) -> tuple[torch.Tensor, torch.Tensor]:
    """(centroids `[K, D]`, assignments `[N_local]`) of this rank's unit features `x` `[N_local, D]`.

    Under torch.distributed every rank calls this with its own rows and the same k, iterations
    and seed; the centroids come out identical on every rank.
    """
    x = F.normalize(x.float(), dim=1)
    generator = torch.Generator().manual_seed(seed)
    centroids = _initial_centroids(x, k, generator)  # [K, D]
    for _ in range(iterations):
        assignments = assign_nearest(x, centroids, max_elements)  # [N] E step, local
        sums = torch.zeros_like(centroids).index_add_(0, assignments, x)  # [K, D]
        counts = torch.bincount(assignments, minlength=k).to(x.dtype)  # [K]
        stats = _all_reduce_sum(torch.cat([sums, counts[:, None]], dim=1))  # [K, D + 1] one collective
        sums, counts = stats[:, :-1], stats[:, -1]
        filled = counts > 0
        centroids[filled] = F.normalize(sums[filled], dim=1)  # mean direction = normalised sum
    return centroids, assign_nearest(x, centroids, max_elements)
