"""I-JEPA's predictor: a narrow ViT from the context tokens to the target blocks' representations.

Assran et al. 2023, Sec. 3 and facebookresearch/ijepa src/models/vision_transformer.py
(`VisionTransformerPredictor`): the context encoder's tokens are projected to the predictor's
width and given their fixed sine-cosine positions; for each of the M target blocks, one shared
learned mask token per target patch, plus that patch's position, is appended; the transformer runs
on [context, mask tokens] once per target block, and the outputs at the mask tokens are projected
back to the encoder's width. It is only used during pre-training (ViT-H/14: 12 blocks, 384 wide).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fastssl.models.block_stack import vit_block_stack
from fastssl.models.pos_embed import sincos_pos_embed_2d


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x [N, L, D], idx [N, K] patch indices -> [N, K, D] (src/masks/utils.py apply_masks, one mask)."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class IJEPAPredictor(nn.Module):
    def __init__(self, encoder_dim: int, dim: int, depth: int, num_heads: int, grid: tuple[int, int],
                 mlp_ratio: float = 4.0, init_std: float = 0.02):
        super().__init__()
        # Built first, so that its width check precedes the position embedding's; the weights are
        # drawn again in registration order by _init_weights, so the order of creation is moot.
        blocks, norm = vit_block_stack(dim, depth, num_heads, mlp_ratio, ("pred_dim", "pred_heads"))
        self.embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        # Fixed (the reference's predictor_pos_embed has requires_grad=False); a buffer keeps it out
        # of the optimiser and of gradient all-reduces.
        self.register_buffer("pos_embed", sincos_pos_embed_2d(dim, *grid, cls_token=False), persistent=False)
        # vit_predictor: mlp_ratio 4, qkv_bias True, LayerNorm(eps=1e-6).
        self.blocks, self.norm = blocks, norm
        self.proj = nn.Linear(dim, encoder_dim)
        self._init_weights(init_std)

    def _init_weights(self, std: float) -> None:
        # VisionTransformerPredictor: trunc-normal(0.02) Linears and mask token, zero biases, unit
        # LayerNorms; then fix_init_weight divides block l's output projections by sqrt(2 l).
        nn.init.trunc_normal_(self.mask_token, std=std)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        with torch.no_grad():
            for layer, blk in enumerate(self.blocks, start=1):
                blk.attn.proj.weight.div_(math.sqrt(2.0 * layer))
                blk.mlp.fc2.weight.div_(math.sqrt(2.0 * layer))

    def forward(self, context: torch.Tensor, ctx_idx: torch.Tensor, tgt_idx: torch.Tensor) -> torch.Tensor:
        """context [N, Lc, D_enc] at patches ctx_idx [N, Lc]; targets tgt_idx [M, N, Lt] -> [M, N, Lt, D_enc]."""
        m, n, lt = tgt_idx.shape
        # In x's dtype: a fp32 buffer would promote bf16 activations (DeepSpeed's bf16 weights).
        pos = self.pos_embed.to(context.dtype).expand(n, -1, -1)  # [N, L, D]
        x = self.embed(context) + gather_tokens(pos, ctx_idx)  # [N, Lc, D]
        queries = self.mask_token + gather_tokens(pos.repeat(m, 1, 1), tgt_idx.flatten(0, 1))  # [M*N, Lt, D]
        # One sequence per target block: the context, then that block's mask tokens (mask-major, as
        # the reference's x.repeat(len(masks), 1, 1)).
        x = torch.cat([x.repeat(m, 1, 1), queries], dim=1)  # [M*N, Lc + Lt, D]
        for blk in self.blocks:
            x = blk(x)
        x = self.proj(self.norm(x[:, -lt:]))  # [M*N, Lt, D_enc]: the predictions at the mask tokens
        return x.unflatten(0, (m, n))  # [M, N, Lt, D_enc]
