"""`koleo_loss` against an independent fp64 derivation of DINOv2's KoLeo loss."""

import math

import pytest
import torch

from fastssl.errors import FastSSLError
from fastssl.losses import koleo_loss
from tests.losses.regularizer_bounds import check_grad, check_value

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
SHAPES = [(3, 5), (17, 33), (2, 3)]  # D = 1 is degenerate: every row normalises to +-1


def koleo_fp64(x, eps=1e-8):
    """Nearest other row by Euclidean distance (torch.cdist, self masked with +inf), then
    -mean log(||x_i - x_nn + 1e-8|| + eps) on the unit-normalised rows, fp64."""
    x = x.double()
    x = x / x.norm(dim=1, keepdim=True).clamp_min(eps)
    with torch.no_grad():
        dist = torch.cdist(x, x)
        dist.fill_diagonal_(math.inf)
        nn = dist.argmin(dim=1)
    d = torch.sqrt(((x - x[nn] + 1e-8) ** 2).sum(dim=1))
    return -torch.log(d + eps).mean()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,d", SHAPES)
def test_value_and_grads_match_fp64_derivation(n, d, dtype):
    g = torch.Generator().manual_seed(n * 100 + d)
    x = (torch.randn(n, d, generator=g, dtype=torch.float64) * 2).to(dtype).requires_grad_()
    loss = koleo_loss(x)
    loss.backward()
    r = x.detach().double().requires_grad_()
    ref = koleo_fp64(r)
    ref.backward()
    check_value(loss, ref, n, d)
    assert x.grad.dtype == dtype
    check_grad(x.grad, r.grad, n, d)


def test_duplicate_rows_are_finite_and_pick_each_other():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(5, 7, generator=g)
    x = torch.cat([base, base[:2]]).requires_grad_()  # rows 5, 6 repeat rows 0, 1
    loss = koleo_loss(x)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    r = x.detach().double().requires_grad_()
    ref = koleo_fp64(r)
    ref.backward()
    check_value(loss, ref, 7, 7)
    # the 4 duplicated rows find each other (distance 1e-8 sqrt(D), -log ~ 17 each); the other 3
    # are unit vectors at distance <= 2, -log >= -log 2
    assert loss.item() >= (-math.log(1e-8 * math.sqrt(7) + 1e-8) * 4 - math.log(2) * 3) / 7


def test_all_rows_identical_is_finite():
    x = torch.ones(4, 3, requires_grad=True)
    loss = koleo_loss(x)
    loss.backward()
    torch.testing.assert_close(loss, torch.tensor(-math.log(1e-8 * math.sqrt(3) + 1e-8)))
    assert torch.isfinite(x.grad).all()


def test_antipodal_pair_never_picks_itself():
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    torch.testing.assert_close(koleo_loss(x), torch.tensor(-math.log(2.0 + 1e-8)), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("shape", [(4,), (1, 3), (0, 3), (4, 0)])
def test_bad_shapes_raise(shape):
    with pytest.raises(FastSSLError):
        koleo_loss(torch.randn(shape))
