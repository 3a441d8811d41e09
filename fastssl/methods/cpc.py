"""Contrastive predictive coding, v2 (Hénaff et al., ICML 2020), compact.

The image is cut into a G x G grid of overlapping patches; the backbone encodes each patch on
its own into z [N, D, G, G]. A masked-convolution context network reads the grid top to bottom,
so its output c at row i has seen rows 0..i only, and a linear map W_k per offset k predicts the
features k rows below: z^_{i+k,j} = W_k c_{i,j}. InfoNCE (fastssl.losses.info_nce) scores each
prediction against its true patch, with every other target patch of the batch (other
positions, other images, other ranks) as negatives.

Offsets start at the first row that shares no pixels with row i (patches overlap by half at
the default stride), so copying the overlap cannot solve the task.

CPC v2 also predicts upwards and sideways (its Fig. 3, "BU" and "HP"): `directions` = 2 adds
bottom-up and 4 adds both horizontal directions, each by rotating the grid of features so that
the direction becomes top-down and running that direction's own context network.

Adaptations: the backbone keeps its BatchNorm (v2 swaps it for LayerNorm, since batch
statistics mix patches of one image) and no per-patch augmentation is applied; info_nce
compares cosine similarities at a temperature where CPC uses raw dot products; probes run the
backbone on whole images (fastssl's backbone contract), not on the patch grid.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from fastssl.config.pretext import CPCConfig
from fastssl.errors import FastSSLError
from fastssl.losses import info_nce
from fastssl.methods.base import SSLMethod
from fastssl.models.backbone import Backbone
from fastssl.models.cpc_context import ContextNetwork
from fastssl.registry import METHODS

if TYPE_CHECKING:
    from fastssl.config import Config
    from fastssl.data.views import ViewSpec

# Quarter turns of the feature grid that make each direction top-down: down, up, left, right.
GRID_TURNS = {1: (0,), 2: (0, 2), 4: (0, 2, 1, 3)}


def grid_size(image_size: int, patch: int, stride: int) -> int:
    return (image_size - patch) // stride + 1 if image_size >= patch else 0


def prediction_offsets(cfg: CPCConfig) -> list[int]:
    """Row offsets k to predict: from the first row not overlapping row i, pred_steps of them."""
    first = math.ceil(cfg.patch_size / cfg.patch_stride)
    return list(range(first, first + cfg.pred_steps))


def check_grid(cfg: CPCConfig, image_size: int) -> int:
    """The grid size G for `image_size`; every offset must leave a row to predict (k < G)."""
    g = grid_size(image_size, cfg.patch_size, cfg.patch_stride)
    offsets = prediction_offsets(cfg)
    if offsets[-1] >= g:
        fits = g - offsets[0]
        fix = f"lower --method.pred_steps to {fits}" if fits >= 1 else (
            "raise --data.image_size or lower --method.patch_size / --method.patch_stride")
        raise FastSSLError(
            f"{image_size} px images give a {g}x{g} grid of {cfg.patch_size} px patches at stride "
            f"{cfg.patch_stride}; predicting rows {offsets[0]}..{offsets[-1]} ahead needs {offsets[-1] + 1} rows: {fix}"
        )
    return g


def patch_grid(x: torch.Tensor, patch: int, stride: int) -> torch.Tensor:
    """x [N, C, S, S] -> patches [N, G, G, C, patch, patch], row-major from the top-left."""
    p = x.unfold(2, patch, stride).unfold(3, patch, stride)  # [N, C, G, G, patch, patch]
    return p.permute(0, 2, 3, 1, 4, 5)


@METHODS.register("cpc", config=CPCConfig)
class CPC(SSLMethod):
    def __init__(self, backbone: Backbone, cfg: CPCConfig):
        super().__init__(backbone, cfg)
        dim = backbone.num_features
        self.turns = GRID_TURNS[cfg.directions]
        self.context = nn.ModuleList(ContextNetwork(dim, cfg.context_dim, cfg.context_blocks) for _ in self.turns)
        # W_k for k = first .. first + pred_steps - 1, per direction (check_grid: all of them fit).
        self.predictors = nn.ModuleList(
            nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(cfg.pred_steps)) for _ in self.turns
        )

    @classmethod
    def view_spec(cls, cfg: "Config") -> "ViewSpec":
        from fastssl.data.views import views_from_aug

        check_grid(cfg.method, cfg.data.image_size)
        return views_from_aug(cfg.aug, cfg.data.image_size, num_global=1)

    def encode_patches(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, C, S, S] -> patch features z [N, D, G, G]."""
        cfg = self.cfg
        patches = patch_grid(x, cfg.patch_size, cfg.patch_stride)  # [N, G, G, C, P, P]
        n, g = patches.shape[0], patches.shape[1]
        z = self.backbone(patches.flatten(0, 2))  # [N*G*G, D]: one shared encoder per patch
        return z.view(n, g, g, -1).permute(0, 3, 1, 2)

    def predict(self, z: torch.Tensor, direction: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(predictions, targets) pairs, each [N * (G - k) * G, D], for every offset k.

        z [N, D, G, G] is turned so `direction` reads top-down; context row i predicts row i + k.
        """
        zd = torch.rot90(z, self.turns[direction], dims=(2, 3))  # [N, D, G, G]
        c = self.context[direction](zd)  # [N, D, G, G], row i from rows <= i
        g = zd.shape[-1]
        pairs = []
        for w_k, k in zip(self.predictors[direction], prediction_offsets(self.cfg)):
            pred = w_k(c[:, :, : g - k].permute(0, 2, 3, 1))  # [N, G-k, G, D]: W_k c_{i,j}
            target = zd[:, :, k:].permute(0, 2, 3, 1)  # [N, G-k, G, D]: z_{i+k,j}
            pairs.append((pred.flatten(0, 2), target.flatten(0, 2)))
        return pairs

    def forward(self, views: list[torch.Tensor], step: int = 0, schedule_len: float = 1.0) -> dict[str, torch.Tensor]:
        x = views[0]  # [N, 3, S, S]
        cfg = self.cfg
        check_grid(cfg, x.shape[-1])
        z = self.encode_patches(x)  # [N, D, G, G]
        losses, hits = [], []
        for d in range(len(self.turns)):
            for pred, target in self.predict(z, d):
                losses.append(info_nce(pred, target, temperature=cfg.temperature, impl=cfg.loss_impl,
                                       gather_distributed=cfg.gather_distributed))
                with torch.no_grad():  # local top-1: is the true patch the most similar of this rank's?
                    sim = nn.functional.normalize(pred.float(), dim=1) @ nn.functional.normalize(target.float(), dim=1).T
                    hits.append((sim.argmax(1) == torch.arange(sim.shape[0], device=sim.device)).float().mean())
        loss = torch.stack(losses).mean()
        return {"loss": loss, "cpc_acc": torch.stack(hits).mean()}
