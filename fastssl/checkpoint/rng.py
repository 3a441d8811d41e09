"""The random state a checkpoint carries, so a resumed run draws the numbers it would have.

Each rank saves the CUDA generator of its own device only (`cuda:LOCAL_RANK`, see
`fastssl.distributed.local_device`), as `cuda` = [state] with `cuda_device` = its index: the
state belongs to the rank, not to a GPU number, so a resume on a node that sees fewer (or more)
GPUs restores it onto whatever device that rank has there. Checkpoints from before this held
`torch.cuda.get_rng_state_all()`, one state per GPU the saving process saw, and no
`cuda_device`; from those the entry of this rank's device is restored when it exists, and the
others are dropped (setting them all would index GPUs this node does not have).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def _this_device_index() -> int:
    from fastssl.distributed import local_device

    return local_device("cuda").index


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        index = _this_device_index()
        state["cuda"] = [torch.cuda.get_rng_state(index)]
        state["cuda_device"] = index
    return state


def _restore_cuda(saved: list[torch.Tensor], saved_device: int | None) -> None:
    index = _this_device_index()
    if saved_device is not None:  # this rank's own generator, from whichever GPU it had
        torch.cuda.set_rng_state(saved[0], index)
    elif index < len(saved):  # older checkpoints: one state per GPU the saver saw
        torch.cuda.set_rng_state(saved[index], index)


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        _restore_cuda(list(state["cuda"]), state.get("cuda_device"))
