from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from fastssl.config import OptimConfig
from fastssl.parallel.engines.base import Engine
from fastssl.recipes import get_recipe
from fastssl.train.optim import build_optimizer
from tests.methods.noncontrastive_common import (assert_logged_scalars, assert_sgd_step_moves_weights, cli_run,
                                                 tiny_method, views)


def _simsiam(*overrides):
    return tiny_method("simsiam", "--method.pred_hidden_dim=4", *overrides)


def _grads(m, loss):
    m.zero_grad()
    loss.backward()
    return {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}


def test_forward_returns_a_bounded_loss_and_the_output_std():
    out = _simsiam()(views())
    assert_logged_scalars(out, {"z_std"})
    assert -1 <= out["loss"].item() <= 1  # a mean of negative cosines
    assert 0 < out["z_std"].item() <= 1


def test_stop_gradient_no_gradient_flows_through_the_target_branch():
    """The gradient of the method's loss is the paper's Algorithm 1 (targets detached), and not
    that of the same loss without the stop-gradient."""
    x1, x2 = views()

    def by_hand(m, stop):
        z1, z2 = m.projector(m.backbone(x1)), m.projector(m.backbone(x2))  # [N, D]
        t1, t2 = (z1.detach(), z2.detach()) if stop else (z1, z2)
        p1, p2 = m.predictor(z1), m.predictor(z2)
        return -(F.cosine_similarity(p1, t2).mean() + F.cosine_similarity(p2, t1).mean()) / 2

    m = _simsiam()
    got = _grads(m, m([x1, x2])["loss"])
    with_stop, without = _grads(m, by_hand(m, True)), _grads(m, by_hand(m, False))
    assert got.keys() == with_stop.keys()
    for k in got:
        torch.testing.assert_close(got[k], with_stop[k], msg=k)
    assert any(not torch.allclose(without[k], with_stop[k]) for k in got if k.startswith("backbone."))


def test_heads_follow_simsiam_builder():
    m = _simsiam()
    proj, pred = list(m.projector), list(m.predictor)
    linears = [x for x in proj if isinstance(x, nn.Linear)]
    assert len(linears) == 3 and all(x.bias is None for x in linears)
    assert isinstance(proj[-1], nn.BatchNorm1d) and not proj[-1].affine  # output BN without affine
    assert [x.out_features for x in pred if isinstance(x, nn.Linear)] == [4, 16]  # bottleneck
    assert pred[0].bias is None and pred[-1].bias is not None


def test_one_sgd_step_changes_the_weights():
    assert_sgd_step_moves_weights(_simsiam())


def _step_with_schedule_lr(m, sched_lr, peak_lr=0.1):
    """One SGD step as the engines run it: set_lr(sched_lr) on every group, then step."""
    opt = build_optimizer(m, OptimConfig(name="sgd", weight_decay=0.0, momentum=0.0), lr=peak_lr)
    m(views())["loss"].backward()
    before = {k: (p.detach().clone(), p.grad.clone()) for k, p in m.named_parameters() if p.grad is not None}
    Engine.set_lr(SimpleNamespace(optimizer=opt), sched_lr)
    opt.step()
    return opt, before


def test_predictor_keeps_the_peak_lr_while_the_rest_follows_the_schedule():
    m = _simsiam()
    opt, before = _step_with_schedule_lr(m, sched_lr=0.01)
    fixed = [g for g in opt.param_groups if g.get("fixed_lr")]
    assert {id(p) for g in fixed for p in g["params"]} == {id(p) for p in m.predictor.parameters()}
    for k, p in m.named_parameters():
        w, g = before[k]
        lr = 0.1 if k.startswith("predictor.") else 0.01
        torch.testing.assert_close(p.detach(), w - lr * g, msg=k)


def test_fixed_lr_off_and_lr_zero_steps():
    m = _simsiam("--method.fix_pred_lr=false")
    opt, _ = _step_with_schedule_lr(m, sched_lr=0.01)
    assert not any(g.get("fixed_lr") for g in opt.param_groups)
    # lr 0 (the engines' state-initialising step) moves nothing, predictor included.
    m = _simsiam()
    _, before = _step_with_schedule_lr(m, sched_lr=0.0)
    assert all(torch.equal(p.detach(), before[k][0]) for k, p in m.named_parameters())


def test_recipes_carry_the_papers_settings():
    c = get_recipe("simsiam-resnet50-imagenet")
    m = c.method
    assert (m.proj_dim, m.pred_hidden_dim, m.proj_layers, m.fix_pred_lr) == (2048, 512, 3, True)
    assert (c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.train.batch_size, c.train.epochs) == (
        "sgd", 0.05, 1e-4, 512, 100)


def test_simsiam_cpu_recipe_trains(tmp_path):
    rows = cli_run(tmp_path, "simsiam-cpu")
    assert all(-1 <= x["loss"] <= 1 for x in rows)

