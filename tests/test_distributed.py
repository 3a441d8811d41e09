"""One device per local rank: `local_device` with CUDA mocked to 8 GPUs, and the callers that use it."""

import pytest
import torch

from fastssl import distributed
from fastssl.distributed import init_distributed, local_device, resolve_device
from fastssl.errors import FastSSLError


def fake_gpus(monkeypatch, count: int = 8) -> list:
    """torch.cuda as a node with `count` GPUs; returns the devices set_device was called with."""
    set_to: list = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "set_device", set_to.append)
    return set_to


@pytest.mark.parametrize("local_rank", range(8))
def test_each_local_rank_gets_its_own_gpu(monkeypatch, local_rank):
    fake_gpus(monkeypatch)
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    for requested in ("auto", "cuda", torch.device("cuda")):
        assert local_device(requested) == torch.device("cuda", local_rank)
    assert resolve_device("auto") == torch.device("cuda", local_rank)  # eval's name for it
    assert local_device("cpu") == torch.device("cpu")


def test_local_rank_past_the_visible_gpus_names_the_fix(monkeypatch):
    fake_gpus(monkeypatch, 4)
    monkeypatch.setenv("LOCAL_RANK", "5")
    with pytest.raises(FastSSLError, match=r"LOCAL_RANK=5 but only 4 CUDA.*--nproc_per_node=4") as e:
        local_device("auto")
    assert "\n" not in str(e.value)


def test_explicit_index_only_for_one_local_process(monkeypatch):
    fake_gpus(monkeypatch)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert local_device("cuda:3") == torch.device("cuda", 3)
    with pytest.raises(FastSSLError, match=r"--device=cuda:9 but 8 CUDA"):
        local_device("cuda:9", "--device")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(FastSSLError, match=r"every local rank on one GPU; use --train.device=cuda"):
        local_device("cuda:1")


def test_no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert local_device("auto") == torch.device("cpu")
    with pytest.raises(FastSSLError, match="--device=cpu"):
        local_device("cuda", "--device")
    with pytest.raises(FastSSLError, match="unknown device 'tpu'"):
        local_device("tpu")


@pytest.mark.parametrize("local_rank", [0, 5, 7])
def test_init_distributed_sets_this_ranks_device(monkeypatch, local_rank):
    set_to = fake_gpus(monkeypatch)
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    monkeypatch.setenv("WORLD_SIZE", "1")  # no process group: only the device choice runs
    world = init_distributed("auto", "auto")
    assert world.device == torch.device("cuda", local_rank) and world.local_rank == local_rank
    assert set_to == [torch.device("cuda", local_rank)]
    assert distributed.is_dist() is False
