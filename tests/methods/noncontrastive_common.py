"""Shared by the VICReg, Barlow Twins and SimSiam tests: tiny configs, one SGD step, a short CLI run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import torch

from fastssl.config import Config, OptimConfig, apply_overrides, validate
from fastssl.methods import SSLMethod, build_method
from fastssl.train.optim import build_optimizer

N = 8


def tiny_method(name: str, *overrides: str) -> SSLMethod:
    c = Config()
    c.set_method(name)
    c.model.name, c.data.image_size = "resnet-tiny", 8
    apply_overrides(c, ["--method.proj_hidden_dim=16", "--method.proj_dim=16", *overrides])
    torch.manual_seed(0)
    return build_method(validate(c)).train()


def views(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(N, 3, 8, 8, generator=g), torch.randn(N, 3, 8, 8, generator=g)]


def assert_logged_scalars(out: dict[str, torch.Tensor], keys: set[str]) -> None:
    assert set(out) == {"loss", *keys}
    assert out["loss"].requires_grad and math.isfinite(out["loss"].item())
    for k, v in out.items():
        assert v.shape == torch.Size([]), k  # 0-d: the trainer averages scalars across ranks
        assert math.isfinite(v.item()), k
        if k != "loss":
            assert not v.requires_grad, k  # logged scalars are detached


def assert_sgd_step_moves_weights(m: SSLMethod) -> None:
    opt = build_optimizer(m, OptimConfig(name="sgd", weight_decay=0.0, momentum=0.0), lr=0.1)
    before = {k: p.detach().clone() for k, p in m.named_parameters()}
    m(views())["loss"].backward()
    opt.step()
    moved = {k for k, p in m.named_parameters() if not torch.equal(p, before[k])}
    assert any(k.startswith("backbone.") for k in moved) and any(k.startswith("projector.") for k in moved)


def cli_run(tmp_path, recipe: str) -> list[dict]:
    """`python -m fastssl train --recipe RECIPE` for 3 steps on 64 digits; returns the train rows."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "fastssl", "train", "--recipe", recipe, f"--train.out={out}",
           "--train.max_steps=3", "--data.limit=64", "--train.batch_size=32", "--train.log_every=1",
           "--train.progress=false", "--train.tensorboard=false", "--train.knn_at_end=false",
           "--data.num_workers=0"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [x for x in rows if x["kind"] == "train"]
    assert len(train) == 3 and all(math.isfinite(x["loss"]) for x in train)
    return train
