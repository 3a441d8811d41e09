"""`vicreg_loss` against an independent fp64 derivation of the VICReg paper / main_vicreg.py."""

import pytest
import torch
import torch.nn.functional as F

from fastssl.errors import FastSSLError
from fastssl.losses import VICRegLoss, vicreg_loss
from tests.losses.regularizer_bounds import check_grad, check_value

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
SHAPES = [(3, 5), (17, 33), (8, 1)]


def vicreg_fp64(z1, z2, sim_w=25.0, var_w=25.0, cov_w=1.0):
    """The paper's definitions written with torch.cov / torch.var and explicit masks, fp64."""
    z1, z2 = z1.double(), z2.double()
    n, d = z1.shape
    inv = ((z1 - z2) ** 2).sum() / (n * d)
    var = 0.0
    cov = 0.0
    for z in (z1, z2):
        std = torch.sqrt(torch.var(z, dim=0, correction=1) + 1e-4)  # [D]
        var = var + torch.clamp(1.0 - std, min=0).sum() / d / 2
        c = torch.cov(z.T, correction=1) if d > 1 else torch.var(z, correction=1).reshape(1, 1)  # [D, D]
        mask = ~torch.eye(d, dtype=torch.bool)
        cov = cov + (c[mask] ** 2).sum() / d
    return sim_w * inv + var_w * var + cov_w * cov, inv, var, cov


def _views(n, d, dtype, seed=0):
    """Two correlated views whose per-feature stds straddle VICReg's hinge at 1, away from it."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.where(torch.arange(d) % 2 == 0, 0.3, 2.5)  # [D]
    z1 = torch.randn(n, d, generator=g, dtype=torch.float64) * scale + torch.randn(d, generator=g, dtype=torch.float64)
    z2 = z1 + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64) * scale
    z1, z2 = z1.to(dtype), z2.to(dtype)
    for z in (z1, z2):  # the hinge's kink is not differentiable: keep every std clear of it
        std = torch.sqrt(z.double().var(0) + 1e-4)
        assert ((std - 1).abs() > 1e-2).all()
    return z1, z2


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,d", SHAPES)
def test_value_and_grads_match_fp64_derivation(n, d, dtype):
    z1, z2 = (z.requires_grad_() for z in _views(n, d, dtype))
    out = vicreg_loss(z1, z2)
    assert isinstance(out, VICRegLoss)
    out.loss.backward()
    r1, r2 = (z.detach().double().requires_grad_() for z in (z1, z2))
    ref, ref_inv, ref_var, ref_cov = vicreg_fp64(r1, r2)
    ref.backward()
    check_value(out.loss, ref, n, d)
    check_value(out.invariance, ref_inv, n, d, "invariance")
    check_value(out.variance, ref_var, n, d, "variance")
    check_value(out.covariance, ref_cov, n, d, "covariance")
    assert z1.grad.dtype == dtype
    check_grad(z1.grad, r1.grad, n, d, "grad z1")
    check_grad(z2.grad, r2.grad, n, d, "grad z2")


def test_weights_scale_the_terms():
    z1, z2 = _views(17, 33, torch.float32)
    out = vicreg_loss(z1, z2, sim_weight=2.0, var_weight=0.5, cov_weight=3.0)
    ref = vicreg_fp64(z1, z2, 2.0, 0.5, 3.0)[0]
    check_value(out.loss, ref, 17, 33)
    torch.testing.assert_close(out.loss, 2.0 * out.invariance + 0.5 * out.variance + 3.0 * out.covariance)


def test_paper_defaults():
    z1, z2 = _views(9, 6, torch.float32)
    out = vicreg_loss(z1, z2)
    torch.testing.assert_close(out.loss, 25 * out.invariance + 25 * out.variance + 1 * out.covariance)


def test_collapsed_views_pay_the_full_variance_hinge():
    z = torch.ones(4, 3)
    out = vicreg_loss(z, z.clone())
    torch.testing.assert_close(out.invariance, torch.tensor(0.0))
    torch.testing.assert_close(out.variance, torch.tensor(1 - 1e-2))  # std = sqrt(0 + 1e-4)
    torch.testing.assert_close(out.covariance, torch.tensor(0.0))


@pytest.mark.parametrize("a,b", [((4, 3), (4, 2)), ((4,), (4,)), ((0, 3), (0, 3)), ((1, 3), (1, 3)), ((4, 0), (4, 0))])
def test_bad_shapes_raise(a, b):
    with pytest.raises(FastSSLError):
        vicreg_loss(torch.randn(a), torch.randn(b))


def test_functional_mse_matches_invariance():
    z1, z2 = _views(5, 4, torch.float32)
    torch.testing.assert_close(vicreg_loss(z1, z2).invariance, F.mse_loss(z1, z2))
