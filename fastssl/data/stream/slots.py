"""One slot's batches: a (rank, worker) stream read, shuffled, checked and batched.

The slot reads the ordinals of its run (plan.py) with `read_samples`, shuffles them with its
`PositionShuffler` and hands each emitted sample to `accept` (decode + augment on the torch
backend, a signature check for DALI), which raises `CorruptSample` for a member without an
image or an image that does not decode: that sample is skipped, named in the batch's report and
counted. A slot always yields its planned number of batches, so every rank takes the same steps:
when corrupt samples leave it short at the end of its run, its last batches are padded with
repeats of good samples of the slot (`padded` counts them). A batch also reports `emitted`, the
slot's position after it: a resume fast-forwards the shuffler there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from fastssl.data.stream.plan import Intervals, cut, merge, total
from fastssl.data.stream.shuffle import PositionShuffler
from fastssl.data.stream.tar_reader import read_samples
from fastssl.errors import FastSSLError

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp")


class CorruptSample(Exception):
    """A sample `accept` cannot use; `reason` goes into the one warning about it."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def image_and_label(key: str, parts: dict[str, bytes] | None) -> tuple[bytes, int]:
    """The sample's image bytes and its `.cls` label (-1 without one); CorruptSample if no image."""
    if parts is None:
        raise CorruptSample("unreadable (damaged tar)")
    ext = next((e for e in IMAGE_EXTS if e in parts), None)
    if ext is None:
        raise CorruptSample(f"no image member (has {', '.join(sorted(parts)) or 'nothing'})")
    cls = parts.get("cls", b"").strip()
    return parts[ext], int(cls) if cls.lstrip(b"-").isdigit() else -1


@dataclass
class SlotBatch:
    items: list[Any]
    labels: list[int]
    keys: list[str]
    emitted: int  # the slot's shuffler position after this batch
    corrupt: list[str] = field(default_factory=list)  # "key (reason)" of the samples skipped
    padded: int = 0


@dataclass
class SlotSpec:
    """Everything a slot needs; picklable, so that a DataLoader worker gets its own copy."""

    tars: list[str]
    counts: np.ndarray  # samples per tar
    order: np.ndarray  # the epoch's shard order
    run: Intervals  # the slot's ordinals
    shuffle: int
    seed: int  # the shuffler's seed
    batch: int
    batches: int  # batches left to yield
    start: int  # shuffler position to resume from


def slot_batches(spec: SlotSpec, accept: Callable[[int, str, dict | None], Any]) -> Iterator[SlotBatch]:
    """`spec.batches` batches; `accept(ordinal, key, parts) -> (item, label)` or CorruptSample."""
    if spec.batches <= 0:
        return
    sh = PositionShuffler(total(spec.run), spec.shuffle, spec.seed)
    sh.fast_forward(spec.start)
    # What is left, as ordinals; read_samples yields them in that order, one per position.
    left = sh.remaining()
    samples = read_samples(spec.tars, spec.counts, spec.order, merge([i for a, b in left for i in cut(spec.run, a, b)]))
    positions = (p for a, b in left for p in range(a, b))
    data: dict[int, tuple] = {}
    for _ in range(len(sh.buf)):
        data[next(positions)] = next(samples)
    out, good, made = SlotBatch([], [], [], 0), [], 0
    while made < spec.batches:
        if sh.done():
            made += 1
            yield _padded(out, good, sh.emitted, spec.batch)
            out = SlotBatch([], [], [], 0)
            continue
        if sh.next_needs() is not None:
            data[next(positions)] = next(samples)
        e = sh.step()
        if e is None:
            continue
        ordinal, key, parts = data.pop(e)
        try:
            item, label = accept(ordinal, key, parts)
        except CorruptSample as c:
            out.corrupt.append(f"{key} ({c.reason})")
            continue
        out.items.append(item)
        out.labels.append(label)
        out.keys.append(key)
        good.append((item, label, key))
        del good[: -spec.batch]  # the last batch's worth is enough to pad from
        if len(out.items) == spec.batch:
            out.emitted = sh.emitted
            made += 1
            yield out
            out = SlotBatch([], [], [], 0)


def _padded(out: SlotBatch, good: list[tuple], emitted: int, batch: int) -> SlotBatch:
    """`out` filled up with repeats of the slot's latest good samples (its run is used up)."""
    if not good:
        raise FastSSLError("every sample of a webdataset stream was corrupt; check the tars with "
                           "`fastssl data convert SRC OUT --to webdataset --validate`")
    for k in range(batch - len(out.items)):
        item, label, key = good[k % len(good)]
        out.items.append(item)
        out.labels.append(label)
        out.keys.append(key + "#pad")
        out.padded += 1
    out.emitted = emitted
    return out
