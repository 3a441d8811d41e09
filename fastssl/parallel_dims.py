"""The data-parallel layout of a run: `dp_replicate` x `dp_shard` ranks, as torchtitan's ParallelDims.

    dims = ParallelDims(dp_replicate=2, dp_shard=-1, world_size=8, rank=5)  # -> 2 x 4
    dims.dp_rank, dims.dp_size, dims.dp_group   # data sharding, negatives, queues, centres
    dims.fsdp_mesh                              # FSDP2: 1-D ("dp_shard") or 2-D HSDP mesh
    dims.group_labels()                         # process-group name -> mesh dim, for the comm counter

Real multi-node runs shard within a node and replicate across nodes (HSDP): FSDP's all-gathers
and reduce-scatters then stay on the fast intra-node links (`dp_shard`), and only one all-reduce
of each rank's gradient shard crosses nodes (`dp_replicate`). Every rank is a data-parallel rank
(there is no tensor or pipeline dim), so the whole data-parallel group is every rank: data
sharding and everything a method reduces over the batch (negatives, MoCo's queue, DINO's centre,
SyncBN statistics) use it, whatever the split. Only FSDP2 uses the split; DDP ignores it.

The device mesh `(dp_replicate, dp_shard)` with dims ("dp_replicate", "dp_shard") is built on
first use (`mesh`), from the process group that must exist by then; every rank must reach that
first use together (FSDP2's wrap, on every rank). `fastssl.distributed.init_distributed` builds
the dims, checking them against the world size before it joins the process group, and registers
them (`set_parallel_dims`) for the code below the trainer. Data-parallel ranks are the mesh's row-major order:
process rank r*dp_shard + s sits at (r, s) and is data-parallel rank r*dp_shard + s. The dims are
built from the process rank once (`rank`), and nothing else maps process ranks to data-parallel
ones: a tensor- or pipeline-parallel dim would change only this file.

This module is also the one home of the process group itself: it creates it (`ensure_process_group`:
torchrun's, or the 1-rank one a sharding engine needs), and it is the
only module that reads torch.distributed's global rank and world size (`global_rank`,
`global_size`); everything else asks it, or the dims (tests/test_house.py keeps it so).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

import torch.distributed as dist

from fastssl.config.sections import check_mesh
from fastssl.errors import FastSSLError

DIM_NAMES = ("dp_replicate", "dp_shard")


def group_ready() -> bool:
    """Whether a process group exists (torchrun's, or a sharding engine's 1-rank one)."""
    return dist.is_available() and dist.is_initialized()


def global_rank() -> int:
    """This process's rank in the default group (0 without one)."""
    return dist.get_rank() if group_ready() else 0


def global_size() -> int:
    """The number of processes in the default group (1 without one)."""
    return dist.get_world_size() if group_ready() else 1


def ensure_process_group(device_type: str, world_size: int = 1, backend: str = "auto",
                         timeout_s: int = 1800) -> None:
    """The default group, unless one exists: torchrun's (env:// rendezvous) for `world_size` > 1,
    else a 1-rank one, which sharding engines need even on one process
    (`fastssl.distributed.destroy_distributed` ends either with the run)."""
    if group_ready():
        return
    if backend == "auto":
        backend = "nccl" if device_type == "cuda" else "gloo"
    timeout = datetime.timedelta(seconds=timeout_s)
    if world_size > 1:
        dist.init_process_group(backend=backend, timeout=timeout)
    else:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)


def resolve_dims(dp_replicate: int, dp_shard: int, world_size: int) -> tuple[int, int]:
    """(R, S) with R * S == world_size; -1 takes the ranks the other dim leaves."""
    for key, problem in check_mesh(dp_replicate, dp_shard):  # also in Config.validate, before any work
        raise FastSSLError(f"--dist.{key}={dp_replicate if key == 'dp_replicate' else dp_shard} {problem}")
    for key, v in (("dp_replicate", dp_replicate), ("dp_shard", dp_shard)):
        if v != -1 and world_size % v:
            raise FastSSLError(f"--dist.{key}={v} does not divide the world size {world_size}; "
                               f"set --dist.{key} to a divisor of {world_size}")
    r = world_size // dp_shard if dp_replicate == -1 else dp_replicate
    s = world_size // dp_replicate if dp_shard == -1 else dp_shard
    if r * s != world_size:
        raise FastSSLError(f"--dist.dp_replicate={r} x --dist.dp_shard={s} is {r * s} ranks, not the world size "
                           f"{world_size}; set one of them to -1")
    return r, s


@dataclass
class ParallelDims:
    dp_replicate: int
    dp_shard: int
    world_size: int
    rank: int = 0  # this process's rank in the default group
    device_type: str = "cpu"
    _mesh: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.dp_replicate, self.dp_shard = resolve_dims(self.dp_replicate, self.dp_shard, self.world_size)

    @property
    def hsdp(self) -> bool:
        return self.dp_replicate > 1

    @property
    def dp_size(self) -> int:
        return self.dp_replicate * self.dp_shard

    @property
    def dp_group(self):
        """The whole data-parallel group (every rank), or None without torch.distributed."""
        # torchtitan flattens the mesh into "dp"; that is every rank here, i.e. the default group
        # (which is what `mesh._flatten("dp")` returns), so no mesh is needed for it.
        if not group_ready():
            return None
        return dist.group.WORLD

    @property
    def dp_rank(self) -> int:
        """This rank's index in the data-parallel group: its slice of the global batch."""
        return self.rank

    @property
    def replicate_rank(self) -> int:
        return self.rank // self.dp_shard

    @property
    def shard_rank(self) -> int:
        return self.rank % self.dp_shard

    @property
    def mesh(self):
        """The (dp_replicate, dp_shard) device mesh, built on first use (a collective)."""
        if self._mesh is None:
            from torch.distributed.device_mesh import init_device_mesh

            self._mesh = init_device_mesh(self.device_type, (self.dp_replicate, self.dp_shard),
                                          mesh_dim_names=DIM_NAMES)
        return self._mesh

    @property
    def fsdp_mesh(self):
        """FSDP2's mesh: 2-D (replicate, shard) for HSDP, else the 1-D "dp_shard" one."""
        return self.mesh[DIM_NAMES] if self.hsdp else self.mesh["dp_shard"]

    def group_labels(self) -> dict[str, str]:
        """{process-group name: "dp_replicate" | "dp_shard" | "dp"} for the groups this run uses."""
        if not group_ready():
            return {}
        labels = {}
        if self._mesh is not None:
            labels = {self._mesh.get_group(d).group_name: d for d in DIM_NAMES if d in self._mesh.mesh_dim_names}
        labels.setdefault(dist.group.WORLD.group_name, "dp")
        return labels

    def describe(self) -> str:
        return f"dp_replicate={self.dp_replicate} x dp_shard={self.dp_shard}"
