"""DDP: every rank holds the whole model and optimizer; gradients are all-reduced in backward.

DDP ignores the `dp_replicate` x `dp_shard` split: it all-reduces over the whole data-parallel group."""

from __future__ import annotations

import contextlib

import torch

from fastssl.methods.base import SSLMethod
from fastssl.parallel.engines.base import OptimizerFactory
from fastssl.parallel.engines.torch_optimizer import TorchOptimizerEngine
from fastssl.parallel.parallelize import prepare
from fastssl.registry import ENGINES


@ENGINES.register("ddp")
class DDPEngine(TorchOptimizerEngine):
    name = "ddp"

    def wrap(self, method: SSLMethod, make_optimizer: OptimizerFactory) -> None:
        method = prepare(method, self.cfg, self.world, compile_per_unit=False)
        self.method = method
        self.model = method
        dims = self.world.dims
        if dims.dp_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            device_ids = [self.world.device.index] if self.world.device.type == "cuda" else None
            # Buffers are not broadcast before each forward: synchronised BatchNorm keeps them equal.
            # Gradients live in DDP's buckets (no second copy).
            self.model = DDP(method, device_ids=device_ids, gradient_as_bucket_view=True, process_group=dims.dp_group,
                             **_no_buffer_sync())
        self.check_fp32_state()
        self.optimizer = make_optimizer(method)

    def gradient_sync(self, enabled: bool) -> contextlib.AbstractContextManager:
        # no_sync: backward accumulates in the local gradients; the next synced backward all-reduces the sum.
        if enabled or self.model is self.method:
            return contextlib.nullcontext()
        return self.model.no_sync()

    @torch.no_grad()
    def eval_forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.method.backbone(images)

    def replicated_state(self) -> dict[str, torch.Tensor]:
        return dict(self.method.state_dict())


def _no_buffer_sync() -> dict[str, bool]:
    """torch >= 2.14 deprecates `broadcast_buffers` (a FutureWarning per rank) for
    `forward_sync_buffers`, which still syncs once at init: harmless here, since every rank builds
    the method from the same seed or checkpoint. torch 2.11 (the GPU image) has only the old name."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel as DDP

    if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}
