"""Error bounds for the batch-statistics losses (VICReg, Barlow Twins, KoLeo) against fp64.

Setting: the inputs are rounded to their dtype first and the fp64 reference sees exactly those
values, so the error under test is the implementation's arithmetic, which is float32 whatever
the input dtype, plus storing the gradient in the input's dtype.

Every quantity is a sum over at most N rows (means, second moments, cross sums) followed by a
sum over at most D^2 entries, each term O(1) relative to the result for the well-conditioned
inputs the tests draw (stds away from VICReg's hinge at 1, |c_ii| away from 1). Rounding errors
of such sums add like a random walk: relative error ~ u32 (sqrt(N) + D) for a value and for each
term of a gradient (D, not sqrt(D^2), for the D^2 entries as they are not independent). With a
safety factor C = 16 for the chain of ops (normalise, square, scale) and the backward pass:
  value:    rel <= C u32 (sqrt(N) + D)
  gradient: rel <= C u32 (sqrt(N) + D) + u(grad dtype)   (Frobenius norm over the whole tensor)
A loss that is a small difference of O(1) terms (Barlow Twins' (1 - c_ii)^2 with c_ii near 1)
is bounded relative to the size of those terms (`scale`, D there) rather than its own value.
For N = 17, D = 33 in fp32 that is ~4e-5 relative, while a real bug (N instead of N - 1, a missing
term, local-only statistics) moves results by >= 1/N ~ 6% here.
"""

from __future__ import annotations

import math

import torch

C = 16.0


def u(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps / 2


def arith_rel(n: int, d: int) -> float:
    return C * u(torch.float32) * (math.sqrt(n) + d)


def assert_close_rel(actual, expected, rel: float, what: str, scale: float = 0.0) -> None:
    """||actual - expected||_F <= rel max(||expected||_F, scale) (+ a tiny floor), in fp64."""
    a, e = actual.detach().double(), expected.detach().double()
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    err, ref = torch.linalg.norm(a - e).item(), torch.linalg.norm(e).item()
    bound = rel * max(ref, scale) + 1e-30
    assert err <= bound, f"{what}: |diff|={err:.3e} > bound {bound:.3e} (|ref|={ref:.3e})"


def check_value(actual, expected, n: int, d: int, what: str = "loss", scale: float = 0.0) -> None:
    assert actual.dtype == torch.float32, f"{what}: expected float32 math, got {actual.dtype}"
    assert_close_rel(actual, expected, arith_rel(n, d), what, scale)


def check_grad(actual, expected, n: int, d: int, what: str = "grad") -> None:
    assert_close_rel(actual, expected, arith_rel(n, d) + u(actual.dtype), what)
