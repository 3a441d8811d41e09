"""The part of a parameter this rank holds, whatever engine sharded it.

DDP leaves parameters whole, FSDP2 makes them DTensors (`to_local()` is this rank's shard), and
DeepSpeed ZeRO-3 keeps its partition in `ds_tensor`. Code that works shard by shard (the EMA
update, SwAV's prototype normalisation, the engines' memory and alignment checks) reads through
`local_tensor` and needs no branch per engine.
"""

from __future__ import annotations

import torch


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """The part of `t` this rank holds: a DTensor's local shard, DeepSpeed ZeRO-3's partition."""
    if hasattr(t, "ds_tensor"):  # DeepSpeed ZeRO-3 partitioned parameter
        return t.ds_tensor
    if hasattr(t, "to_local"):  # DTensor (FSDP2)
        return t.to_local()
    return t
