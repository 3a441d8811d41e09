"""Public `nt_xent` / `info_nce`: torch path against independent formulations, triton against torch."""

import os

import pytest
import torch
import torch.nn.functional as F

from fastssl.errors import FastSSLError
from fastssl.losses import IMPLS, info_nce, nt_xent, resolve_impl

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


def test_gradcheck_torch_path():
    z1, z2 = (
        torch.randn(3, 5, dtype=torch.float64, requires_grad=True),
        torch.randn(3, 5, dtype=torch.float64, requires_grad=True),
    )
    assert torch.autograd.gradcheck(lambda a, b: nt_xent(a, b, 0.3, impl="torch"), (z1, z2))
    queue = torch.randn(4, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: info_nce(a, b, queue, 0.3, impl="torch"), (z1, z2))


def test_queue_gets_no_gradient():
    q, k = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8, requires_grad=True)
    queue = torch.randn(6, 8, requires_grad=True)
    info_nce(q, k, queue, 0.2, impl="torch").backward()
    assert queue.grad is None and q.grad.abs().sum() > 0


def test_loss_ignores_embedding_scale():
    z1, z2 = torch.randn(5, 8), torch.randn(5, 8)
    torch.testing.assert_close(nt_xent(7 * z1, 0.1 * z2, impl="torch"), nt_xent(z1, z2, impl="torch"))


def test_gather_at_world_size_1_is_a_no_op():
    z1, z2 = torch.randn(5, 8), torch.randn(5, 8)
    for impl in ("torch", "triton"):
        torch.testing.assert_close(nt_xent(z1, z2, impl=impl, gather_distributed=True), nt_xent(z1, z2, impl=impl))


def test_auto_is_torch_on_cpu():
    assert resolve_impl("auto", torch.device("cpu")) == "torch"
    assert resolve_impl("triton", torch.device("cpu")) == "triton"
    assert IMPLS == ("auto", "torch", "triton")


def _pair(n, d, dtype):
    return [torch.randn(n, d, device=DEVICE).to(dtype).requires_grad_() for _ in range(2)]


@pytest.mark.parametrize("n,d", [(3, 33), (50, 64)])
def test_nt_xent_triton_matches_torch(n, d):
    (a1, a2), (b1, b2) = _pair(n, d, torch.float32), _pair(n, d, torch.float32)
    with torch.no_grad():
        b1.copy_(a1 * 4)
        b2.copy_(a2)
    fused, plain = nt_xent(a1, a2, 0.1, impl="triton"), nt_xent(b1, b2, 0.1, impl="torch")
    (fused + plain).backward()
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a1.grad, 4 * b1.grad, rtol=1e-4, atol=1e-6)  # z1 was scaled by 4
    torch.testing.assert_close(a2.grad, b2.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("k_neg", [0, 37])
def test_info_nce_triton_matches_torch(k_neg):
    (q1, k1), (q2, k2) = _pair(20, 32, torch.float32), _pair(20, 32, torch.float32)
    with torch.no_grad():
        q2.copy_(q1)
        k2.copy_(k1)
    queue = torch.randn(k_neg, 32, device=DEVICE) if k_neg else None
    fused, plain = info_nce(q1, k1, queue, 0.2, impl="triton"), info_nce(q2, k2, queue, 0.2, impl="torch")
    (fused + plain).backward()
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(q1.grad, q2.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(k1.grad, k2.grad, rtol=1e-4, atol=1e-6)


def test_triton_keeps_bf16_embeddings_bf16():
    # bf16 in, bf16 tiles and gradients out; the logits still accumulate in fp32.
    z1, z2 = (torch.randn(16, 32, device=DEVICE, dtype=torch.bfloat16).requires_grad_() for _ in range(2))
    loss = nt_xent(z1, z2, 0.2, impl="triton")
    loss.backward()
    assert loss.dtype == torch.float32 and z1.grad.dtype == torch.bfloat16
    rounded = [F.normalize(z.detach().double(), dim=1).bfloat16().double() for z in (z1, z2)]
    exact = nt_xent(*rounded, 0.2, impl="torch")
    assert abs(loss.item() - exact.item()) < 1e-3 * exact.item()


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
