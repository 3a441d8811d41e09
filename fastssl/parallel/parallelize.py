"""What every engine applies to the single-device method before it shards or replicates it.

`prepare(method, cfg, world)` applies, in this one order (torchtitan's: AC, then compile, then
data parallelism):

1. `apply_memory_format`: channels_last for convolutional backbones (not ViTs) on CUDA;
2. `apply_sync_bn`: BatchNorm -> synchronised BatchNorm (sync_batchnorm.py) over the whole
   data-parallel group when it has more than one rank,
   so the statistics (and the loss) equal those of one process on the global batch, as SimCLR
   and BYOL assume; with `bf16_params` (an engine that casts parameters but not buffers to bf16:
   DeepSpeed's bf16, FSDP2's policy) every other BatchNorm becomes a `MixedBatchNorm`, whose bf16
   weights work with its fp32 running statistics;
3. `apply_activation_checkpointing` (`--train.activation_checkpointing=true`): each trainable
   shard unit (ViT block, ResNet stage) recomputes its activations in backward. The composable
   `checkpoint` keeps parameter names unchanged, so checkpoints do not depend on it;
4. `apply_compile` (`--train.compile=true`): DDP compiles the whole backbone; the sharding
   engines compile each shard unit, so FSDP2's and ZeRO-3's per-unit hooks stay outside the
   compiled graphs.

The engine then wraps the result (fastssl/parallel/engines/): DDP, FSDP2 `fully_shard` per shard
unit and then the root, or `deepspeed.initialize`. Compile must see the final module types
(SyncBN, checkpointed units), and run inside the data-parallel wrapper.
"""

from __future__ import annotations

import torch
from torch import nn

from fastssl.config import Config
from fastssl.distributed import World
from fastssl.methods.base import SSLMethod
from fastssl.parallel.sync_batchnorm import convert_mixed_batchnorm, convert_sync_batchnorm

def apply_memory_format(method: SSLMethod, world: World) -> SSLMethod:
    if world.device.type == "cuda" and not method.backbone.is_vit:
        method.to(memory_format=torch.channels_last)
    return method


def apply_sync_bn(method: SSLMethod, world: World) -> SSLMethod:
    # A method may keep per-rank BN on purpose (MoCo v2's ShuffleBN): `sync_batchnorm = False`.
    if world.dims.dp_size > 1 and getattr(method, "sync_batchnorm", True):
        method = convert_sync_batchnorm(method, world.device)
    return method


def trainable_units(method: SSLMethod) -> list[nn.Module]:
    """Shard units with parameters that receive gradients (EMA targets' blocks excluded)."""
    return [u for u in method.shard_units() if any(p.requires_grad for p in u.parameters())]


def apply_activation_checkpointing(method: SSLMethod) -> SSLMethod:
    from torch.distributed._composable import checkpoint

    for unit in trainable_units(method):
        checkpoint(unit)
    return method


def apply_compile(method: SSLMethod, per_unit: bool) -> SSLMethod:
    if per_unit:
        for unit in method.shard_units():
            unit.compile()
    else:
        method.backbone.compile()
    return method


def prepare(method: SSLMethod, cfg: Config, world: World, compile_per_unit: bool,
            bf16_params: bool = False) -> SSLMethod:
    """Steps 1-4 above; returns the method to shard or replicate (SyncBN may replace modules)."""
    if cfg.train.channels_last:
        method = apply_memory_format(method, world)
    method = apply_sync_bn(method, world)
    if bf16_params:
        method = convert_mixed_batchnorm(method)
    if cfg.train.activation_checkpointing:
        method = apply_activation_checkpointing(method)
    if cfg.train.compile:
        method = apply_compile(method, per_unit=compile_per_unit)
    return method
