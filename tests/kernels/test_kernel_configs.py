"""The per-architecture tile table: complete, well-formed, and looked up by capability/dtype/d."""

import pytest
import torch
from fastssl_kernels import configs


def test_every_listed_architecture_has_a_shared_memory_limit():
    assert set(configs.TILES) == set(configs.SMEM_BYTES)
    assert {75, 80, 86, 89, 90, 100, 120} <= set(configs.TILES)


@pytest.mark.parametrize("arch", sorted(configs.TILES))
def test_tiles_are_complete_and_well_formed(arch):
    by_dtype = configs.TILES[arch]
    assert {"fp32", "fp16"} <= set(by_dtype)
    for dtype, by_kind in by_dtype.items():
        assert set(by_kind) == set(configs.KINDS)
        for kind, by_d in by_kind.items():
            assert set(by_d) == set(configs.D_BUCKETS), (dtype, kind)
            for tile in by_d.values():
                for b in (tile.block_m, tile.block_n):
                    assert 16 <= b <= 128 and b & (b - 1) == 0, tile  # tl.dot's minimum, powers of two
                assert tile.num_warps in (2, 4, 8) and 1 <= tile.num_stages <= 4
                if dtype == "fp32":
                    # TF32 tensor cores exist from sm_80 on; Turing multiplies fp32 in IEEE.
                    assert tile.precision == ("tf32x3" if arch >= 80 else "ieee")


def test_lookup_by_capability_dtype_and_width():
    bf16 = configs.TILES[90]["bf16"]
    assert configs.tile((9, 0), torch.bfloat16, "fwd", 1) == bf16["fwd"][64]
    assert configs.tile((9, 0), torch.bfloat16, "fwd", 65) == bf16["fwd"][128]
    assert configs.tile((9, 0), torch.bfloat16, "cols", 256) == bf16["cols"][256]
    assert configs.tile((9, 0), torch.bfloat16, "fwd", 257) is None
    assert configs.tile((9, 0), torch.float64, "fwd", 64) is None
    assert configs.tile((7, 0), torch.float16, "fwd", 64) is None
    assert configs.has_config((8, 6), torch.float32, 200)
    assert not configs.has_config((8, 7), torch.float32, 64)
    assert configs.arch((12, 0)) == 120 and configs.d_bucket(129) == 256 and configs.d_bucket(300) is None
