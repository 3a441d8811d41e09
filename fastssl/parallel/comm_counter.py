"""Count the collectives a rank issues, and their payload bytes, while a block of code runs.

    with CommCounter(dims.group_labels()) as comm:
        train_step(...)
    comm.calls, comm.payload_bytes, comm.ring_bytes, comm.by_op, comm.by_dim

Every torch.distributed collective (DDP's bucketed all-reduce, FSDP2's all-gather and
reduce-scatter, DeepSpeed's through `deepspeed.comm`) is a `c10d` operator on the dispatcher, so
a TorchDispatchMode sees each call, its tensors and its process group. Per call:

- payload: the size of the full (unsharded) buffer, nccl-tests' "size": the tensor of an
  all-reduce or broadcast, the gathered output of an all-gather, the input of a reduce-scatter;
- ring bytes: what this rank sends with ring algorithms over the call's group of n ranks,
  2(n-1)/n x payload for all-reduce and (n-1)/n x payload for all-gather, reduce-scatter,
  all-to-all and broadcast. An estimate of wire traffic (NCCL may pick trees); the payload is
  what was asked for;
- the mesh dim: `labels` maps process-group names to "dp_replicate", "dp_shard" or "dp" (the
  whole data-parallel group; `ParallelDims.group_labels()`); `by_dim` holds {dim: [calls,
  payload bytes, ring bytes]}, so the traffic that crosses nodes under HSDP ("dp_replicate") is
  visible apart from the intra-node "dp_shard" traffic. A group not in `labels` counts as "other".

Limits: collectives issued inside another operator's dispatch are not seen: DTensor's own
reductions (FSDP2's gradient-norm all-reduce of one scalar per step, LARS norms on DTensors).
The mode sees every operator, so it slows the step: time steps without it.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import torch
import torch.distributed as dist
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

_NAMESPACES = ("c10d", "_c10d_functional")
_NO_PAYLOAD = ("barrier", "monitored_barrier_", "wait_tensor")


def _bytes(x) -> int:
    return sum(t.numel() * t.element_size() for t in tree_leaves(x) if isinstance(t, torch.Tensor))


def call_group(op: str, args: tuple) -> tuple[str, int]:
    """(process-group name, its size) of one c10d call: c10d ops take the group as a boxed
    ProcessGroup, functional ones its name as their last argument."""
    for a in args:
        if isinstance(a, torch.ScriptObject) and "ProcessGroup" in str(a._type()):
            pg = dist.ProcessGroup.unbox(a)
            return pg.group_name, pg.size()
    if args and isinstance(args[-1], str):
        from torch.distributed.distributed_c10d import _resolve_process_group

        return args[-1], _resolve_process_group(args[-1]).size()
    return "", 1


def payload_and_ring_factor(op: str, args: tuple, group_size: int) -> tuple[int, float]:
    n = max(group_size, 1)
    if op in _NO_PAYLOAD:
        return 0, 0.0
    if op == "all_gather_into_tensor":  # functional: (input, group_size, group)
        return _bytes(args[0]) * int(args[1]), (n - 1) / n
    # c10d ops take (tensors,) for in-place ops or (outputs, inputs, ...): the larger side is the
    # full buffer (the gathered output, the input to scatter).
    size = max(_bytes(args[0]), _bytes(args[1]) if len(args) > 1 else 0)
    factor = 2 * (n - 1) / n if "allreduce" in op or op == "all_reduce" else (n - 1) / n
    return size, factor


class CommCounter(TorchDispatchMode):
    def __init__(self, labels: dict[str, str] | None = None):
        super().__init__()
        self.labels = labels or {}
        self.calls = 0
        self.payload_bytes = 0
        self.ring_bytes = 0.0
        self.by_op: Counter[str] = Counter()
        self.by_dim: defaultdict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0])

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace in _NAMESPACES and func._opname not in _NO_PAYLOAD:
            op = func._opname
            group, n = call_group(op, args)
            size, factor = payload_and_ring_factor(op, args, n)
            self.calls += 1
            self.by_op[op] += 1
            self.payload_bytes += size
            self.ring_bytes += size * factor
            tally = self.by_dim[self.labels.get(group, "other")]
            tally[0] += 1
            tally[1] += size
            tally[2] += size * factor
        return func(*args, **(kwargs or {}))
