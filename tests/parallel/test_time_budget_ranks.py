"""A time-budget plan and its re-plans are rank 0's on every rank.

Step times differ between processes, so each rank would plan a different total. The driver makes
that certain: rank r plans 10 + 5r steps and re-plans to 8 + 3r. Every rank must follow rank 0
(otherwise one rank waits in a collective the others never enter), and the run must equal one
process that planned 10 and re-planned to 8, cosine lr and EMA momentum included.
"""

import os
import subprocess
import sys

import pytest

from tests.parallel.conftest import BYOL_RESNET, assert_same_state, checkpoints
from tests.train.conftest import tiny_overrides

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

_DRIVER = r"""
import os, sys
from fastssl.train import time_budget
from fastssl.cli import main

rank = int(os.environ.get("RANK", "0"))
calls = []

def plan(budget_s, elapsed_s, steps_done, per_step_s, reserve_fraction=0.05):
    calls.append(steps_done)
    return 10 + 5 * rank if len(calls) == 1 else 8 + 3 * rank

time_budget.plan_total_steps = plan
sys.exit(main(["train", *sys.argv[1:]]))
"""


def _run(tmp_path, nproc):
    tmp_path.mkdir(parents=True, exist_ok=True)
    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER)
    out = tmp_path / "run"
    # BYOL with a cosine momentum 0.9 -> 1 and a cosine lr: both follow the remapped schedule.
    argv = [*tiny_overrides(out), "--train.epochs=0", "--train.time_budget=1h", "--train.ckpt_every_steps=1",
            "--train.keep_last=20", "--optim.name=sgd", "--dist.backend=gloo", *BYOL_RESNET,
            "--method.momentum_base=0.9", "--method.momentum_final=1.0"]
    launch = [sys.executable, str(driver)] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(driver)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.getcwd())
    r = subprocess.run([*launch, *argv], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert "re-planned 10 -> 8 steps at step 7" in r.stdout + r.stderr, (r.stdout + r.stderr)[-2000:]
    return checkpoints(out)


def test_every_rank_follows_rank_0s_plan_and_replan(tmp_path):
    one = _run(tmp_path / "one", 1)
    two = _run(tmp_path / "two", 2)
    assert max(one) == max(two) == 8
    for step in (6, 7, 8):  # the plan, the re-plan, the end
        assert_same_state(two[step], one[step], rtol=1e-4, atol=1e-5)
