"""Fixed 2-D sine-cosine position embeddings (MAE: He et al. 2022, facebookresearch/mae util/pos_embed.py).

MAE adds them, frozen, to both the encoder and the decoder inputs ("We add positional embeddings
(the sine-cosine version) to both the encoder and decoder inputs", Sec. 3). Half the channels
encode the column, half the row; each half is the 1-D Transformer embedding
[sin(pos * w_k), cos(pos * w_k)] with w_k = 1 / 10000^(k / (D/4)).
"""

from __future__ import annotations

import torch

from fastssl.errors import FastSSLError


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """[M] positions -> [M, dim] (dim even): sin of dim/2 frequencies, then cos of the same."""
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega  # [dim/2]
    out = pos.reshape(-1).double()[:, None] * omega[None]  # [M, dim/2]
    return torch.cat([out.sin(), out.cos()], dim=1)


def sincos_pos_embed_2d(dim: int, grid_h: int, grid_w: int, cls_token: bool = True) -> torch.Tensor:
    """[1, (1 +) grid_h * grid_w, dim], row-major patches; the class token's position is zeros.

    As MAE's get_2d_sincos_pos_embed: its meshgrid(grid_w, grid_h) puts the column first, so the
    first dim/2 channels encode the column (x) and the last dim/2 the row (y).
    """
    if dim % 4:
        raise FastSSLError(f"sine-cosine position embeddings need a width divisible by 4, got {dim}; "
                           "pick --model.name / --method.decoder_dim with a multiple of 4")
    ys, xs = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")  # [h, w] each
    emb = torch.cat([sincos_1d(dim // 2, xs), sincos_1d(dim // 2, ys)], dim=1)  # [h * w, dim]
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim, dtype=emb.dtype), emb], dim=0)  # [1 + h * w, dim]
    return emb.float().unsqueeze(0)
