"""Two gloo ranks with gathered keys reproduce one process on the concatenated batch.

Convention checked: rank r holds rows [r*n, (r+1)*n) of the global batch and computes its loss
with gather_distributed=True, then backward. DDP averages gradients over ranks, so the global
gradient is rank r's input gradient divided by the world size; concatenated over ranks it must
equal the gradient of the single-process loss on the whole batch, and the mean of the per-rank
losses must equal that loss.
"""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fastssl.losses import info_nce, nt_xent
from tests.kernels.tolerances import check_loss_and_grads

pytestmark = pytest.mark.distributed

WORLD, N, D, K_QUEUE, T = 2, 5, 16, 7, 0.2
CASES = [(loss, impl) for loss in ("nt_xent", "info_nce") for impl in ("torch", "triton", "chunked")]


def _batch():
    g = torch.Generator().manual_seed(1234)
    a, b = torch.randn(WORLD * N, D, generator=g), torch.randn(WORLD * N, D, generator=g)
    queue = torch.randn(K_QUEUE, D, generator=g)
    return a, b, queue


def _loss(name, a, b, queue, impl, gather):
    if name == "nt_xent":
        return nt_xent(a, b, T, impl=impl, gather_distributed=gather)
    return info_nce(a, b, queue, T, impl=impl, gather_distributed=gather)


def _worker(rank, store, out_dir):
    # The fused kernel runs interpreted on these CPU ranks, even when the suite targets a GPU.
    os.environ["TRITON_INTERPRET"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        a_all, b_all, queue = _batch()
        rows = slice(rank * N, (rank + 1) * N)
        results = {}
        for name, impl in CASES:
            a, b = a_all[rows].clone().requires_grad_(), b_all[rows].clone().requires_grad_()
            loss = _loss(name, a, b, queue, impl, gather=True)
            loss.backward()
            results[name, impl] = (loss.detach(), a.grad, b.grad)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def per_rank(tmp_path_factory):
    out = tmp_path_factory.mktemp("contrastive_dist")
    mp.spawn(_worker, args=(str(out / "store"), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize("name,impl", CASES)
def test_two_ranks_equal_one_process(per_rank, name, impl):
    a, b, queue = (x.clone().requires_grad_() for x in _batch())
    # The ranks ran the kernel interpreted on CPU; this process can only if it is interpreting too.
    single_impl = "torch" if impl == "triton" and os.environ.get("TRITON_INTERPRET") != "1" else impl
    single = _loss(name, a, b, queue.detach(), single_impl, gather=False)
    single.backward()

    losses = torch.stack([r[name, impl][0] for r in per_rank])
    assert not torch.allclose(losses[0], losses[1])  # the ranks really saw different rows
    grad_a = torch.cat([r[name, impl][1] for r in per_rank]) / WORLD
    grad_b = torch.cat([r[name, impl][2] for r in per_rank]) / WORLD
    # Global rows and keys of the single-process loss; two fp32 results, hence factor 2.
    rows, keys = (2 * WORLD * N, 2 * WORLD * N) if name == "nt_xent" else (WORLD * N, WORLD * N + K_QUEUE)
    check_loss_and_grads(
        losses.mean(), single, [grad_a, grad_b], [a.grad, b.grad],
        d=D, t=T, keys=keys, rows=rows, dtype=torch.float32, factor=2.0,
    )  # fmt: skip
