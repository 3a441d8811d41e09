"""Every `fastssl bench` rank measures on its own GPU: cuda:LOCAL_RANK, CUDA mocked to 8 GPUs.

Under torchrun nothing has called set_device when a benchmark picks its device, so asking torch
for its current device gives cuda:0 on every rank, and NCCL refuses two ranks on one GPU.
"""

import argparse
import importlib

import pytest
import torch

from fastssl import distributed
from fastssl.bench import harness
from fastssl.bench.harness import bench_device


def fake_gpus(monkeypatch, local_rank: int, count: int = 8) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)  # nothing has called set_device yet
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(count))


@pytest.mark.parametrize("local_rank", range(8))
def test_bench_device_is_cuda_local_rank(monkeypatch, local_rank):
    fake_gpus(monkeypatch, local_rank)
    for requested in ("auto", "cuda"):
        assert bench_device(requested) == torch.device("cuda", local_rank)
    assert bench_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("module", ["loss", "loader", "backbone", "step"])
def test_every_benchmark_chooses_its_device_through_bench_device(module):
    assert importlib.import_module(f"fastssl.bench.{module}").bench_device is harness.bench_device


class Joined(Exception):
    pass


@pytest.mark.parametrize("local_rank", range(8))
def test_bench_step_joins_the_group_on_its_own_gpu(monkeypatch, local_rank):
    from fastssl.bench import step

    fake_gpus(monkeypatch, local_rank)
    seen = []

    def fake_init(backend="auto", device="auto", timeout_s=1800, dp_replicate=1, dp_shard=-1):
        # The real init_distributed resolves `device` through local_device, as torchrun's rank would.
        seen.append(distributed.local_device(device, "--train.device"))
        raise Joined

    monkeypatch.setattr(distributed, "init_distributed", fake_init)
    args = argparse.Namespace(device="auto", threads=None, strategy="ddp", no_ddp_baseline=False, dp_replicate=1,
                              dp_shard=-1)
    with pytest.raises(Joined):
        step.run(args)
    assert seen == [torch.device("cuda", local_rank)]
