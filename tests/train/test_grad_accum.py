"""Gradient accumulation (--train.grad_accum_steps=K) and GradCache (--train.grad_cache).

K micro-batches per step equal one batch of the same global size after 3 SGD steps, within fp32
round-off: SimCLR with GradCache (1 and 2 ranks, torch and chunked loss), MAE and BYOL with plain
accumulation. The models have no BatchNorm anywhere (ViT, heads of one Linear), whose statistics
are per micro-batch by nature. Naive accumulation of SimCLR is shown to differ, so the GradCache
tests can fail. MoCo v2's queue and DINO's centre move once per step, as with K = 1.
"""

import os
import subprocess
import sys

import pytest
import torch

from fastssl.cli import main
from fastssl.config import apply_overrides
from fastssl.distributed import World, destroy_distributed
from fastssl.methods import build_method
from fastssl.parallel.engines import build_engine
from fastssl.recipes import get_recipe
from fastssl.train.accumulation import split_micro_batches
from fastssl.train.bn_guard import BatchNormGuard
from fastssl.train.grad_cache import grad_cache_step
from fastssl.train.optim import build_optimizer
from fastssl.train.step import OK, train_step
from tests.parallel.conftest import THREE_STEPS, assert_same_state, checkpoints, losses, strategy_args, train_cli
from tests.train.conftest import tiny_overrides

VIT = ["--model.name=vit_nano", "--model.patch_size=4", "--optim.name=sgd"]
# SimCLR with a one-Linear projector and no output BN: nothing in the model has batch statistics.
SIMCLR = ["--method.name=simclr", *VIT, "--method.proj_layers=1", "--method.proj_last_bn=false"]
BYOL = ["--method.name=byol", *VIT, "--method.proj_layers=1", "--method.pred_layers=1",
        "--method.momentum_base=0.5", "--method.momentum_final=0.5"]
MAE = ["--method.name=mae", *VIT, "--method.decoder_dim=16", "--method.decoder_depth=1", "--method.decoder_heads=2"]
K4 = "--train.grad_accum_steps=4"
ROUND_OFF = dict(rtol=1e-5, atol=1e-7)  # per tensor: |a - b| <= 1e-7 + 1e-5 max|b|


def _cli(out, nproc: int, *args: str):
    """`train_cli`, but MAE (no projector) runs without the tiny config's projector keys."""
    if "--method.name=mae" not in args:
        return train_cli(out, nproc, *args)
    argv = [a for a in tiny_overrides(out) if not a.startswith("--method.proj")] + list(args)
    r = subprocess.run([sys.executable, "-m", "fastssl", "train", *argv], capture_output=True, text=True,
                       env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(losses, {step: checkpoint}) of a 3-step run on `nproc` processes, cached per arguments."""
    cache = {}

    def get(nproc: int, *args: str):
        if (nproc, args) not in cache:
            out = tmp_path_factory.mktemp("run")
            _cli(out, nproc, *THREE_STEPS, *args)
            cache[nproc, args] = (losses(out), checkpoints(out))
        return cache[nproc, args]

    return get


def _same_run(a, b):
    assert a[0] == pytest.approx(b[0], rel=1e-5, abs=1e-6)
    for step in (1, 2, 3):
        assert_same_state(a[1][step], b[1][step], **ROUND_OFF)


@pytest.mark.slow
@pytest.mark.parametrize("loss_impl", ["torch", "chunked"])
def test_simclr_grad_cache_equals_the_large_batch(run, loss_impl):
    args = (*SIMCLR, f"--method.loss_impl={loss_impl}")
    _same_run(run(1, *args, K4), run(1, *args))


@pytest.mark.slow
@pytest.mark.distributed
def test_simclr_grad_cache_on_2_ranks_equals_the_large_batch_on_1(run):
    """Negatives gathered across ranks: 2 ranks x 4 micro-batches of 2 = 1 process x 16."""
    _same_run(run(2, *SIMCLR, K4), run(1, *SIMCLR))


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("strategy", ["fsdp", "zero2"])
def test_simclr_grad_cache_under_sharding_equals_the_large_batch(run, strategy):
    """FSDP2 skips the reduce-scatter of all but the last micro-batch; DeepSpeed takes its own
    accumulation boundary: the step is still the large batch's."""
    _same_run(run(2, *SIMCLR, K4, *strategy_args(strategy)), run(1, *SIMCLR))


@pytest.mark.slow
def test_naive_accumulation_of_simclr_is_not_the_large_batch(run):
    """Without GradCache each micro-batch sees 2 x 4 - 2 negatives instead of 30: another loss."""
    naive = run(1, *SIMCLR, K4, "--train.grad_cache=off")
    with pytest.raises(AssertionError):
        assert_same_state(naive[1][3], run(1, *SIMCLR)[1][3], **ROUND_OFF)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["mae", "byol"])
def test_plain_accumulation_equals_the_large_batch(run, method):
    """A mean loss over samples: loss / K per micro-batch; MAE's masks and BYOL's one EMA update
    per step are the large batch's."""
    args = {"mae": MAE, "byol": BYOL}[method]
    _same_run(run(1, *args, K4), run(1, *args))


@pytest.mark.slow
def test_resume_mid_run_with_accumulation_continues_bitwise_and_keeps_k(run, tmp_path):
    out = tmp_path / "resumed"
    train_cli(out, 1, *THREE_STEPS, *SIMCLR, K4, "--train.max_steps=2")
    r = train_cli(out, 1, *THREE_STEPS, *SIMCLR, "--resume")  # the saved config keeps K = 4
    assert "4 micro-batches of 4 images per rank and step, GradCache on" in r.stdout, r.stdout[-1500:]
    whole = run(1, *SIMCLR, K4)
    assert_same_state(checkpoints(out)[3], whole[1][3], rtol=0, atol=0)


# --- method state: committed once per step ------------------------------------------------------
def _one_step(method_args: list[str], k: int, tmp_path):
    cfg = apply_overrides(get_recipe("default"), ["--data.image_size=8", "--train.batch_size=16", *VIT, *method_args])
    engine = build_engine(cfg, World())
    torch.manual_seed(0)
    method = build_method(cfg)
    engine.wrap(method, lambda m: build_optimizer(m, cfg.optim, 0.1))
    g = torch.Generator().manual_seed(1)
    views = [torch.randn(16, 3, 8, 8, generator=g) for _ in range(2)]
    out = train_step(engine, engine.method, views, 0, 10, 0, 0.1, BatchNormGuard(engine.method), accum_steps=k)
    assert out.status == OK
    return engine.method


def test_moco_enqueues_the_whole_batch_once_per_step(tmp_path):
    args = ["--method.name=mocov2", "--method.queue_size=64", "--method.bn=sync", "--method.proj_hidden_dim=16"]
    one, four = _one_step(args, 1, tmp_path), _one_step(args, 4, tmp_path)
    assert int(four.queue_ptr) == int(one.queue_ptr) == 16
    torch.testing.assert_close(four.queue, one.queue, rtol=0, atol=1e-6)


def test_dino_moves_its_centre_once_per_step(tmp_path):
    args = ["--method.name=dino", "--aug.local_crops=0", "--method.out_dim=32", "--method.bottleneck_dim=8",
            "--method.proj_hidden_dim=16"]
    one, four = _one_step(args, 1, tmp_path), _one_step(args, 4, tmp_path)
    assert one.center.abs().sum() > 0
    torch.testing.assert_close(four.center, one.center, rtol=0, atol=1e-7)


def test_grad_cache_replays_each_micro_batchs_drop_path(tmp_path):
    """With stochastic depth, GradCache's gradient is that of one graph over the micro-batches drawn
    from the same RNG stream: the second forward of each micro-batch replays its first's masks."""
    cfg = apply_overrides(get_recipe("default"), ["--data.image_size=8", "--train.batch_size=8", *SIMCLR,
                                                  "--model.drop_path=0.5", "--method.proj_dim=8"])
    engine = build_engine(cfg, World())
    torch.manual_seed(0)
    engine.wrap(build_method(cfg), lambda m: build_optimizer(m, cfg.optim, 0.1))
    method = engine.method.train()
    micro = split_micro_batches([torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(1))
                                 for _ in range(2)], 2)
    rng = torch.get_rng_state()
    parts = [method.embed(views) for views in micro]
    method.loss_on_embeddings([torch.cat(p) for p in zip(*parts)])["loss"].backward()
    expect = {n: p.grad.clone() for n, p in method.named_parameters() if p.grad is not None}
    method.zero_grad(set_to_none=True)
    torch.set_rng_state(rng)
    grad_cache_step(engine, method, micro, 0, 10, BatchNormGuard(method), lambda loss: None)
    got = {n: p.grad for n, p in method.named_parameters() if p.grad is not None}
    assert got.keys() == expect.keys()
    for name, g in got.items():
        torch.testing.assert_close(g, expect[name], rtol=1e-4, atol=1e-6, msg=name)


def test_a_step_skipped_mid_accumulation_leaves_no_fsdp_gradient_behind(tmp_path):
    """The last micro-batch's loss is NaN: the three before it left unsharded gradients in FSDP2's
    parameters (no reduce-scatter yet), which the next step would otherwise add to its own."""
    from torch.distributed.fsdp import FSDPModule

    cfg = apply_overrides(get_recipe("default"), ["--data.image_size=8", "--train.batch_size=8", *BYOL,
                                                  "--method.proj_hidden_dim=16", "--method.pred_hidden_dim=16",
                                                  "--method.proj_dim=8", "--dist.strategy=fsdp"])
    engine = build_engine(cfg, World())
    engine.wrap(build_method(cfg), lambda m: build_optimizer(m, cfg.optim, 0.1))
    views = [torch.randn(8, 3, 8, 8) for _ in range(2)]
    views[0][6:] = float("nan")  # micro-batch 4 of 4
    try:
        out = train_step(engine, engine.method, views, 0, 10, 0, 0.1, BatchNormGuard(engine.method), accum_steps=4)
    finally:
        destroy_distributed()  # the 1-rank group FSDP2 made
    assert out.status == "loss"
    groups = [m._get_fsdp_state()._fsdp_param_group for m in engine.method.modules() if isinstance(m, FSDPModule)]
    held = [fp for g in groups if g for fp in g.fsdp_params
            if fp._unsharded_param.grad is not None or fp.unsharded_accumulated_grad is not None]
    assert not held and all(p.grad is None for p in engine.method.parameters())


# --- bad input: one line, exit status 2 -------------------------------------------------------
def _fails(capsys, tmp_path, *args):
    assert main(["train", *tiny_overrides(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastssl: error: "), err
    return err[0]


def test_micro_batch_below_2_for_a_method_with_negatives(tmp_path, capsys):
    line = _fails(capsys, tmp_path, *SIMCLR, "--train.grad_accum_steps=16")
    assert "at least 2 images per rank in each micro-batch" in line and "--train.grad_accum_steps" in line


def test_k_not_dividing_the_per_rank_batch(tmp_path, capsys):
    line = _fails(capsys, tmp_path, *SIMCLR, "--train.grad_accum_steps=3")
    assert "--train.grad_accum_steps to a divisor of 16" in line


def test_grad_cache_on_for_a_method_without_negatives(tmp_path, capsys):
    line = _fails(capsys, tmp_path, *BYOL, "--train.grad_cache=on")
    assert "--train.grad_cache=on" in line and "does not couple samples" in line
