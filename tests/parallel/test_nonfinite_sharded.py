"""A non-finite loss or gradient on one rank skips the step on every rank, under sharding too.

Rank 1 alone poisons its loss at step 1 and its gradients at step 2 (a finite loss with an
infinite gradient), in 4 steps. Every rank must skip both steps together (otherwise the next
collective hangs) and restore its BatchNorm statistics, so the run ends equal to one process that
skipped the same two steps.
"""

import os
import subprocess
import sys

import pytest

from tests.parallel.conftest import CASES, CONSTANT_SCHEDULE, assert_same_state, checkpoints
from tests.train.conftest import tiny_overrides

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

_DRIVER = r"""
import os, sys
import torch
import fastssl.train.trainer as trainer
from fastssl.cli import main

real_build = trainer.build_method
poison_rank = int(os.environ.get("POISON_RANK", "0"))

class InfGrad(torch.autograd.Function):
    # A finite loss whose gradient is infinite (ZeRO keeps gradients out of p.grad, so poison them here).

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("inf")

def build(cfg):
    method = real_build(cfg)
    if int(os.environ.get("RANK", "0")) != poison_rank:
        return method
    forward = method.forward

    def poisoned_forward(views, step=0, schedule_len=1.0):
        out = forward(views, step, schedule_len)
        if step == 1:
            out["loss"] = out["loss"] * float("nan")
        if step == 2:
            out["loss"] = InfGrad.apply(out["loss"])
        return out

    method.forward = poisoned_forward
    return method

trainer.build_method = build
sys.exit(main(["train", *sys.argv[1:]]))
"""


def _run(tmp_path, nproc, *args):
    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER)
    out = tmp_path / "run"
    argv = [*tiny_overrides(out), "--train.epochs=2", "--train.max_steps=4", "--optim.name=sgd",
            "--dist.backend=gloo", *CONSTANT_SCHEDULE, *CASES["byol"], *args]
    launch = [sys.executable, str(driver)] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(driver)]
    env = dict(os.environ, OMP_NUM_THREADS="1", POISON_RANK=str(nproc - 1), PYTHONPATH=os.getcwd())
    r = subprocess.run([*launch, *argv], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    text = r.stdout + r.stderr
    assert "non-finite loss at step 1" in text and "non-finite gradient at step 2" in text, text[-2000:]
    return out


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    return checkpoints(_run(tmp_path_factory.mktemp("one"), 1))


@pytest.mark.parametrize("strategy", [["--dist.strategy=fsdp"],
                                      ["--dist.strategy=deepspeed", "--dist.zero_stage=3"]], ids=["fsdp", "zero3"])
def test_one_rank_non_finite_skips_everywhere(tmp_path, one_process, strategy):
    ref = one_process
    got = checkpoints(_run(tmp_path, 2, *strategy))
    assert max(got) == max(ref) == 4
    assert_same_state(got[4], ref[4], rtol=1e-4, atol=1e-5)
