"""NNCLR (Dwibedi, Aytar, Tompson, Sermanet & Zisserman 2021, "With a Little Help from My Friends:
Nearest-Neighbor Contrastive Learning of Visual Representations").

SimCLR's contrastive loss, but the positive of a view is the nearest neighbour of its projection
in a support set Q of past projections, not the projection itself. Per step (the paper's Sec. 3,
solo-learn methods/nnclr.py and losses/nnclr.py):

    z1, z2 = normalize(g(f(x1))), normalize(g(f(x2)))   # [n, d] projections
    p1, p2 = h(g(f(x1))), h(g(f(x2)))                   # [n, d] predictions
    nn1, nn2 = NN(z1, Q), NN(z2, Q)                     # [n, d] support-set rows, no gradient
    loss = ctr(nn1, p2) / 2 + ctr(nn2, p1) / 2          # symmetric
    ctr(a, p) = CE(a @ gather(p).T / T, rank * n + arange(n))   # normalised a, p
    enqueue(gather(z1)); dequeue the oldest             # commit_step: only after a successful step

The nearest neighbour is a lookup in Q, so no gradient reaches it (the paper's stop-gradient);
the predictions of every rank are the candidates, as SimCLR's gathered negatives. Q is shared by
all ranks as MoCo's queue (fastssl/methods/mocov2.py): every rank enqueues the global batch's
view-1 projections in rank order, so the run does not depend on the number of ranks. It is a
buffer initialised from the run's seed, kept fp32, checkpointed and restored on resume.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastssl.config.noncontrastive import NNCLRConfig
from fastssl.distributed import all_gather_no_grad, dp_size
from fastssl.errors import FastSSLError
from fastssl.losses import info_nce
from fastssl.methods.base import SSLMethod
from fastssl.models.backbone import Backbone
from fastssl.models.heads import mlp
from fastssl.registry import METHODS


@METHODS.register("nnclr", config=NNCLRConfig)
class NNCLR(SSLMethod):
    needs_pairs = True  # in-batch negatives: a rank alone needs >= 2 samples

    def __init__(self, backbone: Backbone, cfg: NNCLRConfig):
        super().__init__(backbone, cfg)
        # solo-learn nnclr.py: (Linear-BN-ReLU) x 2, Linear, BatchNorm1d (affine). The Linear
        # before that BN has no bias here: the BN's shift cancels it.
        self.projector = nn.Sequential(
            *mlp(backbone.num_features, cfg.proj_hidden_dim, cfg.proj_dim, cfg.proj_layers, last_bias=False),
            nn.BatchNorm1d(cfg.proj_dim))
        # solo-learn: Linear(d, 4096)-BN-ReLU-Linear(4096, d); the first Linear's bias is dropped
        # for the BN that follows it.
        self.predictor = mlp(cfg.proj_dim, cfg.pred_hidden_dim, cfg.proj_dim, 2)
        support = F.normalize(torch.randn(cfg.queue_size, cfg.proj_dim), dim=1)  # [K, d]
        self.register_buffer("support", support)
        self.register_buffer("support_ptr", torch.zeros((), dtype=torch.long))  # next slot to overwrite
        self._pending: torch.Tensor | None = None  # [N, d], set in forward, enqueued in commit_step

    def fp32_state(self) -> list[torch.Tensor]:
        return [self.support]

    @torch.no_grad()
    def nearest_neighbour(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """NN(z, Q): the support-set row most similar to each of z [n, d] (normalised), and that
        cosine similarity [n]."""
        sim = z.to(self.support.dtype) @ self.support.T  # [n, K], in the support set's fp32
        best, idx = sim.max(dim=1)  # [n] each
        return self.support[idx], best

    def contrast(self, nn_: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """ctr(nn, p): row i of nn [n, d] against the predictions of every rank [N, d]; its
        positive is p_i (solo-learn nnclr_loss_func)."""
        cfg = self.cfg
        return info_nce(nn_.to(p.dtype), p, temperature=cfg.temperature, impl=cfg.loss_impl, gather_distributed=True)

    def forward(self, views: list[torch.Tensor], step: int = 0, schedule_len: float = 1.0) -> dict[str, torch.Tensor]:
        x1, x2 = views[0], views[1]  # [n, 3, H, W] each
        self._check_batch(x1.shape[0])
        # Each view is its own pass, as solo-learn, so BatchNorm normalises each view's batch alone.
        h1, h2 = self.projector(self.backbone(x1)), self.projector(self.backbone(x2))  # [n, d] each
        p1, p2 = self.predictor(h1), self.predictor(h2)  # [n, d] each
        # The lookup and the queue in the support set's fp32, whatever the compute dtype.
        z1, z2 = (F.normalize(h.detach().to(self.support.dtype), dim=1) for h in (h1, h2))  # [n, d] each
        nn1, sim1 = self.nearest_neighbour(z1)  # [n, d], [n]
        nn2, sim2 = self.nearest_neighbour(z2)
        loss = self.contrast(nn1, p2) / 2 + self.contrast(nn2, p1) / 2
        self._pending = all_gather_no_grad(z1)  # [N, d], rank-major
        return {"loss": loss, "nn_sim": (sim1.mean() + sim2.mean()) / 2}

    @torch.no_grad()
    def commit_step(self, step: int, schedule_len: float) -> None:
        """Enqueue the step's global view-1 projections over the oldest ones (a ring of K slots)."""
        z, self._pending = self._pending, None
        if z is None:
            return
        n_all, k = z.shape[0], self.support.shape[0]
        slots = (self.support_ptr + torch.arange(n_all, device=z.device)) % k  # [N]; K % N == 0: no wrap
        self.support.index_copy_(0, slots, z.to(self.support.dtype))
        self.support_ptr.copy_((self.support_ptr + n_all) % k)

    def _check_batch(self, n: int) -> None:
        n_all, k = n * dp_size(), self.cfg.queue_size
        if k % n_all:
            raise FastSSLError(f"method.queue_size={k} is not a multiple of the global batch {n_all} (NNCLR's support "
                               f"set takes whole batches); set --method.queue_size to a multiple of {n_all}")
