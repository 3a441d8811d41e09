"""Webdataset tar shards: `<key>.<image ext>` + optional `<key>.cls` (ASCII label) per sample.

Training streams them (fastssl/data/stream/, on every backend); here are the helpers that find
the shards, count samples and iterate them in order (for `fastssl data convert`). A DALI index
`<shard>.idx` beside a tar makes counting instant.
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


def shard_sample_count(tar: str) -> int:
    """Samples in one tar: from its DALI `.idx` header when present, else by scanning tar headers."""
    idx = tar[: -len(".tar")] + ".idx"
    if os.path.exists(idx):
        with open(idx) as f:
            return int(f.readline().split()[1])
    keys = set()
    try:
        with tarfile.open(tar) as tf:
            for m in tf:
                if m.isfile():
                    keys.add(_split_key(m.name)[0])
    except (tarfile.TarError, OSError) as e:
        raise FastSSLError(f"cannot read tar shard {tar} ({type(e).__name__}: {e}); re-create it or move it "
                           "out of --data.path") from None
    return len(keys)


def count_wds_samples(tars: list[str]) -> int:
    """Samples in the tars (`.idx` headers or tar headers)."""
    return sum(shard_sample_count(t) for t in tars)


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
    """Registered so that `--data.dataset=webdataset` is a known name; tars have no random access,
    so training streams them (fastssl.data.factory) and this is reached only by what needs it."""
    raise FastSSLError(
        f"'{path}' holds webdataset tars, which only training streams (no random access); convert "
        "them with `fastssl data convert SRC OUT --to npz` to evaluate or cluster on them"
    )
