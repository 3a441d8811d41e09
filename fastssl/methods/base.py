"""The method protocol: what the trainer and the parallel engines may rely on, and nothing else.

A method is a single-device `nn.Module` (no DDP/FSDP/DeepSpeed inside) with:

- `backbone`: a `fastssl.models.backbone.Backbone`, the part kept for downstream use;
- `forward(views, step, schedule_len) -> dict`: "loss" plus detached scalars to log. `step` is the
  real step (it seeds per-step draws and gives the epoch); `step / schedule_len` is the progress
  of the EMA / teacher schedules, which is all `schedule_len` may be used for. It is not
  `--train.max_steps` nor the planned step count: after a time-budget re-plan
  (fastssl/train/time_budget.py `schedule_length`) it is a float that moves from step to step;
- `view_spec(cfg)` (classmethod): the views the data backends make for it (two views, multi-crop,
  one view), as a `fastssl.data.views.ViewSpec`;
- `momentum_pairs()`: `(online, target)` module pairs whose target is an EMA of the online
  module. The engine shards each target exactly like its online module and runs the one shared
  EMA update (`fastssl.methods.momentum.ema_update_`) shard by shard after each optimizer step,
  with the momentum `momentum_at(step, schedule_len)`;
- `shard_units()`: modules the engines wrap one by one (FSDP2 `fully_shard`, activation
  checkpointing): the backbone's blocks, and those of every target backbone; the root is
  wrapped last by the engine;
- `after_backward(step, epoch)`: gradient surgery before clipping and the optimizer step; runs on
  local gradient shards. The default drops the gradients of `frozen_params(step, epoch)`;
- `frozen_params(step, epoch)`: parameters that take no optimizer step at all in this step, as if
  their gradient were None (no update, no weight decay, no momentum or moment update) and that
  count for nothing in the clipped global norm: DINO's last layer in its first epoch. Every one
  must be among `freezable_params()` (default: those frozen at step 0), which engines read once
  at wrap time: DeepSpeed ZeRO, whose gradients live in its own flat partitions where
  `after_backward` cannot reach them, puts those in optimizer groups of their own, zeroes their
  gradients as backward produces them and keeps its optimizer off those groups while frozen;
- `fp32_state()`: tensors (buffers) accumulated over many steps that must stay fp32 whatever the
  compute precision, as EMA targets do: DINO's centre, MoCo's queue. Engines keep them fp32 and
  check it after wrapping (a bf16 EMA rounds away increments under 2^-9 of the value);
- `commit_step(step, schedule_len)`: state that only a *successful* step may change (MoCo's queue,
  DINO's centre), computed in forward and applied here, so a skipped non-finite step leaves it
  untouched and the guard never copies it. Under gradient accumulation (`--train.grad_accum_steps`)
  forward runs once per micro-batch: what it computes for `commit_step` accumulates over the
  step's micro-batches (MoCo's keys, DINO's batch centres) and is applied once, here;
- `start_step()`: called before a step's first forward; drops what a skipped or stopped step
  accumulated for `commit_step`;
- `configure_schedule(steps_per_epoch, total_steps)`: called once before training, for methods
  whose schedule is set in epochs (DINO's teacher temperature and frozen last layer).
- `on_epoch_start(epoch, images)`: called on every rank before the first step of each epoch
  (not when resuming mid-epoch), with `images()` yielding this rank's disjoint share of the
  training set (`fastssl.cluster.training_images`); DeepCluster v2 clusters it. Default: no-op.

Class attributes:

- `needs_pairs`: the loss needs >= 2 samples in each rank's micro-batch (in-batch negatives,
  batch statistics). The loaders refuse fewer than 2 images per rank for every method, but
  `--train.grad_accum_steps` cuts a rank's batch into micro-batches that can still hold one:
  fastssl/train/accumulation.py `check_accumulation` reads it, where the data-parallel size is
  known (`Config.validate` runs before there is a world);
- `needs_vit`: the method works on patch tokens (MAE, I-JEPA, DINOv2); `Config.validate` reads it;
- `couples_samples`: the loss of a sample depends on the other samples of the batch (in-batch
  negatives). A method that couples samples splits its forward into two steps, so that
  GradCache (fastssl/train/grad_cache.py) can accumulate it exactly, and its forward is their
  composition:

- `embed(views, step, schedule_len) -> list[Tensor]`: the micro-batch's embeddings, each [n, ...]
  (SimCLR's z1, z2; MoCo v3's queries and keys); those with a gradient are what GradCache
  backpropagates into. Run twice per micro-batch (without, then with a graph), under the same RNG
  state. Normalisation layers with batch statistics (BatchNorm) see one micro-batch at a time;
- `loss_on_embeddings(embeddings, step, schedule_len) -> dict`: forward's outputs from `embed`'s
  tensors concatenated over the step's micro-batches (each [n_rank, ...], in row order), with
  negatives gathered across ranks as in forward. It uses no parameters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, ClassVar, Iterable

import torch
from torch import nn

from fastssl.methods.momentum import cosine_momentum

if TYPE_CHECKING:
    from fastssl.config import Config, MethodConfig
    from fastssl.data.views import ViewSpec
    from fastssl.models.backbone import Backbone


class SSLMethod(nn.Module):
    """Base class of every method; the defaults fit a method with no EMA target and two views."""

    needs_pairs: ClassVar[bool] = False
    needs_vit: ClassVar[bool] = False
    couples_samples: ClassVar[bool] = False

    def __init__(self, backbone: "Backbone", cfg: "MethodConfig"):
        super().__init__()
        self.backbone = backbone
        self.cfg = cfg
        self.steps_per_epoch = 1
        self.total_steps = 1

    @classmethod
    def view_spec(cls, cfg: "Config") -> "ViewSpec":
        from fastssl.data.views import views_from_aug

        return views_from_aug(cfg.aug, cfg.data.image_size)

    def forward(self, views: list[torch.Tensor], step: int = 0, schedule_len: float = 1.0) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # --- GradCache's two steps (methods with couples_samples) ------------------------------------
    def embed(self, views: list[torch.Tensor], step: int = 0, schedule_len: float = 1.0) -> list[torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} does not couple samples; it has no embed step")

    def loss_on_embeddings(self, embeddings: list[torch.Tensor], step: int = 0,
                           schedule_len: float = 1.0) -> dict[str, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} does not couple samples; it has no loss_on_embeddings step")

    # --- EMA targets ---------------------------------------------------------------------------
    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return []

    def momentum_at(self, step: int, schedule_len: float) -> float:
        cfg = self.cfg
        return cosine_momentum(step, schedule_len, cfg.momentum_base, cfg.momentum_final)

    # --- sharding ------------------------------------------------------------------------------
    def shard_units(self) -> list[nn.Module]:
        units = list(self.backbone.blocks())
        for _, target in self.momentum_pairs():
            if hasattr(target, "blocks") and callable(target.blocks):
                units += list(target.blocks())
        return units

    # --- step hooks ----------------------------------------------------------------------------
    def configure_schedule(self, steps_per_epoch: int, total_steps: int) -> None:
        self.steps_per_epoch, self.total_steps = max(steps_per_epoch, 1), max(total_steps, 1)

    def after_backward(self, step: int, epoch: int) -> None:
        for p in self.frozen_params(step, epoch):
            p.grad = None

    def frozen_params(self, step: int, epoch: int) -> list[nn.Parameter]:
        return []

    def freezable_params(self) -> list[nn.Parameter]:
        return self.frozen_params(0, 0)

    def fixed_lr_params(self) -> list[nn.Parameter]:
        """Parameters that keep the peak lr instead of following the schedule (SimSiam's
        predictor, --fix-pred-lr): `fastssl.train.optim` puts them in groups of their own."""
        return []

    def on_epoch_start(self, epoch: int, images: "Callable[[], Iterable[torch.Tensor]]") -> None:
        pass

    def fp32_state(self) -> list[torch.Tensor]:
        return []

    def start_step(self) -> None:
        pass

    @torch.no_grad()
    def commit_step(self, step: int, schedule_len: float) -> None:
        pass

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch
