"""MAE (He et al., 2022): mask most patches, encode the visible ones, reconstruct the pixels of the rest.

One view per image (RandomResizedCrop + flip, no colour). Each image's patches are shuffled by
random noise and only the first `keep = int(L * (1 - mask_ratio))` are encoded: the encoder never
sees a mask token, which is what makes a 75% mask ratio cheap. A lightweight decoder
(`fastssl.models.mae_decoder`) fills the masked positions with a mask token and predicts every
patch's pixels; the loss is the MSE on masked patches only, against per-patch normalised pixels
(`norm_pix_loss`).

Follows facebookresearch/mae models_mae.py; the encoder is the fastssl ViT backbone
(`embed_patches` -> visible tokens -> `forward_tokens`), with MAE's fixed sine-cosine position
embedding. Sharding units are the encoder's and the decoder's blocks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from fastssl.config import MAEConfig
from fastssl.methods.batch_draws import local_rows, step_generator
from fastssl.errors import FastSSLError
from fastssl.methods.base import SSLMethod
from fastssl.models.backbone import Backbone
from fastssl.models.mae_decoder import MAEDecoder
from fastssl.models.pos_embed import sincos_pos_embed_2d
from fastssl.registry import METHODS

if TYPE_CHECKING:
    from fastssl.config import Config
    from fastssl.data.views import ViewSpec


def patchify(imgs: torch.Tensor, p: int) -> torch.Tensor:
    """[N, C, H, W] -> [N, L, p*p*C], patches row-major, pixels (row, col, channel) as MAE's."""
    n, c, H, W = imgs.shape
    h, w = H // p, W // p
    x = imgs.reshape(n, c, h, p, w, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(n, h * w, p * p * c)


def unpatchify(x: torch.Tensor, p: int, hw: tuple[int, int] | None = None, c: int = 3) -> torch.Tensor:
    """[N, L, p*p*C] -> [N, C, h*p, w*p]; the grid is square unless `hw` is given."""
    n, L, _ = x.shape
    h, w = hw if hw is not None else (int(round(L**0.5)),) * 2
    if h * w != L:
        raise ValueError(f"{L} patches do not fill a {h}x{w} grid; pass hw")
    x = x.reshape(n, h, w, p, p, c)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(n, c, h * p, w * p)


def random_masking(x: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None):
    """Per-sample random masking by per-sample shuffling (models_mae.py random_masking).

    x [N, L, D] -> visible tokens [N, keep, D], mask [N, L] (0 keep, 1 masked), ids_restore [N, L].
    Every sample keeps exactly keep = int(L * (1 - mask_ratio)) patches: the ones with the
    smallest noise.
    """
    n, L, d = x.shape
    keep = int(L * (1 - mask_ratio))
    if noise is None:
        noise = torch.rand(n, L, device=x.device)  # [N, L] in [0, 1)
    ids_shuffle = torch.argsort(noise, dim=1)  # ascending: small is kept, large is masked
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :keep]  # [N, keep]
    x_visible = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d))  # [N, keep, D]
    mask = torch.ones(n, L, device=x.device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)  # back to image order
    return x_visible, mask, ids_restore


@METHODS.register("mae", config=MAEConfig)
class MAE(SSLMethod):
    needs_vit = True  # Config.validate refuses a ResNet

    def __init__(self, backbone: Backbone, cfg: MAEConfig):
        super().__init__(backbone, cfg)
        if int(backbone.num_patches * (1 - cfg.mask_ratio)) < 1:
            raise FastSSLError(f"method.mask_ratio={cfg.mask_ratio} leaves no visible patch out of {backbone.num_patches}; "
                               "lower --method.mask_ratio or --model.patch_size")
        vit = backbone.trunk
        self.grid = tuple(int(g) for g in vit.patch_embed.grid_size)  # (h, w) patches
        # models_mae.py: the encoder's position embedding is the fixed 2-D sine-cosine one too
        # (frozen; fine-tuning unfreezes it, as MAE's main_finetune does by building a fresh ViT).
        with torch.no_grad():
            vit.pos_embed.copy_(sincos_pos_embed_2d(backbone.embed_dim, *self.grid, cls_token=True))
        vit.pos_embed.requires_grad_(False)
        self.decoder = MAEDecoder(backbone.embed_dim, cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_heads,
                                  self.grid, backbone.patch_size)

    @classmethod
    def view_spec(cls, cfg: "Config") -> "ViewSpec":
        from fastssl.data.views import single_view

        return single_view(cfg.aug, cfg.data.image_size)

    def shard_units(self) -> list[nn.Module]:
        return [*self.backbone.blocks(), *self.decoder.blocks]

    # --- encoder ---------------------------------------------------------------------------------
    def masking_noise(self, n: int, L: int, device: torch.device, step: int) -> torch.Tensor:
        """[n, L] noise for this rank's images: the step's global-batch noise, sliced to these rows.

        Drawn from a generator of (seed, step) for the whole global batch, so image i of the global
        batch gets the same mask on 1 rank or on 8, in one batch or in K micro-batches
        (fastssl/methods/batch_draws.py), and a resumed run draws it again.
        """
        start, stop, n_global = local_rows(n)
        return torch.rand(n_global, L, generator=step_generator(step, "mae-mask"))[start:stop].to(device)

    def forward_encoder(self, imgs: torch.Tensor, mask_ratio: float, step: int = 0):
        x = self.backbone.embed_patches(imgs)  # [N, L, D] with positions
        noise = self.masking_noise(x.shape[0], x.shape[1], x.device, step)
        x, mask, ids_restore = random_masking(x, mask_ratio, noise)  # [N, keep, D]
        latent = self.backbone.forward_tokens(x)  # [N, 1 + keep, D]: class token, blocks, norm
        return latent, mask, ids_restore

    # --- decoder ---------------------------------------------------------------------------------
    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        return self.decoder(latent, ids_restore)  # [N, L, p*p*3]

    # --- loss ------------------------------------------------------------------------------------
    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error per patch, averaged over the masked patches only.

        imgs [N, 3, H, W], pred [N, L, p*p*3], mask [N, L] (1 = masked).
        """
        target = patchify(imgs.float(), self.backbone.patch_size)  # [N, L, p*p*3]
        if self.cfg.norm_pix_loss:
            # Each patch's pixels normalised by their own mean and (unbiased) variance (Sec. 3).
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        loss = (pred.float() - target) ** 2
        loss = loss.mean(dim=-1)  # [N, L], per patch
        return (loss * mask).sum() / mask.sum()

    def forward(self, views: list[torch.Tensor], step: int = 0, schedule_len: float = 1.0) -> dict[str, torch.Tensor]:
        imgs = views[0]  # [N, 3, H, W]: MAE's single view
        latent, mask, ids_restore = self.forward_encoder(imgs, self.cfg.mask_ratio, step)
        pred = self.forward_decoder(latent, ids_restore)  # [N, L, p*p*3]
        loss = self.forward_loss(imgs, pred, mask)
        return {"loss": loss}
