"""One step on 2 gloo processes equals one step of a single process on the same global batch."""

import json
import os
import subprocess
import sys

import pytest
import torch

from fastssl.config import Config
from fastssl.methods import build_method
from fastssl.checkpoint import latest_checkpoint, load_checkpoint
from tests.train.conftest import tiny_overrides

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def _run(out, nproc, *extra):
    args = [*tiny_overrides(out), "--train.max_steps=1", "--train.epochs=1", "--optim.name=sgd",
            "--optim.warmup_epochs=0", "--dist.backend=gloo", *extra]
    if nproc == 1:
        cmd = [sys.executable, "-m", "fastssl", "train", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "fastssl", "train", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    loss = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"train"' in x][0]["loss"]
    return loss, load_checkpoint(latest_checkpoint(out))["model"]


@pytest.mark.parametrize("method", ["simclr", "byol"])
def test_world_size_2_equals_world_size_1(tmp_path, method):
    extra = [f"--method.name={method}", *(["--method.pred_hidden_dim=16"] if method == "byol" else [])]
    loss1, w1 = _run(tmp_path / "ws1", 1, *extra)
    loss2, w2 = _run(tmp_path / "ws2", 2, *extra)
    assert loss2 == pytest.approx(loss1, rel=1e-4, abs=1e-5)
    assert w1.keys() == w2.keys()
    for k in w1:
        if w1[k].is_floating_point():
            torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5, msg=k)
    # The step really moved the weights, so the comparison above is not vacuous.
    state = load_checkpoint(latest_checkpoint(tmp_path / "ws1"))
    torch.manual_seed(state["config"]["train"]["seed"])
    init = build_method(Config.from_dict(state["config"])).state_dict()
    moved = [k for k in w1 if w1[k].is_floating_point() and not torch.equal(w1[k], init[k])]
    assert any(k.startswith("backbone.") for k in moved)
