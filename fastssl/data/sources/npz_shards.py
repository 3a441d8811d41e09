"""JPEG shards: `.npz` files holding many encoded images, the fast on-disk format.

Each shard holds `jpeg` (uint8, every image's bytes concatenated), `offsets` (int64 [n + 1]; image
i is `jpeg[offsets[i]:offsets[i + 1]]`) and optionally `labels` (integer [n]; missing = -1, for
unlabelled data). A source is one shard or a folder of them, concatenated in file-name order.

Shards written with `np.savez` (uncompressed) are memory-mapped rather than read: opening is
instant whatever their size, and DataLoader workers share the page cache instead of each holding
a copy. Compressed shards (`np.savez_compressed`) fall back to loading `jpeg` into memory.
"""

from __future__ import annotations

import glob
import os
import struct
import zipfile
from typing import Sequence

import numpy as np

from fastssl.data.sources.base import ImageSource
from fastssl.errors import FastSSLError
from fastssl.registry import SOURCES

_REQUIRED = ("jpeg", "offsets")


def write_shard(path: str, encoded: Sequence[bytes], labels: Sequence[int] | None = None) -> None:
    """Write one shard (uncompressed, so readers can memory-map it). `labels` None = unlabelled."""
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)  # [n + 1]
    offsets[1:] = np.cumsum([len(b) for b in encoded])
    arrays = {"jpeg": np.frombuffer(b"".join(encoded), dtype=np.uint8), "offsets": offsets}
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64)
        small = len(labels) == 0 or (labels.min() >= -(2**15) and labels.max() < 2**15)
        arrays["labels"] = labels.astype(np.int16 if small else np.int64)
    np.savez(path, **arrays)


def _memmap_member(path: str, zf: zipfile.ZipFile, member: str) -> np.ndarray | None:
    """Memory-map an uncompressed `.npy` member of a zip in place, or None if it is compressed."""
    info = zf.getinfo(member)
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as f:
        # Local file header: 30 fixed bytes, then the name and an extra field whose lengths sit at
        # bytes 26..30. They can differ from the central directory's copy, so read them here.
        f.seek(info.header_offset)
        header = f.read(30)
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        offset = f.tell()
    if dtype.hasobject:
        return None
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


class _Shard:
    def __init__(self, path: str):
        self.path = path
        try:
            with np.load(path) as npz:
                missing = [a for a in _REQUIRED if a not in npz.files]
                if missing:
                    raise FastSSLError(
                        f"shard {path} lacks array(s) {', '.join(missing)} (has {', '.join(npz.files) or 'none'}); "
                        "a shard needs jpeg, offsets and optionally labels: re-create it with `fastssl data convert`"
                    )
                self.offsets = np.asarray(npz["offsets"], dtype=np.int64).reshape(-1)  # [n + 1]
                n = max(len(self.offsets) - 1, 0)
                labels = npz["labels"] if "labels" in npz.files else np.full(n, -1)
                self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)  # [n]
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise FastSSLError(f"cannot read shard {path} ({e}); re-create it with `fastssl data convert`") from None
        ordered = n == 0 or (self.offsets[0] >= 0 and np.all(np.diff(self.offsets) >= 0))
        if len(self.offsets) != n + 1 or len(self.labels) != n or not ordered:
            raise FastSSLError(
                f"shard {path} is inconsistent: offsets must be non-decreasing with length len(labels) + 1 = "
                f"{len(self.labels) + 1}, got {len(self.offsets)}; re-create it with `fastssl data convert`"
            )
        self._jpeg: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def jpeg(self) -> np.ndarray:
        # Opened lazily, per process: a memmap must not be pickled into DataLoader workers.
        if self._jpeg is None:
            with zipfile.ZipFile(self.path) as zf:
                jpeg = _memmap_member(self.path, zf, "jpeg.npy")
            if jpeg is None:
                with np.load(self.path) as npz:
                    jpeg = npz["jpeg"]
            if len(self.offsets) > 1 and self.offsets[-1] > len(jpeg):
                raise FastSSLError(
                    f"shard {self.path} is truncated: offsets reach byte {self.offsets[-1]} "
                    f"but jpeg has {len(jpeg)}; re-create it with `fastssl data convert`"
                )
            self._jpeg = jpeg.reshape(-1)
        return self._jpeg

    def encoded(self, i: int) -> bytes:
        return self.jpeg[self.offsets[i] : self.offsets[i + 1]].tobytes()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if isinstance(state["_jpeg"], np.memmap):
            state["_jpeg"] = None
        return state


@SOURCES.register("npz", single_split=True)
class NpzShardSource(ImageSource):
    def __init__(self, path: str):
        if os.path.isdir(path):
            files = sorted(glob.glob(os.path.join(glob.escape(path), "*.npz")))
            if not files:
                raise FastSSLError(
                    f"no .npz shards in '{path}'; point --data.path at a folder of .npz shards "
                    "or pass --data.dataset=folder for an image folder"
                )
        else:
            files = [path]
        self.shards = [_Shard(f) for f in files]
        sizes = np.array([len(s) for s in self.shards], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(sizes)])  # [num_shards + 1] global start index
        self.labels = np.concatenate([s.labels for s in self.shards]) if self.shards else np.zeros(0, np.int64)
        self.num_classes = int(self.labels.max()) + 1 if len(self.labels) and self.labels.max() >= 0 else 0

    def _locate(self, i: int) -> tuple[_Shard, int]:
        if not 0 <= i < len(self):
            raise IndexError(f"image index {i} out of range for {len(self)} images")
        k = int(np.searchsorted(self.starts, i, side="right")) - 1
        return self.shards[k], i - int(self.starts[k])

    def encoded(self, i: int) -> bytes:
        shard, j = self._locate(i)
        return shard.encoded(j)

    def name(self, i: int) -> str:
        shard, j = self._locate(i)
        return f"{shard.path}[{j}]"
