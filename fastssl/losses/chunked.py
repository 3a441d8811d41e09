"""NT-Xent and InfoNCE in plain torch with memory linear in the batch: `impl="chunked"`.

Why: the torch path materialises the [rows, keys] logits (17 GB in fp32 at 2N = 65,536) and the
fused Triton kernel needs a GPU with a tuned config (fastssl_kernels.configs). This path runs
wherever torch runs (CPU, any GPU, fp64 for gradcheck) and never holds anything rows x keys: the
logits are visited in [B, B] tiles, B chosen so that a tile stays within TILE_BYTES.

How: forward keeps a running max and sum per row over key tiles (online log-sum-exp) and saves
only the inputs and the per-row LSE; backward recomputes each tile from the inputs. The positive
logit of each row is a row-wise dot product, so only the softmax part needs tiles.
When the keys are the queries (single-process NT-Xent) the logits are symmetric: only tiles on
and above the diagonal are computed, and each serves both its row block and its column block,
in forward (row and column LSE updates) and in backward (both gradient terms). That is 2 of the
torch path's 3 matmul passes (see `fastssl.losses.flops`).

Limits: embeddings must already be L2-normalised (the public `nt_xent`/`info_nce` do it). Tiles
compute in fp32 (fp64 stays fp64), whatever the input dtype; gradients come back in the input
dtype. Extra negatives (a MoCo queue) receive no gradient. Autocast is off inside: bf16 inputs
are upcast per tile rather than computed in bf16.
"""

from __future__ import annotations

import contextlib
import math

import torch
from fastssl_kernels.pairs import info_nce_pairs, nt_xent_pairs

from fastssl.errors import FastSSLError

# One fp32 logits tile; the backward holds about three at once (logits and two softmax tiles).
TILE_BYTES = 16 * 2**20


def block_size(tile_bytes: int = TILE_BYTES) -> int:
    """Side B of a square fp32 tile of at most `tile_bytes` (a multiple of 64 for matmul speed)."""
    return max(64, math.isqrt(tile_bytes // 4) // 64 * 64)


def tile_ranges(n: int, block: int) -> list[tuple[int, int]]:
    """[start, stop) of each block of `block` rows out of n; the last one may be shorter."""
    return [(a, min(a + block, n)) for a in range(0, n, block)]


def _acc(x: torch.Tensor) -> torch.Tensor:
    # fp64 stays fp64 (gradcheck), everything narrower computes in fp32.
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _lse_update(m: torch.Tensor, s_sum: torch.Tensor, s: torch.Tensor, dim: int) -> None:
    """Fold tile `s` into running (max m, sum s_sum) along `dim` of the tile, in place.

    m, s_sum: [R] views for the rows being reduced; masked logits are -inf.
    """
    m_new = torch.maximum(m, s.amax(dim))
    # A row that has seen only masked columns keeps max -inf; shifting by 0 keeps exp at 0
    # instead of exp(-inf - -inf) = nan.
    m_safe = torch.where(m_new == float("-inf"), 0.0, m_new)
    s_sum.mul_(torch.exp(m - m_safe)).add_(s.sub(m_safe.unsqueeze(dim)).exp_().sum(dim))
    m.copy_(m_new)


def _add_matmul(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    # out += a @ b without a temporary. The out= form, unlike addmm_, is seen by
    # torch.utils.flop_counter, which tests/losses use to check `fastssl.losses.flops`.
    torch.addmm(out, a, b, out=out)


def _mask_self(s: torch.Tensor, self_idx: torch.Tensor, c0: int) -> None:
    """Set s[r, self_idx[r] - c0] = -inf where that column lies in this tile (self_idx -1: none)."""
    local = self_idx - c0
    rows = ((local >= 0) & (local < s.shape[1])).nonzero().squeeze(1)
    s[rows, local[rows]] = float("-inf")


def _lse_general(qs, sources, self_idx, block):
    """Per-row LSE of qs @ [keys; negs].T, keys (sources[0]) with the self column masked."""
    m_all, lse = qs.shape[0], torch.empty(qs.shape[0], dtype=qs.dtype, device=qs.device)
    for r0, r1 in tile_ranges(m_all, block):
        m = torch.full((r1 - r0,), float("-inf"), dtype=qs.dtype, device=qs.device)
        total = torch.zeros_like(m)
        for i, src in enumerate(sources):
            for c0, c1 in tile_ranges(src.shape[0], block):
                s = qs[r0:r1] @ src[c0:c1].T  # [R, C] logits
                if i == 0:
                    _mask_self(s, self_idx[r0:r1], c0)
                _lse_update(m, total, s, 1)
        lse[r0:r1] = m + total.log()
    return lse


def _lse_symmetric(q, qs, block):
    """Per-row LSE of qs @ q.T with the diagonal masked, from the upper-triangle tiles only."""
    n = q.shape[0]
    m = torch.full((n,), float("-inf"), dtype=q.dtype, device=q.device)
    total = torch.zeros_like(m)
    blocks = tile_ranges(n, block)
    for i, (a0, a1) in enumerate(blocks):
        for b0, b1 in blocks[i:]:
            s = qs[a0:a1] @ q[b0:b1].T  # [A, B]; s.T is the tile of rows b against keys a
            if a0 == b0:
                s.diagonal().fill_(float("-inf"))
            _lse_update(m[a0:a1], total[a0:a1], s, 1)
            if a0 != b0:
                _lse_update(m[b0:b1], total[b0:b1], s, 0)
    return m + total.log()


def _softmax_grads_general(q, qs, keys, negs, self_idx, lse, block, need_dk):
    """(sum_j p_ij k_j [M, d], sum_i p_ij q_i [NK, d] or None) over softmax p, recomputed per tile."""
    dq = torch.zeros_like(q)
    dk = torch.zeros_like(keys) if need_dk else None
    for r0, r1 in tile_ranges(q.shape[0], block):
        for i, src in enumerate((keys, negs)):
            for c0, c1 in tile_ranges(src.shape[0], block):
                s = qs[r0:r1] @ src[c0:c1].T  # [R, C]
                if i == 0:
                    _mask_self(s, self_idx[r0:r1], c0)
                p = s.sub_(lse[r0:r1, None]).exp_()  # softmax tile, masked entries 0
                _add_matmul(dq[r0:r1], p, src[c0:c1])
                if i == 0 and need_dk:
                    _add_matmul(dk[c0:c1], p.T, q[r0:r1])
    return dq, dk


def _softmax_grads_symmetric(q, qs, lse, block):
    """sum_j (p_ij + p_ji) q_j [M, d]: q_i's softmax gradient as a query and as a key."""
    dq = torch.zeros_like(q)
    blocks = tile_ranges(q.shape[0], block)
    for i, (a0, a1) in enumerate(blocks):
        for b0, b1 in blocks[i:]:
            s = qs[a0:a1] @ q[b0:b1].T  # [A, B]
            if a0 == b0:
                s.diagonal().fill_(float("-inf"))
            # h[a, b] = p_ab (row a's softmax) + p_ba (row b's softmax, read off the same tile)
            h = s.sub(lse[a0:a1, None]).exp_()
            h.add_(s.sub_(lse[None, b0:b1]).exp_())
            _add_matmul(dq[a0:a1], h, q[b0:b1])
            if a0 != b0:
                _add_matmul(dq[b0:b1], h.T, q[a0:a1])
    return dq


class ChunkedContrastiveCrossEntropy(torch.autograd.Function):
    """mean_i [ LSE_j(q_i . k_j / t, j != self_i, plus negs) - q_i . k_pos_i / t ] in tiles.

    q [M, d]; keys [NK, d] or None (the keys are q: symmetric path); negs [K, d] or None, no
    gradient; pos_idx, self_idx [M] int64 columns of keys (self -1: none). Saves the inputs and
    one [M] vector.
    """

    @staticmethod
    def forward(ctx, q, keys, negs, pos_idx, self_idx, temperature, block):
        with torch.autocast(q.device.type, enabled=False):
            qa = _acc(q)
            qs = qa / temperature  # [M, d]; scaling q once scales every logit
            ka = qa if keys is None else _acc(keys)
            if keys is None:
                lse = _lse_symmetric(qa, qs, block)
            else:
                sources = [ka] if negs is None else [ka, _acc(negs)]
                lse = _lse_general(qs, sources, self_idx, block)
            pos_logit = (qs * ka[pos_idx]).sum(1)  # [M]
            loss = (lse - pos_logit).mean()
        ctx.save_for_backward(q, keys, negs, pos_idx, self_idx, lse)
        ctx.temperature, ctx.block = temperature, block
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        q, keys, negs, pos_idx, self_idx, lse = ctx.saved_tensors
        need_dk = keys is not None and ctx.needs_input_grad[1]
        if not (ctx.needs_input_grad[0] or need_dk):
            return (None,) * 7
        t, block = ctx.temperature, ctx.block
        with torch.autocast(q.device.type, enabled=False):
            qa = _acc(q)
            qs = qa / t
            if keys is None:
                ka = qa
                dq, dk = _softmax_grads_symmetric(qa, qs, lse, block), None
            else:
                ka = _acc(keys)
                na = ka[:0] if negs is None else _acc(negs)
                dq, dk = _softmax_grads_general(qa, qs, ka, na, self_idx, lse, block, need_dk)
            # The positive logit q_i . k_pos_i / t enters the loss with a minus sign.
            dq -= ka[pos_idx]
            pos_grad = dq if keys is None else dk  # in the symmetric path the keys are q
            if pos_grad is not None:
                pos_grad.index_add_(0, pos_idx, qa, alpha=-1.0)
            scale = grad_out.to(qa.dtype) / (q.shape[0] * t)
            dq = (dq * scale).to(q.dtype)
            dk = None if dk is None else (dk * scale).to(keys.dtype)
        return dq, dk, None, None, None, None, None


def _default_block(block: int | None) -> int:
    if block is not None and block < 1:
        raise FastSSLError(f"block={block} must be >= 1")
    return block or block_size()


@contextlib.contextmanager
def _user_error():
    # The kernel layer's pair set-up raises ValueError; here they are the caller's arguments.
    try:
        yield
    except ValueError as e:
        raise FastSSLError(str(e)) from None


def nt_xent_chunked(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.2,
    k1: torch.Tensor | None = None,
    k2: torch.Tensor | None = None,
    offset: int = 0,
    block: int | None = None,
) -> torch.Tensor:
    """NT-Xent of L2-normalised views z1, z2 [n, d]; same arguments and value as the Triton kernel.

    k1, k2 [N, d]: the views gathered from all ranks, this rank's rows starting at `offset`
    (default: z1, z2 themselves, which takes the symmetric path).
    """
    block = _default_block(block)
    with _user_error():
        p = nt_xent_pairs(z1, z2, k1, k2, offset)
    return ChunkedContrastiveCrossEntropy.apply(*p, temperature, block)


def info_nce_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    temperature: float = 0.2,
    queue: torch.Tensor | None = None,
    offset: int = 0,
    block: int | None = None,
) -> torch.Tensor:
    """InfoNCE of L2-normalised queries q [n, d] against keys k [N, d] (row offset + i is q_i's
    positive) and optional extra negatives `queue` [K, d], which get no gradient."""
    block = _default_block(block)
    with _user_error():
        p = info_nce_pairs(q, k, queue, offset)
    return ChunkedContrastiveCrossEntropy.apply(*p, temperature, block)


__all__ = [
    "TILE_BYTES",
    "ChunkedContrastiveCrossEntropy",
    "block_size",
    "info_nce_chunked",
    "nt_xent_chunked",
    "tile_ranges",
]
