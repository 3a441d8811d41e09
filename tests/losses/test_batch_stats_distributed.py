"""Two gloo ranks reproduce one process on the concatenated batch for VICReg and Barlow Twins.

Convention checked (as in test_contrastive_distributed.py): rank r holds a block of rows of the
global batch, computes the loss, then backward. DDP averages gradients over ranks, so the
global gradient is each rank's input gradient divided by the world size; concatenated over
ranks it must equal the gradient of the 1-process loss on the whole batch. Every rank's loss
must itself equal the 1-process loss (all statistics, the invariance included, are global).
Splits include uneven ones, which the all-reduced row count makes exact.

KoLeo is per rank by design (as in DINOv2) and has no such equivalence.
"""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fastssl.losses import barlow_twins_loss, vicreg_loss
from tests.losses.regularizer_bounds import arith_rel, assert_close_rel, u

pytestmark = pytest.mark.distributed

WORLD = 2
# (global rows, features, rows on rank 0): awkward shapes, equal and uneven splits
CASES = [(6, 5, 3), (17, 33, 7), (4, 1, 1)]
LOSSES = ("vicreg", "barlow_twins")


def _batch(n, d):
    g = torch.Generator().manual_seed(n * 1000 + d)
    scale = torch.where(torch.arange(d) % 2 == 0, 0.3, 2.5)  # stds on both sides of VICReg's hinge
    z1 = torch.randn(n, d, generator=g) * scale + 1
    z2 = z1 + 0.5 * torch.randn(n, d, generator=g) * scale
    return z1, z2


def _loss(name, z1, z2):
    """Total and, for VICReg, its terms: a [4] or [1] tensor of float32 values."""
    if name == "vicreg":
        out = vicreg_loss(z1, z2)
        return out.loss, torch.stack([out.loss, out.invariance, out.variance, out.covariance]).detach()
    loss = barlow_twins_loss(z1, z2)
    return loss, loss.detach()[None]


def _worker(rank, store, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        results = {}
        for n, d, n0 in CASES:
            z1_all, z2_all = _batch(n, d)
            rows = slice(0, n0) if rank == 0 else slice(n0, n)
            for name in LOSSES:
                z1, z2 = z1_all[rows].clone().requires_grad_(), z2_all[rows].clone().requires_grad_()
                loss, values = _loss(name, z1, z2)
                loss.backward()
                results[name, n, d] = (values, z1.grad, z2.grad)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def per_rank(tmp_path_factory):
    out = tmp_path_factory.mktemp("batch_stats_dist")
    mp.spawn(_worker, args=(str(out / "store"), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("n,d,n0", CASES)
def test_two_ranks_equal_one_process(per_rank, name, n, d, n0):
    z1, z2 = (z.requires_grad_() for z in _batch(n, d))
    single, values = _loss(name, z1, z2)
    single.backward()

    # Two fp32 computations of the same quantity, each within the bound of fp64: factor 2; the
    # Barlow Twins value is measured against the size of its D on-diagonal terms.
    rel = 2 * arith_rel(n, d)
    scale = d if name == "barlow_twins" else 0.0
    for r, res in enumerate(per_rank):
        assert_close_rel(res[name, n, d][0], values, rel, f"rank {r} loss and terms", scale)
    grad1 = torch.cat([res[name, n, d][1] for res in per_rank]) / WORLD
    grad2 = torch.cat([res[name, n, d][2] for res in per_rank]) / WORLD
    assert_close_rel(grad1, z1.grad, rel + 2 * u(torch.float32), "grad z1")
    assert_close_rel(grad2, z2.grad, rel + 2 * u(torch.float32), "grad z2")
