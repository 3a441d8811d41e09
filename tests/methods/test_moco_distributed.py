"""MoCo v2 and v3 on 2 gloo ranks equal one process on the same global batch.

- Module level (2 spawned ranks, no trainer): after every step both ranks hold the same MoCo v2
  queue, equal to the single-process queue: the global batch's keys in rank-major order, with
  ShuffleBN over 2 groups (one per rank) equal to one process splitting its batch in 2.
- End to end (`torchrun ... -m fastssl train`, 2 steps, a checkpoint after each): loss, weights,
  BN statistics and the queue equal the 1-process run, for `bn=sync`, for ShuffleBN with the same
  number of groups, and for MoCo v3; under each `--dist.strategy` (ddp, fsdp, deepspeed).
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fastssl.config import Config, apply_overrides
from fastssl.methods import build_method
from fastssl.checkpoint import list_checkpoints, load_checkpoint
from tests.train.conftest import tiny_overrides

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

WORLD, N_LOCAL, QUEUE, STEPS = 2, 4, 16, 3  # 3 steps of 8 keys wrap the 16-slot ring
_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None
STRATEGIES = ["ddp", "fsdp", pytest.param("deepspeed", marks=pytest.mark.skipif(not _DEEPSPEED, reason="needs deepspeed"))]


def _cfg():
    c = Config()
    c.set_method("mocov2")
    c.model.name, c.data.image_size = "resnet-tiny", 8
    return apply_overrides(c, ["--method.proj_hidden_dim=16", "--method.proj_dim=8", f"--method.queue_size={QUEUE}",
                               "--method.bn=shuffle", "--method.shuffle_bn_groups=2"])


def _global_views(step):
    g = torch.Generator().manual_seed(100 + step)
    n = WORLD * N_LOCAL
    return [torch.randn(n, 3, 8, 8, generator=g), torch.randn(n, 3, 8, 8, generator=g)]


def _bn_stats(m):
    return {k: v.clone() for k, v in m.state_dict().items() if "running_" in k}


def _worker(rank, store, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        torch.manual_seed(0)
        m = build_method(_cfg()).train()
        rows = slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)
        for step in range(STEPS):
            out = m([v[rows] for v in _global_views(step)], step=step, schedule_len=STEPS)
            m.commit_step(step, STEPS)
            torch.save({"queue": m.queue.clone(), "ptr": m.queue_ptr.clone(), "loss": out["loss"].detach(),
                        "bn": _bn_stats(m)}, os.path.join(out_dir, f"rank{rank}_step{step}.pt"))
    finally:
        dist.destroy_process_group()


def test_queue_is_shared_by_all_ranks_and_equals_one_process(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=True)
    torch.manual_seed(0)
    single = build_method(_cfg()).train()  # one rank: 2 ShuffleBN groups by splitting
    initial = single.queue.clone()
    for step in range(STEPS):
        out = single(_global_views(step), step=step, schedule_len=STEPS)
        single.commit_step(step, STEPS)
        r0, r1 = (torch.load(tmp_path / f"rank{r}_step{step}.pt") for r in range(WORLD))
        assert torch.equal(r0["queue"], r1["queue"]) and torch.equal(r0["ptr"], r1["ptr"])  # one queue
        torch.testing.assert_close(r0["queue"], single.queue, rtol=1e-4, atol=1e-5)  # rank-major, same keys
        assert r0["ptr"].item() == single.queue_ptr.item() == ((step + 1) * WORLD * N_LOCAL) % QUEUE
        assert not torch.allclose(r0["loss"], r1["loss"])  # the ranks really saw different images
        torch.testing.assert_close((r0["loss"] + r1["loss"]) / 2, out["loss"].detach(), rtol=1e-4, atol=1e-5)
        for k, v in _bn_stats(single).items():  # per-rank BN statistics, averaged = the groups' mean
            torch.testing.assert_close(r0["bn"][k], v, rtol=1e-4, atol=1e-5, msg=k)
            assert torch.equal(r0["bn"][k], r1["bn"][k]), k
    assert not torch.allclose(single.queue, initial)


def _train(out, nproc, *extra):
    args = [*tiny_overrides(out), "--train.max_steps=2", "--train.epochs=1", "--optim.name=sgd",
            "--optim.warmup_epochs=0", "--dist.backend=gloo", "--train.ckpt_every_steps=1", "--train.keep_last=10",
            *extra]
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
                if nproc > 1 else [sys.executable])
    r = subprocess.run([*launcher, "-m", "fastssl", "train", *args], capture_output=True, text=True,
                       env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    losses = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines() if '"train"' in x]
    return losses, [load_checkpoint(p)["model"] for p in list_checkpoints(out)]


CASES = {
    "mocov2-sync": ["--method.name=mocov2", "--method.bn=sync", "--method.queue_size=32"],
    "mocov2-shuffle-symmetric": ["--method.name=mocov2", "--method.bn=shuffle", "--method.shuffle_bn_groups=2",
                                 "--method.queue_size=32", "--method.symmetric=true"],
    "mocov3": ["--method.name=mocov3", "--method.pred_hidden_dim=16"],
}


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_train_like_one(tmp_path, case, strategy):
    extra = [*CASES[case], f"--dist.strategy={strategy}"]
    loss1, ckpts1 = _train(tmp_path / "ws1", 1, *extra)
    loss2, ckpts2 = _train(tmp_path / "ws2", 2, *extra)
    assert len(loss1) == len(loss2) == len(ckpts1) == len(ckpts2) == 2
    assert loss2 == pytest.approx(loss1, rel=1e-4, abs=1e-5)
    for step, (w1, w2) in enumerate(zip(ckpts1, ckpts2), start=1):
        assert w1.keys() == w2.keys()
        for k in w1:
            torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5, msg=f"step {step}: {k}")
    if case.startswith("mocov2"):
        assert ckpts2[-1]["queue_ptr"].item() == (2 * 16) % 32
    # The steps really moved the weights, so the comparison is not vacuous.
    moved = [k for k in ckpts1[0] if ckpts1[0][k].is_floating_point() and not torch.equal(ckpts1[0][k], ckpts1[1][k])]
    assert any(k.startswith("backbone.") for k in moved)
