"""RotNet (Gidaris, Singh, Komodakis, ICLR 2018): predict which of 4 rotations was applied.

Each image is rotated by 0, 90, 180 or 270 degrees (counter-clockwise, k quarter turns = class k)
and a classifier on the backbone's pooled features predicts k. Recognising the rotation of an
object requires locating and recognising it, which is what the features learn.

- `rotations="all"` (paper): all four rotated copies of every image in the same batch, [4N];
- `rotations="random"`: one rotation per image, drawn per step independently of the rank count
  (fastssl/methods/batch_draws.py), [N].

One view per image (RotNet's augmentation is a crop and a flip), built on-device from it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from fastssl.config.pretext import RotationConfig
from fastssl.methods.base import SSLMethod
from fastssl.methods.batch_draws import global_randint
from fastssl.models.backbone import Backbone
from fastssl.registry import METHODS

if TYPE_CHECKING:
    from fastssl.config import Config
    from fastssl.data.views import ViewSpec

NUM_ROTATIONS = 4


def rotate_quarter_turns(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Rotate image i of x [N, C, H, W] (square) by k[i] quarter turns counter-clockwise."""
    out = torch.empty_like(x)
    for r in range(NUM_ROTATIONS):
        rows = (k == r).nonzero(as_tuple=True)[0]
        if rows.numel():
            out[rows] = torch.rot90(x[rows], r, dims=(2, 3))
    return out


def all_rotations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [N, C, H, W] -> rotated copies [4N, C, H, W] (rotation-major) and labels [4N]."""
    n = x.shape[0]
    rotated = torch.cat([torch.rot90(x, r, dims=(2, 3)) for r in range(NUM_ROTATIONS)])
    labels = torch.arange(NUM_ROTATIONS, device=x.device).repeat_interleave(n)
    return rotated, labels


def rotation_head(in_dim: int, hidden_dim: int) -> nn.Module:
    if hidden_dim == 0:
        return nn.Linear(in_dim, NUM_ROTATIONS)
    return nn.Sequential(nn.Linear(in_dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim),
                         nn.ReLU(inplace=True), nn.Linear(hidden_dim, NUM_ROTATIONS))


@METHODS.register("rotation", config=RotationConfig)
class Rotation(SSLMethod):
    def __init__(self, backbone: Backbone, cfg: RotationConfig):
        super().__init__(backbone, cfg)
        self.head = rotation_head(backbone.num_features, cfg.head_hidden_dim)

    @classmethod
    def view_spec(cls, cfg: "Config") -> "ViewSpec":
        from fastssl.data.views import views_from_aug

        return views_from_aug(cfg.aug, cfg.data.image_size, num_global=1)

    def make_targets(self, x: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[-1] != x.shape[-2]:
            raise ValueError(f"rotation needs square views, got {tuple(x.shape[-2:])}")
        if self.cfg.rotations == "all":
            return all_rotations(x)  # [4N, C, H, W], [4N]
        k = global_randint(NUM_ROTATIONS, x.shape[0], step=step, salt="rotation", device=x.device)  # [N]
        return rotate_quarter_turns(x, k), k

    def forward(self, views: list[torch.Tensor], step: int = 0, schedule_len: float = 1.0) -> dict[str, torch.Tensor]:
        x = views[0]  # [N, 3, H, W]; further views (a loader not using view_spec) are ignored
        rotated, labels = self.make_targets(x, step)  # [M, 3, H, W], [M]; M = 4N or N
        logits = self.head(self.backbone(rotated))  # [M, 4]
        loss = F.cross_entropy(logits, labels)
        with torch.no_grad():
            accuracy = (logits.argmax(1) == labels).float().mean()
        return {"loss": loss, "rotation_acc": accuracy}
