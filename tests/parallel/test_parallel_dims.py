"""ParallelDims without processes: -1 resolution, the one-line errors, the config checks, and the
defaults every consumer falls back to (one data-parallel rank per process)."""

import pytest

from fastssl.config import Config, apply_overrides, validate
from fastssl.distributed import World, dp_rank, dp_size, parallel_dims
from fastssl.errors import FastSSLError
from fastssl.parallel_dims import ParallelDims, resolve_dims


@pytest.mark.parametrize("r,s,world,expect", [
    (1, -1, 4, (1, 4)),   # the default: shard over every rank (FSDP full shard)
    (2, -1, 4, (2, 2)),   # HSDP 2 x 2
    (-1, 2, 8, (4, 2)),   # replicas fill what the shard groups leave
    (4, 1, 4, (4, 1)),    # replicate only (DDP-like under FSDP)
    (2, 4, 8, (2, 4)),
    (1, -1, 1, (1, 1)),
])
def test_resolution(r, s, world, expect):
    assert resolve_dims(r, s, world) == expect
    dims = ParallelDims(r, s, world)
    assert (dims.dp_replicate, dims.dp_shard) == expect and dims.dp_size == world
    assert dims.hsdp == (expect[0] > 1)


def test_ranks_are_the_meshs_row_major_order():
    for rank in range(8):
        d = ParallelDims(2, 4, 8, rank=rank)
        assert d.dp_rank == rank and (d.replicate_rank, d.shard_rank) == divmod(rank, 4)


@pytest.mark.parametrize("r,s,world,fragment", [
    (3, -1, 4, "--dist.dp_replicate=3 does not divide the world size 4"),
    (1, 3, 4, "--dist.dp_shard=3 does not divide the world size 4"),
    (2, 1, 4, "--dist.dp_replicate=2 x --dist.dp_shard=1 is 2 ranks, not the world size 4"),
    (-1, -1, 4, "cannot both be -1"),
    (0, -1, 4, "--dist.dp_replicate=0 must be >= 1"),
    (1, -2, 4, "--dist.dp_shard=-2 must be >= 1"),
])
def test_bad_splits_give_one_line(r, s, world, fragment):
    with pytest.raises(FastSSLError) as e:
        ParallelDims(r, s, world)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_config_checks_what_needs_no_world_size():
    assert (Config().dist.dp_replicate, Config().dist.dp_shard) == (1, -1)  # today's behaviour
    with pytest.raises(FastSSLError, match=r"^--dist.dp_shard=0 must be >= 1"):
        validate(apply_overrides(Config(), ["--dist.dp_shard=0"]))
    validate(apply_overrides(Config(), ["--dist.dp_replicate=3"]))  # 3 may divide the world: checked at start


def test_defaults_without_a_process_group():
    assert (dp_rank(), dp_size()) == (0, 1)
    assert parallel_dims().dp_group is None
    w = World(rank=1, world_size=2)  # what the loaders' tests build: rank 1 of 2 data-parallel ranks
    assert (w.dims.dp_rank, w.dims.dp_size, w.dims.dp_replicate) == (1, 2, 1)


def test_cli_split_not_dividing_the_world_size(tmp_path, capsys, monkeypatch):
    # What `torchrun --nproc_per_node=4 ... --dist.dp_replicate=3` hands each rank: the split is
    # refused before the process group is joined, so no rank waits on a rendezvous.
    from fastssl.cli import main
    from tests.train.conftest import tiny_overrides

    monkeypatch.setenv("WORLD_SIZE", "4")
    assert main(["train", *tiny_overrides(tmp_path), "--dist.strategy=fsdp", "--dist.dp_replicate=3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--dist.dp_replicate=3 does not divide the world size 4" in err[0], err


def test_deepspeed_hpz_needs_zero3():
    from fastssl.parallel.engines import build_engine

    cfg = apply_overrides(Config(), ["--dist.strategy=deepspeed", "--dist.zero_stage=2", "--dist.dp_replicate=2"])
    world = World(world_size=4, dims=ParallelDims(2, -1, 4))
    with pytest.raises(FastSSLError, match=r"needs ZeRO-3: set --dist.zero_stage=3, or use --dist.strategy=fsdp"):
        build_engine(cfg, world)
