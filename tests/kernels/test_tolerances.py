"""The shared error bounds (tests/kernels/tolerances.py) scale as derived and still catch bugs."""

import pytest
import torch
import torch.nn.functional as F
from fastssl_kernels.nt_xent import nt_xent_reference

from fastssl.losses.chunked import nt_xent_chunked
from tests.kernels.tolerances import check_loss_and_grads, grad_bound, logit_error, loss_bound, unit_roundoff


def test_bounds_grow_with_width_inverse_temperature_and_roundoff():
    assert logit_error(256, 0.1) > logit_error(16, 0.1)
    assert logit_error(64, 0.05) == pytest.approx(4 * logit_error(64, 0.2))
    assert logit_error(64, 0.1, torch.float64) < 1e-12 < logit_error(64, 0.1, torch.float32)
    bf16, fp16, fp32 = (
        grad_bound(64, 0.1, 100, 100, 50, dt)[1] for dt in (torch.bfloat16, torch.float16, torch.float32)
    )
    assert bf16 > fp16 > fp32
    assert grad_bound(64, 0.1, 100, 100, 50, torch.bfloat16)[0] == unit_roundoff(torch.bfloat16)


def test_a_zero_gradient_gets_an_absolute_floor():
    # One pair: each row's only key is its positive, loss and gradient are exactly 0. On an AMD
    # EPYC the fp32 kernel returned gradients of norm 2.4e-6 (d=64, t=0.05) and 1.2e-6 (d=128),
    # which a purely relative tolerance rejects; the derived bound keeps a floor well above them.
    assert grad_bound(64, 0.05, 2, 2, 1, torch.float32)[1] > 10 * 2.4e-6
    assert grad_bound(128, 0.05, 2, 2, 1, torch.float32)[1] > 10 * 1.2e-6


def _views(n, d):
    return [F.normalize(torch.randn(n, d, dtype=torch.float64), dim=1).float().requires_grad_() for _ in range(2)]


@pytest.mark.parametrize("t_error", [1e-3, 0.0])
def test_bound_rejects_a_temperature_off_by_a_tenth_of_a_percent(t_error):
    n, d, t = 61, 64, 0.2
    z1, z2 = _views(n, d)
    r1, r2 = (z.detach().double().requires_grad_() for z in (z1, z2))
    loss = nt_xent_chunked(z1, z2, t * (1 + t_error), block=32)
    expected = nt_xent_reference(r1, r2, t)
    loss.backward()
    expected.backward()

    def check():
        check_loss_and_grads(
            loss, expected, [z1.grad, z2.grad], [r1.grad, r2.grad], d=d, t=t, keys=2 * n, rows=2 * n,
            dtype=torch.float32,
        )  # fmt: skip

    if t_error:
        with pytest.raises(AssertionError):
            check()
    else:
        check()
    assert loss_bound(d, t, 2 * n) < 1e-4
