"""DALI over webdataset tars, in an order fastssl drives: the slot streams of fastssl/data/stream/
feed `fn.external_source`, so DALI reads the very batches the torch backend reads (same plan,
slots, shuffle and position) and resumes as exactly, on the same or another layout.

DALI's own `fn.readers.webdataset` is not used: its shuffle buffer and sharding are internal, so
no position can be saved, and a resume on another world size could not know which samples were
read. The feeder runs the rank's `max(1, num_workers)` slots in turn in one process (DALI's
threads decode and augment); the price is that reading the tars is not parallel.

DALI prefetches: the feeder runs ahead of the training loop, so it queues each batch's report
and the loader records the position when it hands that batch to the loop.
"""

from __future__ import annotations

import collections

import numpy as np

from fastssl.data.backends.torch_stream import Shards, slot_spec
from fastssl.data.sources.decode import image_ext
from fastssl.data.stream.position import StreamPosition
from fastssl.data.stream.slots import CorruptSample, SlotBatch, image_and_label, slot_batches


def check_signature(ordinal: int, key: str, parts: dict | None) -> tuple[np.ndarray, int]:
    """`accept` of DALI: the encoded bytes if they look like an image (DALI decodes them)."""
    data, label = image_and_label(key, parts)
    if not image_ext(data):
        raise CorruptSample(f"not a JPEG/PNG/BMP/WEBP/TIFF, {len(data)} bytes")
    return np.frombuffer(data, dtype=np.uint8), label


class StreamFeeder:
    """Batch callable for `fn.external_source`: the slots' batches in step order, from `pos`'s step."""

    def __init__(self, shards: Shards, pos: StreamPosition):
        self.pos = pos
        self.slots = {w: slot_batches(slot_spec(shards, pos, w), check_signature) for w in range(pos.workers)}
        self.step = pos.step
        self.reports: collections.deque = collections.deque()  # (slot, SlotBatch) of batches fed
        self._last: SlotBatch | None = None

    def __call__(self) -> tuple[list[np.ndarray], np.ndarray]:
        slot = self.pos.slot_for(self.step)
        b = next(self.slots[slot], None) if self.step < self.pos.steps else None
        if b is None:
            # DALI's prefetch runs past the epoch's end; those batches are never yielded.
            b, slot = self._last, -1
        else:
            self.step += 1
            self._last = b
        self.reports.append((slot, b))
        return list(b.items), np.asarray(b.labels, dtype=np.int64)  # [B] int64

    def pop_report(self) -> tuple[int, SlotBatch]:
        return self.reports.popleft()
