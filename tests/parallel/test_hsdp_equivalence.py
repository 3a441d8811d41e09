"""4 gloo ranks on a data-parallel mesh equal one process on the same global batch.

HSDP (`--dist.dp_replicate=2 --dist.dp_shard=2`: FSDP2 on the 2-D mesh, sharded within each pair,
replicated across the pairs), full FSDP (`--dist.dp_shard=4`) and DDP (which ignores the split)
each train 3 SGD steps of SimCLR (ViT) and BYOL (ResNet: SyncBN over the whole data-parallel group,
EMA target updated shard by shard); losses and checkpoints after steps 1 and 3 match the 1-process
run within fp32 round-off (|a - b| <= 1e-5 + 1e-4 max|b| per tensor: the ranks reduce in another
order). MoCo v2's queue and DINO's centre, gathered and reduced over the data-parallel group, are
the same on all 4 ranks (the replica check at every checkpoint compares every rank's buffers) and
equal the 1-process ones. DeepSpeed ZeRO-3 with ZeRO++ hpZ (its mapping of dp_replicate > 1)
runs on gloo and matches too.
"""

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from tests.parallel.conftest import CASES, THREE_STEPS, assert_same_state, checkpoints, losses, train_cli
from tests.train.conftest import tiny_overrides

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

RTOL, ATOL = 1e-4, 1e-5
MESHES = {
    "hsdp2x2": ["--dist.strategy=fsdp", "--dist.dp_replicate=2", "--dist.dp_shard=2"],
    "fsdp4": ["--dist.strategy=fsdp", "--dist.dp_shard=4"],
    "ddp": ["--dist.strategy=ddp", "--dist.dp_replicate=2"],  # the split is ignored
    # DeepSpeed: dp_replicate > 1 is ZeRO++ hpZ (zero_hpz_partition_size = dp_shard), ZeRO-3 only.
    "zero3-hpz": ["--dist.strategy=deepspeed", "--dist.zero_stage=3", "--dist.dp_replicate=2"],
}
_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None
MATRIX = [(m, mesh) for mesh in MESHES if mesh != "zero3-hpz" for m in ("simclr", "byol")] + [
    pytest.param("simclr", "zero3-hpz", marks=pytest.mark.skipif(not _DEEPSPEED, reason="needs deepspeed"))]


@pytest.mark.parametrize("method,mesh", MATRIX)
def test_four_ranks_equal_one_process(tmp_path, reference_run, method, mesh):
    out = tmp_path / "run"
    r = train_cli(out, 4, *THREE_STEPS, "--optim.name=sgd", *CASES[method], *MESHES[mesh])
    if mesh == "hsdp2x2":
        assert "HSDP dp_replicate=2 x dp_shard=2" in r.stdout
    ref_losses, ref = reference_run(method)
    assert losses(out) == pytest.approx(ref_losses, rel=RTOL, abs=ATOL)
    ckpts = checkpoints(out)
    assert sorted(ckpts) == [1, 2, 3] and ckpts[3]["world_size"] == 4
    for step in (1, 3):
        assert_same_state(ckpts[step], ref[step], RTOL, ATOL)
    moved = [k for k, v in ckpts[3]["model"].items() if k.startswith("backbone.") and v.is_floating_point()
             and not torch.equal(v, ckpts[1]["model"][k])]
    assert moved
    if method == "byol":
        target = [k for k in ckpts[3]["model"] if k.startswith("target_backbone.") and k.endswith(".weight")]
        assert target and any(not torch.equal(ckpts[3]["model"][k], ckpts[1]["model"][k]) for k in target)


BUFFER_CASES = {
    "mocov2": (["--method.name=mocov2", "--method.bn=sync", "--method.queue_size=32", "--model.name=resnet-tiny",
                "--method.proj_hidden_dim=16", "--method.proj_dim=8"], "queue"),
    "dino": (["--method.name=dino", "--model.name=vit_nano", "--model.patch_size=4", "--aug.local_crops=2",
              "--aug.local_size=4", "--method.out_dim=32", "--method.proj_hidden_dim=16",
              "--method.bottleneck_dim=8", "--method.center_momentum=0.5"], "center"),
}


def _train(out, nproc: int, *args: str) -> None:
    """`fastssl train` as train_cli, without its projector keys (DINO's head has others)."""
    argv = [a for a in tiny_overrides(out) if not a.startswith("--method.")] + list(args)
    launch = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                  f"--nproc_per_node={nproc}"]
    r = subprocess.run([*launch, "-m", "fastssl", "train", *argv], capture_output=True, text=True,
                       env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]


@pytest.mark.parametrize("case", list(BUFFER_CASES))
def test_queue_and_centre_on_an_hsdp_mesh(tmp_path, case):
    args, buffer = BUFFER_CASES[case]
    run = [*THREE_STEPS, "--optim.name=sgd", *args]
    _train(tmp_path / "one", 1, *run)
    # Every checkpoint runs the replica check: a rank whose queue or centre differs fails the run.
    _train(tmp_path / "four", 4, *run, *MESHES["hsdp2x2"])
    one, four = checkpoints(tmp_path / "one"), checkpoints(tmp_path / "four")
    assert losses(tmp_path / "four") == pytest.approx(losses(tmp_path / "one"), rel=RTOL, abs=ATOL)
    for step in (1, 2, 3):
        ref, got = one[step]["model"][buffer], four[step]["model"][buffer]
        torch.testing.assert_close(got, ref, rtol=RTOL, atol=ATOL, msg=f"step {step}: {buffer}")
    assert not torch.equal(one[3]["model"][buffer], one[1]["model"][buffer])  # it moved


def test_comm_counter_splits_bytes_by_mesh_dim(tmp_path):
    """HSDP 2 x 2 sends gradient all-reduces across replicas ("dp_replicate"); full FSDP sends none."""
    import os
    import subprocess
    import sys

    rows = {}
    for name, mesh in (("hsdp", ["--dp-replicate", "2"]), ("fsdp", ["--dp-shard", "4"])):
        csv = tmp_path / f"{name}.csv"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m", "fastssl",
               "bench", "step", "--strategy", "fsdp", "--no-ddp-baseline", "--no-backbone-baseline", "--model",
               "vit_nano", "--patch-size", "4", "--image-size", "8", "--batch", "8", "--method", "simclr",
               "--warmup", "2", "--repeats", "1", "--set", "method.proj_hidden_dim=16", "method.proj_dim=8",
               "--csv", str(csv), *mesh]
        r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        import csv as csvlib

        rows[name] = [row for row in csvlib.DictReader(csv.open()) if row["strategy"] == "fsdp"]
    for name, got in rows.items():
        assert len(got) == 4
        for row in got:
            replicate, shard = float(row["comm_dp_replicate_mb"]), float(row["comm_dp_shard_mb"])
            assert shard > 0
            assert (replicate > 0) == (name == "hsdp"), (name, row)
    # HSDP's shard groups have 2 ranks, not 4: each rank sends less within them.
    assert float(rows["hsdp"][0]["comm_dp_shard_mb"]) < float(rows["fsdp"][0]["comm_dp_shard_mb"])
