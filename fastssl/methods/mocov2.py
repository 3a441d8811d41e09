"""MoCo v2 (He et al. 2020, "Momentum Contrast"; Chen, Fan, Girshick, He 2020, "Improved Baselines").

A query encoder f_q (backbone + MLP head) and a momentum key encoder f_k; negatives come from a
queue of the K most recent keys. Per step (the paper's Algorithm 1):

    q = f_q(x_q)                          # [n, d] queries, with gradients
    k = f_k(x_k)                          # [n, d] positive keys, no gradient
    l_pos = q . k                         # [n, 1]
    l_neg = q @ queue.T                   # [n, K]
    loss = CE([l_pos, l_neg] / T, 0)      # the positive is class 0
    f_k = m f_k + (1 - m) f_q             # by the engine (momentum_pairs), m = 0.999
    enqueue(k); dequeue the oldest        # commit_step: only after a successful step

Across ranks the keys of the whole global batch are gathered (no gradient) and enqueued in rank
order, so every rank holds the same queue and the run does not depend on the number of ranks
(lightly's per-rank queue does: lightly-ai/lightly#1018). The queue is a buffer, initialised from
the run's seed like the weights (so the same on every rank), checkpointed and restored on resume.

BatchNorm (`bn`): "shuffle" is the paper's Shuffling BN with `shuffle_bn_groups` groups over the
global batch (shuffle_bn.py; on one rank by sub-batch splitting); "sync" turns every BN into
SyncBatchNorm (the engine does; `sync_batchnorm` tells it), as solo-learn does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastssl.config import MoCoV2Config
from fastssl.distributed import all_gather_no_grad, dp_rank, dp_size
from fastssl.errors import FastSSLError
from fastssl.losses import info_nce
from fastssl.methods.base import SSLMethod
from fastssl.methods.momentum import frozen_copy
from fastssl.methods.shuffle_bn import (
    average_bn_statistics_,
    convert_split_batchnorm,
    shuffle_across_ranks,
    unshuffle_across_ranks,
)
from fastssl.models.backbone import Backbone
from fastssl.models.heads import mlp
from fastssl.registry import METHODS


@METHODS.register("mocov2", config=MoCoV2Config)
class MoCoV2(SSLMethod):
    def __init__(self, backbone: Backbone, cfg: MoCoV2Config):
        super().__init__(backbone, cfg)
        # main_moco.py --mlp: fc(2048)-ReLU-fc(128), no BatchNorm in the head.
        self.projector = mlp(backbone.num_features, cfg.proj_hidden_dim, cfg.proj_dim, 2, hidden_bn=False)
        splits = self.bn_splits_per_rank()
        if splits > 1:  # the query encoder's BN is per group too, as per GPU in the paper
            self.backbone = convert_split_batchnorm(self.backbone, splits)
        self.key_backbone, self.key_projector = frozen_copy(self.backbone), frozen_copy(self.projector)
        # One queue per key view: [0] holds view-2 keys; symmetric adds view-1 keys, so each
        # query meets negatives of its positive's view (solo-learn mocov2plus.py, 2 queues).
        views = 2 if cfg.symmetric else 1
        queue = F.normalize(torch.randn(views, cfg.queue_size, cfg.proj_dim), dim=-1)  # [V, K, d]
        self.register_buffer("queue", queue)
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))  # next slot to overwrite
        self._pending_keys: list[torch.Tensor] = []  # [V, N, d] per micro-batch, enqueued in commit_step

    @property
    def sync_batchnorm(self) -> bool:
        """For the engine: convert BN to SyncBN only with bn="sync" (ShuffleBN needs per-rank BN)."""
        return self.cfg.bn == "sync"

    def bn_splits_per_rank(self) -> int:
        cfg, world = self.cfg, dp_size()
        if cfg.bn != "shuffle":
            return 1
        if cfg.shuffle_bn_groups % world:
            raise FastSSLError(f"method.shuffle_bn_groups={cfg.shuffle_bn_groups} is not a multiple of the world size "
                               f"{world}; set --method.shuffle_bn_groups to a multiple of {world}")
        return cfg.shuffle_bn_groups // world

    def fp32_state(self) -> list[torch.Tensor]:
        return [self.queue]

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.key_backbone), (self.projector, self.key_projector)]

    # --- encoders ------------------------------------------------------------------------------
    def forward_query(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projector(self.backbone(x)), dim=1)  # [n, d]

    @torch.no_grad()
    def forward_key(self, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys of this rank's images [n, d] and of the global batch [N, d], rank-major."""
        n, rank = x.shape[0], dp_rank()
        if self.cfg.bn == "shuffle":
            x_shuffled, undo = shuffle_across_ranks(x, seed)  # [n, 3, H, W], from all ranks
            k_all = unshuffle_across_ranks(self.key_projector(self.key_backbone(x_shuffled)), undo)  # [N, d]
        else:
            k_all = all_gather_no_grad(self.key_projector(self.key_backbone(x)))  # [N, d]
        k_all = F.normalize(k_all.float(), dim=1)
        return k_all[rank * n : (rank + 1) * n], k_all

    # --- loss ----------------------------------------------------------------------------------
    def forward_loss(self, q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
        """InfoNCE of queries q [n, d] with their keys k [n, d] against the queue [K, d]."""
        cfg = self.cfg
        if cfg.in_batch_negatives:  # the global batch's other keys are negatives too
            return info_nce(q, k, queue=queue, temperature=cfg.temperature, impl=cfg.loss_impl, gather_distributed=True)
        l_pos = (q * k).sum(1, keepdim=True)  # [n, 1]
        l_neg = q @ queue.T.to(q.dtype)  # [n, K]
        logits = torch.cat([l_pos, l_neg], dim=1) / cfg.temperature  # [n, 1 + K]
        labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)  # the positive is column 0
        return F.cross_entropy(logits.float(), labels)

    def forward(self, views: list[torch.Tensor], step: int = 0, schedule_len: float = 1.0) -> dict[str, torch.Tensor]:
        x1, x2 = views[0], views[1]  # [n, 3, H, W] each
        self._check_batch(x1.shape[0])
        if self.cfg.symmetric:
            q1, q2 = self.forward_query(x1), self.forward_query(x2)  # [n, d] each
            (k1, k1_all), (k2, k2_all) = self.forward_key(x1, 2 * step), self.forward_key(x2, 2 * step + 1)
            # solo-learn mocov2plus.py: the mean of both directions, each against its key view's queue.
            loss = (self.forward_loss(q1, k2, self.queue[1]) + self.forward_loss(q2, k1, self.queue[0])) / 2
            self._pending_keys.append(torch.stack([k1_all, k2_all]))  # [2, N, d]
            pos_sim = ((q1 * k2).sum(1).mean() + (q2 * k1).sum(1).mean()).detach() / 2
        else:
            q = self.forward_query(x1)  # [n, d]
            k, k_all = self.forward_key(x2, 2 * step)  # [n, d], [N, d]
            loss = self.forward_loss(q, k, self.queue[0])
            self._pending_keys.append(k_all[None])  # [1, N, d]
            pos_sim = (q * k).sum(1).mean().detach()
        return {"loss": loss, "pos_sim": pos_sim}

    def start_step(self) -> None:
        self._pending_keys = []

    @torch.no_grad()
    def commit_step(self, step: int, schedule_len: float) -> None:
        """Enqueue the step's global keys over the oldest ones (the queue is a ring of K slots)."""
        if self.cfg.bn == "shuffle":
            average_bn_statistics_(self)  # per-rank BN statistics -> the same on every replica
        pending, self._pending_keys = self._pending_keys, []
        if not pending:
            return
        # Micro-batch j's keys are rank-major [V, R * m, d]; reorder to the global batch's order
        # (rank-major, then micro-batch), so the queue is the same for any number of micro-batches.
        micro = torch.stack(pending)  # [J, V, R * m, d]
        j, v, _, d = micro.shape
        keys = micro.view(j, v, dp_size(), -1, d).permute(1, 2, 0, 3, 4).reshape(v, -1, d)  # [V, N, d]
        n_all, k = keys.shape[1], self.queue.shape[1]
        slots = (self.queue_ptr + torch.arange(n_all, device=keys.device)) % k  # [N]; K % N == 0, so no wrap
        self.queue.index_copy_(1, slots, keys.to(self.queue.dtype))
        self.queue_ptr.copy_((self.queue_ptr + n_all) % k)

    def _check_batch(self, n: int) -> None:
        cfg, world = self.cfg, dp_size()
        n_all = n * world
        if cfg.queue_size % n_all:
            raise FastSSLError(f"method.queue_size={cfg.queue_size} is not a multiple of the global batch {n_all} "
                               f"(MoCo enqueues whole batches); set --method.queue_size to a multiple of {n_all}")
        splits = self.bn_splits_per_rank()
        if n % splits:
            raise FastSSLError(f"the {n} images per rank do not split into {splits} ShuffleBN groups; set "
                               f"--method.shuffle_bn_groups to a divisor of the global batch {n_all}")
