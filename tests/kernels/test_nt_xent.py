"""The fused NT-Xent / InfoNCE kernel against fp64 torch references.

Runs in the Triton interpreter on CPU (tests/conftest.py sets TRITON_INTERPRET=1), on CUDA with
FASTSSL_TEST_GPU=1. Shapes are small because the interpreter executes every tile op in numpy.
"""

import os

import pytest
import torch
import torch.nn.functional as F
from fastssl_kernels import nt_xent as K

from fastssl.errors import FastSSLError

DEVICE = "cuda" if os.environ.get("FASTSSL_TEST_GPU") == "1" else "cpu"
NS = (1, 3, 17, 61, 130)
DS = (8, 33, 64, 128)
TEMPS = (0.05, 0.2, 1.0)
# Relative Frobenius-norm error allowed for (loss, gradients). Low-precision gradients carry the
# rounding of the softmax-gradient tile and of the stored gradient to the input dtype.
TOL = {
    torch.float32: (1e-5, 2e-5),
    torch.float16: (1e-4, 3e-3),
    torch.bfloat16: (1e-4, 2e-2),
}


def unit(n, d, dtype=torch.float32):
    """n random unit rows, rounded to dtype; fp64 copies of them are exact."""
    x = F.normalize(torch.randn(n, d, dtype=torch.float64), dim=1)
    return x.to(dtype).to(DEVICE)


def leaf(x):
    return x.detach().clone().requires_grad_()


def as64(*xs):
    return [leaf(x.double()) for x in xs]


def assert_rel(actual, expected, tol, what):
    actual, expected = actual.double(), expected.double().to(actual.device)
    err = torch.linalg.norm(actual - expected)
    bound = tol * torch.linalg.norm(expected) + tol * 1e-2
    assert err <= bound, f"{what}: |diff|={err:.3e} > {bound:.3e}"


def check_nt_xent(n, d, t, dtype, world=1, rank=0, upstream=1.0, **blocks):
    """Triton vs fp64 reference for this rank's (z1, z2) inside `world` ranks' gathered keys."""
    z1, z2 = unit(n, d, dtype), unit(n, d, dtype)
    others1 = [unit(n, d, dtype) for _ in range(world - 1)]
    others2 = [unit(n, d, dtype) for _ in range(world - 1)]

    def run(z1, z2, others1, others2, fn):
        if world == 1:
            return fn(z1, z2, t)
        k1 = torch.cat(others1[:rank] + [z1] + others1[rank:])
        k2 = torch.cat(others2[:rank] + [z2] + others2[rank:])
        return fn(z1, z2, t, k1, k2, rank * n)

    mine = [leaf(x) for x in (z1, z2, *others1, *others2)]
    ref = as64(z1, z2, *others1, *others2)
    m = world - 1
    loss = run(mine[0], mine[1], mine[2 : 2 + m], mine[2 + m :], lambda *a: K.nt_xent_triton(*a, **blocks))
    expected = run(ref[0], ref[1], ref[2 : 2 + m], ref[2 + m :], K.nt_xent_reference)
    (upstream * loss).backward()
    (upstream * expected).backward()

    loss_tol, grad_tol = TOL[dtype]
    assert loss.dtype == torch.float32
    assert_rel(loss.detach(), expected.detach(), loss_tol, "loss")
    for i, (a, b) in enumerate(zip(mine, ref)):
        assert a.grad is not None and a.grad.dtype == dtype
        assert_rel(a.grad, b.grad, grad_tol, f"grad of input {i}")


@pytest.mark.parametrize("t", TEMPS)
@pytest.mark.parametrize("d", DS)
@pytest.mark.parametrize("n", NS)
def test_nt_xent_fp32_matches_fp64_reference(n, d, t):
    check_nt_xent(n, d, t, torch.float32)


@pytest.mark.parametrize("n,d", [(1, 8), (17, 33), (61, 128)])
def test_nt_xent_gathered_keys_match_reference(n, d):
    # Rank 1 of 3: its rows sit in the middle of the gathered keys and every key gets a gradient.
    check_nt_xent(n, d, 0.1, torch.float32, world=3, rank=1)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("n,d,t", [(3, 33, 0.05), (61, 64, 0.2), (130, 128, 0.1)])
def test_nt_xent_low_precision_matches_reference(n, d, t, dtype):
    check_nt_xent(n, d, t, dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_nt_xent_gathered_low_precision(dtype):
    check_nt_xent(17, 64, 0.1, dtype, world=2, rank=1)


def test_upstream_gradient_scales_input_gradients():
    check_nt_xent(17, 8, 0.2, torch.float32, upstream=-3.5)
    check_nt_xent(17, 8, 0.2, torch.float32, world=2, rank=0, upstream=-3.5)


@pytest.mark.parametrize("block_m,block_n", [(16, 16), (16, 64), (64, 32)])
def test_tiling_does_not_change_the_result(block_m, block_n):
    # 2N = 74 rows and keys (148 gathered): tails in both directions for every tile shape.
    check_nt_xent(37, 33, 0.1, torch.float32, block_m=block_m, block_n=block_n)
    check_nt_xent(37, 33, 0.1, torch.float32, world=2, rank=1, block_m=block_m, block_n=block_n)


def test_symmetric_pass_equals_general_pass():
    z1, z2 = unit(40, 33), unit(40, 33)
    a1, a2, b1, b2 = leaf(z1), leaf(z2), leaf(z1), leaf(z2)
    sym = K.nt_xent_triton(a1, a2, 0.1)  # one backward pass over row blocks
    gen = K.nt_xent_triton(b1, b2, 0.1, b1, b2, 0)  # row pass + key pass, summed by autograd
    (sym + gen).backward()
    torch.testing.assert_close(sym, gen, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(a1.grad, b1.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(a2.grad, b2.grad, rtol=1e-5, atol=1e-7)


def test_forward_stores_per_row_lse_and_positive_logit():
    n, d, t = 20, 33, 0.2
    z1, z2 = unit(n, d), unit(n, d)
    q = torch.cat([z1, z2])
    pos_idx = torch.cat([torch.arange(n) + n, torch.arange(n)]).int().to(DEVICE)
    self_idx = torch.arange(2 * n, dtype=torch.int32, device=DEVICE)
    lse, pos = K.contrastive_forward(q, None, None, pos_idx, self_idx, t)
    logits = q.double() @ q.double().T / t
    logits.fill_diagonal_(float("-inf"))
    rows = torch.arange(2 * n)
    torch.testing.assert_close(lse.double(), logits.logsumexp(1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pos.double(), logits[rows, pos_idx.long().cpu()], rtol=1e-5, atol=1e-5)


def test_row_with_every_key_excluded_takes_lse_over_the_queue():
    # The first key tile is all masked for these rows: the online LSE must not turn it into nan.
    q, negs = unit(3, 16), unit(40, 16)
    pos_idx = torch.zeros(3, dtype=torch.int32, device=DEVICE)
    self_idx = torch.zeros(3, dtype=torch.int32, device=DEVICE)
    lse, _ = K.contrastive_forward(q, q[:1], negs, pos_idx, self_idx, 0.5)
    torch.testing.assert_close(lse.double(), (q.double() @ negs.double().T / 0.5).logsumexp(1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n,d,k_neg,t", [(1, 8, 1, 0.2), (17, 33, 0, 0.05), (40, 64, 45, 0.1), (61, 128, 70, 1.0)])
@pytest.mark.parametrize("world,rank", [(1, 0), (2, 1)])
def test_info_nce_with_queue_matches_reference(n, d, k_neg, t, world, rank):
    q, k = unit(n, d), unit(n, d)
    others = [unit(n, d) for _ in range(world - 1)]
    queue = unit(k_neg, d).requires_grad_() if k_neg else None
    mine = [leaf(x) for x in (q, k, *others)]
    ref = as64(q, k, *others)

    def keys(xs):
        return torch.cat(xs[2 : 2 + rank] + [xs[1]] + xs[2 + rank :])

    loss = K.info_nce_triton(mine[0], keys(mine), t, queue, rank * n)
    expected = K.info_nce_reference(ref[0], keys(ref), t, None if queue is None else queue.double(), rank * n)
    loss.backward()
    expected.backward()
    assert_rel(loss.detach(), expected.detach(), 1e-5, "loss")
    for i, (a, b) in enumerate(zip(mine, ref)):
        assert_rel(a.grad, b.grad, 2e-5, f"grad of input {i}")
    if queue is not None:
        assert queue.grad is None  # the queue is a memory bank, never trained


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_info_nce_low_precision_fp32_queue(dtype):
    # A MoCo queue is usually an fp32 buffer while activations are bf16: it is cast, not refused.
    q, k, queue = unit(30, 64, dtype), unit(30, 64, dtype), unit(50, 64)
    a, b = leaf(q), leaf(k)
    loss = K.info_nce_triton(a, b, 0.1, queue)
    ra, rb = as64(q, k)
    expected = K.info_nce_reference(ra, rb, 0.1, queue.to(dtype).double())
    loss.backward()
    expected.backward()
    loss_tol, grad_tol = TOL[dtype]
    assert_rel(loss.detach(), expected.detach(), loss_tol, "loss")
    assert_rel(a.grad, ra.grad, grad_tol, "grad q")
    assert_rel(b.grad, rb.grad, grad_tol, "grad k")


def test_saved_state_is_linear_in_batch():
    # 2N = 260 rows of d = 8: a similarity matrix would be 67,600 numbers, the inputs 2,080.
    n, d = 130, 8
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    z1, z2 = leaf(unit(n, d)), leaf(unit(n, d))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = K.nt_xent_triton(z1, z2, 0.1)
        loss_g = K.info_nce_triton(z1, z2, 0.1, unit(40, d))
    (loss + loss_g).backward()
    assert z1.grad is not None and z1.grad.abs().sum() > 0
    assert sum(saved) <= 8 * (2 * n) * d, f"saved {sum(saved)} numbers"


def test_forward_without_grad_and_partial_grad():
    z1, z2 = unit(10, 16), unit(10, 16)
    with torch.no_grad():
        plain = K.nt_xent_triton(z1, z2, 0.2)
    only_z1 = leaf(z1)
    loss = K.nt_xent_triton(only_z1, z2, 0.2, only_z1, z2, 0)
    loss.backward()
    torch.testing.assert_close(plain, loss.detach())
    r1 = leaf(z1.double())
    K.nt_xent_reference(r1, z2.double(), 0.2).backward()
    assert_rel(only_z1.grad, r1.grad, 2e-5, "grad z1")


def test_modules_normalise_raw_projections():
    z1, z2, queue = (
        torch.randn(12, 20, device=DEVICE) * 5,
        torch.randn(12, 20, device=DEVICE),
        torch.randn(7, 20, device=DEVICE) * 3,
    )
    n1, n2, nq = (F.normalize(x.double(), dim=1) for x in (z1, z2, queue))
    loss = K.NTXentLoss(temperature=0.3)
    assert "temperature=0.3" in repr(loss)
    torch.testing.assert_close(loss(z1, z2).double(), K.nt_xent_reference(n1, n2, 0.3), rtol=1e-5, atol=1e-6)
    moco = K.InfoNCELoss(0.3)
    torch.testing.assert_close(
        moco(z1, z2, queue).double(), K.info_nce_reference(n1, n2, 0.3, nq), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(FastSSLError, match="temperature"):
        K.NTXentLoss(temperature=0.0)


def _errors():
    z = unit(4, 8)
    return {
        "shape mismatch": (lambda: K.nt_xent_triton(z, unit(5, 8)), "same shape"),
        "zero dim": (
            lambda: K.nt_xent_triton(torch.zeros(4, 0, device=DEVICE), torch.zeros(4, 0, device=DEVICE)),
            "d > 0",
        ),
        "empty batch": (lambda: K.nt_xent_triton(z[:0], z[:0]), "non-empty"),
        "1-d": (lambda: K.info_nce_triton(z[0], z[0]), r"\[N, d\]"),
        "zero temperature": (lambda: K.nt_xent_triton(z, z, 0.0), "temperature must be > 0"),
        "negative temperature": (lambda: K.info_nce_triton(z, z, -1.0), "temperature must be > 0"),
        "dtype mismatch": (lambda: K.nt_xent_triton(z, z.half()), "one dtype"),
        "fp64": (lambda: K.nt_xent_triton(z.double(), z.double()), "float32, bfloat16 or float16"),
        "too wide": (lambda: K.nt_xent_triton(unit(2, 300), unit(2, 300)), "d <= 256"),
        "keys d": (lambda: K.info_nce_triton(z, unit(4, 9)), r"\[\*, 8\]"),
        "queue d": (lambda: K.info_nce_triton(z, z, 0.2, unit(3, 9)), r"\[\*, 8\]"),
        "half keys": (lambda: K.nt_xent_triton(z, z, 0.2, k1=z), "both k1 and k2"),
        "offset range": (lambda: K.nt_xent_triton(z, z, 0.2, z, z, 1), "offset=1"),
        "offset alone": (lambda: K.nt_xent_triton(z, z, 0.2, offset=4), "offset=4"),
        "info offset": (lambda: K.info_nce_triton(z, z, 0.2, None, 2), "offset=2"),
        "tile size": (lambda: K.nt_xent_triton(z, z, 0.2, block_m=8), "power of two >= 16"),
    }


@pytest.mark.parametrize("case", list(_errors()))
def test_rejects_bad_inputs(case):
    fn, message = _errors()[case]
    with pytest.raises(FastSSLError, match=message):
        fn()


@pytest.mark.skipif(DEVICE == "cuda", reason="CPU tensors are what the check is about")
def test_cpu_tensors_without_interpreter_are_refused(monkeypatch):
    monkeypatch.setattr(K, "_INTERPRET", False)
    with pytest.raises(FastSSLError, match="impl='torch' on CPU"):
        K.nt_xent_triton(unit(4, 8), unit(4, 8))
