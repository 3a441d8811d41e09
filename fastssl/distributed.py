"""Process-group setup and the collectives the methods need.

Launch with `torchrun`; a plain `python -m fastssl` is world size 1 and never touches
torch.distributed. Collectives degrade to identities at world size 1 so methods need no branches.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class World:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


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


def init_distributed(backend: str = "auto", device: "str | torch.device" = "auto", timeout_s: int = 1800) -> World:
    """Join the process group that torchrun describes in the environment, if any, on this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = local_device(device, "--train.device", local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not is_dist():
        if backend == "auto":
            backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return World(rank=get_rank(), local_rank=local_rank, world_size=get_world_size(), device=dev)


def destroy_distributed() -> None:
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
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.n = x.shape[0]
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out, 0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        r = dist.get_rank()
        return grad[r * ctx.n : (r + 1) * ctx.n]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """[n, ...] per rank -> [world * n, ...], rank-major. Identity at world size 1."""
    if get_world_size() == 1:
        return x
    return _AllGatherWithGrad.apply(x)


@torch.no_grad()
def all_gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    if get_world_size() == 1:
        return x
    out = [torch.empty_like(x) for _ in range(get_world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, 0)


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    if get_world_size() == 1:
        return x
    x = x.clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x / get_world_size()
