"""Reading webdataset samples out of tar shards by ordinal, sequentially, with the standard library.

Why `tarfile` and not the `webdataset` package: it is not installed here (nor a dependency), and
what is needed is small: samples are consecutive members sharing a key (webdataset's
`group_by_keys`), and skipping one means not reading its data. In tarfile's seekable mode
("r:"), iterating members reads the 512-byte headers and seeks over the data, so a stream that
starts mid-shard, or skips the samples a resume already consumed, costs header reads only.

A tar that ends early or is damaged yields `None` parts for every wanted sample it could not
deliver (with one warning), so the caller's positions stay aligned and it counts them corrupt.
"""

from __future__ import annotations

import os
import tarfile
import warnings
from typing import Iterator

import numpy as np

from fastssl.data.stream.plan import Intervals

Sample = tuple[int, str, "dict[str, bytes] | None"]  # (ordinal, key, {ext: bytes}) ; None = unreadable


def split_key(member: str) -> tuple[str, str]:
    # webdataset's convention: the key is everything before the first dot of the base name.
    folder, base = os.path.split(member)
    key, _, ext = base.partition(".")
    return os.path.join(folder, key), ext.lower()


def _shard_runs(intervals: Intervals, starts: np.ndarray) -> Iterator[tuple[int, list[tuple[int, int]]]]:
    """(position in the shard order, [(first, stop) sample ranges within it]) in ordinal order."""
    k_cur, runs = -1, []
    for lo, hi in intervals:
        g = lo
        while g < hi:
            k = int(np.searchsorted(starts, g, side="right")) - 1
            stop = min(hi, int(starts[k + 1]))
            if k != k_cur and runs:
                yield k_cur, runs
                runs = []
            k_cur = k
            runs.append((g - int(starts[k]), stop - int(starts[k])))
            g = stop
    if runs:
        yield k_cur, runs


def read_samples(tars: list[str], counts: np.ndarray, order: np.ndarray, intervals: Intervals) -> Iterator[Sample]:
    """Every ordinal of `intervals` (sorted), in order; the epoch's shards are `tars[order]`."""
    starts = np.concatenate([[0], np.cumsum(counts[order])])
    for k, runs in _shard_runs(intervals, starts):
        base = int(starts[k])
        for index, key, parts in _read_shard(tars[int(order[k])], runs):
            yield base + index, key, parts


def _wanted(runs: list[tuple[int, int]]) -> Iterator[int]:
    for a, b in runs:
        yield from range(a, b)


def _read_shard(path: str, runs: list[tuple[int, int]]) -> Iterator[tuple[int, str, dict | None]]:
    """(index in shard, key, parts) for the sample indices in `runs` (sorted ranges)."""
    wanted = _wanted(runs)
    want = next(wanted, None)
    index, key, parts = -1, None, None
    name = os.path.basename(path)
    try:
        with tarfile.open(path, "r:") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                k, ext = split_key(m.name)
                if k != key:
                    if parts is not None:
                        yield index, f"{name}/{key}", parts
                        want = next(wanted, None)
                    index, key = index + 1, k
                    if want is None:
                        return
                    parts = {} if index == want else None
                if parts is not None:
                    parts[ext] = tf.extractfile(m).read()
            if parts is not None:
                yield index, f"{name}/{key}", parts
                want = next(wanted, None)
    except (tarfile.TarError, OSError, EOFError) as e:
        warnings.warn(f"tar shard {path} is damaged after sample {index} ({type(e).__name__}: {e}); "
                      "its remaining samples count as corrupt", stacklevel=2)
    # Whatever the tar did not deliver (damaged, or fewer samples than its count said).
    while want is not None:
        yield want, f"{name}/#{want}", None
        want = next(wanted, None)
