"""Colourful image colourisation (Zhang, Isola, Efros, ECCV 2016), simplified: L in, ab bins out.

Each view is converted to CIE Lab on the device. The network sees only the lightness L and
predicts, for each cell of a coarse grid, a distribution over the quantised ab colours; the loss
is the cross-entropy against soft-encoded targets, each cell weighted by the rarity of its
colour (class rebalancing) so that the prediction does not collapse to desaturated greys.

Adaptations, and why:
- Input: L is turned back into the grey RGB image of that lightness (a = b = 0, so R = G = B)
  and normalised like every RGB image. The backbone stays an RGB encoder, and kNN, linear and
  fine-tuning probes feed it RGB images as usual: a grey image is exactly what it was trained on,
  a colour image differs only by its colour.
- Output: fastssl's backbone contract gives pooled features [N, D] (no feature maps), so an MLP
  decodes them into `out_cells` x `out_cells` ab distributions instead of the paper's per-pixel
  map at 1/4 resolution from a fully convolutional net. Extending the contract with feature maps
  would buy little at the sizes fastssl targets on CPUs (resnet-tiny's last map is 2 x 2 at
  16 px) and would leave the pooled features, which every probe evaluates, untrained.
- Bins: the in-gamut cells of an `ab_grid`-wide grid computed from the sRGB gamut (261 at grid
  10 against the paper's 313; see lab_colour.py); a coarser grid suits tiny images.
- Rebalancing prior: estimated from the ab cells of the images seen so far (buffer `ab_counts`,
  all-reduced across ranks, added in `commit_step`), not precomputed over the dataset.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
import torch.nn.functional as F

from fastssl.config.pretext import ColorizeConfig
from fastssl.distributed import dp_group, is_dist
from fastssl.errors import FastSSLError
from fastssl.methods.base import SSLMethod
from fastssl.methods.lab_colour import (
    ab_bin_centres,
    annealed_mean,
    gray_rgb,
    nearest_bin,
    rebalance_weights,
    rgb_to_lab,
    soft_encode,
)
from fastssl.models.backbone import Backbone
from fastssl.models.heads import mlp
from fastssl.registry import METHODS

if TYPE_CHECKING:
    from fastssl.config import Config
    from fastssl.data.views import ViewSpec

# richzhang/colorization caffe_traininglayers.py NonGrayMaskLayer: an image is grey when no
# (subsampled) ab value exceeds 5 in magnitude.
GRAY_THRESHOLD = 5.0


@METHODS.register("colorize", config=ColorizeConfig)
class Colorize(SSLMethod):
    def __init__(self, backbone: Backbone, cfg: ColorizeConfig):
        super().__init__(backbone, cfg)
        centres = ab_bin_centres(cfg.ab_grid)  # [Q, 2]
        self.num_bins, self.cells = centres.shape[0], cfg.out_cells
        self.register_buffer("ab_centres", centres)
        self.register_buffer("ab_counts", torch.zeros(self.num_bins))  # colour histogram of the data seen
        self.register_buffer("rgb_mean", torch.tensor(cfg.rgb_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("rgb_std", torch.tensor(cfg.rgb_std).view(1, 3, 1, 1), persistent=False)
        self.decoder = mlp(backbone.num_features, cfg.decoder_hidden_dim, self.num_bins * self.cells**2, 2)
        self._next_counts: list[torch.Tensor] = []  # [Q] per micro-batch, added in commit_step

    @classmethod
    def view_spec(cls, cfg: "Config") -> "ViewSpec":
        from fastssl.data.views import views_from_aug

        m = cfg.method
        for ours, theirs in (("rgb_mean", "normalize_mean"), ("rgb_std", "normalize_std")):
            if not all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(getattr(m, ours), getattr(cfg.aug, theirs))):
                raise FastSSLError(
                    f"--method.{ours}={getattr(m, ours)} differs from --aug.{theirs}={getattr(cfg.aug, theirs)}; "
                    f"set --method.{ours} to the loader's normalisation"
                )
        if cfg.data.image_size < m.out_cells:
            raise FastSSLError(f"--method.out_cells={m.out_cells} exceeds data.image_size={cfg.data.image_size}; lower it")
        return views_from_aug(cfg.aug, cfg.data.image_size, num_global=1)

    # --- the colour space --------------------------------------------------------------------
    def split_lab(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised RGB views [N, 3, H, W] -> L [N, 1, H, W] and ab [N, 2, H, W]."""
        rgb = (x.float() * self.rgb_std + self.rgb_mean).clamp(0, 1)
        lab = rgb_to_lab(rgb)
        return lab[:, :1], lab[:, 1:]

    def grey_input(self, L: torch.Tensor) -> torch.Tensor:
        """L [N, 1, H, W] -> the grey RGB image, normalised like the loader's RGB [N, 3, H, W]."""
        return (gray_rgb(L) - self.rgb_mean) / self.rgb_std

    def make_targets(self, ab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ab [N, 2, H, W] -> soft targets [M, Q], nearest bins [M], colourful-image mask [M].

        M = N * cells^2: ab is averaged over each cell of the out_cells x out_cells grid.
        """
        cells = F.adaptive_avg_pool2d(ab, self.cells)  # [N, 2, g, g]
        flat = cells.permute(0, 2, 3, 1).reshape(-1, 2)  # [M, 2], cell-major per image
        cfg = self.cfg
        soft = soft_encode(flat, self.ab_centres, cfg.soft_neighbours, cfg.soft_sigma)  # [M, Q]
        hard = nearest_bin(flat, self.ab_centres)  # [M]
        colourful = cells.abs().flatten(1).amax(1) > GRAY_THRESHOLD  # [N]
        if not cfg.skip_gray:
            colourful = torch.ones_like(colourful)
        return soft, hard, colourful.repeat_interleave(self.cells**2)

    # --- the network ---------------------------------------------------------------------------
    def forward_logits(self, grey: torch.Tensor) -> torch.Tensor:
        """Grey input [N, 3, H, W] -> ab-bin logits per cell [N * cells^2, Q]."""
        out = self.decoder(self.backbone(grey))  # [N, cells^2 * Q]
        return out.view(-1, self.num_bins)

    @torch.no_grad()
    def predict_ab(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised RGB [N, 3, H, W] -> predicted ab per cell [N, 2, g, g] (annealed mean)."""
        L, _ = self.split_lab(x)
        probs = self.forward_logits(self.grey_input(L)).float().softmax(1)  # [M, Q]
        ab = annealed_mean(probs, self.ab_centres, self.cfg.decode_temperature)  # [M, 2]
        return ab.view(x.shape[0], self.cells, self.cells, 2).permute(0, 3, 1, 2)

    def forward(self, views: list[torch.Tensor], step: int = 0, schedule_len: float = 1.0) -> dict[str, torch.Tensor]:
        x = views[0]  # [N, 3, H, W], normalised RGB
        with torch.autocast(x.device.type, enabled=False), torch.no_grad():
            L, ab = self.split_lab(x)  # [N, 1, H, W], [N, 2, H, W]
            grey = self.grey_input(L)  # [N, 3, H, W]
            soft, hard, colourful = self.make_targets(ab)  # [M, Q], [M], [M]
            counts = torch.bincount(hard[colourful], minlength=self.num_bins).float()  # [Q]
            if is_dist():
                dist.all_reduce(counts, group=dp_group())  # every rank weighs with the same prior
            self._next_counts.append(counts)
            weights = rebalance_weights(self.ab_counts + counts, self.ab_centres, self.cfg.rebalance_lambda,
                                        self.cfg.prior_sigma)[hard] * colourful  # [M]
        logits = self.forward_logits(grey.to(x.dtype))  # [M, Q]
        ce = -(soft * F.log_softmax(logits.float(), dim=1)).sum(1)  # [M]
        # Mean over every cell, grey ones included (weight 0), as the reference's loss layer.
        loss = (weights * ce).sum() / ce.shape[0]
        with torch.no_grad():
            hits = (logits.argmax(1) == hard) & colourful
            accuracy = hits.sum() / colourful.sum().clamp(min=1)
        return {"loss": loss, "colour_acc": accuracy, "colourful": colourful.float().mean()}

    def start_step(self) -> None:
        self._next_counts = []

    @torch.no_grad()
    def commit_step(self, step: int, schedule_len: float) -> None:
        if self._next_counts:
            self.ab_counts += torch.stack(self._next_counts).sum(0)
        self._next_counts = []
