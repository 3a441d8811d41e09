"""Error bounds for the contrastive-loss tests, derived from the arithmetic, not tuned to a machine.

Used by the kernel, chunked and torch-path tests alike (tests/kernels, tests/losses).

Setting: the embeddings are unit vectors already rounded to their dtype, and the fp64 reference
sees exactly those values, so the only error is the arithmetic of the implementation under test.
u(dtype) is the unit roundoff (eps / 2). Logits are s = q.k / t with |s| <= 1/t.

- logit: a d-term dot product accumulated in `acc` has rounding errors that add like a random
  walk, ~u sqrt(d) |q||k|; scaling by 1/t and the kernel's log2/exp2 unit changes add ~u |s|
  each. |ds| <= C u_acc (sqrt(d) + 2) / t.
- row LSE over K keys: |dlse| <= |ds| + C u_acc sqrt(K) (the sum of K exponentials).
- loss = mean(lse - s_pos): |dL| <= |ds| + |dlse| (+ u_acc relative for the mean itself).
- gradient row i = sum_j (p_ij - y_ij) k_j / (M t), once per role (query, and key when the keys
  carry gradient). dp_ij = p_ij d(s_ij - lse_i) and sum_j p_ij = 1, so the softmax error adds
  |ds| + |dlse| per role; rounding the softmax-gradient tile to u_tile (the input dtype in the
  fused kernel, flash-attention style) adds u_tile sum_j |p_ij - y_ij| <= 2 u_tile; the
  matmul's accumulation over K keys adds C u_acc sqrt(K). Rows err independently, so a tensor
  of R rows has Frobenius error sqrt(R) times the row bound; storing the gradient in its dtype
  adds u_out relative.

An exactly-zero gradient (one pair, each row's only key is its positive) gets the absolute part
of the bound, which is why absolute and relative terms are kept apart. C = 4 is the safety
factor of the random-walk estimates. A real bug (wrong scale, a missing mask, a dropped
gradient term) moves results by O(1) relative, far above these bounds: for fp32 they are
~1e-4 of the gradient's norm.
"""

from __future__ import annotations

import math

import torch

C = 4.0


def unit_roundoff(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps / 2


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Every implementation accumulates logits in fp32, or fp64 for fp64 inputs."""
    return torch.promote_types(dtype, torch.float32)


def logit_error(d: int, t: float, acc: torch.dtype = torch.float32) -> float:
    return C * unit_roundoff(acc) * (math.sqrt(d) + 2) / t


def lse_error(d: int, t: float, keys: int, acc: torch.dtype = torch.float32) -> float:
    return logit_error(d, t, acc) + C * unit_roundoff(acc) * math.sqrt(keys)


def loss_bound(d: int, t: float, keys: int, acc: torch.dtype = torch.float32) -> float:
    """Absolute error bound of the mean loss."""
    return logit_error(d, t, acc) + lse_error(d, t, keys, acc)


def grad_bound(
    d: int,
    t: float,
    keys: int,
    rows: int,
    out_rows: int,
    dtype: torch.dtype,
    acc: torch.dtype | None = None,
    tile: torch.dtype | None = None,
) -> tuple[float, float]:
    """(relative, absolute) Frobenius bound of one gradient tensor of `out_rows` rows.

    keys: keys per loss row; rows: loss rows M (the mean's divisor); dtype: the gradient's dtype;
    acc: logit accumulation dtype (default acc_dtype(dtype)); tile: dtype the softmax-gradient
    tile is rounded to before its matmul (default: dtype for the fused kernel's 2-byte inputs,
    pass acc for implementations that keep it wide).
    """
    acc = acc or acc_dtype(dtype)
    tile = tile or dtype
    roles = 2
    softmax = logit_error(d, t, acc) + lse_error(d, t, keys, acc)
    per_role = softmax + 2 * unit_roundoff(tile) + C * unit_roundoff(acc) * math.sqrt(keys)
    row = roles * per_role / (rows * t)
    return unit_roundoff(dtype), math.sqrt(out_rows) * row


def assert_within(actual: torch.Tensor, expected: torch.Tensor, rel: float, abs_: float, what: str) -> None:
    """||actual - expected||_F <= rel ||expected||_F + abs_ (compared in fp64)."""
    actual, expected = actual.detach().double(), expected.detach().double().to(actual.device)
    err = torch.linalg.norm(actual - expected).item()
    bound = rel * torch.linalg.norm(expected).item() + abs_
    assert err <= bound, f"{what}: |diff|={err:.3e} > bound {bound:.3e}"


def check_loss_and_grads(loss, expected, grads, expected_grads, *, d, t, keys, rows, dtype, tile=None, factor=1.0):
    """Loss and each gradient against a reference within the bounds above (x factor: 2 when the
    reference is another approximate implementation rather than fp64)."""
    acc = acc_dtype(dtype)
    assert_within(loss, expected, factor * unit_roundoff(acc), factor * loss_bound(d, t, keys, acc), "loss")
    for i, (g, e) in enumerate(zip(grads, expected_grads)):
        rel, abs_ = grad_bound(d, t, keys, rows, g.shape[0], g.dtype, acc, tile)
        assert_within(g, e, factor * rel, factor * abs_, f"grad of input {i}")
