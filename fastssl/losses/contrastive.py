"""NT-Xent (SimCLR) and InfoNCE (MoCo) with a choice of implementation: the public loss API.

`impl="torch"` materialises the [rows, keys] logits: simple and exact, memory O(N^2).
`impl="chunked"` (fastssl/losses/chunked.py) walks the logits in tiles in plain torch: memory
O(N d), any device and dtype.
`impl="triton"` calls the fused kernel in `fastssl_kernels.nt_xent` (memory O(N d)) on GPUs with a
tuned config (fastssl_kernels/configs.py), or on CPU when TRITON_INTERPRET=1 was set before
import (tests).
`impl="auto"` (see `resolve_impl`): on CUDA, triton where a config exists for the GPU, dtype and
width, else chunked; elsewhere torch while the logits fit TORCH_LOGITS_BUDGET_BYTES, else chunked.

With `gather_distributed=True`, each rank's queries meet the keys of all ranks; the returned
loss is the mean over this rank's queries, so the mean over ranks (what DDP's gradient
averaging optimises) is the loss over the global batch.

User mistakes (shapes, temperature, an impl that cannot run here) raise FastSSLError here, before
any kernel sees them; the kernel layer itself only raises ValueError.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from fastssl_kernels.pairs import dense_loss, info_nce_pairs, nt_xent_pairs

from fastssl.distributed import all_gather_no_grad, all_gather_with_grad, dp_rank
from fastssl.errors import FastSSLError
from fastssl.losses.chunked import info_nce_chunked, nt_xent_chunked

IMPLS = ("auto", "torch", "triton", "chunked")
# Largest fp32 [rows, keys] logits matrix `auto` lets the torch path build off CUDA. Its backward
# holds about three such matrices (logits, softmax, its gradient): 256 MiB here is ~0.8 GB peak,
# reached at 2N = 8,192 in single-process NT-Xent. Beyond it the chunked path runs.
TORCH_LOGITS_BUDGET_BYTES = 256 * 2**20


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


def _triton_unavailable(device: torch.device, dtype: torch.dtype, d: int) -> str | None:
    """Why the fused kernel cannot run for these embeddings; None if it can."""
    try:
        from fastssl_kernels import nt_xent as kernels
    except ImportError as e:
        return f"triton is not importable ({e})"
    return kernels.unsupported_reason(device, dtype, d)


def resolve_impl(
    impl: str,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    d: int = 128,
    rows: int = 0,
    keys: int = 0,
) -> str:
    """The implementation `impl` runs as: itself, or for "auto" the one that fits this call.

    rows x keys is the logits matrix the torch path would build (queue included).
    """
    if impl != "auto":
        return impl
    if device.type == "cuda":
        return "triton" if _triton_unavailable(device, dtype, d) is None else "chunked"
    return "torch" if rows * keys * 4 <= TORCH_LOGITS_BUDGET_BYTES else "chunked"


def _normalize(x: torch.Tensor) -> torch.Tensor:
    # Normalise in fp32 but keep the caller's dtype: under autocast F.normalize alone returns
    # fp32, which would push the fused kernel off bf16 tensor cores.
    return F.normalize(x.to(torch.promote_types(x.dtype, torch.float32)), dim=1).to(x.dtype)


def _kernel_dtype(x: torch.Tensor) -> torch.dtype:
    # Under autocast the torch path's matmul runs in the autocast dtype; the kernel matches it
    # even when the projector hands over fp32 (a final BatchNorm does).
    dev = x.device.type
    if x.dtype == torch.float32 and torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return x.dtype


def _kernels(x: torch.Tensor, dtype: torch.dtype):
    """The kernel module, after checking that it can run on x's device with this dtype."""
    reason = _triton_unavailable(x.device, dtype, x.shape[1])
    if reason is not None:
        raise FastSSLError(f"impl='triton' cannot run here: {reason}; use impl='chunked' or impl='auto'")
    from fastssl_kernels import nt_xent as kernels

    return kernels


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
    z1, z2 = _normalize(z1), _normalize(z2)
    n = z1.shape[0]
    if gather_distributed:
        k1, k2 = all_gather_with_grad(z1), all_gather_with_grad(z2)  # [N_global, d] each
        offset = dp_rank() * n
    else:
        k1, k2, offset = z1, z2, 0
    n_global = k1.shape[0]
    symmetric = k1 is z1 and k2 is z2  # keys are the queries (one process)
    dt = _kernel_dtype(z1)
    impl = resolve_impl(impl, z1.device, dt, z1.shape[1], 2 * n, 2 * n_global)
    if impl == "triton":
        kernels = _kernels(z1, dt)
        if symmetric:
            # The kernel's symmetric backward is one pass.
            return kernels.nt_xent_triton(z1.to(dt), z2.to(dt), temperature)
        return kernels.nt_xent_triton(z1.to(dt), z2.to(dt), temperature, k1.to(dt), k2.to(dt), offset)
    if impl == "chunked":
        if symmetric:
            return nt_xent_chunked(z1, z2, temperature)
        return nt_xent_chunked(z1, z2, temperature, k1, k2, offset)
    return dense_loss(nt_xent_pairs(z1, z2, k1, k2, offset), temperature)


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
    q, k = _normalize(q), _normalize(k)
    n = q.shape[0]
    if gather_distributed:
        keys, offset = all_gather_with_grad(k), dp_rank() * n
    else:
        keys, offset = k, 0
    negs = None if queue is None else _normalize(queue.detach()).to(q.dtype)
    dt = _kernel_dtype(q)
    n_keys = keys.shape[0] + (0 if negs is None else negs.shape[0])
    impl = resolve_impl(impl, q.device, dt, q.shape[1], n, n_keys)
    if impl == "triton":
        return _kernels(q, dt).info_nce_triton(q.to(dt), keys.to(dt), temperature, negs, offset)
    if impl == "chunked":
        return info_nce_chunked(q, keys, temperature, negs, offset)
    return dense_loss(info_nce_pairs(q, keys, negs, offset), temperature)


__all__ = ["IMPLS", "TORCH_LOGITS_BUDGET_BYTES", "all_gather_no_grad", "info_nce", "nt_xent", "resolve_impl"]
