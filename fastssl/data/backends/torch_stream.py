"""The "torch" backend over webdataset tars: slot streams (fastssl/data/stream/) in DataLoader workers.

Each of a rank's `max(1, num_workers)` slots runs in one worker; DataLoader takes their batches
in turn, which is the plan's step order (worker w serves the steps w, w + W, ... counted from
where this iteration starts). Workers are started per epoch (not persistent): each takes its
plan and start position from the loader at the start of the epoch. Batches come back with their
slot's report (position, keys, corrupt samples); the main process records the position when it
hands a batch to the training loop, so a checkpoint written after step k holds exactly k steps.

Corrupt samples are warned about once each per run, from the main process (corrupt_report.py),
and counted (`corrupt`).
A test hook: with `FASTSSL_RECORD_KEYS=DIR`, each rank appends one JSON line per batch
(`epoch`, `step`, `rank`, `keys`) to `DIR/keys-rank<r>.jsonl`.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from fastssl.data.backends.corrupt_report import CorruptReport
from fastssl.data.backends.sharding import data_parallel_coords, sample_seed
from fastssl.data.backends.torch_augment import build_view_transforms
from fastssl.data.backends.torch_loader import UserErrorDataLoader, collate_views, seeded_views
from fastssl.data.sources.decode import CorruptImageError, decode_image
from fastssl.data.stream.plan import shard_order
from fastssl.data.stream.position import StreamPosition
from fastssl.data.stream.slots import CorruptSample, SlotBatch, SlotSpec, image_and_label, slot_batches
from fastssl.data.views import ViewSpec
from fastssl.distributed import World
from fastssl.errors import FastSSLError


RECORD_KEYS = "FASTSSL_RECORD_KEYS"


def write_keys(folder: str, pos: StreamPosition, keys: list[str]) -> None:
    """The test hook: one JSON line per batch handed to the loop (before `pos` records it)."""
    if folder:
        line = {"epoch": pos.plan.epoch, "step": pos.step, "rank": pos.rank, "keys": keys}
        with open(os.path.join(folder, f"keys-rank{pos.rank}.jsonl"), "a") as f:
            f.write(json.dumps(line) + "\n")


class Shards:
    """The tars of a stream and their sample counts (`.idx` headers or tar headers)."""

    def __init__(self, tars: list[str], counts: np.ndarray, limit: int = 0):
        self.tars, self.counts = tars, np.asarray(counts, dtype=np.int64)
        n = int(self.counts.sum())
        self.num_samples = min(n, limit) if limit > 0 else n


def slot_spec(shards: Shards, pos: StreamPosition, worker: int) -> SlotSpec:
    plan = pos.plan
    return SlotSpec(
        tars=shards.tars, counts=shards.counts, order=shard_order(len(shards.tars), pos.seed, plan.epoch),
        run=plan.slot_run(pos.rank, worker), shuffle=pos.shuffle, seed=plan.slot_seed(pos.seed, pos.rank, worker),
        batch=pos.batch, batches=pos.batches_left(worker), start=pos.emitted.get(worker, 0),
    )


class DecodeAugment:
    """`accept` of the torch backend: decode with Pillow, views seeded by (seed, epoch, ordinal)."""

    def __init__(self, transforms: list[Callable], seed: int, epoch: int):
        self.transforms, self.seed, self.epoch = transforms, seed, epoch

    def __call__(self, ordinal: int, key: str, parts: dict | None):
        data, label = image_and_label(key, parts)
        try:
            image = decode_image(data, key)
        except CorruptImageError as e:
            raise CorruptSample(e.reason) from None
        return seeded_views(self.transforms, image, sample_seed(self.seed, self.epoch, ordinal)), label


class SlotStreams(IterableDataset):
    """Worker i serves the slot whose next step is the i-th of this iteration."""

    def __init__(self, specs: dict[int, SlotSpec], first_slot: int, accept: DecodeAugment):
        self.specs, self.first_slot, self.accept = specs, first_slot, accept

    def __iter__(self) -> Iterator[tuple[list[torch.Tensor], torch.Tensor, dict]]:
        info = get_worker_info()
        workers = len(self.specs)
        slot = (self.first_slot + (info.id if info is not None else 0)) % workers
        for b in slot_batches(self.specs[slot], self.accept):
            views, labels = collate_views(list(zip(b.items, b.labels)))
            yield views, labels, _report(slot, b)


def _report(slot: int, b: SlotBatch) -> dict:
    return {"slot": slot, "emitted": b.emitted, "keys": b.keys, "corrupt": b.corrupt, "padded": b.padded}


class TorchStreamLoader:
    """PretrainLoader over webdataset tars: yields `(views, labels)`, views float32 `[B, 3, S_v, S_v]`."""

    backend = "torch"

    def __init__(self, shards: Shards, spec: ViewSpec, batch_size: int, world: World, seed: int,
                 num_workers: int, shuffle: int):
        if num_workers < 0:
            raise FastSSLError(f"--data.num_workers={num_workers} must be >= 0")
        rank, ranks = data_parallel_coords(world)
        self.shards, self.transforms, self.seed = shards, build_view_transforms(spec), seed
        self.batch_size, self.num_workers = batch_size, num_workers
        self.num_images = shards.num_samples
        self.num_views = len(self.transforms)
        self.prefetch_depth = 2 * num_workers
        self.pos = StreamPosition(shards.num_samples, batch_size, rank, ranks, max(1, num_workers), seed, shuffle)
        self._record = os.environ.get(RECORD_KEYS, "")
        self._it: Iterator | None = None  # the live DataLoader iterator, which owns the workers
        self.report = CorruptReport("webdataset sample")
        if len(self) == 0:
            raise FastSSLError(f"{shards.num_samples} samples in the tars make no full batch of {batch_size} per "
                               f"rank on {ranks} rank(s); lower --train.batch_size or add data")

    def __len__(self) -> int:
        return self.pos.steps

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        note = self.pos.begin(epoch, start_step)
        if note and self.pos.rank == 0:
            print(note, flush=True)

    def state_dict(self, epoch: int, step: int) -> dict:
        return self.pos.state_dict(epoch, step)

    def load_state_dict(self, states: list[dict]) -> None:
        self.pos.load_state_dict(states)

    @property
    def corrupt(self) -> int:
        return self.pos.corrupt

    def __iter__(self) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        pos = self.pos
        specs = {w: slot_spec(self.shards, pos, w) for w in range(pos.workers)}
        data = SlotStreams(specs, pos.slot_for(pos.step), DecodeAugment(self.transforms, self.seed, pos.plan.epoch))
        self.close()
        self._it = iter(UserErrorDataLoader(data, batch_size=None, num_workers=self.num_workers))
        for views, labels, report in self._it:
            for name in report["corrupt"]:
                self.report.skipped(name)
            write_keys(self._record, pos, report["keys"])
            pos.record(report["slot"], report["emitted"], len(report["corrupt"]), report["padded"])
            yield views, labels
        self._it = None
        self.report.end_epoch()

    def close(self) -> None:
        """Stop this epoch's workers now (a run that stops mid-epoch must not leave them behind)."""
        it, self._it = self._it, None
        if it is not None:
            it.close()  # the generator's DataLoader iterator goes with it, and shuts its workers down
