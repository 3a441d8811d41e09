"""Which key each contrastive query is paired with (its positive) and which key is itself (masked).

Why one home: NT-Xent and InfoNCE run as the fused Triton kernel (`fastssl_kernels.nt_xent`), its
chunked torch twin (`fastssl.losses.chunked`) and dense torch (the `*_reference` losses and
`impl="torch"`). All four see the same queries [z1; z2] against the same keys [k1; k2] (plus a
MoCo queue), and must agree on the column of each query's positive and of its own key; written
once here, those columns cannot drift apart between the implementations the tests compare.

Pure torch (no triton), so the torch paths can import it where triton is missing. Argument
mistakes raise ValueError like the rest of the kernel layer; `fastssl.losses` reports them as
FastSSLError.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class Pairs(NamedTuple):
    """One contrastive loss call, as every implementation takes it."""

    q: torch.Tensor  # [M, d] queries
    keys: torch.Tensor | None  # [NK, d]; None: the keys are q itself (single-process NT-Xent)
    negs: torch.Tensor | None  # [K, d] extra negatives (a MoCo queue), no gradient; None: none
    pos_idx: torch.Tensor  # [M] column of keys holding each query's positive
    self_idx: torch.Tensor  # [M] column of keys that is the query itself, -1 for none


def _check_offset(offset: int, n: int, n_all: int, rows: str, keys: str) -> None:
    if not 0 <= offset <= n_all - n:
        raise ValueError(f"offset={offset} puts this rank's {n} {rows} outside the {n_all} {keys}; use rank * n")


def nt_xent_pairs(
    z1: torch.Tensor,
    z2: torch.Tensor,
    k1: torch.Tensor | None = None,
    k2: torch.Tensor | None = None,
    offset: int = 0,
    index_dtype: torch.dtype = torch.long,
) -> Pairs:
    """Queries [z1; z2] [2n, d] against keys [k1; k2] [2N, d], in which this rank's rows start at
    `offset` (default: the keys are the queries, keys=None). Query i's positive is its other view."""
    if (k1 is None) != (k2 is None):
        raise ValueError("pass both k1 and k2 (the gathered views, with offset) or neither")
    n = z1.shape[0]
    q = torch.cat([z1, z2])  # [2n, d]
    if k1 is None:
        if offset != 0:
            raise ValueError(f"offset={offset} needs gathered keys k1, k2; pass them or use offset=0")
        keys, n_all = None, n
    else:
        if k1.shape != k2.shape:
            raise ValueError(f"k1 and k2 must have the same shape, got {tuple(k1.shape)} and {tuple(k2.shape)}")
        n_all = k1.shape[0]
        _check_offset(offset, n, n_all, "rows", "gathered keys")
        keys = torch.cat([k1, k2])  # [2N, d]
    # z1's row i is key column offset + i; its other view, z2's row i, is N columns further on.
    local = torch.arange(n, device=z1.device, dtype=index_dtype) + offset
    self_idx = torch.cat([local, local + n_all])
    pos_idx = torch.cat([local + n_all, local])
    return Pairs(q, keys, None, pos_idx, self_idx)


def info_nce_pairs(
    q: torch.Tensor,
    k: torch.Tensor,
    queue: torch.Tensor | None = None,
    offset: int = 0,
    index_dtype: torch.dtype = torch.long,
) -> Pairs:
    """Queries q [n, d] against keys k [N, d] (row offset + i is q_i's positive; no self column)
    and the queue [K, d] (an empty one counts as none)."""
    n, n_all = q.shape[0], k.shape[0]
    _check_offset(offset, n, n_all, "queries", "keys")
    negs = None if queue is None or queue.shape[0] == 0 else queue.detach()
    pos_idx = torch.arange(n, device=q.device, dtype=index_dtype) + offset
    self_idx = torch.full((n,), -1, device=q.device, dtype=index_dtype)
    return Pairs(q, k, negs, pos_idx, self_idx)


def dense_loss(pairs: Pairs, temperature: float) -> torch.Tensor:
    """Mean over queries of -log softmax(q . [keys; negs] / t)[pos], the self column excluded.

    The loss by its definition, through the full [M, NK + K] logits: O(M NK) memory. Logits are
    computed in q's dtype (autocast's, under autocast) and the softmax in at least fp32.
    """
    q, keys, negs, pos_idx, self_idx = pairs
    keys = q if keys is None else keys
    if negs is not None:
        keys = torch.cat([keys, negs.to(keys.dtype)])  # [NK + K, d]
    logits = q @ keys.T / temperature  # [M, NK + K]
    # fp64 stays fp64 (gradcheck, references); narrower logits widen to fp32.
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    cols = torch.arange(logits.shape[1], device=logits.device)
    logits.masked_fill_(cols == self_idx[:, None], float("-inf"))  # self -1 matches no column
    return F.cross_entropy(logits, pos_idx.long())


__all__ = ["Pairs", "dense_loss", "info_nce_pairs", "nt_xent_pairs"]
