"""A cached index of an image folder or file list, so that later runs start without listing.

Listing 10M files in an ImageFolder takes minutes, on every rank of every node. The first start
(or `fastssl data index PATH`) writes the listing to an index file; later starts read it and check
only that nothing changed under it: the modification time of every folder the listing visited
(adding, removing or renaming a file changes its folder's mtime; rewriting a file's bytes does
not change the listing), or of the list file itself. That is one `stat` per folder and no
`scandir` at all. A changed folder rebuilds the index.

Where: `<root>/.fastssl-index/index.npz` beside the data (a hidden folder, which listings skip;
it is made before the root is stat'ed, so writing the index does not change what it records), or
`<--data.index_dir>/<hash of the path>.npz`, or ~/.cache/fastssl/index/ when the data's folder is
read-only. Under torchrun rank 0 builds the index and the other ranks wait for it (a barrier),
then read it; a node that does not see rank 0's file system builds its own.

The file: `paths` (relative paths, UTF-8, "\\n"-joined), `labels` int64 [n], `num_classes`,
`stamps` (the relative folders or list file, "\\n"-joined) and `mtimes` int64 [k] (ns).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

VERSION = 1
_HIDDEN = ".fastssl-index"


@dataclass
class Listing:
    paths: list[str]  # relative to the root
    labels: np.ndarray  # int64 [n]
    num_classes: int
    stamps: list[str]  # relative folders (or the list file) whose mtimes validate the listing
    mtimes: list[int]


def index_file(root: str, index_dir: str = "") -> Path:
    """Where the index of `root` (a folder or a list file) lives."""
    root = os.path.abspath(root)
    name = hashlib.sha1(root.encode()).hexdigest()[:16] + ".npz"
    if index_dir:
        return Path(index_dir) / name
    folder = root if os.path.isdir(root) else os.path.dirname(root)
    if os.access(folder, os.W_OK):
        return Path(folder) / _HIDDEN / (name if not os.path.isdir(root) else "index.npz")
    return Path(os.path.expanduser("~/.cache/fastssl/index")) / name


def mtime_ns(path: str) -> int:
    return os.stat(path).st_mtime_ns


def _write(path: Path, listing: Listing) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
    os.close(fd)
    np.savez(tmp, version=VERSION, paths=np.frombuffer("\n".join(listing.paths).encode(), np.uint8),
             labels=listing.labels, num_classes=listing.num_classes,
             stamps=np.frombuffer("\n".join(listing.stamps).encode(), np.uint8),
             mtimes=np.asarray(listing.mtimes, np.int64))
    os.replace(tmp, path)  # atomic: a reader sees the old index or the whole new one


def _read(path: Path, root: str) -> Listing | None:
    """The index at `path` if it is intact and nothing under `root` changed since; else None."""
    try:
        with np.load(path) as z:
            if int(z["version"]) != VERSION:
                return None
            stamps = z["stamps"].tobytes().decode().split("\n")
            mtimes = z["mtimes"].tolist()
            for rel, t in zip(stamps, mtimes):
                if mtime_ns(os.path.join(root, rel)) != t:
                    return None
            text = z["paths"].tobytes().decode()
            return Listing(text.split("\n") if text else [], z["labels"].astype(np.int64), int(z["num_classes"]),
                           stamps, mtimes)
    except (OSError, ValueError, KeyError):
        return None


def cached_listing(root: str, build: Callable[[str], Listing], index_dir: str = "") -> Listing:
    """`build(root)`'s listing, read from the index when it is valid; rank 0 (re)builds it first."""
    path = index_file(root, index_dir)
    if index_dir == "" and os.path.isdir(root) and path.parent.name == _HIDDEN:
        # Before anything is stat'ed: making this folder changes the root's mtime once.
        path.parent.mkdir(exist_ok=True)
    rank, barrier = _process_group()
    listing = _read(path, root) if rank == 0 else None
    if rank == 0 and listing is None:
        listing = build(root)
        _write_quietly(path, listing)
    barrier()
    if listing is None:
        listing = _read(path, root)
    if listing is None:  # another node's file system, or a write that failed
        listing = build(root)
    return listing


def build_index(root: str, build: Callable[[str], Listing], index_dir: str = "") -> tuple[Path, Listing]:
    """Build and write the index now (`fastssl data index`)."""
    path = index_file(root, index_dir)
    if index_dir == "" and os.path.isdir(root) and path.parent.name == _HIDDEN:
        path.parent.mkdir(exist_ok=True)
    listing = build(root)
    _write(path, listing)
    return path, listing


def _write_quietly(path: Path, listing: Listing) -> None:
    try:
        _write(path, listing)
    except OSError as e:
        print(f"fastssl: could not write the listing index {path} ({e.strerror}); the next start lists the "
              "data again (set --data.index_dir to a writable folder)", flush=True)


def _process_group() -> tuple[int, Callable[[], None]]:
    """(global rank, barrier): every rank reads the same files, so this is the world's, not the
    data-parallel group's."""
    import torch.distributed as dist

    from fastssl.parallel_dims import global_rank, group_ready

    if group_ready():
        return global_rank(), dist.barrier
    return 0, lambda: None
