"""`barlow_twins_loss` against an independent fp64 derivation of facebookresearch/barlowtwins."""

import pytest
import torch
import torch.nn.functional as F

from fastssl.errors import FastSSLError
from fastssl.losses import barlow_twins_loss
from tests.losses.regularizer_bounds import check_grad, check_value

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
SHAPES = [(3, 5), (17, 33), (8, 1)]


def barlow_twins_fp64(z1, z2, lambd=5.1e-3):
    """BatchNorm1d(affine=False) in training mode (F.batch_norm), c / N, entry-by-entry sums, fp64."""
    z1, z2 = z1.double(), z2.double()
    n, d = z1.shape
    bn1 = F.batch_norm(z1, None, None, training=True, eps=1e-5)
    bn2 = F.batch_norm(z2, None, None, training=True, eps=1e-5)
    c = torch.einsum("ni,nj->ij", bn1, bn2) / n  # [D, D]
    loss = 0.0
    for i in range(d):
        for j in range(d):
            loss = loss + ((1 - c[i, j]) ** 2 if i == j else lambd * c[i, j] ** 2)
    return loss


def _views(n, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, d, generator=g, dtype=torch.float64) * 3 + 1
    z2 = 0.5 * z1 + torch.randn(n, d, generator=g, dtype=torch.float64)
    return z1.to(dtype), z2.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,d", SHAPES)
def test_value_and_grads_match_fp64_derivation(n, d, dtype):
    z1, z2 = (z.requires_grad_() for z in _views(n, d, dtype))
    loss = barlow_twins_loss(z1, z2)
    loss.backward()
    r1, r2 = (z.detach().double().requires_grad_() for z in (z1, z2))
    ref = barlow_twins_fp64(r1, r2)
    ref.backward()
    check_value(loss, ref, n, d, scale=d)  # D terms (1 - c_ii)^2, |c_ii| <= 1
    assert z1.grad.dtype == dtype
    check_grad(z1.grad, r1.grad, n, d, "grad z1")
    check_grad(z2.grad, r2.grad, n, d, "grad z2")


@pytest.mark.parametrize("lambd", [0.0, 1.0])
def test_lambd_weighs_the_off_diagonal(lambd):
    z1, z2 = _views(17, 33, torch.float32)
    check_value(barlow_twins_loss(z1, z2, lambd=lambd), barlow_twins_fp64(z1, z2, lambd), 17, 33)


def test_identical_views_leave_only_the_off_diagonal():
    z, _ = _views(6, 4, torch.float32)
    bn = F.batch_norm(z.double(), None, None, training=True, eps=1e-5)
    c = bn.T @ bn / 6  # c_ii = var / (var + eps), just below 1
    expected = ((1 - c.diagonal()) ** 2).sum() + 5.1e-3 * (c.fill_diagonal_(0) ** 2).sum()
    check_value(barlow_twins_loss(z, z.clone()), expected, 6, 4)


@pytest.mark.parametrize("a,b", [((4, 3), (4, 2)), ((4,), (4,)), ((0, 3), (0, 3)), ((1, 3), (1, 3)), ((4, 0), (4, 0))])
def test_bad_shapes_raise(a, b):
    with pytest.raises(FastSSLError):
        barlow_twins_loss(torch.randn(a), torch.randn(b))
