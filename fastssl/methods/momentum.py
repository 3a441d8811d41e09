"""One EMA update and one momentum schedule for every method with a target network.

BYOL, MoCo (v2, v3) and DINO keep a target (key encoder, teacher) that is an exponential moving
average of the online network. The engines call `ema_update_` after each optimizer step on the
tensors each rank holds: with DDP the whole module, with FSDP2 the local shards of DTensors, with
ZeRO-3 DeepSpeed's partitions. Because a target is sharded exactly like its online module,
shard i of the target is updated from shard i of the online module, and nothing is gathered.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from fastssl.local_shard import local_tensor


def cosine_momentum(step: int, schedule_len: float, base: float, final: float = 1.0) -> float:
    """tau_k = final - (final - base) * (cos(pi k / K) + 1) / 2 (BYOL, Sec. 3.3; DINO; MoCo v3)."""
    if schedule_len <= 0:
        return base
    progress = min(max(step / schedule_len, 0.0), 1.0)
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2


def frozen_copy(module: nn.Module) -> nn.Module:
    """An EMA target's start: a copy of its online module that takes no gradient."""
    return copy.deepcopy(module).requires_grad_(False)


def ema_sources(target: nn.Module, online: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(target, online) tensors this rank holds, shard i of the target against shard i of the online."""
    t_params = [local_tensor(p) for p in target.parameters()]
    o_params = [local_tensor(p).detach() for p in online.parameters()]
    if len(t_params) != len(o_params):
        raise RuntimeError(f"EMA target has {len(t_params)} parameters but its online module has {len(o_params)}")
    for t, o in zip(t_params, o_params):
        if t.shape != o.shape:
            raise RuntimeError(f"EMA target shard {tuple(t.shape)} differs from online shard {tuple(o.shape)}; "
                               "the target must be sharded exactly like its online module")
    return t_params, o_params


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, momentum: float,
                master: list[torch.Tensor] | None = None) -> None:
    """target = m * target + (1 - m) * online for parameters, shard by shard; buffers are copied.

    The average accumulates in fp32: in the target's own tensors, or, when the target computes in
    bf16 (DeepSpeed's bf16 mode casts every parameter), in `master` (fp32 copies of its local
    tensors), which is then rounded into the target. A bf16 accumulator would round away every
    increment (1 - m)(online - target) below half a bf16 unit (2^-9 relative): at m = 0.999 most of
    each step. Buffers (BatchNorm running statistics) are copied rather than averaged, as BYOL and
    MoCo's reference implementations do (the target's BN runs in train mode on its own batch anyway).
    The engines check once, after wrapping, that every accumulator is fp32 (`Engine.check_fp32_state`),
    not here on every step; a copy (momentum 0, DeepCluster's snapshot) is exact in any dtype.
    """
    t_params, o_params = ema_sources(target, online)
    acc = t_params if master is None else master
    if acc:
        if any(o.dtype != a.dtype for o, a in zip(o_params, acc)):
            o_params = [o.to(a.dtype) for o, a in zip(o_params, acc)]
        torch._foreach_mul_(acc, momentum)
        torch._foreach_add_(acc, o_params, alpha=1 - momentum)
        if master is not None:
            torch._foreach_copy_(t_params, master)
    for tb, ob in zip(target.buffers(), online.buffers()):
        local_tensor(tb).copy_(local_tensor(ob))
