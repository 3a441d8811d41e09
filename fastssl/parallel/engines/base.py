"""The engine interface: everything the training step needs from a parallelism strategy.

An engine takes the single-device method (fastssl/methods/base.py's protocol) and owns, for one
strategy (DDP, FSDP2, DeepSpeed ZeRO):

- wrapping: `wrap(method, make_optimizer)` converts BatchNorm, shards or replicates, and builds the
  optimizer over the parameters as the strategy holds them;
- the step: `forward`, `backward`, `step` (gradient clipping on the global norm over shards, the
  non-finite gradient check agreed by all ranks, the optimizer step, zero_grad), `set_lr`,
  `any_rank` (the one all-reduce of the step's flags) and `ema_update` (each `momentum_pairs()`
  target from its online module, on the shards this rank holds);
- gradient accumulation: `gradient_sync(False)` around a micro-batch's forward and backward keeps
  its gradients local (DDP `no_sync`, FSDP2 `set_requires_gradient_sync(False)`, DeepSpeed's
  accumulation boundary), `discard_gradients` drops what a skipped step accumulated, and
  `forward(..., embed=True)` runs the method's `embed` through the wrapped model (GradCache);
- state: `model_state` / `optimizer_state` in one layout for every strategy (parameter names of
  the single-device method, full logical shapes: DTensor shards under FSDP2, full tensors
  otherwise) and `load_optimizer_state`, so a checkpoint loads under any strategy;
- precision (`train.precision`): `auto` is bf16 on CUDA and fp32 on CPU; an explicit `bf16` takes
  the engine's CUDA bf16 path on any device, so a CPU run tests it: DDP autocast, FSDP2's
  `MixedPrecisionPolicy(param bf16, reduce fp32)`, DeepSpeed's bf16 mode (bf16 weights, fp32 master
  weights; `prepare_inputs` casts the images to bf16). `describe()` names the mode. Whatever the
  mode, EMA targets (`ema_state`), DINO's centre and MoCo's queue (`method.fp32_state()`) stay
  fp32, checked after wrapping (`check_fp32_state`);
- `eval_forward`: the backbone's features (fp32), called by every rank together (under sharding a
  forward needs every rank's shards);
- `replicated_state`: tensors every rank must hold identically (the replica check);
- `memory_report`: bytes of parameters, gradients and optimizer state this rank holds.

The training step (fastssl/train/step.py) is written once against this interface.
"""

from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterator

import torch
import torch.distributed as dist
from torch import nn

from fastssl.config import Config
from fastssl.distributed import World
from fastssl.errors import FastSSLError
from fastssl.methods.base import SSLMethod
from fastssl.methods.momentum import ema_update_
from fastssl.local_shard import local_tensor

OptimizerFactory = Callable[[nn.Module], torch.optim.Optimizer]


@dataclass
class StepReport:
    grad_norm: torch.Tensor  # the global norm before clipping (0-d, the same on every rank)
    applied: bool  # False when the gradients were not finite and the step was skipped


def precision_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    """bf16 or None (fp32) from `train.precision`: `auto` is bf16 on CUDA only; an explicit `bf16`
    is bf16 on any device, and every engine then takes its CUDA path on CPU too (so CPU runs test it)."""
    p = cfg.train.precision
    if p == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if p == "bf16":
        return torch.bfloat16
    if p == "fp32":
        return None
    raise FastSSLError(f"unknown --train.precision={p!r}; use auto, bf16 or fp32")


def init_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Create the lazily built optimizer state (momentum, Adam moments) as a fresh optimizer's.

    A step with zero gradients at lr 0 (as torch.distributed.checkpoint's `_init_optim_state`)
    creates the tensors, so a checkpoint can be loaded into them in place; they are then zeroed,
    AdamW's step count included, which is exactly the state torch's SGD (dampening 0) and AdamW
    start from, so a first real step after this matches one without it.
    """
    if optimizer.state:
        return
    params = [p for g in optimizer.param_groups for p in g["params"] if p.requires_grad]
    if any(p.grad is not None for p in params):
        return
    lrs = [g["lr"] for g in optimizer.param_groups]
    for p in params:
        p.grad = torch.zeros_like(p)
    for g in optimizer.param_groups:
        g["lr"] = 0.0
    optimizer.step()
    for g, lr in zip(optimizer.param_groups, lrs):
        g["lr"] = lr
    for p in params:
        p.grad = None
    with torch.no_grad():
        for state in optimizer.state.values():
            for v in state.values():
                if torch.is_tensor(v):
                    v.zero_()


@contextlib.contextmanager
def calling(module: nn.Module, fn: Callable | None):
    """Within it, calling `module` runs `fn` instead of its forward, with all of the module's hooks
    (FSDP2's unshard and gradient hooks, DDP's reducer): torch's `register_fsdp_forward_method`
    does the same for FSDP2 alone. None leaves the forward as it is."""
    if fn is None:
        yield
        return
    module.forward = fn
    try:
        yield
    finally:
        del module.forward


@contextlib.contextmanager
def sync_switch(set_sync: Callable[[bool], None], enabled: bool):
    """`set_sync(enabled)` for the body, then back to syncing: FSDP2's gradient sync and
    DeepSpeed's accumulation boundary are switches on the wrapped model, not context managers."""
    set_sync(enabled)
    try:
        yield
    finally:
        set_sync(True)


def storage_bytes(tensors: Iterator[torch.Tensor], seen: set[int]) -> int:
    """Bytes of the distinct storages behind `tensors` (a shard's padded storage counts whole)."""
    total = 0
    for t in tensors:
        if t is None:
            continue
        t = local_tensor(t)
        s = t.untyped_storage()
        if s.nbytes() == 0 or s.data_ptr() in seen:
            continue
        seen.add(s.data_ptr())
        total += s.nbytes()
    return total


class Engine(ABC):
    """One parallelism strategy behind the interface the training step uses."""

    name: ClassVar[str]

    def __init__(self, cfg: Config, world: World):
        self.cfg, self.world = cfg, world
        self.method: SSLMethod  # the single-device module (BatchNorm converted): names in checkpoints
        self.model: nn.Module  # what the step calls
        self.optimizer: torch.optim.Optimizer
        # bf16 or None; `amp_dtype` is what `autocast` uses: engines with a bf16 mode of their own
        # (FSDP2's policy, DeepSpeed's bf16) set it to None. `input_dtype`: what `prepare_inputs`
        # casts the images to (DeepSpeed's bf16 weights take no fp32 input).
        self.compute_dtype = precision_dtype(cfg, world.device)
        self.amp_dtype = self.compute_dtype
        self.input_dtype: torch.dtype | None = None
        # fp32 copies of each target's local tensors, one list per `momentum_pairs()` entry, for an
        # engine whose target parameters are bf16 (DeepSpeed's bf16 mode); empty: they are fp32.
        self.ema_masters: list[list[torch.Tensor]] = []
        self.max_norm = cfg.optim.clip_grad if cfg.optim.clip_grad > 0 else math.inf

    # --- wrapping ------------------------------------------------------------------------------
    @abstractmethod
    def wrap(self, method: SSLMethod, make_optimizer: OptimizerFactory) -> None:
        """Prepare (fastssl/parallel/parallelize.py), shard or replicate, build the optimizer."""

    def describe(self) -> str:
        """One line printed at the start of a run."""
        return f"strategy {self.name} on {self.world.dims.dp_size} process(es), {self.precision_mode()}"

    def precision_mode(self) -> str:
        """How this engine computes, for the start line: `ddp autocast bf16`, `ddp fp32`, ..."""
        return f"{self.name} autocast bf16" if self.amp_dtype is not None else f"{self.name} fp32"

    # --- the step ------------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.world.device.type, dtype=self.amp_dtype)

    def prepare_inputs(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """The images in the dtype the wrapped model takes (`input_dtype`; unchanged when None)."""
        if self.input_dtype is None:
            return images
        return [x.to(self.input_dtype) if x.is_floating_point() else x for x in images]

    def forward(self, views: list[torch.Tensor], step: int, schedule_len: float, embed: bool = False):
        """The method's forward (its outputs dict) or, with `embed`, its `embed` step (a list of
        embeddings), through the wrapped model so that DDP's and FSDP2's hooks run either way."""
        views = self.prepare_inputs(views)
        with self.autocast(), calling(self.method, self.method.embed if embed else None):
            return self.model(views, step=step, schedule_len=schedule_len)

    def gradient_sync(self, enabled: bool) -> contextlib.AbstractContextManager:
        """Around one micro-batch's forward and backward: with `enabled` False its gradients stay
        on this rank and accumulate, to be reduced with the last micro-batch's (where `enabled`)."""
        return contextlib.nullcontext()

    def discard_gradients(self) -> None:
        """Drop every gradient accumulated in this step (a step skipped or stopped part way)."""
        self.zero_grad()

    def any_rank(self, flags: list[bool | torch.Tensor]) -> list[bool]:
        """OR each flag over ranks with one all-reduce (and one host sync)."""
        t = torch.stack([torch.as_tensor(f, dtype=torch.float32, device=self.world.device).reshape(())
                         for f in flags])
        if self.world.dims.dp_size > 1:
            dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.world.dims.dp_group)
        return [bool(v) for v in t.tolist()]

    @abstractmethod
    def backward(self, loss: torch.Tensor) -> None: ...

    @abstractmethod
    def step(self) -> StepReport:
        """Clip to `optim.clip_grad` on the global norm, skip if not finite, step, zero_grad."""

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def set_lr(self, lr: float) -> None:
        """The schedule's lr times each group's `lr_scale` (layer decay, the bias lr of Barlow Twins)
        into every group, but a group built with `fixed_lr` keeps that value (fastssl/train/optim.py).
        An lr of 0 means "no step" and reaches every group."""
        for g in self.optimizer.param_groups:
            g["lr"] = g["fixed_lr"] if g.get("fixed_lr") and lr > 0 else lr * g.get("lr_scale", 1.0)

    @torch.no_grad()
    def ema_update(self, step: int, schedule_len: float) -> None:
        pairs = self.method.momentum_pairs()
        if not pairs:
            return
        m = self.method.momentum_at(step, schedule_len)
        masters = self.ema_masters or [None] * len(pairs)
        for (online, target), master in zip(pairs, masters):
            ema_update_(target, online, m, master)

    def ema_state(self) -> list[torch.Tensor]:
        """The tensors the EMA accumulates in (each target's local shards, or their fp32 masters)."""
        if self.ema_masters:
            return [t for m in self.ema_masters for t in m]
        return [local_tensor(p) for _, target in self.method.momentum_pairs() for p in target.parameters()]

    def check_fp32_state(self) -> None:
        """State accumulated over many steps (EMA targets, DINO's centre, MoCo's queue) must be fp32:
        in bf16 an update smaller than half a unit of the value (2^-9 of it) is rounded away."""
        bad = sorted({str(t.dtype) for t in [*self.ema_state(), *self.method.fp32_state()]} - {"torch.float32"})
        if bad:
            raise RuntimeError(f"{self.name}: EMA targets, centres and queues must stay fp32, found {bad}")

    def check_ema_alignment(self) -> None:
        """Each EMA target must be sharded exactly like its online module (same local shapes)."""
        for online, target in self.method.momentum_pairs():
            o = [tuple(local_tensor(p).shape) for p in online.parameters()]
            t = [tuple(local_tensor(p).shape) for p in target.parameters()]
            if o != t:
                raise RuntimeError(f"{self.name}: an EMA target is sharded unlike its online module "
                                   f"({len(t)} local shards vs {len(o)}); shard both the same way")

    # --- state ---------------------------------------------------------------------------------
    @abstractmethod
    def model_state(self) -> dict[str, torch.Tensor]:
        """Every parameter and persistent buffer by the single-device method's names."""

    @abstractmethod
    def optimizer_state(self) -> dict[str, dict[str, torch.Tensor]]:
        """{parameter name: {state key: tensor of the parameter's full logical shape, or 0-d}}."""

    @abstractmethod
    def load_optimizer_state(self, path) -> None:
        """Fill the optimizer state from a checkpoint folder (collective)."""

    # --- evaluation and checks -----------------------------------------------------------------
    @abstractmethod
    def eval_forward(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features [N, D] in eval mode; every rank calls it with its own images."""

    @abstractmethod
    def replicated_state(self) -> dict[str, torch.Tensor]:
        """Tensors that every rank holds in full and that must be identical across ranks."""

    def memory_report(self) -> dict[str, int]:
        """Bytes this rank holds: parameters, gradients (call between backward and step), optimizer."""
        seen: set[int] = set()
        params, grads, optim = self._memory_tensors()
        return {"param_bytes": storage_bytes(params, seen), "grad_bytes": storage_bytes(grads, seen),
                "optim_bytes": storage_bytes(optim, seen)}

    def _memory_tensors(self):
        """(parameter, gradient, optimizer-state) tensors this rank holds; storages counted once."""
        params = list(self.method.parameters())
        grads = [p.grad for p in params if p.grad is not None]
        optim = [v for s in self.optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
        return iter(params), iter(grads), iter(optim)
