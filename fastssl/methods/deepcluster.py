"""DeepCluster v2 (Caron et al. 2020, App. A.3 of the SwAV paper): k-means pseudo-labels as targets.

At every epoch start the training set is embedded (projector output, L2-normalised) and
clustered by spherical k-means, once per head with its own k (`num_prototypes`, "3000,3000,3000"
in facebookresearch/swav main_deepclusterv2.py); the centroids become that head's frozen
prototypes. During the epoch each crop's embedding is scored against every head's prototypes
and trained with cross-entropy (temperature T) towards its image's cluster:

    loss = mean over heads h of  CE(z_v . C_h / T, y_h)  over all crops v

Where the pseudo-label y_h comes from (the one deviation from the paper). The reference looks
up each image's assignment by its dataset index, from the k-means of the epoch start. This
protocol's batches carry no dataset indices, so y_h is recomputed per batch by the *same
labelling function*: the nearest centroid of the embedding that a frozen copy of the network,
taken at the epoch start (`snapshot_*`, the weights and BN statistics that produced the
k-means features), gives to one global crop (crop h % 2, as the reference alternates its two
memory banks over heads). The labelling thus stays fixed for the epoch, as in the paper; it is
applied to this epoch's augmentation of the image rather than to the last epoch's. It costs one
no-grad forward of the assignment crops per step and one copy of the weights.

Also as the reference: the prototypes are never trained (its --freeze_prototypes_niters exceeds
the run), and k-means is distributed: each rank embeds its slice of the training set, assigns
locally and all-reduces the centroid sums (`fastssl.cluster.spherical_kmeans`), so every rank
holds the same centroids. The reference clusters a memory bank of the previous epoch's training
embeddings instead of a fresh pass (which costs about one extra forward over the data per epoch).

Needs the trainer to call `on_epoch_start(epoch, images)` before each epoch's first step.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from fastssl.cluster import assign_nearest, spherical_kmeans
from fastssl.config.clustering import DeepClusterV2Config
from fastssl.methods.base import SSLMethod
from fastssl.methods.momentum import ema_update_, frozen_copy
from fastssl.methods.multicrop import forward_multicrop
from fastssl.models.backbone import Backbone
from fastssl.models.heads import mlp
from fastssl.registry import METHODS


@METHODS.register("deepcluster", config=DeepClusterV2Config)
class DeepClusterV2(SSLMethod):
    def __init__(self, backbone: Backbone, cfg: DeepClusterV2Config):
        super().__init__(backbone, cfg)
        self.projector = mlp(backbone.num_features, cfg.proj_hidden_dim, cfg.proj_dim, 2)
        self.snapshot_backbone, self.snapshot_projector = frozen_copy(backbone), frozen_copy(self.projector)
        for h, k in enumerate(cfg.ks()):
            self.register_buffer(f"centroids{h}", torch.zeros(k, cfg.proj_dim))  # head h's prototypes
        self.register_buffer("clustered_epoch", torch.tensor(-1, dtype=torch.long))

    def centroids(self) -> list[torch.Tensor]:
        return [getattr(self, f"centroids{h}") for h in range(len(self.cfg.ks()))]

    def shard_units(self) -> list[nn.Module]:
        # The snapshot is sharded exactly like the online network, so copying it is shard-local.
        return [*super().shard_units(), *self.snapshot_backbone.blocks()]

    def forward_embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projector(self.backbone(x)), dim=1)  # [N, proj_dim]

    @torch.no_grad()
    def forward_snapshot(self, x: torch.Tensor) -> torch.Tensor:
        """Epoch-start embeddings `[N, proj_dim]`, BN on its running statistics (eval mode)."""
        modules = (self.snapshot_backbone, self.snapshot_projector)
        modes = [m.training for m in modules]
        for m in modules:
            m.eval()
        try:
            return F.normalize(self.snapshot_projector(self.snapshot_backbone(x)).float(), dim=1)
        finally:
            for m, mode in zip(modules, modes):
                m.train(mode)

    @torch.no_grad()
    def on_epoch_start(self, epoch: int, images: Callable[[], Iterable[torch.Tensor]]) -> None:
        """Snapshot the network, embed this rank's training images, k-means every head."""
        ema_update_(self.snapshot_backbone, self.backbone, 0.0)  # momentum 0: an exact copy
        ema_update_(self.snapshot_projector, self.projector, 0.0)
        device = self.centroids0.device
        parts = [self.forward_snapshot(x.to(device, non_blocking=True)) for x in images()]
        # k-means in fp32 whatever the engine computes in (bf16 would blur the assignments).
        feats = torch.cat(parts).float() if parts else torch.zeros(0, self.cfg.proj_dim, device=device)  # [N_local, D]
        for h, k in enumerate(self.cfg.ks()):
            # Seeded by (epoch, head): every rank draws the same initial centroids, and a
            # resumed run re-clusters exactly as the uninterrupted one would.
            centroids, _ = spherical_kmeans(feats, k, self.cfg.kmeans_iters, seed=1000 * epoch + h)
            getattr(self, f"centroids{h}").copy_(centroids)
        self.clustered_epoch.fill_(epoch)

    def forward(self, views: list[torch.Tensor], step: int = 0, schedule_len: float = 1.0) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        if int(self.clustered_epoch) < 0:
            raise RuntimeError("DeepClusterV2 has no clusters yet: the trainer must call "
                               "method.on_epoch_start(epoch, images) before each epoch's first step")
        b, n_views = views[0].shape[0], len(views)  # views: 2 global [B, 3, S, S] + local crops
        z = forward_multicrop(self.forward_embed, views).float()  # [V * B, proj_dim]
        assign = [self.forward_snapshot(views[a]) for a in range(cfg.num_assign_crops)]  # [B, D] each
        loss = z.new_zeros(())
        agree = z.new_zeros(())
        for h, centroids in enumerate(self.centroids()):
            logits = z @ centroids.t() / cfg.temperature  # [V * B, K]
            targets = assign_nearest(assign[h % cfg.num_assign_crops], centroids)  # [B]
            loss = loss + F.cross_entropy(logits, targets.repeat(n_views))
            with torch.no_grad():
                agree = agree + (logits.argmax(1) == targets.repeat(n_views)).float().mean()
        heads = len(self.centroids())
        # pseudo_acc: how often a crop's nearest prototype already is its pseudo-label.
        return {"loss": loss / heads, "pseudo_acc": agree / heads}
