"""A file list: a `.txt` of `relative/path [label]` lines (DALI's `fn.readers.file` format).

Paths are relative to the list's folder; a line without a trailing integer is unlabelled (-1).
The parsed list is cached in an index (listing_index.py), valid while the list file is unchanged.
"""

from __future__ import annotations

import os

import numpy as np

from fastssl.data.sources.files import ListedFilesSource
from fastssl.data.sources.listing_index import Listing, mtime_ns
from fastssl.errors import FastSSLError
from fastssl.registry import SOURCES


def read_file_list(path: str) -> tuple[list[str], np.ndarray]:
    """The list at `path` -> (absolute paths, int64 labels [n])."""
    if not os.path.isfile(path):
        raise FastSSLError(f"file list '{path}' does not exist; fix --data.path")
    root = os.path.dirname(os.path.abspath(path))
    files, labels = [], []
    with open(path) as f:
        for line in f:
            parts = line.strip().rsplit(maxsplit=1)
            if not parts:
                continue
            if len(parts) == 2 and parts[1].lstrip("-").isdigit():
                rel, label = parts[0], int(parts[1])
            else:
                rel, label = line.strip(), -1
            files.append(os.path.join(root, rel))
            labels.append(label)
    if not files:
        raise FastSSLError(f"file list '{path}' names no images; write one `path [label]` per line")
    return files, np.asarray(labels, dtype=np.int64)


def list_file_list(path: str) -> Listing:
    files, labels = read_file_list(path)
    num_classes = int(labels.max()) + 1 if labels.max() >= 0 else 0
    # The list file is the one stamp (relative to its own path); the paths are kept as resolved.
    return Listing(files, labels, num_classes, [""], [mtime_ns(path)])


@SOURCES.register("filelist", single_split=True, indexed=True)
class FileListSource(ListedFilesSource):
    def __init__(self, path: str, index_dir: str = ""):
        if not os.path.isfile(path):
            raise FastSSLError(f"file list '{path}' does not exist; fix --data.path")
        super().__init__(path, index_dir, list_file_list)
