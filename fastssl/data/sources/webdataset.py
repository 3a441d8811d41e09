"""Webdataset tar shards: `<key>.<image ext>` + optional `<key>.cls` (ASCII label) per sample.

Only DALI's `fn.readers.webdataset` trains from them (sharding and shuffling happen in the
reader); here are the helpers that find the shards, count samples and iterate them in order
(for `fastssl data convert`). A DALI index `<shard>.idx` beside a tar makes counting instant.
"""

from __future__ import annotations

import os
import tarfile
from typing import Iterator

from fastssl.errors import FastSSLError
from fastssl.registry import SOURCES

# Image components, in the order a sample's image is looked for.
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp")


def list_wds_tars(path: str) -> list[str] | None:
    """The .tar shards at `path` (a .tar file or a folder of them), or None if it is not webdataset."""
    if path.endswith(".tar") and os.path.isfile(path):
        return [path]
    if os.path.isdir(path):
        tars = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".tar"))
        return tars or None
    return None


def _split_key(member: str) -> tuple[str, str]:
    # webdataset convention: the key is everything before the first dot of the base name.
    folder, base = os.path.split(member)
    key, _, ext = base.partition(".")
    return os.path.join(folder, key), ext.lower()


def count_wds_samples(tars: list[str]) -> int:
    """Samples in the tars: from the DALI .idx headers when present, else by scanning tar headers."""
    total = 0
    for t in tars:
        idx = t[: -len(".tar")] + ".idx"
        if os.path.exists(idx):
            with open(idx) as f:
                total += int(f.readline().split()[1])
            continue
        keys = set()
        with tarfile.open(t) as tf:
            for m in tf:
                if m.isfile():
                    keys.add(_split_key(m.name)[0])
        total += len(keys)
    return total


def iter_wds(tars: list[str]) -> Iterator[tuple[str, bytes, int]]:
    """(name, encoded bytes, label) for every sample with an image component, in tar order."""
    for t in tars:
        with tarfile.open(t) as tf:
            cur_key, parts = None, {}
            for m in list(tf) + [None]:
                key, ext = _split_key(m.name) if m is not None else (None, "")
                if key != cur_key and cur_key is not None:
                    img_ext = next((e for e in IMAGE_EXTS if e in parts), None)
                    if img_ext is not None:
                        cls = parts.get("cls", b"").strip()
                        yield f"{t}:{cur_key}", parts[img_ext], int(cls) if cls else -1
                    parts = {}
                if m is None:
                    break
                cur_key = key
                if m.isfile():
                    parts[ext] = tf.extractfile(m).read()


@SOURCES.register("webdataset", single_split=True)
def open_webdataset(path: str) -> None:
    """Registered so that `--data.dataset=webdataset` is a known name; the random-access backends
    cannot read a stream, and the DALI backends never call this (fastssl.data.factory)."""
    raise FastSSLError(
        f"'{path}' holds webdataset tars, which only --data.backend=dali or dali-cpu reads; use one of "
        "those, or convert the tars with `fastssl data convert SRC OUT --to npz`"
    )
