"""MAE's lightweight decoder (He et al. 2022, Sec. 3; facebookresearch/mae models_mae.py).

The decoder sees the full set of tokens: the encoded visible patches plus a shared, learned mask
token for every masked patch, put back in image order with `ids_restore`, plus fixed sine-cosine
positions. It is only used during pre-training, so it can be narrow and shallow (the paper's
default: 8 blocks, 512 wide, under 10% of the encoder's compute per token). Its last layer predicts
the p*p*3 pixel values of every patch.
"""

from __future__ import annotations

import torch
from torch import nn

from fastssl.models.block_stack import vit_block_stack
from fastssl.models.pos_embed import sincos_pos_embed_2d


class MAEDecoder(nn.Module):
    def __init__(self, encoder_dim: int, dim: int, depth: int, num_heads: int, grid: tuple[int, int],
                 patch_size: int, in_chans: int = 3, mlp_ratio: float = 4.0):
        super().__init__()
        # Built first, so that its width check precedes the position embedding's; the weights are
        # drawn again in registration order by _init_weights, so the order of creation is moot.
        blocks, norm = vit_block_stack(dim, depth, num_heads, mlp_ratio, ("decoder_dim", "decoder_heads"))
        num_patches = grid[0] * grid[1]
        self.embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        # Fixed, not learned (models_mae.py: requires_grad=False); a buffer keeps it out of the
        # optimiser and out of gradient all-reduces.
        self.register_buffer("pos_embed", sincos_pos_embed_2d(dim, *grid, cls_token=True), persistent=False)
        self.blocks, self.norm = blocks, norm
        self.pred = nn.Linear(dim, patch_size**2 * in_chans)
        self.num_patches = num_patches
        self._init_weights()

    def _init_weights(self) -> None:
        # models_mae.py initialize_weights: mask token ~ N(0, 0.02); Linear xavier_uniform with
        # zero bias (following the official JAX ViT); LayerNorm weight 1, bias 0.
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """latent [N, 1 + keep, D_enc] (class token first), ids_restore [N, L] -> pixels [N, L, p*p*3]."""
        x = self.embed(latent)  # [N, 1 + keep, D]
        n, L, d = x.shape[0], ids_restore.shape[1], x.shape[2]
        mask_tokens = self.mask_token.expand(n, L + 1 - x.shape[1], d)  # [N, L - keep, D]
        x_ = torch.cat([x[:, 1:], mask_tokens], dim=1)  # [N, L, D] in shuffled order, no class token
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).expand(-1, -1, d))  # unshuffle: image order
        # In x's dtype: a fp32 buffer would promote bf16 activations (DeepSpeed's bf16 weights) to
        # fp32, which the bf16 LayerNorm of the next block refuses.
        x = torch.cat([x[:, :1], x_], dim=1) + self.pos_embed.to(x.dtype)  # [N, 1 + L, D]
        for blk in self.blocks:
            x = blk(x)
        x = self.pred(self.norm(x))  # [N, 1 + L, p*p*3]
        return x[:, 1:]  # drop the class token: [N, L, p*p*3]
