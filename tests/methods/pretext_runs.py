"""Shared by the pretext-method tests: short CLI runs of a recipe, on 1 or 2 gloo ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from fastssl.checkpoint import latest_checkpoint, load_checkpoint
from fastssl.config import Config
from fastssl.methods import build_method
from tests.train.conftest import tiny_overrides


def pretext_overrides(out) -> list[str]:
    """tiny_overrides without the projector keys, which the pretext methods do not have."""
    return [a for a in tiny_overrides(out) if not a.startswith("--method.proj")]


def train_cli(out, recipe: str, *extra: str, nproc: int = 1) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """`fastssl train --recipe RECIPE` on tiny data; returns the logged train rows and the last weights."""
    args = ["--recipe", recipe, *pretext_overrides(out), *extra]
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
                if nproc > 1 else [sys.executable])
    r = subprocess.run([*launcher, "-m", "fastssl", "train", *args], capture_output=True, text=True,
                       env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"train"' in x]
    return rows, load_checkpoint(latest_checkpoint(out))["model"]


def assert_two_ranks_equal_one(tmp_path, recipe: str, *extra: str) -> None:
    """One SGD step on 2 gloo ranks gives the loss and weights of 1 process on the same batch."""
    one_step = ["--train.max_steps=1", "--train.epochs=1", "--optim.name=sgd", "--optim.warmup_epochs=0",
                "--dist.backend=gloo", *extra]
    rows1, w1 = train_cli(tmp_path / "ws1", recipe, *one_step)
    rows2, w2 = train_cli(tmp_path / "ws2", recipe, *one_step, nproc=2)
    assert rows2[0]["loss"] == pytest.approx(rows1[0]["loss"], rel=1e-4, abs=1e-5)
    assert w1.keys() == w2.keys()
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5, msg=k)
    # The step really moved the backbone, so the comparison above is not vacuous.
    state = load_checkpoint(latest_checkpoint(tmp_path / "ws1"))
    torch.manual_seed(state["config"]["train"]["seed"])
    init = build_method(Config.from_dict(state["config"])).state_dict()
    moved = [k for k in w1 if w1[k].is_floating_point() and not torch.equal(w1[k], init[k])]
    assert any(k.startswith("backbone.") for k in moved)

