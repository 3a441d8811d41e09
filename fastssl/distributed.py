"""Process-group setup and the collectives the methods need.

Launch with `torchrun`; a plain `python -m fastssl` is world size 1 and never touches
torch.distributed. Collectives degrade to identities at world size 1 so methods need no branches.

Data-parallel rank, size and group come from one `ParallelDims` (fastssl/parallel_dims.py),
never from the global rank. The trainer (and `fastssl bench step`) registers the run's dims once,
in `init_distributed(..., dp_replicate, dp_shard)`; single-device code (methods, losses, the
loaders' plans) reads them through `dp_rank()`, `dp_size()` and `dp_group()`, and the collectives
below run over `dp_group()`. Without a registration (a method test under torchrun) the dims are
the default: every rank one data-parallel rank.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from typing import Any

import torch
import torch.distributed as dist

from fastssl.parallel_dims import ParallelDims, ensure_process_group, global_rank, global_size, group_ready


@dataclass
class World:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    dims: ParallelDims | None = None  # None: every rank one data-parallel rank (`--dist.dp_shard=-1`)

    def __post_init__(self) -> None:
        if self.dims is None:
            self.dims = ParallelDims(1, -1, self.world_size, self.rank, self.device.type)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_dist() -> bool:
    return group_ready()


_DIMS: ParallelDims | None = None


def set_parallel_dims(dims: ParallelDims | None) -> None:
    """Register the run's dims (None: back to the default); `destroy_distributed` unregisters."""
    global _DIMS
    _DIMS = dims


def parallel_dims() -> ParallelDims:
    if _DIMS is not None:
        return _DIMS
    return ParallelDims(1, -1, global_size(), global_rank())


def dp_rank() -> int:
    return parallel_dims().dp_rank


def dp_size() -> int:
    return parallel_dims().dp_size


def dp_group():
    """The whole data-parallel group (None without torch.distributed)."""
    return parallel_dims().dp_group


def local_device(
    requested: "str | torch.device" = "auto", flag: str = "--train.device", local_rank: int | None = None
) -> torch.device:
    """auto | cpu | cuda | cuda:N -> this process's device: cuda:LOCAL_RANK whenever CUDA is used.

    The one home of the device choice (trainer, eval, bench, DALI's device_id, the Triton launch
    guard), so every local rank gets its own GPU: torchrun starts one process per GPU and sets
    LOCAL_RANK. `local_rank` defaults to that variable. An explicit cuda:N is honoured only for a
    single local process (under torchrun it would put every rank on one GPU, which NCCL refuses).
    `flag` names the option the user set, so the error says which one to change.
    """
    from fastssl.errors import FastSSLError

    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if isinstance(requested, torch.device):
        if requested.type != "cuda" or requested.index is not None:
            return requested
        requested = "cuda"
    requested = str(requested)
    if requested not in ("auto", "cpu", "cuda") and not requested.startswith("cuda:"):
        raise FastSSLError(f"unknown device '{requested}'; use {flag}=auto, cpu or cuda")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise FastSSLError(f"{flag}={requested} but no CUDA device is visible; use {flag}=cpu")
    count = torch.cuda.device_count()
    if requested.startswith("cuda:"):
        index = int(requested[5:]) if requested[5:].isdigit() else -1
        if int(os.environ.get("LOCAL_WORLD_SIZE", "1")) > 1:
            raise FastSSLError(f"{flag}={requested} would put every local rank on one GPU; use {flag}=cuda "
                               f"(each rank takes cuda:LOCAL_RANK)")
        if not 0 <= index < count:
            raise FastSSLError(f"{flag}={requested} but {count} CUDA device(s) are visible; use {flag}=cuda:0 "
                               f"to cuda:{count - 1}")
        return torch.device("cuda", index)
    if local_rank >= count:
        raise FastSSLError(f"LOCAL_RANK={local_rank} but only {count} CUDA device(s) are visible; start at most "
                           f"{count} process(es) per node (torchrun --nproc_per_node={count}) or fix "
                           f"CUDA_VISIBLE_DEVICES")
    return torch.device("cuda", local_rank)


def resolve_device(
    requested: "str | torch.device" = "auto", local_rank: int | None = None, flag: str = "--train.device"
) -> torch.device:
    """The older name of `local_device` (eval and report call it by this name)."""
    return local_device(requested, flag, local_rank)


def init_distributed(backend: str = "auto", device: "str | torch.device" = "auto", timeout_s: int = 1800,
                     dp_replicate: int = 1, dp_shard: int = -1) -> World:
    """Join the process group that torchrun describes in the environment, if any, on this rank's device,
    and register the data-parallel dims (`--dist.dp_replicate` x `--dist.dp_shard`).

    The dims are checked against the world size before the process group is joined, so a wrong
    split fails at once on every rank, with no rendezvous to time out."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = local_device(device, "--train.device", local_rank)
    dims = ParallelDims(dp_replicate, dp_shard, world_size, int(os.environ.get("RANK", "0")), dev.type)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1:
        ensure_process_group(dev.type, world_size, backend, timeout_s)
    set_parallel_dims(dims)
    return World(rank=global_rank(), local_rank=local_rank, world_size=global_size(), device=dev, dims=dims)


def destroy_distributed() -> None:
    set_parallel_dims(None)
    if is_dist():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if is_dist():
        dist.barrier()


class _AllGatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sends each slice's gradient back to the rank that owns it.

    Every rank's loss depends on every rank's keys, so the backward sums the incoming gradients
    over ranks (all_reduce) before taking the local slice. With DDP's gradient averaging the
    parameter gradients then equal those of the mean loss over the global batch.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, dims: ParallelDims) -> torch.Tensor:
        ctx.n, ctx.rank, ctx.group = x.shape[0], dims.dp_rank, dims.dp_group
        out = [torch.empty_like(x) for _ in range(dims.dp_size)]
        dist.all_gather(out, x.contiguous(), group=ctx.group)
        return torch.cat(out, 0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n], None


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """[n, ...] per data-parallel rank -> [dp_size * n, ...], rank-major. Identity at dp size 1."""
    dims = parallel_dims()
    if dims.dp_size == 1:
        return x
    return _AllGatherWithGrad.apply(x, dims)


class _AllReduceSumWithGrad(torch.autograd.Function):
    """Sum over the data-parallel ranks, differentiable: every rank's loss depends on every rank's
    input, so the backward sums the incoming gradients over ranks too. Written here rather than
    taken from `torch.distributed.nn.functional.all_reduce`, which torch deprecates (FutureWarning
    on every call) in favour of a private API."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM, group=group)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


def all_reduce_sum_with_grad(x: torch.Tensor) -> torch.Tensor:
    """x summed over the data-parallel ranks, with gradients to every rank's x. Identity at dp size 1."""
    dims = parallel_dims()
    if dims.dp_size == 1:
        return x
    return _AllReduceSumWithGrad.apply(x, dims.dp_group)


@torch.no_grad()
def all_gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    dims = parallel_dims()
    if dims.dp_size == 1:
        return x
    out = [torch.empty_like(x) for _ in range(dims.dp_size)]
    dist.all_gather(out, x.contiguous(), group=dims.dp_group)
    return torch.cat(out, 0)


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean over the data-parallel group."""
    dims = parallel_dims()
    if dims.dp_size == 1:
        return x
    x = x.clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM, group=dims.dp_group)
    return x / dims.dp_size
