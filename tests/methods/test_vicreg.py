import pytest
import torch
from torch import nn

from fastssl.losses import vicreg_loss
from fastssl.recipes import get_recipe
from tests.methods.noncontrastive_common import (assert_logged_scalars, assert_sgd_step_moves_weights, cli_run,
                                                 tiny_method, views)


def test_forward_returns_the_weighted_loss_and_its_three_terms():
    m = tiny_method("vicreg")
    out = m(views())
    assert_logged_scalars(out, {"invariance", "variance", "covariance"})
    # The paper's weights 25 / 25 / 1 (main_vicreg.py --sim-coeff --std-coeff --cov-coeff).
    expect = 25 * out["invariance"] + 25 * out["variance"] + 1 * out["covariance"]
    torch.testing.assert_close(out["loss"].detach(), expect)


def test_loss_is_vicreg_loss_of_each_views_own_expander_pass():
    m = tiny_method("vicreg", "--method.sim_weight=2", "--method.cov_weight=3")
    x1, x2 = views()
    out = m([x1, x2])
    z1, z2 = m.forward_encoder(x1), m.forward_encoder(x2)  # [N, D]: separate passes, as main_vicreg.py
    torch.testing.assert_close(out["loss"], vicreg_loss(z1, z2, 2.0, 25.0, 3.0).loss)


def test_expander_follows_main_vicreg_projector():
    m = tiny_method("vicreg", "--method.proj_layers=3")
    layers = list(m.projector)
    linears = [x for x in layers if isinstance(x, nn.Linear)]
    assert len(linears) == 3 and linears[-1].bias is None  # last layer: Linear(bias=False)
    assert isinstance(layers[-1], nn.Linear)  # no BN / ReLU after it
    assert sum(isinstance(x, nn.BatchNorm1d) for x in layers) == 2


def test_one_sgd_step_changes_the_weights():
    assert_sgd_step_moves_weights(tiny_method("vicreg"))


def test_recipes_carry_the_papers_settings():
    c = get_recipe("vicreg-resnet50-imagenet")
    m = c.method
    assert (m.proj_hidden_dim, m.proj_dim, m.proj_layers) == (8192, 8192, 3)
    assert (m.sim_weight, m.var_weight, m.cov_weight) == (25.0, 25.0, 1.0)
    assert (c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.train.batch_size) == ("lars", 0.2, 1e-6, 2048)
    assert get_recipe("vicreg-cpu").data.dataset == "digits"


def test_negative_weight_is_rejected():
    from fastssl.errors import FastSSLError

    with pytest.raises(FastSSLError, match="var_weight"):
        tiny_method("vicreg", "--method.var_weight=-1")


def test_vicreg_cpu_recipe_trains(tmp_path):
    rows = cli_run(tmp_path, "vicreg-cpu")
    assert all(x["variance"] >= 0 and x["covariance"] >= 0 for x in rows)

