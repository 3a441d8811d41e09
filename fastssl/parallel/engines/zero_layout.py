"""Where each parameter lies in DeepSpeed ZeRO's flat partitions, and the two things built on it.

ZeRO steps the torch optimizer on one flat fp32 tensor per parameter group (DeepSpeed source:
runtime/zero/stage_1_and_2.py `_optimizer_step`, stage3.py `_optimizer_step`):

- stages 1 and 2: this rank's contiguous slice of the group's parameters laid end to end
  (`single_partition_of_fp32_groups[i]`), so a parameter may be cut between ranks; where each
  piece lies is DeepSpeed's own lp -> hp mapping (`p._hp_mapping`, the one `safe_get_full_*` use);
- stage 3: every parameter's own partition (`partition_numel()` values, the last rank's padded)
  end to end per sub-group (`fp32_partitioned_groups_flat[s]`, parameters `fp16_groups[s]`).

LARS needs each layer's norm over all its pieces (`FlatLayers`, read by fastssl/train/optim.py),
and a frozen parameter (`SSLMethod.frozen_params`) must be kept out of the reduced gradients and
out of the optimizer step (`ZeroFreeze`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from fastssl.methods.base import SSLMethod

FREEZE_KEY = "fastssl_freezable"  # param-group key: index into ZeroFreeze.params of its one parameter


@dataclass
class FlatLayers:
    """The layers one flat tensor holds pieces of, for LARS (fastssl/train/optim.py): piece k is
    its elements [starts[k], starts[k] + numels[k]) and belongs to layer layers[k] of `num_layers`;
    elements in no piece are padding. Other ranks hold the layers' other pieces, so the squared
    norms of the pieces are summed with `all_reduce` (in place, over those ranks)."""

    starts: list[int]
    numels: list[int]
    layers: list[int]
    num_layers: int
    all_reduce: Callable[[torch.Tensor], None]

    def layer_norms(self, w: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(||w||, ||g||) of every layer: two [num_layers] tensors, the same on every rank."""
        sq = w.new_zeros(2, self.num_layers, dtype=torch.float32)
        if self.starts:
            pieces = [(w.narrow(0, s, n), g.narrow(0, s, n)) for s, n in zip(self.starts, self.numels)]
            local = torch.stack([torch.stack([a.float().pow(2).sum(), b.float().pow(2).sum()])
                                 for a, b in pieces])  # [pieces, 2]
            sq.index_add_(1, torch.tensor(self.layers, device=w.device), local.T)
        self.all_reduce(sq)
        return sq[0].sqrt(), sq[1].sqrt()

    def scale_(self, g: torch.Tensor, factor: torch.Tensor) -> None:
        """g *= factor[layer] on each piece (padding is left as it is: nothing reads it)."""
        for s, n, layer in zip(self.starts, self.numels, self.layers):
            g.narrow(0, s, n).mul_(factor[layer])


@dataclass
class FlatGroup:
    flat: torch.Tensor  # what the torch optimizer steps (and keys its state by)
    params: list[nn.Parameter]  # the module parameters whose pieces it holds, in DeepSpeed's order
    pieces: list[tuple[int, int, int]]  # (start in flat, numel, index into params); padding is in none
    process_group: Any  # the ranks holding the other pieces


def flat_groups(zero_optimizer, stage: int) -> list[FlatGroup]:
    """Every flat tensor ZeRO steps on this rank, with the layout of the parameters in it."""
    z = zero_optimizer
    out = []
    if stage < 3:
        for i, params in enumerate(z.bit16_groups):
            pieces = []
            for j, p in enumerate(params):
                if p._hp_mapping is not None:  # None: no element of p is in this rank's slice
                    a = p._hp_mapping.get_hp_fragment_address()
                    pieces.append((int(a.start), int(a.numel), j))
            out.append(FlatGroup(z.single_partition_of_fp32_groups[i], list(params), pieces,
                                 z.real_dp_process_group[i]))
        return out
    for s, params in enumerate(z.fp16_groups):
        rank, offset, pieces = z._get_sub_group_partition_rank(s), 0, []
        for j, p in enumerate(params):
            n = p.partition_numel()
            real = min(n, max(0, p.ds_numel - rank * n))  # the rest of the last rank's partition is padding
            if real:
                pieces.append((offset, real, j))
            offset += n
        out.append(FlatGroup(z.fp32_partitioned_groups_flat[s], list(params), pieces,
                             z._get_sub_group_process_group(s)))
    return out


def attach_lars(optimizer: torch.optim.Optimizer, groups: list[FlatGroup]) -> None:
    """Tell LARS which layers each flat tensor holds pieces of (a collective per LARS group and step:
    every rank steps every flat tensor, in the same order, so the all-reduces pair up)."""
    import deepspeed.comm as ds_dist

    for fg in groups:
        def all_reduce(t: torch.Tensor, pg=fg.process_group) -> None:
            ds_dist.all_reduce(t, group=pg)

        optimizer.flat_layers[id(fg.flat)] = FlatLayers(
            starts=[s for s, _, _ in fg.pieces], numels=[n for _, n, _ in fg.pieces],
            layers=[j for _, _, j in fg.pieces], num_layers=len(fg.params), all_reduce=all_reduce)


def check_lars_layout(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    """Step pre-hook: a LARS tensor stepped without a layout would get one ratio for many layers."""
    for g in optimizer.param_groups:
        for p in g["params"]:
            if p.grad is not None and not g["lars_exclude"] and id(p) not in optimizer.flat_layers:
                raise RuntimeError("LARS under DeepSpeed ZeRO: a flat partition has no layer layout; "
                                   "DeepSpeed replaced its fp32 partitions after fastssl read them")


class ZeroFreeze:
    """`SSLMethod.frozen_params` under ZeRO, where gradients live in DeepSpeed's flat partitions.

    A frozen parameter must end its step untouched, exactly as when its gradient is None under
    DDP: no update, no weight decay, no momentum or Adam moment update, no step count, and no
    share in the global norm that clipping uses. So:

    - each freezable parameter gets an optimizer group of its own (same hyperparameters), built
      before `deepspeed.initialize`, so ZeRO gives it flat tensors of its own;
    - a gradient hook returns zeros for it while frozen, before ZeRO's own hooks reduce the
      gradient, so the reduced partitions and the global norm hold nothing of it (a NaN there is
      dropped too, as DDP's None is);
    - a step pre-hook on the torch optimizer sets its group's flat gradients to None while frozen,
      so the optimizer skips them as torch optimizers skip a parameter without gradient.
    """

    def __init__(self, params: list[nn.Parameter]):
        self.params = list(params)
        self._index = {id(p): i for i, p in enumerate(self.params)}
        self._now: set[int] = set()  # indices of the parameters frozen in the current step
        for i, p in enumerate(self.params):
            if not p.requires_grad:
                raise ValueError("freezable_params() must return parameters that require a gradient")
            p.register_hook(lambda g, i=i: torch.zeros_like(g) if i in self._now else None)

    @classmethod
    def for_method(cls, method: SSLMethod, optimizer: torch.optim.Optimizer) -> "ZeroFreeze | None":
        """Before `deepspeed.initialize`: None when the method freezes nothing."""
        if type(method).after_backward is not SSLMethod.after_backward:
            logging.getLogger(__name__).warning(
                "%s overrides after_backward, whose gradients DeepSpeed ZeRO has already reduced into its own "
                "partitions, so it has no effect there; declare frozen parameters with frozen_params() instead",
                type(method).__name__)
        params = method.freezable_params()
        if not params:
            return None
        freeze = cls(params)
        freeze.split_groups(optimizer)
        return freeze

    def split_groups(self, optimizer: torch.optim.Optimizer) -> None:
        """Give each freezable parameter a group of its own (before any optimizer state exists)."""
        groups = []
        for g in optimizer.param_groups:
            rest = [p for p in g["params"] if id(p) not in self._index]
            if rest:
                groups.append({**g, "params": rest})
            groups += [{**g, "params": [p], FREEZE_KEY: self._index[id(p)]}
                       for p in g["params"] if id(p) in self._index]
        optimizer.param_groups = groups

    def arm(self, frozen: list[nn.Parameter]) -> None:
        """The parameters frozen in the step about to run (called before its forward)."""
        unknown = [p for p in frozen if id(p) not in self._index]
        if unknown:
            raise RuntimeError(f"frozen_params() returned {len(unknown)} parameter(s) not in freezable_params(); "
                               "DeepSpeed ZeRO needs every one declared there")
        self._now = {self._index[id(p)] for p in frozen}

    def skip_frozen(self, optimizer: torch.optim.Optimizer, args, kwargs) -> None:
        """Step pre-hook of the torch optimizer ZeRO steps (one group or sub-group at a time)."""
        for g in optimizer.param_groups:
            if g.get(FREEZE_KEY) in self._now:
                for p in g["params"]:
                    p.grad = None
