"""Method configs of the clustering family; each method registers its class with it (fastssl/registry.py).

Every default cites its paper or repository.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastssl.config.methods import MethodConfig


@dataclass
class SwAVConfig(MethodConfig):
    name: str = "swav"
    # Caron et al. 2020, facebookresearch/swav main_swav.py: --hidden_mlp 2048, --feat_dim 128
    # (projection head Linear-BN-ReLU-Linear, then L2-normalised), --nmb_prototypes 3000.
    # Keep num_prototypes > proj_dim: otherwise an embedding orthogonal to every prototype
    # difference scores them all alike, and uniform predictions are a trivial minimum.
    proj_hidden_dim: int = 2048
    proj_dim: int = 128
    num_prototypes: int = 3000
    # main_swav.py: --temperature 0.1, --epsilon 0.05, --sinkhorn_iterations 3.
    temperature: float = 0.1
    epsilon: float = 0.05
    sinkhorn_iterations: int = 3
    # main_swav.py: --crops_for_assign 0 1 (codes come from the two global crops). 1 or 2.
    num_assign_crops: int = 2
    # main_swav.py: --queue_length 0 (off) and --epoch_queue_starts 15; the README's batch-256
    # runs use a 3840-long queue. The queue holds all ranks' embeddings (global length).
    queue_length: int = 0
    queue_start_epoch: int = 15
    # main_swav.py --freeze_prototypes_niters 313: one ImageNet epoch at batch 4096 (1.28 M / 4096).
    freeze_prototypes_epochs: int = 1

    def check(self) -> list[tuple[str, str]]:
        problems = super().check()
        if self.num_prototypes < 1:
            problems.append(("num_prototypes", f"must be >= 1, got {self.num_prototypes}"))
        if self.epsilon <= 0:
            problems.append(("epsilon", f"must be > 0, got {self.epsilon}"))
        if self.sinkhorn_iterations < 1:
            problems.append(("sinkhorn_iterations", f"must be >= 1, got {self.sinkhorn_iterations}"))
        if self.num_assign_crops not in (1, 2):
            problems.append(("num_assign_crops", f"must be 1 or 2 (the global crops), got {self.num_assign_crops}"))
        if self.queue_length < 0:
            problems.append(("queue_length", f"must be >= 0 (0 = no queue), got {self.queue_length}"))
        return problems


@dataclass
class DeepClusterV2Config(MethodConfig):
    name: str = "deepcluster"
    # Caron et al. 2020 (SwAV paper, App. A.3 "DeepCluster-v2"), facebookresearch/swav
    # main_deepclusterv2.py: --hidden_mlp 2048, --feat_dim 128, L2-normalised embeddings.
    proj_hidden_dim: int = 2048
    proj_dim: int = 128
    # main_deepclusterv2.py README: --nmb_prototypes 3000 3000 3000 (three k-means, one head each;
    # they differ by their random init and the crop whose embedding they cluster). Comma-separated.
    num_prototypes: str = "3000,3000,3000"
    # main_deepclusterv2.py: --temperature 0.1; cluster_memory(nmb_kmeans_iters=10).
    temperature: float = 0.1
    kmeans_iters: int = 10
    # main_deepclusterv2.py: --crops_for_assign 0 1; head h takes crop h % 2's assignment.
    num_assign_crops: int = 2

    def ks(self) -> list[int]:
        """The k of each head, from `num_prototypes`."""
        return [int(v) for v in str(self.num_prototypes).split(",") if v.strip()]

    def check(self) -> list[tuple[str, str]]:
        problems = super().check()
        try:
            ks = self.ks()
            if not ks or min(ks) < 2:
                problems.append(("num_prototypes", f"needs k >= 2 per head, got {self.num_prototypes!r}"))
        except ValueError:
            problems.append(("num_prototypes", f"is a comma-separated list of ints, e.g. 3000,3000,3000; "
                                               f"got {self.num_prototypes!r}"))
        if self.kmeans_iters < 1:
            problems.append(("kmeans_iters", f"must be >= 1, got {self.kmeans_iters}"))
        if self.num_assign_crops not in (1, 2):
            problems.append(("num_assign_crops", f"must be 1 or 2 (the global crops), got {self.num_assign_crops}"))
        return problems
