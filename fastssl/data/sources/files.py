"""`FilesSource`: images stored one per file; `ListedFilesSource`: those named by a cached listing
(image folders, file lists)."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from PIL import Image

from fastssl.data.sources.base import ImageSource
from fastssl.data.sources.decode import corrupt_image, decode_image
from fastssl.data.sources.listing_index import Listing, cached_listing


class FilesSource(ImageSource):
    """`paths[i]` holds image i; `paths` also lets DALI's file reader read the files itself."""

    def __init__(self, paths: Sequence[str], labels: Sequence[int], num_classes: int):
        self.paths = list(paths)
        self.labels = np.asarray(labels, dtype=np.int64)  # [n], -1 = unknown
        self.num_classes = num_classes

    def encoded(self, i: int) -> bytes:
        with open(self.paths[i], "rb") as f:
            return f.read()

    def name(self, i: int) -> str:
        return self.paths[i]

    def image(self, i: int) -> Image.Image:
        try:
            data = self.encoded(i)
        except OSError as e:
            raise corrupt_image(self.paths[i], f"unreadable: {e.strerror or e}") from None
        return decode_image(data, self.paths[i])


class ListedFilesSource(FilesSource):
    """The files `lister(path)` names, read from the index that caches the listing (listing_index.py).

    `prefix` turns a listed path into one that opens: the root for listings relative to it.
    """

    def __init__(self, path: str, index_dir: str, lister: Callable[[str], Listing], prefix: str = ""):
        listing = cached_listing(path, lister, index_dir)
        super().__init__([prefix + p for p in listing.paths], listing.labels, listing.num_classes)
