"""Fused NT-Xent (SimCLR) and InfoNCE (MoCo) losses that never build the similarity matrix.

Why: contrastive losses compute S = Q K^T / t over every query/key pair. Materialising S costs
O(N^2) memory (17 GB in fp32 at 2N = 65,536) and caps the batch size long before compute does.
Here S is processed in [BLOCK_M, BLOCK_N] tiles that live only in registers (Inf-CL, flash
attention): the forward keeps a running max/sum per row (online log-sum-exp) and stores just the
row's LSE and positive logit; the backward recomputes each tile from Q and K. Memory is O(N d).

The loss is exact, not an approximation: it equals cross-entropy over the full row of logits.
Backward is deterministic (no atomics): one pass over row blocks gives dQ, one pass over key
blocks gives dK. When the keys are the queries themselves (single-process NT-Xent) S is symmetric,
so a single row pass yields the whole gradient and the key pass is skipped.

This module is the kernel layer: it imports only torch, triton and `pairs` (which key is each
query's positive and which is itself, shared with the torch paths) and raises ValueError on bad
arguments. The public loss API, which normalises embeddings, gathers keys across ranks, picks an
implementation and reports user mistakes as FastSSLError, is `fastssl.losses`.

Limits:
- inputs must already be L2-normalised; the kernel computes dot products, not cosines.
- fp32, bf16 and fp16 inputs (all of one dtype), feature dim 1 <= d <= 256 (a row block keeps
  its whole feature vector in registers). fp32 tiles use 3xTF32 dots on sm_80+ (near-fp32
  accuracy on tensor cores), not plain TF32; IEEE fp32 on sm_75, which has no TF32.
- runs on the GPUs listed in `configs.TILES` (and on CPU under TRITON_INTERPRET=1, for tests).
- Logits accumulate in fp32. For bf16/fp16 inputs the softmax-gradient tile is rounded to the
  input dtype before its matmul (as flash attention does), so gradients carry that dtype's error.
- Extra negatives (a MoCo queue) receive no gradient.
"""

from __future__ import annotations

import contextlib
import math
import os

import torch
import triton
import triton.language as tl

from fastssl_kernels import configs, pairs

MAX_D = configs.D_BUCKETS[-1]
DTYPES = tuple(configs.DTYPE_NAMES)
# Read at import, like triton.jit does: kernels defined now run interpreted if this is set.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# One home for log2(e) and ln(2), read by the host (logit scale) and inside the kernels: Triton
# lets jit functions use module-level tl.constexpr globals.
_LOG2E: tl.constexpr = tl.constexpr(math.log2(math.e))
_LN2: tl.constexpr = tl.constexpr(math.log(2.0))


# ----------------------------------------------------------------------------------------------
# Plain-torch references: O(N^2) memory, used by tests and as the definition of the loss (the
# dense loss of `pairs`, which tests/kernels checks against positives found by value).
# ----------------------------------------------------------------------------------------------


def _acc(*xs: torch.Tensor | None) -> list[torch.Tensor | None]:
    # fp64 stays fp64 (tests), everything narrower computes in fp32.
    return [None if x is None else x.to(torch.promote_types(x.dtype, torch.float32)) for x in xs]


def nt_xent_reference(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.2,
    k1: torch.Tensor | None = None,
    k2: torch.Tensor | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """Mean over this rank's 2n queries of -log softmax(q . keys / t)[positive], self excluded.

    z1, z2: [n, d] L2-normalised views. k1, k2: [N, d] the views gathered from all ranks (default
    z1, z2), in which this rank's rows start at `offset`.
    """
    return pairs.dense_loss(pairs.nt_xent_pairs(*_acc(z1, z2, k1, k2), offset), temperature)


def info_nce_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    temperature: float = 0.2,
    queue: torch.Tensor | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """Mean over queries of -log softmax([q . k, q . queue] / t)[offset + i].

    q: [n, d] this rank's queries; k: [N, d] keys of all ranks; queue: [K, d] negatives, no grad.
    """
    return pairs.dense_loss(pairs.info_nce_pairs(*_acc(q, k, queue), offset), temperature)


# ----------------------------------------------------------------------------------------------
# Triton kernels. Logits are kept in log2 units (scaled by log2(e) / t) so tiles use exp2.
# ----------------------------------------------------------------------------------------------


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    # a [P, R] @ b [R, Q] -> fp32 [P, Q]
    if UPCAST:
        # The interpreter multiplies bf16 tiles as their raw uint16 bits; products of bf16
        # values are exact in fp32, so upcasting gives the same numbers the GPU computes.
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _load_rows(ptr, idx, n_rows, dims, n_dims, stride_r, stride_d):
    # [B] row indices x [BLOCK_D] feature indices -> [B, BLOCK_D] tile, zeros outside the tensor.
    offs = idx[:, None].to(tl.int64) * stride_r + dims[None, :] * stride_d
    return tl.load(ptr + offs, mask=(idx[:, None] < n_rows) & (dims[None, :] < n_dims), other=0.0)


@triton.jit
def _store_rows(ptr, x, idx, n_rows, dims, n_dims, stride_r, stride_d):
    # x [B, BLOCK_D] -> rows idx [B] of ptr, in ptr's dtype; rows and dims outside are skipped.
    offs = idx[:, None].to(tl.int64) * stride_r + dims[None, :] * stride_d
    tl.store(ptr + offs, x.to(ptr.dtype.element_ty), mask=(idx[:, None] < n_rows) & (dims[None, :] < n_dims))


@triton.jit
def _query_rows(q_ptr, pos_ptr, self_ptr, rows, M, dims, D, stride_qm, stride_qd):
    # rows [BM] -> (q [BM, BD], key columns of each row's positive and of itself [BM], -1 past M)
    row_ok = rows < M
    q = _load_rows(q_ptr, rows, M, dims, D, stride_qm, stride_qd)
    pos = tl.load(pos_ptr + rows, mask=row_ok, other=-1)
    me = tl.load(self_ptr + rows, mask=row_ok, other=-1)
    return q, pos, me


@triton.jit
def _load_lse2(lse_ptr, idx, ok):
    # [B] rows' natural-log LSE from the forward, in the tiles' log2 units
    return tl.load(lse_ptr + idx, mask=ok, other=0.0) * _LOG2E


@triton.jit
def _logits(
    a, b_ptr, idx, n_rows, dims, D, stride_r, stride_d, qk_scale, PRECISION: tl.constexpr, UPCAST: tl.constexpr
):
    # a [A, BD] held block, rows idx [B] of b_ptr -> (b [B, BD], a b^T * qk_scale [A, B] log2 units)
    b = _load_rows(b_ptr, idx, n_rows, dims, D, stride_r, stride_d)
    return b, _dot(a, tl.trans(b), PRECISION, UPCAST) * qk_scale


@triton.jit
def _lse_update(m_i, l_i, s):
    # s [BM, BN] log2-unit logits, masked entries -inf; m_i, l_i [BM] running max and sum.
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    # While a row has seen only masked columns its max is -inf; shifting by 0 keeps exp2 at 0
    # instead of exp2(-inf - -inf) = nan.
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    l_i = l_i * tl.exp2(m_i - m_safe) + tl.sum(tl.exp2(s - m_safe[:, None]), axis=1)
    return m_new, l_i


@triton.jit
def _lse_pass(
    q, k_ptr, NK, stride_km, stride_kd, pos, me, m_i, l_i, pos_logit, dims, D, qk_scale,
    BLOCK_N: tl.constexpr, PAIRED: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    # Online log-sum-exp of q [BM, BD] over keys 0..NK of k_ptr: (m_i, l_i, pos_logit) [BM] updated.
    # PAIRED: these keys hold each row's positive (pos) and its own column (me, masked); a queue
    # of extra negatives holds neither.
    for start in range(0, NK, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)  # [BN]
        _, s = _logits(q, k_ptr, cols, NK, dims, D, stride_km, stride_kd, qk_scale, PRECISION, UPCAST)  # [BM, BN]
        valid = cols[None, :] < NK
        if PAIRED:
            pos_logit += tl.sum(tl.where(cols[None, :] == pos[:, None], s, 0.0), axis=1)
            valid = valid & (cols[None, :] != me[:, None])
        m_i, l_i = _lse_update(m_i, l_i, tl.where(valid, s, float("-inf")))
    return m_i, l_i, pos_logit


@triton.jit
def _fwd_kernel(
    q_ptr,  # [M, D] queries
    k_ptr,  # [NK, D] keys (positives and in-batch negatives)
    neg_ptr,  # [NNEG, D] extra negatives (queue); NNEG may be 0
    pos_ptr,  # [M] int32: key column of each query's positive
    self_ptr,  # [M] int32: key column excluded from the row (the query itself), -1 for none
    lse_ptr,  # [M] fp32 out: natural-log LSE over the row
    posl_ptr,  # [M] fp32 out: positive logit q . k_pos / t
    M,
    NK,
    NNEG,
    D,
    stride_qm,
    stride_qd,
    stride_km,
    stride_kd,
    stride_nm,
    stride_nd,
    qk_scale,  # log2(e) / t
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # [BM]
    dims = tl.arange(0, BLOCK_D)
    q, pos, me = _query_rows(q_ptr, pos_ptr, self_ptr, rows, M, dims, D, stride_qm, stride_qd)  # [BM, BD], [BM] x 2

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    pos_logit = tl.zeros([BLOCK_M], tl.float32)
    m_i, l_i, pos_logit = _lse_pass(
        q, k_ptr, NK, stride_km, stride_kd, pos, me, m_i, l_i, pos_logit, dims, D, qk_scale,
        BLOCK_N, True, PRECISION, UPCAST,
    )  # fmt: skip
    m_i, l_i, pos_logit = _lse_pass(
        q, neg_ptr, NNEG, stride_nm, stride_nd, pos, me, m_i, l_i, pos_logit, dims, D, qk_scale,
        BLOCK_N, False, PRECISION, UPCAST,
    )  # fmt: skip

    tl.store(lse_ptr + rows, (m_i + tl.log2(l_i)) * _LN2, mask=rows < M)
    tl.store(posl_ptr + rows, pos_logit * _LN2, mask=rows < M)


@triton.jit
def _grad_pass(
    acc, q, k_ptr, NK, stride_km, stride_kd, rows, pos, me, lse2, pos_ptr, lse_ptr, dims, D, qk_scale,
    BLOCK_N: tl.constexpr, PAIRED: tl.constexpr, SYMMETRIC: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    # acc [BM, BD] += sum_j dL/ds_ij k_j over keys 0..NK of k_ptr, for the rows of q [BM, BD].
    # PAIRED as in _lse_pass; SYMMETRIC: the keys are the queries (see _bwd_rows_kernel).
    for start in range(0, NK, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)  # [BN]
        col_ok = cols < NK
        k, s = _logits(q, k_ptr, cols, NK, dims, D, stride_km, stride_kd, qk_scale, PRECISION, UPCAST)  # [BM, BN]
        valid = col_ok[None, :]
        if PAIRED:
            valid = valid & (cols[None, :] != me[:, None])
        # dL_i/ds_ij = softmax_ij - [j is i's positive]
        ds = tl.where(valid, tl.exp2(s - lse2[:, None]), 0.0)
        if PAIRED:
            ds -= tl.where(cols[None, :] == pos[:, None], 1.0, 0.0)
        if SYMMETRIC:
            # s_ij is also key-row j's logit against i, so the same tile gives dL_j/ds_ji, the
            # part of q_i's gradient that flows through q_i's role as a key.
            lse2_c = _load_lse2(lse_ptr, cols, col_ok)
            pos_c = tl.load(pos_ptr + cols, mask=col_ok, other=-1)
            ds += tl.where(valid, tl.exp2(s - lse2_c[None, :]), 0.0)
            ds -= tl.where(pos_c[None, :] == rows[:, None], 1.0, 0.0)
        acc += _dot(ds.to(k.dtype), k, PRECISION, UPCAST)  # [BM, BD]
    return acc


@triton.jit
def _bwd_rows_kernel(
    q_ptr,  # [M, D]
    k_ptr,  # [NK, D]; with SYMMETRIC it is q_ptr and NK == M
    neg_ptr,  # [NNEG, D]
    pos_ptr,  # [M] int32
    self_ptr,  # [M] int32
    lse_ptr,  # [M] fp32 from the forward
    dout_ptr,  # [] upstream gradient of the mean loss
    dq_ptr,  # [M, D] out; with SYMMETRIC the full gradient wrt q (q as queries and as keys)
    M,
    NK,
    NNEG,
    D,
    stride_qm,
    stride_qd,
    stride_km,
    stride_kd,
    stride_nm,
    stride_nd,
    stride_gm,
    stride_gd,
    qk_scale,  # log2(e) / t
    grad_scale,  # 1 / (M t): d(mean loss)/d(logit) folds 1/M, d(logit)/d(q) folds 1/t
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    SYMMETRIC: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # [BM]
    dims = tl.arange(0, BLOCK_D)
    q, pos, me = _query_rows(q_ptr, pos_ptr, self_ptr, rows, M, dims, D, stride_qm, stride_qd)  # [BM, BD], [BM] x 2
    lse2 = _load_lse2(lse_ptr, rows, rows < M)  # [BM]

    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    acc = _grad_pass(
        acc, q, k_ptr, NK, stride_km, stride_kd, rows, pos, me, lse2, pos_ptr, lse_ptr, dims, D, qk_scale,
        BLOCK_N, True, SYMMETRIC, PRECISION, UPCAST,
    )  # fmt: skip
    acc = _grad_pass(
        acc, q, neg_ptr, NNEG, stride_nm, stride_nd, rows, pos, me, lse2, pos_ptr, lse_ptr, dims, D, qk_scale,
        BLOCK_N, False, False, PRECISION, UPCAST,
    )  # fmt: skip

    acc *= tl.load(dout_ptr).to(tl.float32) * grad_scale
    _store_rows(dq_ptr, acc, rows, M, dims, D, stride_gm, stride_gd)


@triton.jit
def _bwd_cols_kernel(
    q_ptr,  # [M, D]
    k_ptr,  # [NK, D]
    pos_ptr,  # [M] int32
    self_ptr,  # [M] int32
    lse_ptr,  # [M] fp32
    dout_ptr,  # []
    dk_ptr,  # [NK, D] out: gradient wrt every key, including other ranks' gathered keys
    M,
    NK,
    D,
    stride_qm,
    stride_qd,
    stride_km,
    stride_kd,
    stride_gm,
    stride_gd,
    qk_scale,
    grad_scale,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN] key rows owned here
    dims = tl.arange(0, BLOCK_D)
    k = _load_rows(k_ptr, cols, NK, dims, D, stride_km, stride_kd)  # [BN, BD]

    acc = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    for start in range(0, M, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)  # [BM]
        row_ok = rows < M
        q, pos, me = _query_rows(q_ptr, pos_ptr, self_ptr, rows, M, dims, D, stride_qm, stride_qd)  # [BM, BD], [BM] x 2
        lse2 = _load_lse2(lse_ptr, rows, row_ok)  # [BM]
        s_t = _dot(k, tl.trans(q), PRECISION, UPCAST) * qk_scale  # [BN, BM]: s_t[j, i] = s_ij
        valid = row_ok[None, :] & (cols[:, None] != me[None, :])
        ds_t = tl.where(valid, tl.exp2(s_t - lse2[None, :]), 0.0)
        ds_t -= tl.where(cols[:, None] == pos[None, :], 1.0, 0.0)
        acc += _dot(ds_t.to(q.dtype), q, PRECISION, UPCAST)  # [BN, BD]

    acc *= tl.load(dout_ptr).to(tl.float32) * grad_scale
    _store_rows(dk_ptr, acc, cols, NK, dims, D, stride_gm, stride_gd)


# ----------------------------------------------------------------------------------------------
# Host side: validation, launch configuration, forward and backward.
# ----------------------------------------------------------------------------------------------


def _block_d(d: int) -> int:
    # tl.dot needs every block dim >= 16.
    return max(16, triton.next_power_of_2(d))


# The interpreter runs each tile op as one numpy call: fewer, larger tiles run faster, but 32
# keeps the small test shapes multi-tile.
_INTERPRETER_TILE = configs.Tile(32, 32, 4, 1)


def unsupported_reason(device: torch.device, dtype: torch.dtype, d: int) -> str | None:
    """Why the kernels cannot run on `device` for this dtype and feature width; None if they can."""
    if dtype not in DTYPES:
        return f"the kernels take float32, bfloat16 or float16 embeddings, got {dtype}"
    if not 1 <= d <= MAX_D:
        return f"the kernels support 1 <= d <= {MAX_D}, got d={d}"
    if INTERPRET:
        return None
    if device.type != "cuda":
        return "the kernels need CUDA tensors (or TRITON_INTERPRET=1 set before import)"
    cap = torch.cuda.get_device_capability(device)
    if not configs.has_config(cap, dtype, d):
        name = configs.DTYPE_NAMES[dtype]
        return f"no tile config for sm_{configs.arch(cap)} with {name} and d={d} (see fastssl_kernels.configs)"
    return None


def _config(kind: str, q: torch.Tensor, block_m: int | None, block_n: int | None) -> dict:
    """Launch options for kernel `kind` in configs.KINDS, for q's device, dtype and width."""
    d = q.shape[1]
    for name, b in (("block_m", block_m), ("block_n", block_n)):
        if b is not None and (b < 16 or b & (b - 1)):
            raise ValueError(f"{name}={b} must be a power of two >= 16 (tl.dot's minimum tile)")
    if INTERPRET:
        cfg = _INTERPRETER_TILE
    else:
        cfg = configs.tile(torch.cuda.get_device_capability(q.device), q.dtype, kind, d)
        if cfg is None:
            raise ValueError(unsupported_reason(q.device, q.dtype, d))
    return {
        "BLOCK_M": block_m or cfg.block_m,
        "BLOCK_N": block_n or cfg.block_n,
        "BLOCK_D": _block_d(d),
        "num_warps": cfg.num_warps,
        "num_stages": cfg.num_stages,
        # 2-byte inputs and the interpreter (numpy fp32) ignore it.
        "PRECISION": cfg.precision if q.dtype == torch.float32 else "tf32",
        # The interpreter's tl.dot reads bf16 tiles as raw bits: upcast them (see _dot).
        "UPCAST": INTERPRET and q.dtype == torch.bfloat16,
    }


def _on_device(x: torch.Tensor):
    # Triton launches on the current CUDA device: make it the tensors' one (a rank whose current
    # device is another GPU would otherwise read foreign pointers).
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def _check_tensors(q: torch.Tensor, others: dict[str, torch.Tensor | None], temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if q.dim() != 2 or q.shape[1] == 0 or q.shape[0] == 0:
        raise ValueError(f"queries must be a non-empty [N, d] tensor with d > 0, got shape {tuple(q.shape)}")
    reason = unsupported_reason(q.device, q.dtype, q.shape[1])
    if reason is not None:
        raise ValueError(reason)
    for name, t in others.items():
        if t is None:
            continue
        if t.dim() != 2 or t.shape[1] != q.shape[1]:
            raise ValueError(f"{name} must be [*, {q.shape[1]}] like the queries, got shape {tuple(t.shape)}")
        if t.dtype != q.dtype:
            raise ValueError(f"{name} is {t.dtype} but the queries are {q.dtype}; cast them to one dtype")
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device} but the queries are on {q.device}; move them to one device")


def contrastive_forward(
    q: torch.Tensor,
    keys: torch.Tensor | None,
    negs: torch.Tensor | None,
    pos_idx: torch.Tensor,
    self_idx: torch.Tensor,
    temperature: float,
    block_m: int | None = None,
    block_n: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (LSE, positive logit), both fp32 [M]. keys=None means the keys are q itself."""
    keys = q if keys is None else keys
    negs = keys[:0] if negs is None else negs
    m, d = q.shape
    cfg = _config("fwd", q, block_m, block_n)
    lse = torch.empty(m, device=q.device, dtype=torch.float32)
    pos_logit = torch.empty_like(lse)
    grid = (triton.cdiv(m, cfg["BLOCK_M"]),)
    with _on_device(q):
        _fwd_kernel[grid](
            q, keys, negs, pos_idx, self_idx, lse, pos_logit,
            m, keys.shape[0], negs.shape[0], d,
            q.stride(0), q.stride(1), keys.stride(0), keys.stride(1), negs.stride(0), negs.stride(1),
            _LOG2E.value / temperature,
            **cfg,
        )  # fmt: skip
    return lse, pos_logit


def contrastive_backward(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    keys: torch.Tensor | None,
    negs: torch.Tensor | None,
    pos_idx: torch.Tensor,
    self_idx: torch.Tensor,
    lse: torch.Tensor,
    temperature: float,
    need_dk: bool = True,
    block_m: int | None = None,
    block_n: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(dq [M, d], dk [NK, d] or None) for the mean loss. keys=None: dq is q's whole gradient."""
    symmetric = keys is None
    keys = q if keys is None else keys
    negs = keys[:0] if negs is None else negs
    m, d = q.shape
    nk = keys.shape[0]
    rows_cfg = _config("rows", q, block_m, block_n)
    grad_out = grad_out.reshape(()).to(torch.float32).contiguous()
    qk_scale, grad_scale = _LOG2E.value / temperature, 1.0 / (m * temperature)

    dq = torch.empty_like(q)
    with _on_device(q):
        _bwd_rows_kernel[(triton.cdiv(m, rows_cfg["BLOCK_M"]),)](
            q, keys, negs, pos_idx, self_idx, lse, grad_out, dq,
            m, nk, negs.shape[0], d,
            q.stride(0), q.stride(1), keys.stride(0), keys.stride(1), negs.stride(0), negs.stride(1),
            dq.stride(0), dq.stride(1),
            qk_scale, grad_scale,
            SYMMETRIC=symmetric, **rows_cfg,
        )  # fmt: skip
        if symmetric or not need_dk:
            return dq, None
        dk = torch.empty_like(keys)
        cols_cfg = _config("cols", q, block_m, block_n)
        _bwd_cols_kernel[(triton.cdiv(nk, cols_cfg["BLOCK_N"]),)](
            q, keys, pos_idx, self_idx, lse, grad_out, dk,
            m, nk, d,
            q.stride(0), q.stride(1), keys.stride(0), keys.stride(1), dk.stride(0), dk.stride(1),
            qk_scale, grad_scale,
            **cols_cfg,
        )  # fmt: skip
    return dq, dk


# ----------------------------------------------------------------------------------------------
# Autograd.
# ----------------------------------------------------------------------------------------------


class ContrastiveCrossEntropy(torch.autograd.Function):
    """mean_i [ LSE_j(q_i . k_j / t, j != self_i, plus queue) - q_i . k_pos_i / t ].

    Saves q, keys, the queue and three [M] vectors; nothing of size M x NK.
    """

    @staticmethod
    def forward(ctx, q, keys, negs, pos_idx, self_idx, temperature, block_m=None, block_n=None):
        lse, pos_logit = contrastive_forward(q, keys, negs, pos_idx, self_idx, temperature, block_m, block_n)
        ctx.save_for_backward(q, keys, negs, pos_idx, self_idx, lse)
        ctx.temperature, ctx.blocks = temperature, (block_m, block_n)
        return (lse - pos_logit).mean()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        q, keys, negs, pos_idx, self_idx, lse = ctx.saved_tensors
        need_dk = keys is not None and ctx.needs_input_grad[1]
        if not (ctx.needs_input_grad[0] or need_dk):
            return (None,) * 8
        dq, dk = contrastive_backward(
            grad_out, q, keys, negs, pos_idx, self_idx, lse, ctx.temperature, need_dk, *ctx.blocks
        )
        return dq, dk, None, None, None, None, None, None


def nt_xent_triton(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.2,
    k1: torch.Tensor | None = None,
    k2: torch.Tensor | None = None,
    offset: int = 0,
    block_m: int | None = None,
    block_n: int | None = None,
) -> torch.Tensor:
    """Fused `nt_xent_reference`: same arguments, same value, O(N d) memory.

    Without k1/k2 the keys are (z1, z2) themselves and backward takes the symmetric single pass.
    With them (gathered across ranks), the gradient reaches k1 and k2 for every rank's rows.
    """
    _check_tensors(z1, {"z2": z2, "k1": k1, "k2": k2}, temperature)
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    p = pairs.nt_xent_pairs(z1, z2, k1, k2, offset, index_dtype=torch.int32)
    return ContrastiveCrossEntropy.apply(*p, temperature, block_m, block_n)


def info_nce_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    temperature: float = 0.2,
    queue: torch.Tensor | None = None,
    offset: int = 0,
    block_m: int | None = None,
    block_n: int | None = None,
) -> torch.Tensor:
    """Fused `info_nce_reference`. The queue may be any float dtype; it is cast to q's dtype."""
    if queue is not None and queue.is_floating_point():
        queue = queue.detach().to(q.dtype)
    _check_tensors(q, {"k": k, "queue": queue}, temperature)
    p = pairs.info_nce_pairs(q, k, queue, offset, index_dtype=torch.int32)
    return ContrastiveCrossEntropy.apply(*p, temperature, block_m, block_n)


# No nn.Module here: the public, module-free loss API is `fastssl.losses.nt_xent` / `info_nce`.

__all__ = [
    "DTYPES",
    "INTERPRET",
    "MAX_D",
    "ContrastiveCrossEntropy",
    "contrastive_backward",
    "contrastive_forward",
    "info_nce_reference",
    "info_nce_triton",
    "nt_xent_reference",
    "nt_xent_triton",
    "unsupported_reason",
]
