"""The fused NT-Xent / InfoNCE kernel, and the chunked torch path, against fp64 torch references.

Both memory-linear implementations face the same correctness suite (`impl` parameter): the Triton
kernel runs in the interpreter on CPU (tests/conftest.py sets TRITON_INTERPRET=1), on CUDA with
FASTSSL_TEST_GPU=1; the chunked path runs with 32-row tiles so the small shapes are multi-tile.
Shapes are small because the interpreter executes every tile op in numpy. Tolerances come from
tests/kernels/tolerances.py (an error bound in d, t and the dtypes), not from one machine.
"""

import os

import pytest
import torch
import torch.nn.functional as F
from fastssl_kernels import nt_xent as K

from fastssl.losses.chunked import info_nce_chunked, nt_xent_chunked
from tests.kernels.tolerances import assert_within, check_loss_and_grads, grad_bound, loss_bound, lse_error

DEVICE = "cuda" if os.environ.get("FASTSSL_TEST_GPU") == "1" else "cpu"
NS = (1, 3, 17, 61, 130)
DS = (8, 33, 64, 128)
TEMPS = (0.05, 0.2, 1.0)
CHUNK = 32  # the chunked path's tile side in these tests, as the interpreter's 32 x 32 tiles


def _chunked_nt_xent(*args, block_m=None, block_n=None):
    return nt_xent_chunked(*args, block=block_m or CHUNK)


def _chunked_info_nce(*args, block_m=None, block_n=None):
    return info_nce_chunked(*args, block=block_m or CHUNK)


NT_XENT = {"triton": K.nt_xent_triton, "chunked": _chunked_nt_xent}
INFO_NCE = {"triton": K.info_nce_triton, "chunked": _chunked_info_nce}
# The kernel rounds its softmax-gradient tile to the input dtype; the chunked path keeps fp32.
TILE_DTYPE = {"triton": None, "chunked": torch.float32}
both_impls = pytest.mark.parametrize("impl", list(NT_XENT))


def unit(n, d, dtype=torch.float32):
    """n random unit rows, rounded to dtype; fp64 copies of them are exact."""
    x = F.normalize(torch.randn(n, d, dtype=torch.float64), dim=1)
    return x.to(dtype).to(DEVICE)


def leaf(x):
    return x.detach().clone().requires_grad_()


def as64(*xs):
    return [leaf(x.double()) for x in xs]


def check_nt_xent(impl, n, d, t, dtype, world=1, rank=0, upstream=1.0, **blocks):
    """`impl` vs fp64 reference for this rank's (z1, z2) inside `world` ranks' gathered keys."""
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
    loss = run(mine[0], mine[1], mine[2 : 2 + m], mine[2 + m :], lambda *a: NT_XENT[impl](*a, **blocks))
    expected = run(ref[0], ref[1], ref[2 : 2 + m], ref[2 + m :], K.nt_xent_reference)
    (upstream * loss).backward()
    (upstream * expected).backward()

    assert loss.dtype == torch.float32
    for a in mine:
        assert a.grad is not None and a.grad.dtype == dtype
    check_loss_and_grads(
        loss, expected, [a.grad / abs(upstream) for a in mine], [b.grad / abs(upstream) for b in ref],
        d=d, t=t, keys=2 * n * world, rows=2 * n, dtype=dtype, tile=TILE_DTYPE[impl],
    )  # fmt: skip


@both_impls
@pytest.mark.parametrize("t", TEMPS)
@pytest.mark.parametrize("d", DS)
@pytest.mark.parametrize("n", NS)
def test_nt_xent_fp32_matches_fp64_reference(n, d, t, impl):
    check_nt_xent(impl, n, d, t, torch.float32)


@both_impls
@pytest.mark.parametrize("n,d", [(1, 8), (17, 33), (61, 128)])
def test_nt_xent_gathered_keys_match_reference(n, d, impl):
    # Rank 1 of 3: its rows sit in the middle of the gathered keys and every key gets a gradient.
    check_nt_xent(impl, n, d, 0.1, torch.float32, world=3, rank=1)


@both_impls
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("n,d,t", [(3, 33, 0.05), (61, 64, 0.2), (130, 128, 0.1)])
def test_nt_xent_low_precision_matches_reference(n, d, t, dtype, impl):
    check_nt_xent(impl, n, d, t, dtype)


@both_impls
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_nt_xent_gathered_low_precision(dtype, impl):
    check_nt_xent(impl, 17, 64, 0.1, dtype, world=2, rank=1)


@both_impls
def test_upstream_gradient_scales_input_gradients(impl):
    check_nt_xent(impl, 17, 8, 0.2, torch.float32, upstream=-3.5)
    check_nt_xent(impl, 17, 8, 0.2, torch.float32, world=2, rank=0, upstream=-3.5)


@pytest.mark.parametrize("block_m,block_n", [(16, 16), (16, 64), (64, 32)])
def test_tiling_does_not_change_the_result(block_m, block_n):
    # 2N = 74 rows and keys (148 gathered): tails in both directions for every tile shape.
    check_nt_xent("triton", 37, 33, 0.1, torch.float32, block_m=block_m, block_n=block_n)
    check_nt_xent("triton", 37, 33, 0.1, torch.float32, world=2, rank=1, block_m=block_m, block_n=block_n)


@pytest.mark.parametrize("block", [1, 5, 16, 74, 4096])
def test_chunked_tile_size_does_not_change_the_result(block):
    # 74 rows: one-row tiles, prime tiles with a tail, exactly one tile, a tile larger than all.
    check_nt_xent("chunked", 37, 33, 0.1, torch.float32, block_m=block)
    check_nt_xent("chunked", 37, 33, 0.1, torch.float32, world=2, rank=1, block_m=block)


@both_impls
def test_symmetric_pass_equals_general_pass(impl):
    n, d, t = 40, 33, 0.1
    z1, z2 = unit(n, d), unit(n, d)
    a1, a2, b1, b2 = leaf(z1), leaf(z2), leaf(z1), leaf(z2)
    sym = NT_XENT[impl](a1, a2, t)  # keys are the queries: the symmetric backward
    gen = NT_XENT[impl](b1, b2, t, b1, b2, 0)  # row pass + key pass, summed by autograd
    (sym + gen).backward()
    # Two fp32 results, each within the bound of the exact value: within twice of each other.
    assert_within(sym, gen, 0.0, 4 * lse_error(d, t, 2 * n), "loss")
    for a, b in ((a1, b1), (a2, b2)):
        rel, abs_ = grad_bound(d, t, 2 * n, 2 * n, n, torch.float32)
        assert_within(a.grad, b.grad, 2 * rel, 2 * abs_, "grad")


def _loss_by_value(queries, partners, keys, t):
    """Mean over queries of -log softmax(keys . x / t)[x's partner], x's own key left out, where
    the own key and the partner are found by value, not by index: the definition that the pair
    set-up every implementation shares (fastssl_kernels.pairs) must reproduce."""
    terms = []
    for x, partner in zip(queries, partners):
        logits = keys @ x / t  # [K]
        is_pos = (keys == partner).all(1)
        assert is_pos.sum() == 1
        terms.append(logits[~(keys == x).all(1)].logsumexp(0) - logits[is_pos][0])
    return torch.stack(terms).mean()


@pytest.mark.parametrize("impl", ["reference", *NT_XENT])
@pytest.mark.parametrize("world,rank", [(1, 0), (3, 1)])
def test_nt_xent_pairs_each_view_with_its_other_view(impl, world, rank):
    n, d, t = 5, 8, 0.2
    views = [[unit(n, d) for _ in range(world)] for _ in range(2)]  # [view][rank]: [n, d]
    z1, z2, k1, k2 = views[0][rank], views[1][rank], torch.cat(views[0]), torch.cat(views[1])
    fn = {"reference": K.nt_xent_reference, **NT_XENT}[impl]
    loss = fn(z1, z2, t) if world == 1 else fn(z1, z2, t, k1, k2, rank * n)
    exact = _loss_by_value(*(torch.cat(x).double() for x in ([z1, z2], [z2, z1], [k1, k2])), t)
    assert_within(loss, exact, 0.0, loss_bound(d, t, 2 * n * world), "loss")


@pytest.mark.parametrize("impl", ["reference", *INFO_NCE])
@pytest.mark.parametrize("world,rank", [(1, 0), (3, 1)])
def test_info_nce_pairs_each_query_with_its_key(impl, world, rank):
    n, d, t = 5, 8, 0.2
    q, ks, queue = unit(n, d), [unit(n, d) for _ in range(world)], unit(7, d)
    fn = {"reference": K.info_nce_reference, **INFO_NCE}[impl]
    loss = fn(q, torch.cat(ks), t, queue, rank * n)
    exact = _loss_by_value(q.double(), ks[rank].double(), torch.cat([*ks, queue]).double(), t)
    assert_within(loss, exact, 0.0, loss_bound(d, t, n * world + 7), "loss")


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
    bound = lse_error(d, t, 2 * n)
    assert (lse.double() - logits.logsumexp(1)).abs().max() <= bound
    assert (pos.double() - logits[rows, pos_idx.long().cpu()]).abs().max() <= bound


def test_row_with_every_key_excluded_takes_lse_over_the_queue():
    # The first key tile is all masked for these rows: the online LSE must not turn it into nan.
    q, negs = unit(3, 16), unit(40, 16)
    pos_idx = torch.zeros(3, dtype=torch.int32, device=DEVICE)
    self_idx = torch.zeros(3, dtype=torch.int32, device=DEVICE)
    lse, _ = K.contrastive_forward(q, q[:1], negs, pos_idx, self_idx, 0.5)
    expected = (q.double() @ negs.double().T / 0.5).logsumexp(1)
    assert (lse.double() - expected).abs().max() <= lse_error(16, 0.5, 41)


@both_impls
@pytest.mark.parametrize("n,d,k_neg,t", [(1, 8, 1, 0.2), (17, 33, 0, 0.05), (40, 64, 45, 0.1), (61, 128, 70, 1.0)])
@pytest.mark.parametrize("world,rank", [(1, 0), (2, 1)])
def test_info_nce_with_queue_matches_reference(n, d, k_neg, t, world, rank, impl):
    q, k = unit(n, d), unit(n, d)
    others = [unit(n, d) for _ in range(world - 1)]
    queue = unit(k_neg, d).requires_grad_() if k_neg else None
    mine = [leaf(x) for x in (q, k, *others)]
    ref = as64(q, k, *others)

    def keys(xs):
        return torch.cat(xs[2 : 2 + rank] + [xs[1]] + xs[2 + rank :])

    loss = INFO_NCE[impl](mine[0], keys(mine), t, queue, rank * n)
    expected = K.info_nce_reference(ref[0], keys(ref), t, None if queue is None else queue.double(), rank * n)
    loss.backward()
    expected.backward()
    check_loss_and_grads(
        loss, expected, [a.grad for a in mine], [b.grad for b in ref],
        d=d, t=t, keys=n * world + k_neg, rows=n, dtype=torch.float32,
    )  # fmt: skip
    if queue is not None:
        assert queue.grad is None  # the queue is a memory bank, never trained


@both_impls
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_info_nce_low_precision_with_queue(dtype, impl):
    q, k, queue = unit(30, 64, dtype), unit(30, 64, dtype), unit(50, 64)
    a, b = leaf(q), leaf(k)
    loss = INFO_NCE[impl](a, b, 0.1, queue.to(dtype))
    ra, rb = as64(q, k)
    expected = K.info_nce_reference(ra, rb, 0.1, queue.to(dtype).double())
    loss.backward()
    expected.backward()
    check_loss_and_grads(
        loss, expected, [a.grad, b.grad], [ra.grad, rb.grad],
        d=64, t=0.1, keys=80, rows=30, dtype=dtype, tile=TILE_DTYPE[impl],
    )  # fmt: skip


def test_triton_casts_an_fp32_queue_to_the_query_dtype():
    # A MoCo queue is usually an fp32 buffer while activations are bf16: it is cast, not refused.
    q, k, queue = unit(8, 16, torch.bfloat16), unit(8, 16, torch.bfloat16), unit(5, 16)
    torch.testing.assert_close(K.info_nce_triton(q, k, 0.1, queue), K.info_nce_triton(q, k, 0.1, queue.bfloat16()))


@both_impls
def test_saved_state_is_linear_in_batch(impl):
    # 2N = 260 rows of d = 8: a similarity matrix would be 67,600 numbers, the inputs 2,080.
    n, d = 130, 8
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    z1, z2 = leaf(unit(n, d)), leaf(unit(n, d))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = NT_XENT[impl](z1, z2, 0.1)
        loss_g = INFO_NCE[impl](z1, z2, 0.1, unit(40, d))
    (loss + loss_g).backward()
    assert z1.grad is not None and z1.grad.abs().sum() > 0
    assert sum(saved) <= 8 * (2 * n) * d, f"saved {sum(saved)} numbers"


@both_impls
def test_forward_without_grad_and_partial_grad(impl):
    z1, z2 = unit(10, 16), unit(10, 16)
    with torch.no_grad():
        plain = NT_XENT[impl](z1, z2, 0.2)
    only_z1 = leaf(z1)
    loss = NT_XENT[impl](only_z1, z2, 0.2, only_z1, z2, 0)
    loss.backward()
    assert_within(plain, loss, 0.0, 4 * lse_error(16, 0.2, 20), "loss")
    r1 = leaf(z1.double())
    K.nt_xent_reference(r1, z2.double(), 0.2).backward()
    rel, abs_ = grad_bound(16, 0.2, 20, 20, 10, torch.float32)
    assert_within(only_z1.grad, r1.grad, rel, abs_, "grad z1")


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
def test_rejects_bad_inputs_with_value_error(case):
    # The kernel layer raises ValueError; fastssl.losses reports user mistakes as FastSSLError.
    fn, message = _errors()[case]
    with pytest.raises(ValueError, match=message):
        fn()


@pytest.mark.skipif(DEVICE == "cuda", reason="CPU tensors are what the check is about")
def test_cpu_tensors_without_interpreter_are_refused(monkeypatch):
    monkeypatch.setattr(K, "INTERPRET", False)
    assert "CUDA tensors" in K.unsupported_reason(torch.device("cpu"), torch.float32, 8)
    with pytest.raises(ValueError, match="need CUDA tensors"):
        K.nt_xent_triton(unit(4, 8), unit(4, 8))


def test_kernel_package_does_not_import_fastssl():
    # fastssl_kernels is the layer below fastssl.losses: importing it alone must not pull fastssl in.
    import subprocess
    import sys

    code = (
        "import sys, fastssl_kernels.nt_xent, fastssl_kernels.configs, fastssl_kernels.aot; "
        "print(sorted(m for m in sys.modules if m == 'fastssl' or m.startswith('fastssl.')))"
    )
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "[]", out.stdout
