"""FSDP2 (`fully_shard`): parameters, gradients and optimizer state sharded over ranks.

The mesh is `ParallelDims.fsdp_mesh` (fastssl/parallel_dims.py): with `--dist.dp_replicate=1`
(the default) a 1-D mesh over every rank, full sharding; with R > 1 the 2-D ("dp_replicate",
"dp_shard") mesh, HSDP: each parameter is sharded over its dp_shard group and replicated across
the R groups, so all-gathers and reduce-scatters stay within a shard group and gradients are then
all-reduced across replicas (torchtitan's apply_fsdp with dp_replicate > 1).

Wrapping, in this order: `prepare` (SyncBN, activation checkpointing, compile per unit), then
`fully_shard` on each of `method.shard_units()` (the backbone's blocks and every EMA target's
blocks), then on the method (the root: stems, heads, norms, position embeddings). FSDP2 shards
each parameter on dim 0 over the mesh whatever unit it is in, so an EMA target and its online
module have identical local shards and `ema_update_` runs shard by shard without gathering.
The root is gathered for the whole forward, so methods may touch any parameter there (MAE's
`embed_patches` reads the position embedding outside the backbone's forward).

With bf16 precision (on CUDA by default, on CPU when asked for) a `MixedPrecisionPolicy` replaces
autocast: the sharded parameters, the optimizer and the EMA stay fp32, each unit's parameters are
all-gathered in bf16 and cast its floating inputs to bf16, and gradients are reduce-scattered in
fp32. Buffers (BatchNorm statistics, DINO's centre, MoCo's queue) are not touched by the policy and
stay fp32. `--dist.reshard_after_forward` trades memory for one all-gather.
"""

from __future__ import annotations

import contextlib

import torch

from fastssl.methods.base import SSLMethod
from fastssl.parallel.engines.base import OptimizerFactory, sync_switch
from fastssl.parallel.engines.torch_optimizer import TorchOptimizerEngine
from fastssl.parallel.parallelize import prepare
from fastssl.parallel_dims import ensure_process_group
from fastssl.registry import ENGINES


@ENGINES.register("fsdp")
class FSDPEngine(TorchOptimizerEngine):
    name = "fsdp"

    def wrap(self, method: SSLMethod, make_optimizer: OptimizerFactory) -> None:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        ensure_process_group(self.world.device.type)
        method = prepare(method, self.cfg, self.world, compile_per_unit=True,
                         bf16_params=self.compute_dtype is not None)
        kwargs = {"mesh": self.world.dims.fsdp_mesh, "reshard_after_forward": self.cfg.dist.reshard_after_forward}
        if self.compute_dtype is not None:
            kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=self.compute_dtype, reduce_dtype=torch.float32)
            self.amp_dtype = None  # the policy casts; no autocast on top
        for unit in method.shard_units():
            fully_shard(unit, **kwargs)
        fully_shard(method, **kwargs)
        self.method = self.model = method
        self.check_ema_alignment()
        self.check_fp32_state()
        self.optimizer = make_optimizer(method)

    def describe(self) -> str:
        dims = self.world.dims
        kind = f"HSDP {dims.describe()}" if dims.hsdp else "fully_shard"
        return (f"strategy fsdp (FSDP2 {kind} over {len(self.method.shard_units())} units + root) on "
                f"{dims.dp_size} process(es), reshard_after_forward={self.cfg.dist.reshard_after_forward}, "
                f"{self.precision_mode()}")

    def precision_mode(self) -> str:
        if self.compute_dtype is None:
            return "fsdp fp32"
        return "fsdp MixedPrecisionPolicy(param bf16, reduce fp32)"

    def gradient_sync(self, enabled: bool) -> contextlib.AbstractContextManager:
        """Without sync each unit keeps its unsharded gradient and skips its reduce-scatter; the
        last micro-batch's backward reduce-scatters the sum, so a step of K micro-batches moves the
        gradient bytes of one (the comm counter of `fastssl bench step --grad-accum` shows it)."""
        return sync_switch(self.method.set_requires_gradient_sync, enabled)

    def discard_gradients(self) -> None:
        # Gradients held back by gradient_sync(False) live unsharded in FSDP2's parameters, out of
        # the optimizer's reach (private FSDPParam fields, torch 2.14).
        from torch.distributed.fsdp import FSDPModule

        for module in self.method.modules():
            group = module._get_fsdp_state()._fsdp_param_group if isinstance(module, FSDPModule) else None
            for fsdp_param in group.fsdp_params if group else []:
                fsdp_param._unsharded_param.grad = None
                fsdp_param.unsharded_accumulated_grad = None
        self.zero_grad()

    @torch.no_grad()
    def eval_forward(self, images: torch.Tensor) -> torch.Tensor:
        # The root's own parameters (stem, final norm) are gathered here; each block gathers its
        # own in its pre-forward hook. Every rank runs this, so the all-gathers match up.
        self.method.unshard()
        try:
            # The root's forward (which casts inputs under the policy) is bypassed: cast here.
            if self.compute_dtype is not None:
                images = images.to(self.compute_dtype)
            return self.method.backbone(images).float()
        finally:
            self.method.reshard()

    def replicated_state(self) -> dict[str, torch.Tensor]:
        names = {n for n, _ in self.method.named_parameters()}
        return {k: v for k, v in self.method.state_dict().items() if k not in names}  # buffers only
