"""SwAV (Caron et al. 2020): swapped prediction of online cluster codes over multi-crop views.

Every crop's embedding z (projector output, L2-normalised) is scored against K prototypes c_k
(unit vectors, a bias-free linear layer renormalised after every step). The codes q of the two
global crops come from Sinkhorn-Knopp on those scores, equipartitioned over the global batch
(`fastssl.cluster.sinkhorn_knopp`, sums all-reduced). Every other crop predicts them:

    loss = mean over assignment crops a, and crops v != a, of  -sum_k q_a,k log softmax(z_v . c / T)_k

as facebookresearch/swav main_swav.py. Its other pieces, in this protocol:
- the queue (`queue_length` > 0, from epoch `queue_start_epoch`): the embeddings of recent
  batches' assignment crops join the Sinkhorn problem once the queue is full, so that small
  batches still spread over K prototypes. It holds every rank's embeddings (pushed with an
  all-gather in `commit_step`, so only successful steps fill it and it is identical on every
  rank); in the Sinkhorn step each rank contributes a disjoint slice of it, so R ranks solve the
  same problem as one process on the global batch. (swav keeps one queue per rank instead.)
- prototypes frozen for `freeze_prototypes_epochs` (`frozen_params`, honoured by every engine);
- prototypes renormalised in `commit_step` (swav does it before each step: the same sequence).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastssl.cluster import sinkhorn_knopp
from fastssl.config.clustering import SwAVConfig
from fastssl.distributed import all_gather_no_grad, dp_rank, dp_size
from fastssl.methods.base import SSLMethod
from fastssl.methods.multicrop import forward_multicrop
from fastssl.models.backbone import Backbone
from fastssl.models.heads import mlp
from fastssl.local_shard import local_tensor
from fastssl.registry import METHODS


@METHODS.register("swav", config=SwAVConfig)
class SwAV(SSLMethod):
    def __init__(self, backbone: Backbone, cfg: SwAVConfig):
        super().__init__(backbone, cfg)
        # swav src/resnet50.py: projection_head = Linear(2048, hidden_mlp)-BN-ReLU-Linear(feat_dim).
        self.projector = mlp(backbone.num_features, cfg.proj_hidden_dim, cfg.proj_dim, 2)
        self.prototypes = nn.Linear(cfg.proj_dim, cfg.num_prototypes, bias=False)
        self.normalize_prototypes()
        # Embeddings of the assignment crops of the last `queue_length` images, newest first.
        self.register_buffer("queue", torch.zeros(cfg.num_assign_crops, cfg.queue_length, cfg.proj_dim))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))
        self._pending: list[torch.Tensor] = []  # [A, B, proj_dim] per micro-batch, enqueued in commit_step

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        w = local_tensor(self.prototypes.weight)  # [K, D]; an FSDP shard holds whole rows
        w.copy_(F.normalize(w, dim=1))

    def forward_embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projector(self.backbone(x)), dim=1)  # [N, proj_dim]

    def queue_in_use(self) -> bool:
        return self.cfg.queue_length > 0 and int(self.queue_filled) >= self.cfg.queue_length

    @torch.no_grad()
    def codes(self, scores: torch.Tensor, crop: int) -> torch.Tensor:
        """Sinkhorn codes `[B, K]` of one assignment crop's scores `[B, K]`, queue included."""
        cfg, b = self.cfg, scores.shape[0]
        scores = scores.detach().float()
        if self.queue_in_use():
            # This rank's disjoint slice of the (replicated) queue joins the global problem.
            rows = torch.tensor_split(torch.arange(cfg.queue_length), dp_size())[dp_rank()]
            queued = self.queue[crop, rows.to(self.queue.device)]  # [L / R, D]
            scores = torch.cat([self.prototypes(queued).float(), scores])  # [L / R + B, K]
        return sinkhorn_knopp(scores, cfg.epsilon, cfg.sinkhorn_iterations)[-b:]

    def forward(self, views: list[torch.Tensor], step: int = 0, schedule_len: float = 1.0) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        b, n_views = views[0].shape[0], len(views)  # views: 2 global [B, 3, S, S] + local crops
        z = forward_multicrop(self.forward_embed, views)  # [V * B, proj_dim]
        scores = self.prototypes(z).float()  # [V * B, K] cosine similarities
        log_p = F.log_softmax(scores / cfg.temperature, dim=1).view(n_views, b, -1)  # [V, B, K]
        loss = scores.new_zeros(())
        code_max = scores.new_zeros(())
        for a in range(cfg.num_assign_crops):
            q = self.codes(scores[a * b : (a + 1) * b], a)  # [B, K]
            others = [v for v in range(n_views) if v != a]
            # Swapped prediction: every other crop predicts crop a's code.
            subloss = -(q[None] * log_p[others]).sum(-1).mean(-1)  # [V - 1]
            loss = loss + subloss.mean()
            code_max = code_max + q.max(dim=1).values.mean()
        self._pending.append(z.detach().view(n_views, b, -1)[: cfg.num_assign_crops])  # [A, B, proj_dim]
        a = cfg.num_assign_crops
        return {"loss": loss / a, "code_max": code_max / a,
                "queue_in_use": torch.tensor(float(self.queue_in_use()))}

    def frozen_params(self, step: int, epoch: int) -> list[nn.Parameter]:
        # As swav: no update, no weight decay, no momentum. The base after_backward drops the
        # gradient (DDP, FSDP2); DeepSpeed ZeRO freezes it inside its partitions.
        if epoch < self.cfg.freeze_prototypes_epochs:
            return [self.prototypes.weight]
        return []

    def start_step(self) -> None:
        self._pending = []

    @torch.no_grad()
    def commit_step(self, step: int, schedule_len: float) -> None:
        cfg = self.cfg
        if cfg.queue_length > 0 and self._pending and self.epoch_of(step) >= cfg.queue_start_epoch:
            pending = torch.cat(self._pending, dim=1)  # [A, B, D]: the step's micro-batches in row order
            new = all_gather_no_grad(pending.transpose(0, 1).contiguous()).transpose(0, 1)  # [A, R * B, D]
            self.queue.copy_(torch.cat([new.to(self.queue.dtype), self.queue], dim=1)[:, : cfg.queue_length])
            self.queue_filled.fill_(min(cfg.queue_length, int(self.queue_filled) + new.shape[1]))
        self._pending = []
        self.normalize_prototypes()
