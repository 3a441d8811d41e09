"""NT-Xent (SimCLR) and InfoNCE (MoCo) with a choice of implementation.

`impl="torch"` materialises the similarity matrix: simple and exact, memory O(N^2).
`impl="triton"` calls the fused kernel in `fastssl_kernels.nt_xent` (memory O(N)).
`impl="auto"` picks triton on CUDA when Triton is importable, torch elsewhere.

With `gather_distributed=True`, each rank's queries meet the keys of all ranks; the returned
loss is the mean over this rank's queries, so the mean over ranks (what DDP's gradient
averaging optimises) is the loss over the global batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastssl.distributed import all_gather_no_grad, all_gather_with_grad, get_rank
from fastssl.errors import FastSSLError

IMPLS = ("auto", "torch", "triton")


def _check(temperature: float, impl: str, *tensors: torch.Tensor) -> None:
    if impl not in IMPLS:
        raise FastSSLError(f"unknown loss impl '{impl}'; use one of {', '.join(IMPLS)}")
    if not temperature > 0:
        raise FastSSLError(f"temperature must be > 0, got {temperature}")
    for t in tensors:
        if t.dim() != 2 or t.shape[1] == 0:
            raise FastSSLError(f"embeddings must be [N, d] with d > 0, got shape {tuple(t.shape)}")
    if tensors[0].shape[0] == 0:
        raise FastSSLError("embeddings are empty: the batch has no samples")


def resolve_impl(impl: str, device: torch.device) -> str:
    if impl != "auto":
        return impl
    if device.type == "cuda":
        try:
            import triton  # noqa: F401

            import fastssl_kernels.nt_xent  # noqa: F401

            return "triton"
        except ImportError:
            return "torch"
    return "torch"


def nt_xent_torch(q: torch.Tensor, keys: torch.Tensor, pos_idx: torch.Tensor, self_idx: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over rows of -log softmax(q @ keys.T / t)[pos], the self column excluded.

    q [M, d] and keys [K, d] are already L2-normalised; pos_idx/self_idx [M] index into keys.
    """
    logits = q @ keys.T / temperature  # [M, K]
    logits = logits.float()
    rows = torch.arange(q.shape[0], device=q.device)
    logits[rows, self_idx] = float("-inf")
    return F.cross_entropy(logits, pos_idx)


def nt_xent(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.2,
    impl: str = "auto",
    gather_distributed: bool = False,
) -> torch.Tensor:
    """SimCLR's symmetric NT-Xent over 2N samples, 2N-2 negatives each.

    z1, z2: [N, d] projections of two views of the same N images (any scale; normalised here).
    """
    _check(temperature, impl, z1, z2)
    if z1.shape != z2.shape:
        raise FastSSLError(f"z1 and z2 must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if z1.shape[0] < 1:
        raise FastSSLError("NT-Xent needs at least one pair of views")
    impl = resolve_impl(impl, z1.device)
    z1 = F.normalize(z1, dim=1)
    z2 = F.normalize(z2, dim=1)
    n = z1.shape[0]
    if gather_distributed:
        k1, k2 = all_gather_with_grad(z1), all_gather_with_grad(z2)  # [N_global, d] each
        offset = get_rank() * n
    else:
        k1, k2, offset = z1, z2, 0
    n_global = k1.shape[0]
    if impl == "triton":
        from fastssl_kernels.nt_xent import nt_xent_triton

        return nt_xent_triton(z1, z2, k1, k2, offset, temperature)
    q = torch.cat([z1, z2], 0)  # [2n, d]
    keys = torch.cat([k1, k2], 0)  # [2N, d]
    local = torch.arange(n, device=z1.device) + offset
    self_idx = torch.cat([local, local + n_global])
    pos_idx = torch.cat([local + n_global, local])
    return nt_xent_torch(q, keys, pos_idx, self_idx, temperature)


def info_nce(
    q: torch.Tensor,
    k: torch.Tensor,
    queue: torch.Tensor | None = None,
    temperature: float = 0.2,
    impl: str = "auto",
    gather_distributed: bool = False,
) -> torch.Tensor:
    """InfoNCE: row i of q is positive with row i of k; the other keys and the queue are negatives.

    q, k: [N, d]; queue: [K, d] negatives that receive no gradient (MoCo's memory).
    """
    _check(temperature, impl, q, k)
    if q.shape != k.shape:
        raise FastSSLError(f"q and k must have the same shape, got {tuple(q.shape)} and {tuple(k.shape)}")
    if queue is not None and (queue.dim() != 2 or queue.shape[1] != q.shape[1]):
        raise FastSSLError(f"queue must be [K, {q.shape[1]}], got {tuple(queue.shape)}")
    impl = resolve_impl(impl, q.device)
    q = F.normalize(q, dim=1)
    k = F.normalize(k, dim=1)
    n = q.shape[0]
    if gather_distributed:
        keys, offset = all_gather_with_grad(k), get_rank() * n
    else:
        keys, offset = k, 0
    negs = None if queue is None else F.normalize(queue.detach(), dim=1)
    if impl == "triton":
        from fastssl_kernels.nt_xent import info_nce_triton

        return info_nce_triton(q, keys, negs, offset, temperature)
    if negs is not None:
        keys = torch.cat([keys, negs.to(keys.dtype)], 0)  # [N_global + K, d]
    logits = (q @ keys.T / temperature).float()  # [n, N_global + K]
    pos = torch.arange(n, device=q.device) + offset
    return F.cross_entropy(logits, pos)


__all__ = ["nt_xent", "info_nce", "all_gather_no_grad", "resolve_impl", "IMPLS"]
