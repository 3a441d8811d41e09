"""Public `nt_xent` / `info_nce`: torch path against independent formulations, triton and chunked
against torch, impl selection and user-facing errors."""

import os

import pytest
import torch
import torch.nn.functional as F

from fastssl.errors import FastSSLError
from fastssl.losses import IMPLS, TORCH_LOGITS_BUDGET_BYTES, info_nce, nt_xent, resolve_impl
from tests.kernels.tolerances import assert_within, check_loss_and_grads, loss_bound

DEVICE = "cuda" if os.environ.get("FASTSSL_TEST_GPU") == "1" else "cpu"


def nt_xent_by_loop(z1, z2, t):
    """SimCLR's definition written row by row: cosine similarities, the sample itself left out."""
    z = torch.cat([z1, z2])
    n2 = z.shape[0]
    terms = []
    for i in range(n2):
        sims = F.cosine_similarity(z[i : i + 1], z, dim=1) / t  # [2N]
        pos = (i + n2 // 2) % n2
        others = torch.cat([sims[:i], sims[i + 1 :]])
        terms.append(torch.logsumexp(others, 0) - sims[pos])
    return torch.stack(terms).mean()


def info_nce_by_loop(q, k, queue, t):
    """MoCo's definition: logit 0 is the positive, the rest are other keys and the queue."""
    terms = []
    negs = k if queue is None else torch.cat([k, queue])
    for i in range(q.shape[0]):
        pos = F.cosine_similarity(q[i], k[i], dim=0) / t
        others = torch.cat([negs[:i], negs[i + 1 :]])
        neg = F.cosine_similarity(q[i : i + 1], others, dim=1) / t
        logits = torch.cat([pos[None], neg])
        terms.append(-torch.log_softmax(logits, 0)[0])
    return torch.stack(terms).mean()


@pytest.mark.parametrize("t", [0.07, 0.5])
@pytest.mark.parametrize("n,d", [(1, 3), (4, 8), (9, 17)])
def test_nt_xent_torch_matches_row_by_row_definition(n, d, t):
    z1, z2 = torch.randn(n, d, dtype=torch.float64) * 3, torch.randn(n, d, dtype=torch.float64)
    torch.testing.assert_close(nt_xent(z1, z2, t, impl="torch"), nt_xent_by_loop(z1, z2, t), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("k_neg", [0, 5])
@pytest.mark.parametrize("n,d", [(1, 4), (6, 16)])
def test_info_nce_torch_matches_row_by_row_definition(n, d, k_neg):
    q, k = torch.randn(n, d, dtype=torch.float64), torch.randn(n, d, dtype=torch.float64) * 2
    queue = torch.randn(k_neg, d, dtype=torch.float64) if k_neg else None
    torch.testing.assert_close(
        info_nce(q, k, queue, 0.2, impl="torch"), info_nce_by_loop(q, k, queue, 0.2), rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize("impl", ["torch", "chunked"])
def test_gradcheck_in_fp64(impl):
    # 3 pairs of d = 5 (6 rows): the chunked path's default tile holds them all; see
    # test_chunked.py for multi-tile gradchecks.
    z1, z2 = (
        torch.randn(3, 5, dtype=torch.float64, requires_grad=True),
        torch.randn(3, 5, dtype=torch.float64, requires_grad=True),
    )
    assert torch.autograd.gradcheck(lambda a, b: nt_xent(a, b, 0.3, impl=impl), (z1, z2))
    queue = torch.randn(4, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: info_nce(a, b, queue, 0.3, impl=impl), (z1, z2))


@pytest.mark.parametrize("impl", ["torch", "chunked"])
def test_queue_gets_no_gradient(impl):
    q, k = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8, requires_grad=True)
    queue = torch.randn(6, 8, requires_grad=True)
    info_nce(q, k, queue, 0.2, impl=impl).backward()
    assert queue.grad is None and q.grad.abs().sum() > 0


@pytest.mark.parametrize("impl", ["torch", "chunked"])
def test_loss_ignores_embedding_scale(impl):
    z1, z2 = torch.randn(5, 8), torch.randn(5, 8)
    torch.testing.assert_close(nt_xent(7 * z1, 0.1 * z2, impl=impl), nt_xent(z1, z2, impl=impl))


def test_gather_at_world_size_1_is_a_no_op():
    z1, z2 = torch.randn(5, 8), torch.randn(5, 8)
    for impl in ("torch", "triton", "chunked"):
        torch.testing.assert_close(nt_xent(z1, z2, impl=impl, gather_distributed=True), nt_xent(z1, z2, impl=impl))


def test_auto_off_cuda_is_torch_within_the_logits_budget_else_chunked():
    cpu = torch.device("cpu")
    assert IMPLS == ("auto", "torch", "triton", "chunked")
    assert resolve_impl("auto", cpu) == "torch"
    side = int((TORCH_LOGITS_BUDGET_BYTES // 4) ** 0.5)  # a square logits matrix at the budget
    assert resolve_impl("auto", cpu, torch.float32, 128, side, side) == "torch"
    assert resolve_impl("auto", cpu, torch.float32, 128, side, side + 1) == "chunked"
    assert resolve_impl("auto", cpu, torch.float32, 128, 65_536, 65_536) == "chunked"
    for impl in IMPLS[1:]:
        assert resolve_impl(impl, cpu) == impl


@pytest.mark.parametrize(
    "capability,dtype,d,expected",
    [
        ((9, 0), torch.bfloat16, 128, "triton"),
        ((8, 6), torch.float32, 256, "triton"),
        ((8, 9), torch.float16, 64, "triton"),
        ((9, 0), torch.float64, 128, "chunked"),  # the kernels take no fp64
        ((9, 0), torch.bfloat16, 512, "chunked"),  # wider than the widest d bucket
        ((7, 0), torch.float16, 128, "chunked"),  # Volta: no config
        ((8, 7), torch.float32, 128, "chunked"),  # Jetson Orin: no config
    ],
)
def test_auto_on_cuda_is_triton_only_where_a_config_exists(monkeypatch, capability, dtype, d, expected):
    import fastssl_kernels.nt_xent as kernels

    # A CUDA device as the compiled (non-interpreted) kernels see it, without a GPU.
    monkeypatch.setattr(kernels, "INTERPRET", False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert resolve_impl("auto", torch.device("cuda", 0), dtype, d, 10, 10) == expected


def test_triton_that_cannot_run_here_names_the_fix(monkeypatch):
    import fastssl_kernels.nt_xent as kernels

    monkeypatch.setattr(kernels, "INTERPRET", False)
    z = torch.randn(4, 8)
    with pytest.raises(FastSSLError, match="impl='triton' cannot run here: .*CUDA tensors.*use impl='chunked'"):
        nt_xent(z, z, impl="triton")
    with pytest.raises(FastSSLError, match="float32, bfloat16 or float16"):
        info_nce(z.double(), z.double(), impl="triton")


@pytest.mark.parametrize("n,d,k_neg", [(1, 3, 0), (13, 31, 0), (13, 31, 29), (67, 16, 5)])
def test_chunked_matches_torch_in_fp64(n, d, k_neg):
    # Awkward (prime) shapes; fp64 leaves only the torch path's own rounding between them.
    z1, z2 = (torch.randn(n, d, dtype=torch.float64, requires_grad=True) for _ in range(2))
    queue = torch.randn(k_neg, d, dtype=torch.float64) if k_neg else None
    cases = [
        (lambda i: nt_xent(z1 * 2, z2, 0.1, impl=i), 2 * n, 2 * n),
        (lambda i: info_nce(z1, z2 * 3, queue, 0.1, impl=i), n, n + k_neg),
    ]
    for loss_fn, rows, keys in cases:
        chunked, plain = loss_fn("chunked"), loss_fn("torch")
        g_chunked = torch.autograd.grad(chunked, (z1, z2))
        g_plain = torch.autograd.grad(plain, (z1, z2))
        check_loss_and_grads(
            chunked, plain, g_chunked, g_plain, d=d, t=0.1, keys=keys, rows=rows, dtype=torch.float64, factor=2.0
        )


def _pair(n, d, dtype):
    return [torch.randn(n, d, device=DEVICE).to(dtype).requires_grad_() for _ in range(2)]


@pytest.mark.parametrize("impl", ["triton", "chunked"])
@pytest.mark.parametrize("n,d", [(3, 33), (50, 64)])
def test_nt_xent_memory_linear_impls_match_torch(n, d, impl):
    (a1, a2), (b1, b2) = _pair(n, d, torch.float32), _pair(n, d, torch.float32)
    with torch.no_grad():
        b1.copy_(a1 * 4)
        b2.copy_(a2)
    linear, plain = nt_xent(a1, a2, 0.1, impl=impl), nt_xent(b1, b2, 0.1, impl="torch")
    (linear + plain).backward()
    # Both are fp32 approximations of the exact loss: each within the bound, so within twice it.
    check_loss_and_grads(
        linear, plain, [a1.grad, a2.grad], [4 * b1.grad, b2.grad],  # z1 was scaled by 4
        d=d, t=0.1, keys=2 * n, rows=2 * n, dtype=torch.float32, factor=2.0,
    )  # fmt: skip


@pytest.mark.parametrize("impl", ["triton", "chunked"])
@pytest.mark.parametrize("k_neg", [0, 37])
def test_info_nce_memory_linear_impls_match_torch(k_neg, impl):
    (q1, k1), (q2, k2) = _pair(20, 32, torch.float32), _pair(20, 32, torch.float32)
    with torch.no_grad():
        q2.copy_(q1)
        k2.copy_(k1)
    queue = torch.randn(k_neg, 32, device=DEVICE) if k_neg else None
    linear, plain = info_nce(q1, k1, queue, 0.2, impl=impl), info_nce(q2, k2, queue, 0.2, impl="torch")
    (linear + plain).backward()
    check_loss_and_grads(
        linear, plain, [q1.grad, k1.grad], [q2.grad, k2.grad],
        d=32, t=0.2, keys=20 + k_neg, rows=20, dtype=torch.float32, factor=2.0,
    )  # fmt: skip


def test_triton_keeps_bf16_embeddings_bf16():
    # bf16 in, bf16 tiles and gradients out; the logits still accumulate in fp32.
    z1, z2 = (torch.randn(16, 32, device=DEVICE, dtype=torch.bfloat16).requires_grad_() for _ in range(2))
    loss = nt_xent(z1, z2, 0.2, impl="triton")
    loss.backward()
    assert loss.dtype == torch.float32 and z1.grad.dtype == torch.bfloat16
    from fastssl_kernels.nt_xent import nt_xent_reference

    # What the kernel saw: the normalised views rounded to bf16 (not quite unit: no renormalising).
    seen = [F.normalize(z.detach().float(), dim=1).bfloat16().double() for z in (z1, z2)]
    exact = nt_xent_reference(*seen, 0.2)
    # The inputs are exactly bf16, the products exact in the fp32 accumulator: fp32 error only.
    assert_within(loss, exact, 0.0, loss_bound(32, 0.2, 32), "loss")


def test_triton_under_autocast_runs_in_the_autocast_dtype():
    # fp32 projections (e.g. after a BatchNorm) meet bf16 tiles, as torch's autocast matmul would.
    z1, z2 = (torch.randn(12, 16, device=DEVICE, requires_grad=True) for _ in range(2))
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        mixed = nt_xent(z1, z2, 0.2, impl="triton")
        mixed_moco = info_nce(z1, z2, None, 0.2, impl="triton")
    mixed.backward()
    assert z1.grad.dtype == torch.float32
    bf16 = [F.normalize(z.detach(), dim=1).bfloat16() for z in (z1, z2)]
    torch.testing.assert_close(mixed, nt_xent(*bf16, 0.2, impl="triton"), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(mixed_moco, info_nce(*bf16, None, 0.2, impl="triton"), rtol=1e-6, atol=1e-6)
    assert not torch.allclose(mixed, nt_xent(z1, z2, 0.2, impl="triton"), rtol=1e-6, atol=0)


def test_chunked_ignores_autocast_and_computes_in_fp32():
    z1, z2 = (torch.randn(12, 16, requires_grad=True) for _ in range(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = nt_xent(z1, z2, 0.2, impl="chunked")
    mixed.backward()
    assert mixed.dtype == torch.float32 and z1.grad.dtype == torch.float32
    torch.testing.assert_close(mixed, nt_xent(z1, z2, 0.2, impl="chunked"))


def _errors():
    z = torch.randn(4, 8)
    return {
        "impl": (lambda: nt_xent(z, z, impl="cuda"), "unknown loss impl"),
        "temperature": (lambda: info_nce(z, z, temperature=0.0), "temperature must be > 0"),
        "shapes": (lambda: nt_xent(z, z[:3]), "same shape"),
        "qk shapes": (lambda: info_nce(z, torch.randn(4, 9)), "same shape"),
        "queue": (lambda: info_nce(z, z, torch.randn(5, 7)), r"queue must be \[K, 8\]"),
        "empty": (lambda: nt_xent(z[:0], z[:0]), "no samples"),
        "zero d": (lambda: nt_xent(torch.zeros(4, 0), torch.zeros(4, 0)), "d > 0"),
        "1-d": (lambda: nt_xent(z[0], z[0]), r"\[N, d\]"),
    }


@pytest.mark.parametrize("case", list(_errors()))
def test_rejects_bad_inputs(case):
    fn, message = _errors()[case]
    with pytest.raises(FastSSLError, match=message):
        fn()
