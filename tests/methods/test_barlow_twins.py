import pytest
import torch
from torch import nn

from fastssl.losses import barlow_twins_loss
from fastssl.recipes import get_recipe
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


def test_barlowtwins_cpu_recipe_trains(tmp_path):
    rows = cli_run(tmp_path, "barlowtwins-cpu")
    assert all(x["loss"] > 0 for x in rows)


@pytest.mark.slow
def test_two_ranks_equal_one_process(tmp_path):
    """The cross-correlation spans the global batch: one SGD step on 2 gloo ranks matches 1 process."""
    from tests.methods.pretext_runs import assert_two_ranks_equal_one

    assert_two_ranks_equal_one(tmp_path, "barlowtwins-cpu")
