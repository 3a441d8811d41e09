import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastssl.config import Config, apply_overrides, validate
from fastssl.errors import FastSSLError
from fastssl.losses import info_nce
from fastssl.methods import build_method
from fastssl.methods.momentum import ema_update_
from fastssl.methods.shuffle_bn import SplitBatchNorm, convert_split_batchnorm
from fastssl.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, step_of
from tests.train.conftest import tiny_overrides

N, K, D = 8, 32, 8


def _cfg(*overrides):
    c = Config()
    c.set_method("mocov2")
    c.model.name, c.data.image_size = "resnet-tiny", 8
    apply_overrides(c, [f"--method.proj_hidden_dim=16", f"--method.proj_dim={D}", f"--method.queue_size={K}",
                        "--method.shuffle_bn_groups=2", *overrides])
    return validate(c)


def _views(seed=0, n=N):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, 8, 8, generator=g), torch.randn(n, 3, 8, 8, generator=g)]


def _step(m, views, step):
    out = m(views, step=step, schedule_len=10)
    m.commit_step(step, 10)
    return out


def test_queue_is_a_normalised_buffer_in_the_state_dict():
    m = build_method(_cfg())
    assert m.queue.shape == (1, K, D) and m.queue_ptr.item() == 0
    torch.testing.assert_close(m.queue.norm(dim=-1), torch.ones(1, K))
    state = m.state_dict()
    assert "queue" in state and "queue_ptr" in state  # so checkpoints carry it
    assert build_method(_cfg("--method.symmetric=true")).queue.shape == (2, K, D)


def test_keys_are_enqueued_in_order_and_the_ring_wraps():
    torch.manual_seed(0)
    m = build_method(_cfg()).train()
    initial = m.queue.clone()
    keys = []
    for step in range(3):  # K / N = 4 slots of N keys; 3 steps fill 3 of them
        views = _views(step)
        before = m.queue.clone()
        m(views, step=step, schedule_len=10)
        torch.testing.assert_close(m.queue, before)  # forward alone never touches the queue
        keys.append(m._pending_keys[0][0].clone())  # the step's one micro-batch, view 0
        m.commit_step(step, 10)
    assert m.queue_ptr.item() == 3 * N
    torch.testing.assert_close(m.queue[0, : 3 * N], torch.cat(keys))
    torch.testing.assert_close(m.queue[0, 3 * N :], initial[0, 3 * N :])  # not yet overwritten
    for step in (3, 4):  # the 5th batch overwrites the oldest slot
        _step(m, _views(step), step)
        keys.append(m.queue[0, (step % 4) * N : (step % 4 + 1) * N].clone())
    assert m.queue_ptr.item() == N
    torch.testing.assert_close(m.queue[0, :N], keys[4])


def test_forward_without_commit_leaves_the_queue_alone():
    """A skipped non-finite step runs forward but never commit_step: the queue must not move."""
    m = build_method(_cfg()).train()
    before, ptr = m.queue.clone(), m.queue_ptr.clone()
    m(_views(), step=0, schedule_len=10)
    m(_views(1), step=1, schedule_len=10)
    assert torch.equal(m.queue, before) and torch.equal(m.queue_ptr, ptr)


def test_loss_is_infonce_against_the_queue_only():
    torch.manual_seed(0)
    m = build_method(_cfg("--method.temperature=0.3")).train()
    x1, x2 = _views()
    torch.manual_seed(1)
    q = m.forward_query(x1)
    k, _ = m.forward_key(x2, seed=0)
    loss = m.forward_loss(q, k, m.queue[0])
    # MoCo's Algorithm 1 by hand: one positive (q . k) against the K queued negatives.
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ m.queue[0].T], 1) / 0.3
    expect = -torch.log_softmax(logits, 1)[:, 0].mean()
    torch.testing.assert_close(loss, expect)
    # With in-batch negatives the other keys enter the softmax: the loss grows, and equals info_nce.
    m.cfg.in_batch_negatives = True
    with_batch = m.forward_loss(q, k, m.queue[0])
    assert with_batch > loss
    torch.testing.assert_close(with_batch, info_nce(q, k, m.queue[0], 0.3, impl="torch"))
    # The full forward computes the same loss.
    m.cfg.in_batch_negatives = False
    torch.testing.assert_close(m([x1, x2], step=0)["loss"], expect)


def test_no_gradient_reaches_the_key_encoder_and_momentum_is_constant():
    m = build_method(_cfg()).train()
    m(_views())["loss"].backward()
    assert all(p.grad is None for p in [*m.key_backbone.parameters(), *m.key_projector.parameters()])
    assert m.projector[0].weight.grad is not None and m.backbone.trunk.conv1.weight.grad is not None
    assert m.momentum_at(0, 100) == pytest.approx(0.999) and m.momentum_at(77, 100) == pytest.approx(0.999)
    assert [t for _, t in m.momentum_pairs()] == [m.key_backbone, m.key_projector]
    before = [p.clone() for p in m.key_backbone.parameters()]
    with torch.no_grad():
        for p in m.backbone.parameters():
            p.add_(1.0)
    for online, target in m.momentum_pairs():
        ema_update_(target, online, 0.999)
    for t, b, o in zip(m.key_backbone.parameters(), before, m.backbone.parameters()):
        torch.testing.assert_close(t, 0.999 * b + 0.001 * o.detach())


def test_head_is_fc_relu_fc_without_batchnorm():
    m = build_method(_cfg())
    assert [type(x) for x in m.projector] == [nn.Linear, nn.ReLU, nn.Linear]


def test_queue_size_not_a_multiple_of_the_batch_fails_clearly():
    m = build_method(_cfg("--method.queue_size=36"))
    with pytest.raises(FastSSLError, match=r"--method.queue_size to a multiple of 8"):
        m(_views())


def test_bad_bn_mode_and_groups_fail_clearly():
    with pytest.raises(FastSSLError, match=r"--method.bn "):
        _cfg("--method.bn=group")
    m = build_method(_cfg("--method.shuffle_bn_groups=3"))
    with pytest.raises(FastSSLError, match=r"--method.shuffle_bn_groups"):
        m(_views())


def test_split_batchnorm_normalises_each_contiguous_group_alone():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2), bn.bias.uniform_(-1, 1)
    split = convert_split_batchnorm(nn.Sequential(bn), 2)[0]
    assert isinstance(split, SplitBatchNorm) and split.weight is bn.weight
    ref = nn.BatchNorm2d(4)
    ref.load_state_dict(bn.state_dict())
    x = torch.randn(6, 4, 3, 3) + torch.arange(6.0).view(6, 1, 1, 1)  # groups with different means
    y = split(x)
    for g in range(2):
        torch.testing.assert_close(y[3 * g : 3 * g + 3], nn.functional.batch_norm(
            x[3 * g : 3 * g + 3], None, None, ref.weight, ref.bias, True, 0.0, ref.eps))
    assert not torch.allclose(y, ref(x))  # one group of 6 would normalise differently
    # Running statistics: the mean over groups of what each group's BN would have recorded.
    expect_mean = 0.9 * torch.zeros(4) + 0.1 * torch.stack([x[:3].mean((0, 2, 3)), x[3:].mean((0, 2, 3))]).mean(0)
    torch.testing.assert_close(split.running_mean, expect_mean)
    split.eval()
    torch.testing.assert_close(split(x), nn.functional.batch_norm(
        x, split.running_mean, split.running_var, split.weight, split.bias, False, 0.0, split.eps))


def test_one_rank_shuffle_bn_splits_queries_by_order_and_keys_by_shuffle():
    """On one rank, groups=2 emulates two GPUs: queries are normalised per half of the batch, keys
    per half of a shuffled batch, then unshuffled: exactly what plain BN on each group gives."""
    torch.manual_seed(0)
    m = build_method(_cfg()).train()
    plain = build_method(_cfg("--method.bn=sync")).train()  # same weights, plain BN
    plain.load_state_dict(m.state_dict())
    x = _views()[0]
    half = N // 2
    q = m.forward_query(x)
    torch.testing.assert_close(q, torch.cat([plain.forward_query(x[:half]), plain.forward_query(x[half:])]))
    assert not torch.allclose(q, plain.forward_query(x), atol=1e-4)  # BN over 8 differs from 2 x 4
    k, k_all = m.forward_key(x, seed=5)
    order = torch.randperm(N, generator=torch.Generator().manual_seed(5))
    keys_shuffled = torch.cat([plain.forward_key(x[order[:half]], 0)[1], plain.forward_key(x[order[half:]], 0)[1]])
    expect = torch.empty_like(keys_shuffled)
    expect[order] = keys_shuffled
    torch.testing.assert_close(k_all, expect)
    torch.testing.assert_close(k, k_all)  # one rank: its keys are the global batch's
    # A query and its positive key are normalised over different groups of images.
    assert set(order[:half].tolist()) != set(range(half))


def test_symmetric_uses_one_queue_per_key_view():
    torch.manual_seed(0)
    m = build_method(_cfg("--method.symmetric=true")).train()
    x1, x2 = _views()
    out = m([x1, x2], step=0)
    keys = m._pending_keys[0].clone()  # the step's one micro-batch [2, N, d]
    m.commit_step(0, 10)
    torch.testing.assert_close(m.queue[:, :N], keys)
    k1, _ = m.forward_key(x1, seed=0)
    k2, _ = m.forward_key(x2, seed=1)
    torch.testing.assert_close(keys[0], k1)
    torch.testing.assert_close(keys[1], k2)
    assert torch.isfinite(out["loss"]) and out["loss"] > 0


def _cli(out, *extra):
    cmd = [sys.executable, "-m", "fastssl", "train", *tiny_overrides(out), "--method.name=mocov2",
           "--method.queue_size=32", "--method.shuffle_bn_groups=2", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r


@pytest.mark.slow
def test_queue_survives_resume(tmp_path):
    """6 steps uninterrupted == 2 steps, stop, resume to 6: the queue and its pointer included."""
    _cli(tmp_path / "full")
    _cli(tmp_path / "part", "--train.ckpt_every_steps=1", "--train.keep_last=10")
    for p in list_checkpoints(tmp_path / "part")[2:]:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    assert step_of(latest_checkpoint(tmp_path / "part")) == 2
    _cli(tmp_path / "part", "--train.resume=true")
    full, part = (load_checkpoint(latest_checkpoint(tmp_path / r))["model"] for r in ("full", "part"))
    assert full["queue_ptr"].item() == part["queue_ptr"].item() == (6 * 16) % 32
    torch.testing.assert_close(part["queue"], full["queue"])
    for k in full:
        if full[k].is_floating_point():
            torch.testing.assert_close(part[k], full[k], msg=k)
    # The queue really holds trained keys, not its random init.
    torch.manual_seed(0)
    init = build_method(Config.from_dict(load_checkpoint(latest_checkpoint(tmp_path / "full"))["config"]))
    assert not torch.allclose(full["queue"], init.queue)


@pytest.mark.slow
def test_mocov2_cpu_recipe_trains(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "fastssl", "train", "--recipe", "mocov2-cpu", f"--train.out={out}",
           "--train.max_steps=3", "--train.log_every=1", "--train.progress=false", "--train.tensorboard=false",
           "--train.knn_at_end=false", "--data.num_workers=0"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in rows if x["kind"] == "train"]
    assert len(losses) == 3 and all(0 < v < 20 for v in losses)


def test_split_batchnorm_on_a_batch_that_does_not_split_is_plain_bn():
    # Fine-tuning a MoCo backbone on 10 labelled images with 4 groups: plain BN, not a crash.
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(4)
    split = convert_split_batchnorm(nn.Sequential(bn), 4)[0]
    ref = nn.BatchNorm2d(4)
    ref.load_state_dict(split.state_dict())
    x = torch.randn(10, 4, 3, 3)
    torch.testing.assert_close(split(x), ref(x))
    torch.testing.assert_close(split.running_mean, ref.running_mean)
