"""Matmul FLOPs each contrastive-loss implementation executes, for benchmarks' TFLOP/s figures.

Counts multiply-adds of the [rows, d] x [d, keys] products as 2 FLOPs and ignores elementwise
work (exp, max, masking: O(rows x keys) against O(rows x keys x d)). These are the FLOPs the
implementation really runs, recomputation included, not a model FLOP count: e.g. the fused
kernel's single-process NT-Xent runs 3 product passes over the (2N)^2 logits (forward logits,
their recomputation and dQ in one symmetric backward pass), 6 (2N)^2 d in all, not 8.
"""

from __future__ import annotations

from fastssl.losses.chunked import tile_ranges, block_size


def contrastive_flops(
    impl: str,
    rows: int,
    keys: int,
    d: int,
    negatives: int = 0,
    symmetric: bool = False,
    backward: bool = True,
    key_grad: bool = True,
    block: int | None = None,
) -> int:
    """Matmul FLOPs of one loss evaluation (and its backward when `backward`).

    rows: queries on this rank (2n for NT-Xent); keys: keys that may get a gradient (2N gathered
    for NT-Xent, N for InfoNCE); negatives: queue rows (no gradient). symmetric: the keys are the
    queries themselves (single-process NT-Xent; keys == rows). key_grad: the keys need a gradient
    (False for a momentum encoder's keys). block: the chunked path's tile side (default its own).
    """
    if impl not in ("torch", "triton", "chunked"):
        raise ValueError(f"impl must be torch, triton or chunked, got {impl!r}")
    if symmetric and (keys != rows or negatives):
        raise ValueError("symmetric means the keys are the queries: keys == rows and no negatives")
    pair = 2 * d  # FLOPs per (query, key) product
    every = rows * (keys + negatives)  # (query, key) pairs, queue included
    if impl == "chunked" and symmetric:
        # Tiles on and above the diagonal only. Diagonal tiles: logits (+ recompute, one gradient
        # product); off-diagonal tiles: logits (+ recompute, a gradient product for each side).
        diag = sum((b - a) ** 2 for a, b in tile_ranges(rows, block or block_size()))
        off = (rows * rows - diag) // 2
        fwd = pair * (diag + off)
        return fwd + (pair * (2 * diag + 3 * off) if backward else 0)
    fwd = pair * every
    if not backward:
        return fwd
    if impl == "torch":
        # autograd's mm backward: the gradient of the queries and of the whole [keys; queue]
        # operand (one product each); symmetric or not, q and keys are separate operands.
        return fwd + pair * every * (2 if key_grad or symmetric else 1)
    if impl == "triton":
        # Row pass: recompute + dQ over every key. Symmetric: that pass already holds the keys'
        # share. Otherwise a key pass (recompute + dK) over the keys without the queue.
        key_pass = 0 if symmetric or not key_grad else 2 * pair * rows * keys
        return fwd + 2 * pair * every + key_pass
    # chunked, general: per tile recompute + dQ; dK on the keys' tiles
    return fwd + 2 * pair * every + (pair * rows * keys if key_grad else 0)


__all__ = ["contrastive_flops"]
