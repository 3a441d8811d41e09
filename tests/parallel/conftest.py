"""Helpers for tests that run `fastssl train` on 1 or 2 gloo processes."""

import json
import os
import subprocess
import sys

import pytest

from fastssl.checkpoint import list_checkpoints, load_checkpoint
from tests.train.conftest import tiny_overrides

# A constant lr (no warmup, cosine floor = peak) and a constant EMA momentum: a run stopped by
# --train.max_steps and resumed is then the same computation as one uninterrupted run.
CONSTANT_SCHEDULE = ["--optim.warmup_epochs=0", "--optim.min_lr_ratio=1"]
BYOL_RESNET = ["--method.name=byol", "--model.name=resnet-tiny", "--method.pred_hidden_dim=16",
               "--method.momentum_base=0.5", "--method.momentum_final=0.5"]
SIMCLR_VIT = ["--method.name=simclr", "--model.name=vit_nano", "--model.patch_size=4"]
# 3 steps of 16 images at 8 px, a checkpoint after each (steps 1, 2, 3 kept).
THREE_STEPS = ["--train.epochs=1", "--train.max_steps=3", "--train.ckpt_every_steps=1", "--train.keep_last=3",
               "--dist.backend=gloo", *CONSTANT_SCHEDULE]


def strategy_args(strategy: str) -> list[str]:
    """"fsdp" -> --dist.strategy=fsdp; "zero3" -> deepspeed with --dist.zero_stage=3."""
    if strategy.startswith("zero"):
        return ["--dist.strategy=deepspeed", f"--dist.zero_stage={strategy[-1]}"]
    return [f"--dist.strategy={strategy}"]


def train_cli(out, nproc: int, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`fastssl train` on `nproc` gloo processes (1: plain python) with the tiny test config."""
    argv = [*tiny_overrides(out), *args]
    if nproc == 1:
        cmd = [sys.executable, "-m", "fastssl", "train", *argv]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "fastssl", "train", *argv]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)
    if check:
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r


def losses(out) -> list[float]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["kind"] == "train"]


def checkpoints(out) -> dict[int, dict]:
    """{step: checkpoint read whole on this process, optimizer state included}."""
    return {c["step"]: c for c in (load_checkpoint(p, optimizer=True) for p in list_checkpoints(out))}


def assert_same_state(a: dict, b: dict, rtol: float, atol: float, sections=("model", "optim")) -> None:
    """Every tensor of checkpoint `a` equals `b`'s: |a - b| <= atol + rtol * max|b| per tensor.

    The bound is relative to each tensor's scale, not element by element: reducing in another
    order perturbs a gradient (and so a momentum buffer) by round-off of the sum's magnitude, which
    is large next to an element that happens to be near zero.
    """
    import torch

    for section in sections:
        assert a[section].keys() == b[section].keys(), (section, sorted(set(a[section]) ^ set(b[section]))[:5])
        for k, v in a[section].items():
            ref = b[section][k]
            if v.is_floating_point():
                bound = atol + rtol * (ref.abs().max().item() if ref.numel() else 0.0)
                torch.testing.assert_close(v, ref, rtol=0, atol=bound, msg=lambda m: f"{section}.{k}: {m}")
            else:
                assert torch.equal(v, ref), f"{section}.{k}"


CASES = {"byol": BYOL_RESNET, "simclr": SIMCLR_VIT}


def _reference_runs(tmp_path_factory):
    cache = {}

    def get(method: str, optim: str = "sgd"):
        """(losses, {step: checkpoint}) of one process, 3 steps of `method` with `optim`."""
        if (method, optim) not in cache:
            out = tmp_path_factory.mktemp(f"ref-{method}-{optim}")
            train_cli(out, 1, *THREE_STEPS, f"--optim.name={optim}", *CASES[method])
            cache[method, optim] = (losses(out), checkpoints(out))
        return cache[method, optim]

    return get


reference_run = pytest.fixture(scope="session")(_reference_runs)
