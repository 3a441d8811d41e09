"""DINOv2 on 2 gloo ranks equals 1 process on the global batch: the masks are drawn per image
from the step seed, Sinkhorn-Knopp (and the centres) reduce over the global batch, and iBOT's
loss is a mean over crops. KoLeo is off here: it looks for neighbours among a rank's own crops,
as DINOv2 does, so it alone depends on the world size.

Two levels, as tests/methods/test_dino_distributed.py: the method alone (spawned ranks, the
gradients averaged as DDP does) and the whole trainer under each `--dist.strategy`.
"""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fastssl.config import Config
from fastssl.methods import build_method
from tests.methods.test_dino_distributed import assert_same_run, available_strategies, run_cli

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

WORLD, N = 2, 3  # images per rank


def _cfg(centering):
    c = Config()
    c.set_method("dinov2")
    c.model.name, c.model.patch_size, c.data.image_size = "vit_nano", 4, 16
    m = c.method
    m.out_dim, m.proj_hidden_dim, m.bottleneck_dim, m.center_momentum = 32, 16, 8, 0.5
    m.centering, m.koleo_weight = centering, 0.0
    return c


def _views():
    g = torch.Generator().manual_seed(7)
    return [torch.randn(WORLD * N, 3, 16, 16, generator=g) for _ in range(2)] + \
           [torch.randn(WORLD * N, 3, 8, 8, generator=g) for _ in range(2)]


def _two_steps(method, rows):
    out = []
    for step in range(2):
        method.zero_grad(set_to_none=True)
        res = method([v[rows] * (1 + step) for v in _views()], step=step, schedule_len=2)
        res["loss"].backward()
        method.commit_step(step, 2)
        grads = {k: p.grad.clone() for k, p in method.named_parameters() if p.grad is not None}
        out.append((res["loss"].detach(), res["ibot_loss"], method.ibot_center.clone(), grads))
    return out


def _worker(rank, store, out_dir, centering):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        torch.manual_seed(0)
        results = _two_steps(build_method(_cfg(centering)), slice(rank * N, (rank + 1) * N))
        for *_, grads in results:
            for g in grads.values():  # DDP's average
                dist.all_reduce(g)
                g /= WORLD
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("centering", ["sinkhorn_knopp", "centering"])
def test_method_on_2_ranks_equals_1_process(tmp_path, centering):
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path), centering), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    torch.manual_seed(0)
    reference = _two_steps(build_method(_cfg(centering)), slice(None))
    for step, (loss, ibot, center, grads) in enumerate(reference):
        assert ibot > 0
        torch.testing.assert_close(torch.stack([r[step][0] for r in ranks]).mean(), loss, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(torch.stack([r[step][1] for r in ranks]).mean(), ibot, rtol=1e-5, atol=1e-6)
        for r in ranks:
            torch.testing.assert_close(r[step][2], center, rtol=1e-5, atol=1e-7)
            assert r[step][3].keys() == grads.keys()
            for k, g in grads.items():
                atol = 1e-6 + 1e-4 * g.abs().max().item()
                torch.testing.assert_close(r[step][3][k], g, rtol=1e-4, atol=atol, msg=k)


DINOV2_ARGS = ["--method.name=dinov2", "--model.name=vit_nano", "--model.patch_size=4", "--data.image_size=16",
               "--aug.local_crops=1", "--aug.local_size=8", "--method.out_dim=32", "--method.proj_hidden_dim=16",
               "--method.bottleneck_dim=8", "--method.koleo_weight=0", "--method.ibot_separate_head=true",
               "--method.ibot_out_dim=16", "--optim.layer_decay=0.8", "--model.registers=1", "--train.max_steps=2"]


# Equal as DINO's trainer test: the 2 logged losses and every float tensor of the final checkpoint
# (student, teacher, mask token, iBOT head), fp32 round-off apart. Both steps are in epoch 0,
# where both heads' last layers are frozen.
@pytest.mark.parametrize("strategy", available_strategies())
def test_dinov2_trainer_on_2_ranks_equals_1_process(tmp_path, strategy):
    one = run_cli(tmp_path / "ws1", 1, *DINOV2_ARGS)
    two = run_cli(tmp_path / "ws2", 2, *DINOV2_ARGS, f"--dist.strategy={strategy}")
    assert_same_run(one, two)
    assert one[1]["mask_token"].abs().sum() > 0  # the mask token trained, so its equality means something
