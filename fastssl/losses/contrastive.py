"""NT-Xent (SimCLR) and InfoNCE (MoCo) with a choice of implementation.

`impl="torch"` materialises the similarity matrix: simple and exact, memory O(N^2).
`impl="triton"` calls the fused kernel in `fastssl_kernels.nt_xent` (memory O(N)); it runs on
CUDA tensors, or on CPU when TRITON_INTERPRET=1 was set before import (tests).
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
            import fastssl_kernels.nt_xent  # noqa: F401
            import triton  # noqa: F401

            return "triton"
        except ImportError:
            return "torch"
    return "torch"


def _normalize(x: torch.Tensor) -> torch.Tensor:
    # Normalise in fp32 but keep the caller's dtype: under autocast F.normalize alone returns
    # fp32, which would push the fused kernel off bf16 tensor cores.
    return F.normalize(x.to(torch.promote_types(x.dtype, torch.float32)), dim=1).to(x.dtype)


def _widen(x: torch.Tensor) -> torch.Tensor:
    # Cross-entropy in at least fp32; fp64 stays fp64 so gradcheck sees exact derivatives.
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _kernel_dtype(x: torch.Tensor) -> torch.dtype:
    # Under autocast the torch path's matmul runs in the autocast dtype; the kernel matches it
    # even when the projector hands over fp32 (a final BatchNorm does).
    dev = x.device.type
    if x.dtype == torch.float32 and torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return x.dtype


def _kernels():
    try:
        from fastssl_kernels import nt_xent as kernels
    except ImportError as e:
        raise FastSSLError(f"impl='triton' needs the triton package ({e}); install triton or use impl='torch'") from e
    return kernels


def nt_xent_torch(
    q: torch.Tensor, keys: torch.Tensor, pos_idx: torch.Tensor, self_idx: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Mean over rows of -log softmax(q @ keys.T / t)[pos], the self column excluded.

    q [M, d] and keys [K, d] are already L2-normalised; pos_idx/self_idx [M] index into keys.
    """
    logits = _widen(q @ keys.T / temperature)  # [M, K]
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
    z1, z2 = _normalize(z1), _normalize(z2)
    n = z1.shape[0]
    if gather_distributed:
        k1, k2 = all_gather_with_grad(z1), all_gather_with_grad(z2)  # [N_global, d] each
        offset = get_rank() * n
    else:
        k1, k2, offset = z1, z2, 0
    n_global = k1.shape[0]
    if impl == "triton":
        dt = _kernel_dtype(z1)
        if k1 is z1 and k2 is z2:
            # Keys are the queries (one process): the kernel's symmetric backward is one pass.
            return _kernels().nt_xent_triton(z1.to(dt), z2.to(dt), temperature)
        return _kernels().nt_xent_triton(z1.to(dt), z2.to(dt), temperature, k1.to(dt), k2.to(dt), offset)
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
    q, k = _normalize(q), _normalize(k)
    n = q.shape[0]
    if gather_distributed:
        keys, offset = all_gather_with_grad(k), get_rank() * n
    else:
        keys, offset = k, 0
    negs = None if queue is None else _normalize(queue.detach()).to(q.dtype)
    if impl == "triton":
        dt = _kernel_dtype(q)
        return _kernels().info_nce_triton(q.to(dt), keys.to(dt), temperature, negs, offset)
    if negs is not None:
        keys = torch.cat([keys, negs.to(keys.dtype)], 0)  # [N_global + K, d]
    logits = _widen(q @ keys.T / temperature)  # [n, N_global + K]
    pos = torch.arange(n, device=q.device) + offset
    return F.cross_entropy(logits, pos)


__all__ = ["IMPLS", "all_gather_no_grad", "info_nce", "nt_xent", "resolve_impl"]
