"""VICReg, Barlow Twins, SimSiam and NNCLR on 2 gloo ranks equal one process on the same global batch.

- End to end (`fastssl train`, 3 SGD steps, a checkpoint after each), under each
  `--dist.strategy` (ddp, fsdp, deepspeed): losses, weights, BN statistics, optimizer state and
  NNCLR's support set equal the 1-process run's (|a - b| <= 1e-5 + 1e-4 max|b| per tensor, as
  tests/parallel/test_engine_equivalence.py).
- NNCLR at module level (2 spawned ranks, no trainer): after every step both ranks hold the same
  support set, equal to the single-process one (the global batch's view-1 projections in
  rank-major order).
- NNCLR's support set survives a stop and `--train.resume`, across a change of world size.
"""

import importlib.util
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fastssl.config import Config, apply_overrides
from fastssl.methods import build_method
from tests.parallel.conftest import THREE_STEPS, assert_same_state, checkpoints, losses, strategy_args, train_cli

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None
STRATEGIES = ["ddp", "fsdp", pytest.param("zero2", marks=pytest.mark.skipif(not _DEEPSPEED, reason="needs deepspeed"))]
# tiny_overrides sets the projector to 16 -> 8; the predictors get 8 wide; NNCLR's support set
# holds 2 global batches of 16, so the third step overwrites the first.
CASES = {
    "vicreg": ["--method.name=vicreg"],
    "barlowtwins": ["--method.name=barlowtwins"],
    "simsiam": ["--method.name=simsiam", "--method.pred_hidden_dim=8"],
    "nnclr": ["--method.name=nnclr", "--method.pred_hidden_dim=8", "--method.queue_size=32"],
}


def _run(out, nproc, *args):
    train_cli(out, nproc, *THREE_STEPS, "--optim.name=sgd", *args)
    return losses(out), checkpoints(out)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("method", list(CASES))
def test_two_ranks_train_like_one(tmp_path, method, strategy):
    args = [*CASES[method], *strategy_args(strategy)]
    loss1, ckpts1 = _run(tmp_path / "ws1", 1, *args)
    loss2, ckpts2 = _run(tmp_path / "ws2", 2, *args)
    assert len(loss1) == len(loss2) == 3 and sorted(ckpts1) == sorted(ckpts2) == [1, 2, 3]
    assert loss2 == pytest.approx(loss1, rel=1e-4, abs=1e-5)
    for step in (1, 2, 3):
        assert_same_state(ckpts2[step], ckpts1[step], rtol=1e-4, atol=1e-5)
    # The steps really moved the backbone, so the comparison is not vacuous.
    w1, w3 = ckpts1[1]["model"], ckpts1[3]["model"]
    assert any(k.startswith("backbone.") and w1[k].is_floating_point() and not torch.equal(w1[k], w3[k]) for k in w1)
    if method == "nnclr":
        assert ckpts2[3]["model"]["support_ptr"].item() == (3 * 16) % 32
        assert not torch.equal(ckpts1[2]["model"]["support"], ckpts1[3]["model"]["support"])


# --- NNCLR's support set, module level --------------------------------------------------------
WORLD, N_LOCAL, QUEUE, STEPS = 2, 4, 16, 3  # 3 steps of 8 projections wrap the 16-slot ring


def _cfg():
    c = Config()
    c.set_method("nnclr")
    c.model.name, c.data.image_size = "resnet-tiny", 8
    return apply_overrides(c, ["--method.proj_hidden_dim=16", "--method.proj_dim=8", "--method.pred_hidden_dim=8",
                               f"--method.queue_size={QUEUE}"])


def _global_views(step):
    g = torch.Generator().manual_seed(100 + step)
    n = WORLD * N_LOCAL
    return [torch.randn(n, 3, 8, 8, generator=g), torch.randn(n, 3, 8, 8, generator=g)]


def _worker(rank, store, out_dir):
    from fastssl.parallel.sync_batchnorm import convert_sync_batchnorm

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        torch.manual_seed(0)
        m = convert_sync_batchnorm(build_method(_cfg()), torch.device("cpu")).train()  # as the engines do
        rows = slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)
        for step in range(STEPS):
            out = m([v[rows] for v in _global_views(step)], step=step, schedule_len=STEPS)
            m.commit_step(step, STEPS)
            torch.save({"support": m.support.clone(), "ptr": m.support_ptr.clone(), "loss": out["loss"].detach()},
                       os.path.join(out_dir, f"rank{rank}_step{step}.pt"))
    finally:
        dist.destroy_process_group()


def test_nnclr_support_set_is_shared_by_all_ranks_and_equals_one_process(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=True)
    torch.manual_seed(0)
    single = build_method(_cfg()).train()
    initial = single.support.clone()
    for step in range(STEPS):
        out = single(_global_views(step), step=step, schedule_len=STEPS)
        single.commit_step(step, STEPS)
        r0, r1 = (torch.load(tmp_path / f"rank{r}_step{step}.pt") for r in range(WORLD))
        assert torch.equal(r0["support"], r1["support"]) and torch.equal(r0["ptr"], r1["ptr"])  # one support set
        torch.testing.assert_close(r0["support"], single.support, rtol=1e-4, atol=1e-5)  # rank-major, same rows
        assert r0["ptr"].item() == single.support_ptr.item() == ((step + 1) * WORLD * N_LOCAL) % QUEUE
        assert not torch.allclose(r0["loss"], r1["loss"])  # the ranks really saw different images
        torch.testing.assert_close((r0["loss"] + r1["loss"]) / 2, out["loss"].detach(), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(single.support, initial)


def test_nnclr_support_set_survives_resume_across_world_sizes(tmp_path):
    """2 ranks to step 1, then 1 process resumes to step 3 == 1 process for 3 steps."""
    args = ["--optim.name=sgd", *CASES["nnclr"]]
    ref_losses, ref = _run(tmp_path / "ref", 1, *CASES["nnclr"])
    out = tmp_path / "chain"
    train_cli(out, 2, *THREE_STEPS, "--train.max_steps=1", *args)
    r = train_cli(out, 1, *THREE_STEPS, "--train.resume=true", *args)
    assert "at step 1" in r.stdout, r.stdout[-1000:]
    assert losses(out) == pytest.approx(ref_losses, rel=1e-4, abs=1e-5)
    ckpts = checkpoints(out)
    for step in (2, 3):
        assert_same_state(ckpts[step], ref[step], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ckpts[3]["model"]["support"], ref[3]["model"]["support"], rtol=1e-4, atol=1e-5)
