"""Launch configs of the fused contrastive kernels, per GPU architecture, dtype and feature width.

Why a table: one tile size cannot serve every chip. Shared memory per block ranges from 64 KiB
(Turing) to 227 KiB (Hopper, datacenter Blackwell), and the tiles that fill a Hopper SM overflow
an RTX 3090/4090 (launch fails with OutOfResources) or spill registers to local memory (runs
slowly). Only (architecture, dtype, d) combinations listed here run the Triton kernels; for
anything else `fastssl.losses` picks the memory-linear chunked torch path.

Every entry is compiled ahead of time for its architecture by tests/kernels/test_aot_compile.py
(Triton's compiler and bundled ptxas, no GPU): its shared memory must fit SMEM_BYTES and its
register spills must stay within SPILL_BYTES. `python -m fastssl_kernels.aot` prints the table
of measured shared memory, registers and spills.

Speed is unmeasured on every chip: the tiles are the sm_90 ones (themselves picked from
compiles, not timings), shrunk where a chip needs it (tune with `fastssl bench loss`
where a GPU is at hand).

Limits: no Volta (sm_70), no sm_87 (Jetson Orin), no other capability not listed here, and no
bf16 on Turing (it has no bf16 tensor cores).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

# Largest shared memory one block may opt into, in bytes: CUDA C++ Programming Guide,
# "Technical Specifications per Compute Capability" (64 KB on 7.5, 163 KB on 8.0, 99 KB on
# 8.6/8.9/12.0, 227 KB on 9.0/10.0; KB = 1024 B). torch's inductor tests identify A100 and H100
# by these same device-reported values (166,912 and 232,448).
SMEM_BYTES = {
    75: 65_536,
    80: 166_912,
    86: 101_376,
    89: 101_376,
    90: 232_448,
    100: 232_448,
    120: 101_376,
}
# Register spills (bytes of stack frame per thread) a config may have. A spill is a round trip to L1/L2
# inside the key loop; a few hundred bytes of cold values cost little, kilobytes cost a lot.
SPILL_BYTES = 256

# Padded feature width: a config for bucket 128 runs every d in 65..128.
D_BUCKETS = (64, 128, 256)
# fwd: the forward pass; rows: backward over query-row blocks (dq, and the whole gradient when
# keys are the queries); cols: backward over key blocks (dk of gathered keys).
KINDS = ("fwd", "rows", "cols")
DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


class Tile(NamedTuple):
    block_m: int  # query rows per tile
    block_n: int  # keys per tile
    num_warps: int
    num_stages: int
    # tl.dot input precision. fp32 inputs use 3xTF32 (near-fp32 accuracy on tensor cores) where
    # the chip has TF32 (sm_80+); 2-byte inputs ignore it.
    precision: str = "tf32"


def _table(fwd: dict, rows: dict, cols: dict, precision: str = "tf32") -> dict[str, dict[int, Tile]]:
    # {kind: {d bucket: Tile}} from {d bucket: (block_m, block_n, warps, stages)} per kind.
    return {
        kind: {bucket: Tile(*cfg, precision=precision) for bucket, cfg in by_d.items()}
        for kind, by_d in (("fwd", fwd), ("rows", rows), ("cols", cols))
    }


# (block_m, block_n, num_warps, num_stages) per d bucket, per kernel kind. Each is the first
# candidate, from the sm_90 tile down to 16 x 16, that fits the chip's shared memory and spills
# at most 64 B under Triton 3.8 (`python -m fastssl_kernels.aot`), a quarter of SPILL_BYTES so
# that other Triton/ptxas versions have room.

# bf16/fp16 on 160+ KiB parts (A100, H100/H200, B200): the tiles first picked for sm_90.
_2B_FWD = {64: (128, 128, 8, 3), 128: (128, 128, 8, 3), 256: (128, 64, 8, 3)}
_2B_ROWS = {64: (128, 64, 8, 3), 128: (128, 32, 8, 3), 256: (64, 32, 8, 3)}
_2B_COLS = {64: (64, 128, 8, 3), 128: (32, 128, 8, 3), 256: (64, 64, 8, 3)}
_2B_LARGE_SMEM = _table(_2B_FWD, _2B_ROWS, _2B_COLS)
# bf16/fp16 on 99 KiB parts (RTX 30xx/40xx/50xx, A10, L4, L40): at d = 256 the forward drops to
# 2 stages (3 need 132,096 B) and the key pass to 32 x 128 at 2 stages (64 x 64 needs 108,032 B).
_2B_99K_SMEM = _table({**_2B_FWD, 256: (128, 64, 8, 2)}, _2B_ROWS, {**_2B_COLS, 256: (32, 128, 8, 2)})
# fp16 on Turing (64 KiB, no cp.async pipelining, no bf16 tensor cores: bf16 is left to the
# chunked path there). The sm_90 tiles need up to 196,608 B there and spill kilobytes.
_FP16_SM75 = _table(
    fwd={64: (64, 64, 8, 2), 128: (64, 32, 8, 2), 256: (32, 32, 4, 2)},
    rows={64: (64, 32, 8, 2), 128: (32, 32, 8, 2), 256: (16, 32, 8, 2)},
    cols={64: (32, 64, 8, 2), 128: (32, 32, 8, 2), 256: (16, 32, 8, 2)},
)
# fp32 runs 3xTF32: three tensor-core products per tile and split operands, so far more live
# registers than 2-byte inputs; at d = 256 the backward needs 16-row tiles not to spill (the
# former 64 x 32 key pass spilled 6,992 B/thread on sm_90). The key pass (cols) came out the
# same on every sm_80+ chip; the forward and row pass differ by chip.
_FP32_TF32X3_COLS = {64: (64, 32, 4, 3), 128: (32, 32, 4, 3), 256: (16, 16, 8, 3)}


def _fp32_tf32x3(fwd: dict, rows: dict) -> dict[str, dict[int, Tile]]:
    return _table(fwd, rows, _FP32_TF32X3_COLS, precision="tf32x3")


_FP32_SM80 = _fp32_tf32x3(
    fwd={64: (64, 64, 4, 3), 128: (64, 32, 4, 3), 256: (16, 32, 4, 2)},
    rows={64: (32, 64, 4, 3), 128: (32, 32, 8, 3), 256: (16, 16, 8, 3)},
)
# 99 KiB parts: the d = 128 forward drops to 2 stages (3 need 114,688 B).
_FP32_SM86 = _fp32_tf32x3(
    fwd={64: (64, 64, 4, 3), 128: (64, 32, 4, 2), 256: (16, 32, 4, 2)},
    rows={64: (64, 32, 4, 3), 128: (32, 32, 8, 3), 256: (16, 32, 8, 3)},
)
_FP32_SM90 = _fp32_tf32x3(
    fwd={64: (64, 64, 4, 3), 128: (64, 32, 4, 3), 256: (16, 32, 4, 2)},
    rows={64: (64, 32, 4, 3), 128: (32, 32, 4, 3), 256: (16, 32, 8, 2)},
)
_FP32_SM100 = _fp32_tf32x3(
    fwd={64: (64, 64, 4, 3), 128: (64, 32, 8, 3), 256: (16, 32, 4, 2)},
    rows={64: (64, 32, 8, 3), 128: (32, 32, 8, 3), 256: (16, 16, 8, 3)},
)
_FP32_SM120 = _fp32_tf32x3(
    fwd={64: (64, 32, 4, 3), 128: (32, 64, 4, 2), 256: (16, 32, 4, 2)},
    rows={64: (32, 64, 4, 3), 128: (32, 32, 8, 3), 256: (16, 16, 8, 3)},
)
# Turing has no TF32: fp32 tiles multiply in IEEE fp32 on the FMA units.
_FP32_SM75 = _table(
    fwd={64: (64, 64, 8, 2), 128: (64, 32, 8, 2), 256: (16, 32, 4, 2)},
    rows={64: (64, 32, 8, 2), 128: (32, 32, 4, 2), 256: (16, 32, 4, 2)},
    cols={64: (32, 64, 8, 2), 128: (32, 32, 4, 2), 256: (16, 32, 4, 2)},
    precision="ieee",
)


def _per_dtype(two_byte: dict, fp32: dict, bf16: bool = True) -> dict[str, dict]:
    out = {"fp16": two_byte, "fp32": fp32}
    if bf16:
        out["bf16"] = two_byte
    return out


# TILES[capability][dtype name][kind][d bucket]
TILES: dict[int, dict[str, dict[str, dict[int, Tile]]]] = {
    75: _per_dtype(_FP16_SM75, _FP32_SM75, bf16=False),  # T4, RTX 20xx
    80: _per_dtype(_2B_LARGE_SMEM, _FP32_SM80),  # A100, A800, A30
    86: _per_dtype(_2B_99K_SMEM, _FP32_SM86),  # RTX 30xx, A10, A40
    89: _per_dtype(_2B_99K_SMEM, _FP32_SM86),  # RTX 40xx, L4, L40
    90: _per_dtype(_2B_LARGE_SMEM, _FP32_SM90),  # H100, H200, H20
    100: _per_dtype(_2B_LARGE_SMEM, _FP32_SM100),  # B200, GB200
    120: _per_dtype(_2B_99K_SMEM, _FP32_SM120),  # RTX 50xx, RTX PRO 6000 Blackwell
}


def arch(capability: tuple[int, int]) -> int:
    """(8, 6) -> 86, the key of SMEM_BYTES and TILES."""
    return capability[0] * 10 + capability[1]


def d_bucket(d: int) -> int | None:
    """Smallest bucket >= d, or None above the widest."""
    return next((b for b in D_BUCKETS if d <= b), None)


def tile(capability: tuple[int, int], dtype: torch.dtype, kind: str, d: int) -> Tile | None:
    """The config of kernel `kind` for this chip, dtype and feature width; None if there is none."""
    bucket = d_bucket(d)
    by_dtype = TILES.get(arch(capability), {}).get(DTYPE_NAMES.get(dtype, ""), {})
    return by_dtype.get(kind, {}).get(bucket) if bucket is not None else None


def has_config(capability: tuple[int, int], dtype: torch.dtype, d: int) -> bool:
    """Whether every kernel (forward and both backward passes) has a config here."""
    return all(tile(capability, dtype, kind, d) is not None for kind in KINDS)


__all__ = ["D_BUCKETS", "KINDS", "SMEM_BYTES", "SPILL_BYTES", "TILES", "Tile", "arch", "d_bucket", "has_config", "tile"]
