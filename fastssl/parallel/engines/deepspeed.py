"""DeepSpeed ZeRO: stage 1 shards optimizer state, 2 also gradients, 3 also parameters.

`deepspeed.initialize` wraps the whole method (EMA targets included, so ZeRO-3 partitions a
target exactly like its online module: each parameter is split into equal flat partitions, and
`ema_update_` works on `p.ds_tensor`, partition by partition) with fastssl's own optimizer and a
generated config, printed at the start of a run. `--dist.dp_replicate` > 1 is ZeRO++ hierarchical
partitioning (hpZ, `zero_hpz_partition_size` = dp_shard: a secondary copy of the parameters
partitioned within each dp_shard group, so backward's all-gathers stay there), ZeRO-3 only. The lr comes from fastssl's schedule every
step; DeepSpeed's engine owns backward, gradient averaging, clipping (`gradient_clipping`, on the
global norm over partitions) and the optimizer step, which it skips when that norm is not finite
(the check is agreed across ranks inside DeepSpeed).

bf16 (`--train.precision=bf16`, or `auto` on CUDA) is DeepSpeed's bf16 mode on any device, so a
CPU run tests the CUDA path: DeepSpeed casts every parameter to bf16 (buffers stay fp32) and keeps
fp32 master weights for the trainable ones in the optimizer; the engine casts the images to bf16
(`input_dtype`). Gradients are reduced in bf16 (DeepSpeed's default for a bf16 model). Three
things DeepSpeed would lose are kept in fp32 here (`_keep_fp32`): the master weights start from the
fp32 weights (not their bf16 rounding), each EMA target accumulates in an fp32 master of its local
tensors (`ema_masters`), and the method's `fp32_state()` (DINO's centre, MoCo's queue) stays fp32.
Checkpoints hold the fp32 masters, so they are the same layout and precision as any strategy's.

Checkpoints use the layout of every other strategy (fastssl/checkpoint/dcp_io.py): full-shape
parameters and per-parameter optimizer state by the method's names, assembled with DeepSpeed's
`safe_get_full_*` API (one parameter at a time, each rank keeping every world_size-th one, so no
rank ever holds the whole model twice) and restored with `safe_set_full_optimizer_state`.

ZeRO hands the optimizer flat partitions spanning many layers (zero_layout.py): LARS is told
where each layer's pieces lie and all-reduces their squared norms, so each layer gets its own
trust ratio as under DDP; parameters a method freezes for a step (`frozen_params`, DINO's last
layer in its first epoch) get optimizer groups of their own, a zero gradient before ZeRO reduces
it and no optimizer step, so they end the step bit for bit unchanged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from typing import Any

import torch
from torch import nn

from fastssl.checkpoint.dcp_io import check_matches, has_optimizer_state, load_in_place
from fastssl.config import Config
from fastssl.distributed import World
from fastssl.errors import FastSSLError
from fastssl.methods.base import SSLMethod
from fastssl.parallel.engines.base import Engine, OptimizerFactory, StepReport, init_optimizer_state, sync_switch
from fastssl.parallel.engines.zero_layout import ZeroFreeze, attach_lars, check_lars_layout, flat_groups
from fastssl.parallel.parallelize import prepare
from fastssl.parallel_dims import ensure_process_group
from fastssl.registry import ENGINES


def import_deepspeed():
    import warnings

    if not torch.cuda.is_available():
        # Said explicitly, DeepSpeed skips its "Setting accelerator to CPU" warning on every rank.
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    # DeepSpeed's own ZeRO code calls torch's deprecated all_gather_into_tensor on every step; the
    # FutureWarning is DeepSpeed's to fix, not the user's, so it is filtered here, once.
    warnings.filterwarnings("ignore", message=r"`torch.distributed.all_gather_into_tensor` is deprecated",
                            category=FutureWarning)
    try:
        import deepspeed
    except ImportError:
        raise FastSSLError("--dist.strategy=deepspeed needs DeepSpeed, which is not installed; "
                           "pip install 'fastssl[deepspeed]', or use --dist.strategy=fsdp") from None
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    return deepspeed


def deepspeed_config(cfg: Config, world: World, amp_dtype: torch.dtype | None) -> dict[str, Any]:
    """The DeepSpeed config fastssl generates from its own (there is no DeepSpeed JSON to write)."""
    zero: dict[str, Any] = {"stage": cfg.dist.zero_stage}
    if world.dims.hsdp:  # ZeRO++ hpZ: a secondary copy of the parameters partitioned within dp_shard
        zero["zero_hpz_partition_size"] = world.dims.dp_shard
    if cfg.dist.zero_stage == 3:
        # Every parameter is partitioned (DeepSpeed keeps those under 1e5 values whole by default):
        # the memory figures and the EMA-by-partition path then hold for every parameter.
        zero["stage3_param_persistence_threshold"] = 0
    # Buckets of 5e7 values instead of DeepSpeed's 5e8: 200 MB of fp32 staging is plenty.
    zero["reduce_bucket_size"] = 5e7
    zero["allgather_bucket_size"] = 5e7
    ds: dict[str, Any] = {
        # fastssl's step sets the accumulation boundary itself (`gradient_sync`) and scales the loss.
        "train_micro_batch_size_per_gpu": cfg.train.batch_size // (world.dims.dp_size * cfg.train.grad_accum_steps),
        "gradient_accumulation_steps": cfg.train.grad_accum_steps,
        # 0 disables clipping; the global norm is still computed, and a non-finite one skips the step.
        "gradient_clipping": cfg.optim.clip_grad,
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,  # fastssl's AdamW / SGD (torch's), not DeepSpeed's fused ones
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }
    if amp_dtype == torch.bfloat16:
        ds["bf16"] = {"enabled": True, "check_grad_overflow": True}
    return ds


@ENGINES.register("deepspeed")
class DeepSpeedEngine(Engine):
    name = "deepspeed"

    def __init__(self, cfg: Config, world: World):
        super().__init__(cfg, world)
        self.stage = cfg.dist.zero_stage
        if world.dims.hsdp and self.stage != 3:
            raise FastSSLError(f"--dist.dp_replicate={world.dims.dp_replicate} under deepspeed is ZeRO++ hpZ, which "
                               f"needs ZeRO-3: set --dist.zero_stage=3, or use --dist.strategy=fsdp (HSDP)")
        self.deepspeed = import_deepspeed()
        self.ds_config: dict[str, Any] = {}
        self.freeze: ZeroFreeze | None = None
        self.flat_groups: list = []  # zero_layout.FlatGroup of every flat tensor ZeRO steps

    def wrap(self, method: SSLMethod, make_optimizer: OptimizerFactory) -> None:
        ensure_process_group(self.world.device.type)
        # torchrun sets these; a plain `python -m fastssl train` (one process) does not. DeepSpeed's
        # engine reads them, and its comm layer adopts the group that exists by now (it makes none).
        for key, value in (("LOCAL_RANK", self.world.local_rank), ("RANK", self.world.rank),
                           ("WORLD_SIZE", self.world.world_size)):
            os.environ.setdefault(key, str(value))
        self.deepspeed.init_distributed(dist_backend="nccl" if self.world.device.type == "cuda" else "gloo")
        self.ds_config = deepspeed_config(self.cfg, self.world, self.amp_dtype)
        method = prepare(method, self.cfg, self.world, compile_per_unit=True, bf16_params=self.bf16)
        if self.bf16:
            self.amp_dtype = None  # DeepSpeed runs the model in bf16 itself
        if self.stage == 3:
            self._register_direct_parameters(method)
        # DeepSpeed's bf16 cast drops the fp32 values; the masters are rebuilt from these.
        fp32_weights = [p.detach().clone() for p in method.parameters()] if self.bf16 else None
        torch_optimizer = make_optimizer(method)
        self.freeze = ZeroFreeze.for_method(method, torch_optimizer)
        engine, optimizer, _, _ = self.deepspeed.initialize(model=method, optimizer=torch_optimizer,
                                                            config=self.ds_config)
        self.method, self.model, self.optimizer = method, engine, optimizer
        self.check_ema_alignment()
        if fp32_weights is not None:
            self._keep_fp32(fp32_weights)
        self.check_fp32_state()
        if self.stage == 3:
            self._share_fp32_master()
        self._init_state()
        # After the state exists: its creation steps every group with zero gradients at lr 0.
        self.flat_groups = flat_groups(optimizer, self.stage)
        if self.freeze is not None:
            torch_optimizer.register_step_pre_hook(self.freeze.skip_frozen)
        if hasattr(torch_optimizer, "flat_layers"):  # LARS: per-layer norms over the flat partitions
            attach_lars(torch_optimizer, self.flat_groups)
            torch_optimizer.register_step_pre_hook(check_lars_layout)

    def _register_direct_parameters(self, method: nn.Module) -> None:
        """ZeRO-3 gathers a module's parameters around its own forward. Parameters of a module with
        children (a ViT's pos_embed and cls_token) may be read outside it (MAE's `embed_patches`), so
        they are gathered for the whole forward of the method instead."""
        register_external_parameter = self.deepspeed.zero.register_external_parameter
        for module in method.modules():
            if module is method or not any(True for _ in module.children()):
                continue
            for p in module.parameters(recurse=False):
                register_external_parameter(method, p)

    def describe(self) -> str:
        return (f"strategy {self.precision_mode()} on {self.world.world_size} process(es); "
                f"DeepSpeed config: {json.dumps(self.ds_config, sort_keys=True)}")

    @property
    def bf16(self) -> bool:
        return "bf16" in self.ds_config

    def precision_mode(self) -> str:
        mode = "bf16 (fp32 master weights)" if self.bf16 else "fp32"
        return f"deepspeed ZeRO-{self.stage} {mode}"

    def _keep_fp32(self, fp32_weights: list[torch.Tensor]) -> None:
        """Under DeepSpeed's bf16 mode: fp32 masters from the fp32 weights, fp32 EMA and fp32_state().

        DeepSpeed builds its fp32 masters from the parameters it has just cast to bf16; they are
        reset from the fp32 weights (a resumed run then continues from the saved fp32 values).
        """
        from deepspeed.utils import safe_set_full_fp32_param

        self.input_dtype = torch.bfloat16
        full = dict(zip(self.method.parameters(), fp32_weights))
        for p, w in full.items():
            if p.requires_grad:
                safe_set_full_fp32_param(p, w.to(self.world.device))
        self.ema_masters = [[self._local_part(p, full[p]) for p in target.parameters()]
                            for _, target in self.method.momentum_pairs()]
        for t in self.method.fp32_state():  # DeepSpeed 0.19 leaves buffers alone; older ones cast them
            t.data = t.data.float()

    def _local_part(self, p: nn.Parameter, full: torch.Tensor) -> torch.Tensor:
        """This rank's part of `full` (p's fp32 value), laid out as `local_tensor(p)`: the whole
        tensor, or under ZeRO-3 its flat partition (zero-padded at the end)."""
        if self.stage < 3:
            return full.float().clone()
        part = torch.zeros(p.ds_tensor.numel(), dtype=torch.float32, device=p.ds_tensor.device)
        flat = full.reshape(-1)
        start = self.world.dims.dp_rank * part.numel()
        n = max(0, min(part.numel(), flat.numel() - start))
        part[:n] = flat[start:start + n]
        return part.view_as(p.ds_tensor)

    def forward(self, views: list[torch.Tensor], step: int, schedule_len: float, embed: bool = False):
        if self.freeze is not None:  # before backward: ZeRO reduces gradients as backward makes them
            self.freeze.arm(self.method.frozen_params(step, self.method.epoch_of(step)))
        return super().forward(views, step, schedule_len, embed)

    def backward(self, loss: torch.Tensor) -> None:
        # The step has scaled each micro-batch's loss by 1 / K already (and GradCache needs none).
        self.model.backward(loss, scale_wrt_gas=False)

    def gradient_sync(self, enabled: bool) -> contextlib.AbstractContextManager:
        """DeepSpeed's own accumulation boundary: only the boundary micro-batch's backward reduces
        (ZeRO-1/2 partition, ZeRO-3 reduce-scatter) and only then does `model.step` step.

        Known gap: a step skipped after some micro-batches' backward (a later micro-batch's loss
        not finite) leaves their gradients in ZeRO-2's accumulators, which `zero_grad` does not
        reach, so the next step adds them (measured: ZeRO-2, K = 4, NaN in the 4th micro-batch).
        Skips at the first micro-batch, GradCache's (before any backward) and stops are exact."""
        return sync_switch(self.model.set_gradient_accumulation_boundary, enabled)

    def step(self) -> StepReport:
        self.model.step()
        norm = self.model.get_global_grad_norm()
        norm = torch.as_tensor(float("nan") if norm is None else float(norm))
        return StepReport(norm, bool(self.model.was_step_applied()))

    def zero_grad(self) -> None:
        self.model.zero_grad()

    # --- state ---------------------------------------------------------------------------------
    def _inner(self) -> torch.optim.Optimizer:
        """The torch optimizer DeepSpeed steps on its flat fp32 partitions."""
        return self.optimizer.optimizer

    def _numbered_parameters(self) -> list[tuple[int, str, nn.Parameter]]:
        """(index, name, parameter) of every parameter: every rank gathers each one (a collective),
        but keeps its full tensor only where `_keeps(index)`."""
        return [(i, n, p) for i, (n, p) in enumerate(self.method.named_parameters())]

    def _keeps(self, i: int) -> bool:
        return i % self.world.dims.dp_size == self.world.dims.dp_rank

    def model_state(self) -> dict[str, torch.Tensor]:
        """fp32 under bf16 too: trainable parameters from DeepSpeed's fp32 masters, EMA targets
        from `ema_masters` (each a collective: every rank calls it for every parameter)."""
        state = self.method.state_dict()
        if self.stage < 3 and not self.bf16:
            return state  # fp32: module parameters are whole on every rank
        out = {k: v for k, v in state.items() if k not in dict(self.method.named_parameters())}
        masters = {id(p): m for (_, target), ms in zip(self.method.momentum_pairs(), self.ema_masters)
                   for p, m in zip(target.parameters(), ms)}
        for i, name, p in self._numbered_parameters():
            full = self._full_fp32(p, masters.get(id(p)))
            if self.stage < 3 or self._keeps(i):
                out[name] = full
        return out

    def _full_fp32(self, p: nn.Parameter, master: torch.Tensor | None) -> torch.Tensor:
        """p's full value, from its fp32 master where one exists (collective under ZeRO-3 and bf16)."""
        from deepspeed.utils import safe_get_full_fp32_param

        if master is not None and self.stage < 3:
            return master.detach().clone()
        if master is not None:  # ZeRO-3 EMA target: gather the fp32 partitions
            parts = [torch.empty_like(master) for _ in range(self.world.dims.dp_size)]
            torch.distributed.all_gather(parts, master.contiguous())
            return torch.cat(parts)[: p.ds_numel].view(p.ds_shape).clone()
        if self.bf16 and p.requires_grad:
            return safe_get_full_fp32_param(p).detach().clone()
        if self.stage < 3:
            return p.detach().float().clone()  # frozen (MAE's fixed position embedding): its bf16 value
        with self.deepspeed.zero.GatheredParameters([p], modifier_rank=None):
            return p.data.detach().float().clone()

    def _state_keys(self) -> tuple[list[str], list[str]]:
        """(per-element keys such as exp_avg, 0-d keys such as AdamW's step) of the inner optimizer."""
        state = next(iter(self._inner().state.values()), {})
        full = [k for k, v in state.items() if torch.is_tensor(v) and v.dim() > 0]
        scalar = [k for k, v in state.items() if torch.is_tensor(v) and v.dim() == 0]
        return full, scalar

    def _flat_state(self) -> dict[int, dict[str, torch.Tensor]]:
        """id(parameter) -> the inner optimizer's state of the flat tensor holding it. 0-d entries
        (AdamW's step) belong to the flat tensor: a frozen parameter's group counts its own steps."""
        inner = self._inner()
        return {id(p): inner.state.get(fg.flat, {}) for fg in self.flat_groups for p in fg.params}

    def optimizer_state(self) -> dict[str, dict[str, torch.Tensor]]:
        from deepspeed.utils import safe_get_full_optimizer_state

        full, scalar = self._state_keys()
        if not full and not scalar:
            return {}
        states = self._flat_state()
        out: dict[str, dict[str, torch.Tensor]] = {}
        for i, name, p in self._numbered_parameters():
            if not p.requires_grad:
                continue
            entry = {k: states[id(p)][k].detach().clone() for k in scalar if k in states[id(p)]}
            for k in full:
                t = safe_get_full_optimizer_state(p, k)  # collective: every rank calls it for every parameter
                if self._keeps(i):
                    entry[k] = t.detach().clone()
            out[name] = entry
        return out

    def load_optimizer_state(self, path) -> None:
        from deepspeed.utils import safe_set_full_optimizer_state

        if not has_optimizer_state(path):
            return
        full, scalar = self._state_keys()
        shapes = {n: tuple(p.ds_shape) if self.stage == 3 else tuple(p.shape) for n, p in self.method.named_parameters()}
        template = {n: {**{k: torch.zeros((), dtype=torch.float32) for k in scalar},
                        **{k: torch.zeros(shapes[n], dtype=torch.float32) for k in full}}
                    for n, p in self.method.named_parameters() if p.requires_grad}
        template = check_matches(path, "optim", template, "optimizer (--optim.name)", strict=False)
        load_in_place(path, {"optim": template})
        params = dict(self.method.named_parameters())
        for name, entry in template.items():
            for k in full:
                if k in entry:
                    safe_set_full_optimizer_state(params[name], entry[k].to(self.world.device), k)
        names = {id(p): n for n, p in params.items()}
        inner = self._inner()
        for fg in self.flat_groups:
            saved = next((template[names[id(p)]] for p in fg.params if names[id(p)] in template), {})
            for k in scalar:
                if k in saved and k in inner.state.get(fg.flat, {}):
                    inner.state[fg.flat][k].copy_(saved[k])

    def _share_fp32_master(self) -> None:
        """ZeRO-3 in fp32: let the optimizer step the parameter partitions themselves.

        DeepSpeed means to skip the fp32 master copy when the partitions already are fp32 on the
        optimizer's device (stage3.py, `_create_fp32_partitions`), but it compares a torch.device
        with the device's name as a string, which is never equal, so it clones them: 1/N of the
        model per rank for nothing. Before any optimizer state exists, point each sub-group's
        master at its parameter partition, as DeepSpeed's own branch would have.
        """
        opt = self.optimizer
        for i, (lp, hp) in enumerate(zip(opt.fp16_partitioned_groups_flat, opt.fp32_partitioned_groups_flat)):
            if lp is None or lp.dtype != hp.dtype or lp.device != hp.device or lp.data_ptr() == hp.data_ptr():
                continue
            lp.ds_id, lp.requires_grad = hp.ds_id, True
            opt.fp32_partitioned_groups_flat[i] = lp

    def _init_state(self) -> None:
        """Create the inner optimizer's state now, as a fresh one's (zeros), for every group.

        ZeRO-1/2 map each parameter to its slice of the flat optimizer state once, lazily after
        the first group's first step, when the other groups have no state yet; their parameters
        then have no slice and `safe_get_full_optimizer_state` fails. Linking here, with all
        state present, avoids that. ZeRO-3 hands the optimizer one sub-group at a time (its
        param_groups are empty between steps), so each is initialised the same way in turn.
        """
        inner = self._inner()
        if self.stage < 3:
            init_optimizer_state(inner)
            self.optimizer._lazy_init_hp_params_optimizer_state()
            return
        if inner.state:
            return
        opt = self.optimizer
        for i, flat in enumerate(opt.fp32_partitioned_groups_flat):
            group = inner.param_groups[opt.sub_group_to_group_id[i]]
            params, lr = group["params"], group["lr"]
            group["params"], group["lr"] = [flat], 0.0
            flat.grad = torch.zeros_like(flat)
            inner.step()
            group["params"], group["lr"], flat.grad = params, lr, None
        with torch.no_grad():
            for state in inner.state.values():
                for v in state.values():
                    if torch.is_tensor(v):
                        v.zero_()

    # --- evaluation and checks -----------------------------------------------------------------
    @torch.no_grad()
    def eval_forward(self, images: torch.Tensor) -> torch.Tensor:
        (images,) = self.prepare_inputs([images])
        if self.stage < 3:
            return self.method.backbone(images).float()
        # Every rank gathers the backbone together (an all-gather per parameter) for the batch.
        with self.deepspeed.zero.GatheredParameters(list(self.method.backbone.parameters()), modifier_rank=None):
            return self.method.backbone(images).float()

    def replicated_state(self) -> dict[str, torch.Tensor]:
        state = self.method.state_dict()
        if self.stage < 3:
            return dict(state)
        names = {n for n, _ in self.method.named_parameters()}
        return {k: v for k, v in state.items() if k not in names}

    def _memory_tensors(self):
        """Parameters (ZeRO-3: each `ds_tensor` partition, via `local_tensor`; under bf16 also the EMA
        targets' fp32 masters), the reduced gradient
        partitions, the inner optimizer's state and the fp32 master partitions. DeepSpeed's bucket
        buffers (`reduce_bucket_size`, `allgather_bucket_size`) are staging for communication and
        not counted."""
        params = list(self.method.parameters()) + [t for m in self.ema_masters for t in m]
        opt = self.optimizer
        grads = [p.grad for p in params if p.grad is not None]
        for group in opt.averaged_gradients.values():
            grads += [g for g in (group or []) if g is not None]
        optim = [v for s in self._inner().state.values() for v in s.values() if torch.is_tensor(v)]
        if self.stage < 3:
            optim += list(opt.single_partition_of_fp32_groups)  # fp32 master partitions (a copy in fp32 too)
        else:
            grads.append(opt.grad_partitions_flat_buffer)  # held between steps, whatever is in it
            optim += list(opt.fp32_partitioned_groups_flat)  # aliases the fp32 parameters: counted once
        return iter(params), iter(grads), iter(optim)
