"""RNG restore across nodes that see different GPU counts, with torch.cuda mocked (no GPU needed)."""

import random

import numpy as np
import pytest
import torch

from fastssl.checkpoint.rng import rng_state, set_rng_state


class FakeCuda:
    """Per-device generator states of a node with `count` GPUs; indexing past them fails like CUDA."""

    def __init__(self, monkeypatch, count: int, local_rank: int):
        self.count = count
        self.states = {i: torch.tensor([i], dtype=torch.uint8) for i in range(count)}
        self.set_calls: list[int] = []
        monkeypatch.setenv("LOCAL_RANK", str(local_rank))
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        for mod in (torch.cuda, torch.cuda.random):  # set_rng_state_all calls the module's own name
            monkeypatch.setattr(mod, "get_rng_state", self.get, raising=False)
            monkeypatch.setattr(mod, "set_rng_state", self.set, raising=False)
            monkeypatch.setattr(mod, "device_count", lambda: count, raising=False)

    def _index(self, device) -> int:
        i = device if isinstance(device, int) else torch.device(device).index
        if i is None or not 0 <= i < self.count:
            raise RuntimeError(f"CUDA error: invalid device ordinal {i} (node has {self.count})")
        return i

    def get(self, device="cuda"):
        return self.states[self._index(device)].clone()

    def set(self, state, device="cuda"):
        i = self._index(device)
        self.set_calls.append(i)
        self.states[i] = state.clone()


def _saved_on_8_old_format(rank: int) -> dict:
    # What checkpoints held before: get_rng_state_all() of the saving rank, one state per GPU.
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": [torch.tensor([100 + 10 * rank + i], dtype=torch.uint8) for i in range(8)]}


@pytest.mark.parametrize("visible,local_rank", [(4, 0), (4, 3), (1, 0)])
def test_old_checkpoint_saved_on_8_loads_on_fewer(monkeypatch, visible, local_rank):
    cuda = FakeCuda(monkeypatch, visible, local_rank)
    set_rng_state(_saved_on_8_old_format(local_rank))
    assert cuda.set_calls == [local_rank]  # this rank's device only, never an index the node lacks
    assert int(cuda.states[local_rank]) == 100 + 10 * local_rank + local_rank


@pytest.mark.parametrize("visible,local_rank", [(4, 2), (1, 0), (8, 7)])
def test_saved_on_8_ranks_resumes_on_this_ranks_device(monkeypatch, visible, local_rank):
    saver = FakeCuda(monkeypatch, 8, local_rank=6)
    saver.states[6] = torch.tensor([66], dtype=torch.uint8)
    saved = rng_state()
    assert saved["cuda_device"] == 6 and len(saved["cuda"]) == 1  # the rank's own generator alone
    cuda = FakeCuda(monkeypatch, visible, local_rank)
    set_rng_state(saved)
    assert cuda.set_calls == [local_rank] and int(cuda.states[local_rank]) == 66


def test_saved_on_1_loads_on_8(monkeypatch):
    FakeCuda(monkeypatch, 1, 0)
    saved = rng_state()
    cuda = FakeCuda(monkeypatch, 8, 5)
    set_rng_state(saved)
    assert cuda.set_calls == [5]


def test_cpu_states_round_trip():
    saved = rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(saved)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a
