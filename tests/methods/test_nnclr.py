import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from fastssl.errors import FastSSLError
from fastssl.recipes import get_recipe
from tests.methods.noncontrastive_common import (N, assert_logged_scalars, assert_sgd_step_moves_weights, cli_run,
                                                 tiny_method, views)
from tests.train.conftest import tiny_overrides

K = 2 * N  # a support set of two batches: the third commit wraps the ring


def _nnclr(*overrides):
    return tiny_method("nnclr", "--method.pred_hidden_dim=8", f"--method.queue_size={K}", *overrides)


def _grads(m, loss):
    m.zero_grad()
    loss.backward()
    return {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}


def _by_hand(m, x1, x2, t, positive="nn"):
    """The paper's loss in fp64, written out: NN by brute force over the support set, the softmax
    over the other view's predictions, symmetric. positive="z": the projection itself (SimCLR
    with a predictor), to show the test tells the two apart."""
    h1, h2 = m.projector(m.backbone(x1)), m.projector(m.backbone(x2))  # [N, D]
    p1, p2 = m.predictor(h1), m.predictor(h2)
    q = m.support.double()  # [K, D], rows of norm 1

    def unit(v):
        return v / v.norm(dim=1, keepdim=True)

    def neighbour(h):
        z = unit(h.detach())
        rows = [max(range(q.shape[0]), key=lambda j: float(z[i] @ q[j])) for i in range(z.shape[0])]
        return q[rows] if positive == "nn" else z

    def ctr(a, p):
        logits = unit(a) @ unit(p).T / t  # [N, N]
        return -(logits.diagonal() - logits.logsumexp(dim=1)).mean()

    return ctr(neighbour(h1), p2) / 2 + ctr(neighbour(h2), p1) / 2


def test_loss_and_gradients_equal_an_fp64_re_derivation():
    m = _nnclr("--method.temperature=0.3").double()
    x1, x2 = (v.double() for v in views())
    m.commit_step(0, 1)  # no pending projections: a no-op
    out = m([x1, x2])
    assert_logged_scalars(out, {"nn_sim"})
    got = _grads(m, out["loss"])
    ref_loss = _by_hand(m, x1, x2, 0.3)
    torch.testing.assert_close(out["loss"].detach(), ref_loss.detach(), rtol=1e-10, atol=1e-12)
    ref = _grads(m, ref_loss)
    assert got.keys() == ref.keys() and any(k.startswith("backbone.") for k in got)
    for k in got:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-8, atol=1e-10, msg=k)
    simclr_like = _by_hand(m, x1, x2, 0.3, positive="z")
    assert not torch.isclose(simclr_like, ref_loss)


def test_commit_enqueues_the_normalised_view1_projections_in_a_ring():
    m = _nnclr()
    initial = m.support.clone()
    batches = [views(seed) for seed in range(3)]
    m(batches[0])
    assert torch.equal(m.support, initial) and m.support_ptr.item() == 0  # forward alone changes nothing
    expect = initial.clone()
    for step, (x1, x2) in enumerate(batches):
        m([x1, x2], step=step, schedule_len=3)
        with torch.no_grad():
            z1 = nn.functional.normalize(m.projector(m.backbone(x1)), dim=1)
        m.commit_step(step, 3)
        slot = (step * N) % K
        expect[slot:slot + N] = z1
        assert m.support_ptr.item() == ((step + 1) * N) % K
        torch.testing.assert_close(m.support, expect, rtol=1e-5, atol=1e-6)
    assert m.support.dtype == torch.float32 and m.fp32_state()[0] is m.support


def test_a_skipped_step_leaves_the_support_set_untouched():
    """The trainer calls commit_step only after a step that was applied; a forward whose step is
    skipped, followed by the next step's forward, enqueues only the latter's projections."""
    m = _nnclr()
    initial = m.support.clone()
    m(views(0))  # its step is skipped: no commit
    x1, x2 = views(1)
    m([x1, x2])
    m.commit_step(1, 2)
    with torch.no_grad():
        z1 = nn.functional.normalize(m.projector(m.backbone(x1)), dim=1)
    torch.testing.assert_close(m.support[:N], z1, rtol=1e-5, atol=1e-6)
    assert torch.equal(m.support[N:], initial[N:])


def test_the_positive_is_the_nearest_support_row():
    m = _nnclr().eval()  # eval: BN statistics fixed, so the projections below are the forward's
    x1, _ = views()
    with torch.no_grad():
        z1 = nn.functional.normalize(m.projector(m.backbone(x1)), dim=1)
        m.support[3] = z1[0]
        got, sim = m.nearest_neighbour(z1)
    assert torch.equal(got[0], m.support[3]) and sim[0].item() == pytest.approx(1.0, abs=1e-6)
    brute = (z1 @ m.support.T).argmax(1)
    torch.testing.assert_close(got, m.support[brute])


def test_heads_follow_solo_learn_nnclr():
    m = _nnclr()
    proj = list(m.projector)
    assert [x.out_features for x in proj if isinstance(x, nn.Linear)] == [16, 16, 16]
    assert isinstance(proj[-1], nn.BatchNorm1d) and proj[-1].affine  # the output BN is affine
    assert [x.out_features for x in m.predictor if isinstance(x, nn.Linear)] == [8, 16]


def test_one_sgd_step_changes_the_weights():
    assert_sgd_step_moves_weights(_nnclr())


def test_support_set_not_a_multiple_of_the_batch_fails_clearly():
    with pytest.raises(FastSSLError, match=r"--method.queue_size to a multiple of 8"):
        _nnclr("--method.queue_size=4")(views())  # smaller than the batch
    with pytest.raises(FastSSLError, match=r"--method.queue_size to a multiple of 8"):
        _nnclr("--method.queue_size=12")(views())


def test_bad_support_set_on_the_cli_is_one_line_and_exit_2(tmp_path):
    cmd = [sys.executable, "-m", "fastssl", "train", *tiny_overrides(tmp_path / "run"), "--method.name=nnclr",
           "--method.queue_size=8", "--method.pred_hidden_dim=8"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "--method.queue_size to a multiple of 16" in r.stderr


def test_recipes_carry_the_papers_settings():
    m = get_recipe("nnclr-resnet50-imagenet").method
    assert (m.proj_hidden_dim, m.proj_dim, m.proj_layers, m.pred_hidden_dim) == (2048, 256, 3, 4096)
    assert (m.queue_size, m.temperature) == (98304, 0.1)
    c = get_recipe("nnclr-resnet50-imagenet")
    assert (c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.train.batch_size, c.train.epochs) == (
        "lars", 0.3, 1e-6, 4096, 1000)
    cpu = get_recipe("nnclr-cpu")
    assert cpu.data.dataset == "digits" and cpu.method.queue_size % cpu.train.batch_size == 0


def test_nnclr_cpu_recipe_trains(tmp_path):
    rows = cli_run(tmp_path, "nnclr-cpu")
    assert all(-1 <= x["nn_sim"] <= 1 for x in rows)
