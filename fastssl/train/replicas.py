"""The replica check: state that every rank holds in full must be identical on every rank.

Which state that is depends on the engine (`Engine.replicated_state`): everything under DDP and
ZeRO-1/2, buffers only (BatchNorm statistics, queues) under FSDP2 and ZeRO-3, whose sharded
parameters differ between ranks by design. A per-tensor float64 checksum is all-gathered: one
small collective per checkpoint, over the data-parallel group (every replica, whatever the
HSDP split: each replica group holds the same shards, each shard group the same buffers).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from fastssl.distributed import dp_group, dp_size
from fastssl.errors import FastSSLError
from fastssl.parallel.engines import Engine


def check_replicas(engine: Engine) -> None:
    if dp_size() == 1:
        return
    state = engine.replicated_state()
    if not state:
        return
    names = sorted(state)
    sums = torch.stack([state[n].detach().double().sum() for n in names]).to(engine.world.device)
    gathered = [torch.empty_like(sums) for _ in range(dp_size())]
    dist.all_gather(gathered, sums, group=dp_group())
    for r, g in enumerate(gathered[1:], start=1):
        if not torch.equal(g, gathered[0]):
            first = names[int((g != gathered[0]).nonzero()[0])]
            raise FastSSLError(
                f"rank {r}'s {first} differs from rank 0's; replicas diverged, so the run is not data-parallel. "
                f"Check that every rank runs the same fastssl version and config"
            )
