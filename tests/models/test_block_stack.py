"""The block stack of MAE's decoder and I-JEPA's predictor (fastssl/models/block_stack.py)."""

import pytest
from torch import nn

from fastssl.errors import FastSSLError
from fastssl.models.block_stack import vit_block_stack


def test_stack_is_the_references_blocks_and_final_norm():
    blocks, norm = vit_block_stack(24, 2, 3, 4.0, ("pred_dim", "pred_heads"))
    assert len(blocks) == 2 and isinstance(norm, nn.LayerNorm) and norm.eps == 1e-6
    blk = blocks[0]
    assert blk.attn.qkv.bias is not None and blk.attn.num_heads == 3 and blk.norm1.eps == 1e-6
    assert blk.mlp.fc1.out_features == 96


@pytest.mark.parametrize("keys", [("pred_dim", "pred_heads"), ("decoder_dim", "decoder_heads")])
def test_heads_not_dividing_the_width_name_the_owners_keys(keys):
    with pytest.raises(FastSSLError, match=f"--method.{keys[0]} or --method.{keys[1]}"):
        vit_block_stack(24, 1, 5, 4.0, keys)
