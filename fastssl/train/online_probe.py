"""`--eval.online_probe=true`: a linear classifier trained on detached backbone features during
pretraining, the curve solo-learn (`methods/base.py`: `self.classifier(feats.detach())`), lightly
(`OnlineLinearClassifier`) and stable-pretraining (`OnlineProbe`) log next to the SSL loss.

It must not change training, so it is kept out of everything the engines own:
- not a submodule of the method: no DDP bucket, FSDP shard, ZeRO partition, clipped norm or
  checkpointed model tensor; its own fp32 `nn.Linear` and SGD, made under a forked RNG;
- it sees features only detached (or under no_grad), so no gradient reaches the backbone;
- under torchrun each rank's gradient is summed with the others' in one all-reduce (which also
  carries the batch's counts), so every rank takes the same step and the probe stays identical.

Features. Forward hooks, registered from outside, catch the pooled features the method's own
forward computes: a pre-hook on the method notes the first view (and the step, so the micro-batches
of one step keep the first), and a hook on `method.backbone` keeps the first rows of its first
call. At the first step every rank checks (values, once) that those rows are the first view's
images, and all ranks agree: true for two-view, multi-crop and concatenating methods (SimCLR,
BYOL, DINO, ...), so the probe costs no forward at all. Otherwise (MAE never calls the pooled
forward; CPC and jigsaw feed tiles; colorization feeds grey images) every step ends with a
no_grad eval-mode forward of the first view after the optimizer step: one forward of a batch per
step, and eval mode so BatchNorm statistics and the RNG stay as they are. Measured on 2 busy CPU
cores (load 16, batch 64, 16 px): 1.2 ms a step when captured (SimCLR, resnet-tiny; the step
takes ~1.4 s), 114 ms a step with its own forward (MAE, vit_nano; ~20% of the step). Either is
training time for `--train.time_budget`. Captured features are the training forward's
(train-mode BatchNorm, drop path); the held-out top-1 uses eval mode, as the kNN does. With
micro-batches, the first one's first view is taken with the first labels of the batch, so
micro-batches must be leading slices of the batch.

Labels come with every training batch; -1 (unlabelled) images are ignored as solo-learn's
`ignore_index=-1` does. Data without any labels turns the probe off with a one-line notice.
Its state goes into the checkpoint's train state, so `--resume` continues it.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fastssl.config import Config
from fastssl.distributed import World, all_reduce_mean, dp_size
from fastssl.errors import FastSSLError
from fastssl.parallel.engines import Engine
from fastssl.train.knn_monitor import KnnMonitor

_STATE_KEY = "online_probe"
_PROBE_SEED = 0  # the probe's initial weights, drawn without touching the training's RNG


def training_classes(cfg: Config) -> tuple[int, str]:
    """(classes of the pretraining images, "") or (0, why the probe cannot run on them)."""
    from fastssl.data.sources.factory import open_pretrain_source, parse_slice, resolve_dataset

    if resolve_dataset(cfg.data.dataset, cfg.data.path) == "webdataset":
        path = parse_slice(cfg.data.path)[0]
        return 0, f"--data.path={path} holds webdataset tars, whose labels are unknown before reading"
    source = open_pretrain_source(cfg.data)
    labels = np.asarray(source.labels)
    if not len(labels) or labels.max() < 0:
        return 0, f"--data.path={cfg.data.path or cfg.data.dataset} has images without labels"
    return max(int(source.num_classes or 0), int(labels.max()) + 1), ""


class OnlineProbe:
    """Built after the engine wraps the method; `update` after every applied step."""

    def __init__(self, cfg: Config, world: World, engine: Engine, resumed: dict[str, Any] | None = None):
        self.cfg, self.world, self.engine = cfg, world, engine
        self.num_classes, why = training_classes(cfg) if cfg.eval.online_probe else (0, "")
        if why:
            self._notice(f"online probe off: {why}; the run trains without it")
        self.enabled = self.num_classes > 0
        if not self.enabled:
            return
        with torch.random.fork_rng(devices=[world.device] if world.device.type == "cuda" else []):
            torch.manual_seed(_PROBE_SEED)
            self.linear = nn.Linear(engine.method.backbone.num_features, self.num_classes).to(world.device)
        # solo-learn: classifier_lr 0.1 scaled by batch / 256 (solo/args/pretrain.py), weight decay 0,
        # momentum 0.9 of its LARS; a constant lr, so the probe keeps up with the features to the end.
        lr = cfg.eval.online_probe_lr * cfg.train.batch_size / 256
        self.optimizer = torch.optim.SGD(self.linear.parameters(), lr=lr, momentum=0.9, weight_decay=0.0)
        self._step: int | None = None  # the step whose forward the hooks last saw
        self._armed = False
        self._view: torch.Tensor | None = None  # the first view of that forward [n, 3, H, W]
        self._feats: torch.Tensor | None = None  # its pooled features, detached [n, D] fp32
        self._input: torch.Tensor | None = None  # the backbone's first input, kept until the check
        self._captures: bool | None = None  # decided at the first update, alike on every rank
        # Labelled images, correct, loss since the last log; on the device, so a step never waits for it.
        self._sums = torch.zeros(3, dtype=torch.float64, device=world.device)
        method = engine.method
        method.register_forward_pre_hook(self._on_method_start, with_kwargs=True)
        method.register_forward_hook(self._on_method_end)
        method.backbone.register_forward_hook(self._on_backbone)
        self._load(resumed)

    def _notice(self, text: str) -> None:
        if self.world.is_main:
            print(f"fastssl: {text}", file=sys.stderr, flush=True)

    # --- hooks: the features the method's forward computes -------------------------------------
    def _on_method_start(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        step = kwargs.get("step", args[1] if len(args) > 1 else None)
        if step is not None and step == self._step:
            return  # a later micro-batch of the same step: the first one is kept
        views = args[0] if args else kwargs["views"]
        self._step, self._view, self._feats, self._armed = step, views[0], None, True

    def _on_method_end(self, module: nn.Module, args: tuple, output: Any) -> None:
        self._armed = False  # calls outside the method's forward (evaluation, clustering) are not the step's

    @torch.compiler.disable  # a compiled backbone keeps its graph; the hook runs eagerly after it
    def _on_backbone(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if not self._armed:
            return
        self._armed = False
        n = self._view.shape[0]
        if output.ndim == 2 and output.shape[0] >= n:
            self._feats = output[:n].detach().float()  # [n, D]: the first view's rows
            if self._captures is None:
                self._input = args[0]

    def _first_view_features(self) -> torch.Tensor:
        if self._captures is None:
            x = self._input
            ok = (self._feats is not None and x is not None and x.shape[1:] == self._view.shape[1:]
                  and torch.equal(x[: self._view.shape[0]], self._view))
            self._captures = not self.engine.any_rank([not ok])[0]
            self._input = None
            self._notice("online probe: " + ("reads the features of the method's own forward" if self._captures else
                         "the method's forward does not give the first view's pooled features; one eval-mode "
                         "forward of the first view per step"))
        if self._captures:
            return self._feats
        model = self.engine.model
        model.eval()  # BatchNorm statistics untouched, no drop path, no RNG drawn
        try:
            return self.engine.eval_forward(self._view).float()  # [n, D], collective under sharding
        finally:
            model.train()

    # --- training ------------------------------------------------------------------------------
    def update(self, labels: torch.Tensor) -> None:
        """One SGD step on the step just applied; every rank calls it after every applied step."""
        if not self.enabled:
            return
        feats = self._first_view_features()  # [n, D]
        y = labels[: feats.shape[0]].to(feats.device, torch.long)  # [n]; -1 = unlabelled
        logits = self.linear(feats)  # [n, C]
        loss = F.cross_entropy(logits, y, ignore_index=-1, reduction="sum")
        self.optimizer.zero_grad(set_to_none=False)
        loss.backward()
        counts = torch.stack([(y >= 0).sum(), (logits.argmax(1) == y).sum(), loss.detach()]).float()
        params = list(self.linear.parameters())
        flat = torch.cat([p.grad.reshape(-1) for p in params] + [counts])
        flat = all_reduce_mean(flat) * dp_size()  # sums over the data-parallel ranks
        self._sums += flat[-3:].double()
        # The global batch's mean (a batch with no labelled image has zero gradients).
        labelled = flat[-3].clamp(min=1)
        offset = 0
        for p in params:
            p.grad.copy_(flat[offset : offset + p.numel()].view_as(p) / labelled)
            offset += p.numel()
        self.optimizer.step()
        self._feats = None

    def scalars(self) -> dict[str, float]:
        """Train top-1 (%) and loss over the labelled images since the last call; the same on every rank."""
        if not self.enabled:
            return {}
        n, correct, loss = self._sums.tolist()
        self._sums.zero_()
        if n == 0:
            return {}
        return {"online_probe_top1": 100.0 * correct / n, "online_probe_loss": loss / n}

    # --- held-out ------------------------------------------------------------------------------
    def held_out(self, monitor: KnnMonitor) -> dict[str, float]:
        """Top-1 (%) on the periodic kNN's held-out queries, timed and RNG-neutral as the kNN is."""
        return monitor.evaluate(self.engine, self._held_out_top1) if self.enabled else {}

    @torch.no_grad()
    def _held_out_top1(self, backbone: nn.Module, bank: Any, queries: Any) -> dict[str, float]:
        from fastssl.eval.features import source_features

        feats, y = source_features(backbone, queries, self.cfg, self.world.device, num_workers=0)  # [M, D], [M]
        correct = (self.linear(feats).argmax(1) == y).sum().item()
        return {"online_probe_top1": 100.0 * correct / max(len(y), 1)}

    # --- checkpoint ----------------------------------------------------------------------------
    def train_state(self) -> dict[str, Any]:
        """Entries for the checkpoint's train state (written by rank 0: the probe is the same everywhere)."""
        if not self.enabled:
            return {}
        return {_STATE_KEY: {"num_classes": self.num_classes, "linear": _cpu(self.linear.state_dict()),
                             "optimizer": _cpu(self.optimizer.state_dict())}}

    def _load(self, resumed: dict[str, Any] | None) -> None:
        if resumed is None:
            return
        state = resumed.get(_STATE_KEY)
        if state is None or state.get("num_classes") != self.num_classes:
            self._notice(f"online probe: {resumed['path']} holds no probe for {self.num_classes} classes; "
                         f"the probe starts afresh")
            return
        try:
            self.linear.load_state_dict(state["linear"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise FastSSLError(f"the online probe state in {resumed['path']} is unreadable ({e}); resume with "
                               f"--eval.online_probe=false or start afresh") from None


def _cpu(state: Any) -> Any:
    if torch.is_tensor(state):
        return state.detach().cpu()
    if isinstance(state, dict):
        return {k: _cpu(v) for k, v in state.items()}
    return state
