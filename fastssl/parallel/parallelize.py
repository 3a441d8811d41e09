"""Parallelism applied from outside the single-device model, in one documented order.

`parallelize(method, cfg, world)` applies, in this order (as in torchtitan):

1. `apply_memory_format`: channels_last for convolutional backbones on CUDA;
2. `apply_sync_bn`: BatchNorm -> synchronised BatchNorm (sync_batchnorm.py) when world_size > 1, so the statistics (and the
   loss) equal those of one process on the global batch, as SimCLR and BYOL assume;
3. `apply_compile`: torch.compile of the backbone (the projector and loss stay eager);
4. `apply_data_parallel`: DDP (the `fsdp` and `deepspeed` strategies come with the scale-out work).

Order matters: compile must see the final module types (SyncBN) and run inside the DDP wrapper,
so DDP's communication hooks stay outside the compiled graph.
"""

from __future__ import annotations

import torch
from torch import nn

from fastssl.config import Config
from fastssl.distributed import World
from fastssl.errors import FastSSLError
from fastssl.parallel.sync_batchnorm import convert_sync_batchnorm

STRATEGIES = ("ddp",)


def apply_memory_format(method: nn.Module, world: World) -> nn.Module:
    if world.device.type == "cuda" and "resnet" in getattr(method.backbone, "name", ""):
        method.to(memory_format=torch.channels_last)
    return method


def apply_sync_bn(method: nn.Module, world: World) -> nn.Module:
    if world.world_size > 1:
        method = convert_sync_batchnorm(method, world.device)
    return method


def apply_compile(method: nn.Module) -> nn.Module:
    method.backbone.compile()
    return method


def apply_data_parallel(method: nn.Module, cfg: Config, world: World) -> nn.Module:
    if cfg.dist.strategy not in STRATEGIES:
        raise FastSSLError(f"dist.strategy={cfg.dist.strategy!r} is not available; use one of {', '.join(STRATEGIES)}")
    if world.world_size == 1:
        return method
    from torch.nn.parallel import DistributedDataParallel as DDP

    device_ids = [world.device.index] if world.device.type == "cuda" else None
    return DDP(method, device_ids=device_ids, broadcast_buffers=False)


def parallelize(method: nn.Module, cfg: Config, world: World) -> nn.Module:
    """Returns the module to call in the training step; `unwrap` gives back the method."""
    method = apply_memory_format(method, world) if cfg.train.channels_last else method
    method = apply_sync_bn(method, world)
    if cfg.train.compile:
        method = apply_compile(method)
    return apply_data_parallel(method, cfg, world)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model
