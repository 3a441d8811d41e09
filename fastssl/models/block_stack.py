"""The narrow ViT that MAE's decoder and I-JEPA's predictor run: a stack of timm blocks.

Both references build it the same way (facebookresearch/mae models_mae.py, facebookresearch/ijepa
src/models/vision_transformer.py `VisionTransformerPredictor`): timm `Block`s with qkv_bias=True
and LayerNorm(eps=1e-6), then one more LayerNorm. Each owner initialises the weights its own way.
"""

from __future__ import annotations

from functools import partial

from torch import nn

from fastssl.errors import FastSSLError


def vit_block_stack(dim: int, depth: int, num_heads: int, mlp_ratio: float,
                    keys: tuple[str, str]) -> tuple[nn.ModuleList, nn.LayerNorm]:
    """`depth` blocks of width `dim` and the final norm. `keys`: the method's config keys for the
    width and the head count, which the error names when `num_heads` does not divide `dim`."""
    from timm.models.vision_transformer import Block

    if dim % num_heads:
        width, heads = keys
        raise FastSSLError(f"method.{width}={dim} is not divisible by method.{heads}={num_heads}; "
                           f"change --method.{width} or --method.{heads}")
    norm = partial(nn.LayerNorm, eps=1e-6)
    blocks = nn.ModuleList([Block(dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm) for _ in range(depth)])
    return blocks, norm(dim)
