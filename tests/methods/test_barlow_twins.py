from types import SimpleNamespace

import pytest
import torch
from torch import nn

from fastssl.losses import barlow_twins_loss
from fastssl.parallel.engines.base import Engine
from fastssl.recipes import get_recipe
from fastssl.train.optim import LARS, build_optimizer
from tests.methods.noncontrastive_common import (assert_logged_scalars, assert_sgd_step_moves_weights, cli_run,
                                                 tiny_method, views)


def test_forward_returns_a_finite_loss_and_the_projection_std():
    out = tiny_method("barlowtwins")(views())
    assert_logged_scalars(out, {"z_std"})
    assert out["loss"].item() > 0 and out["z_std"].item() > 0


def test_loss_is_barlow_twins_loss_of_each_views_own_projector_pass():
    m = tiny_method("barlowtwins", "--method.lambd=0.1")
    x1, x2 = views()
    out = m([x1, x2])
    z1, z2 = m.forward_encoder(x1), m.forward_encoder(x2)  # [N, D]: separate passes, as main.py
    torch.testing.assert_close(out["loss"], barlow_twins_loss(z1, z2, 0.1))


def test_projector_follows_barlowtwins_main_py():
    layers = list(tiny_method("barlowtwins").projector)
    linears = [x for x in layers if isinstance(x, nn.Linear)]
    assert len(linears) == 3 and all(x.bias is None for x in linears)  # every Linear bias=False
    assert isinstance(layers[-1], nn.Linear)


def test_one_sgd_step_changes_the_weights():
    assert_sgd_step_moves_weights(tiny_method("barlowtwins"))


def test_recipes_carry_the_papers_settings():
    c = get_recipe("barlowtwins-resnet50-imagenet")
    assert (c.method.proj_dim, c.method.lambd) == (8192, 0.0051)
    assert (c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.train.batch_size) == ("lars", 0.2, 1.5e-6, 2048)


def test_biases_and_norms_take_main_py_lr_without_decay_or_adaptation():
    """main.py: weights at lr x 0.2 with decay and LARS adaptation; biases and BN (ndim == 1) at
    lr x 0.0048, no decay, no adaptation, on the same schedule. One LARS step from zero momentum
    at schedule lr 0.5: a bias moves by exactly 0.5 x 0.024 x its gradient."""
    optim = get_recipe("barlowtwins-resnet50-imagenet").optim
    assert optim.bias_lr_scale == pytest.approx(0.0048 / 0.2)
    optim.weight_decay = 0.1  # large enough that a missing exclusion shows
    m = tiny_method("barlowtwins")
    opt = build_optimizer(m, optim, lr=1.0)
    assert isinstance(opt, LARS)
    m(views())["loss"].backward()
    before = {k: (p.detach().clone(), p.grad.clone()) for k, p in m.named_parameters()}
    Engine.set_lr(SimpleNamespace(optimizer=opt), 0.5)
    opt.step()
    biases = [k for k, p in m.named_parameters() if p.ndim == 1]
    assert any(k.startswith("backbone.") for k in biases) and any(k.startswith("projector.") for k in biases)
    for k, p in m.named_parameters():
        w, g = before[k]
        if p.ndim == 1:
            torch.testing.assert_close(p.detach(), w - 0.5 * 0.024 * g, msg=k)
        else:  # LARS-adapted and decayed at the weights' lr
            d = g + 0.1 * w
            torch.testing.assert_close(p.detach(), w - 0.5 * optim.lars_eta * w.norm() / d.norm() * d, msg=k)


def test_bias_lr_scale_defaults_to_one_and_must_be_positive():
    from fastssl.config import Config, apply_overrides, validate
    from fastssl.errors import FastSSLError

    assert Config().optim.bias_lr_scale == 1.0 and get_recipe("barlowtwins-cpu").optim.bias_lr_scale == 1.0
    with pytest.raises(FastSSLError, match="bias_lr_scale"):
        validate(apply_overrides(Config(), ["--optim.bias_lr_scale=0"]))


def test_barlowtwins_cpu_recipe_trains(tmp_path):
    rows = cli_run(tmp_path, "barlowtwins-cpu")
    assert all(x["loss"] > 0 for x in rows)

