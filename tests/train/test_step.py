"""train_step: a skipped step undoes only the BatchNorm statistics and never touches a queue."""

import pytest
import torch

from fastssl.config import Config
from fastssl.distributed import World
from fastssl.methods.base import SSLMethod
from fastssl.models.backbone import build_backbone
from fastssl.parallel.engines import build_engine
from fastssl.train.bn_guard import BatchNormGuard
from fastssl.train.optim import build_optimizer
from fastssl.train.step import OK, SKIPPED_GRADIENT, SKIPPED_LOSS, STOPPED, train_step

QUEUE = 65536


class QueueMethod(SSLMethod):
    """A method with BatchNorm and a MoCo-sized queue that only `commit_step` may write."""

    def __init__(self):
        super().__init__(build_backbone("resnet-tiny", 8), Config().method)
        self.register_buffer("queue", torch.zeros(QUEUE, 8))
        self.poison_loss = self.poison_grad = False
        self.commits = 0

    def forward(self, views, step=0, schedule_len=1.0):
        feats = self.backbone(views[0])  # [N, 256]
        self.pending = feats[:, :8].detach()
        loss = feats.pow(2).mean()
        return {"loss": loss * float("nan") if self.poison_loss else loss}

    def after_backward(self, step, epoch):
        if self.poison_grad:
            next(self.backbone.parameters()).grad.fill_(float("inf"))

    @torch.no_grad()
    def commit_step(self, step, schedule_len):
        self.queue[: len(self.pending)] = self.pending
        self.commits += 1


def _setup():
    cfg = Config()
    cfg.optim.name = "sgd"
    engine = build_engine(cfg, World())
    method = QueueMethod()
    engine.wrap(method, lambda m: build_optimizer(m, cfg.optim, 0.1))
    return engine, method, BatchNormGuard(method)


def _snapshot(method):
    return {k: v.clone() for k, v in method.state_dict().items()}


def _step(engine, method, guard, **kw):
    views = [torch.randn(4, 3, 8, 8)]
    return train_step(engine, method, views, 0, 10, 0, 0.1, guard, **kw)


def test_guard_holds_batchnorm_statistics_only():
    _, method, guard = _setup()
    assert guard.names and all(n.rsplit(".", 1)[1] in ("running_mean", "running_var", "num_batches_tracked")
                               for n in guard.names)
    assert not any("queue" in n for n in guard.names)
    assert guard.nbytes < method.queue.numel() * 4 / 100  # the queue is never copied per step


@pytest.mark.parametrize("poison", ["loss", "grad"])
def test_skipped_step_leaves_no_trace(poison):
    engine, method, guard = _setup()
    before = _snapshot(method)
    setattr(method, f"poison_{poison}", True)
    outcome = _step(engine, method, guard)
    assert outcome.status == (SKIPPED_LOSS if poison == "loss" else SKIPPED_GRADIENT)
    after = _snapshot(method)
    for k in before:  # weights, BatchNorm statistics (moved by the forward, restored) and queue
        assert torch.equal(before[k], after[k]), k
    assert method.commits == 0 and all(p.grad is None for p in method.parameters())
    # A good step then moves all of them.
    setattr(method, f"poison_{poison}", False)
    assert _step(engine, method, guard).status == OK
    after = _snapshot(method)
    assert method.commits == 1 and not torch.equal(after["queue"], before["queue"])
    assert not torch.equal(after["backbone.trunk.bn1.running_mean"], before["backbone.trunk.bn1.running_mean"])


def test_stop_request_undoes_the_forward():
    engine, method, guard = _setup()
    before = _snapshot(method)
    assert _step(engine, method, guard, stop_requested=True).status == STOPPED
    after = _snapshot(method)
    assert all(torch.equal(before[k], after[k]) for k in before) and method.commits == 0
