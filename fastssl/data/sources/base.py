"""`ImageSource`: random access to a dataset's images, whatever format they are stored in.

Every data backend reads through this one contract, so a new format means one new source class:

- `len(source)`; `source.labels` int64 `[n]` (-1 = unknown); `source.num_classes` (0 = unknown);
- `source.encoded(i)`: the encoded file bytes (JPEG/PNG), which DALI decodes itself;
- `source.image(i)`: an RGB `PIL.Image`; an undecodable image raises `FastSSLError` naming it;
- `source.name(i)`: a human name for messages, e.g. `/data/train-3.npz[17]` or a file path;
- `source.sample(i)`: `(image, label)`, honouring `skip_corrupt` (the CPU loaders use this);
- optionally `source.paths`: one file per image, which lets DALI read the files itself.

`IndexedSource` views another source through an index array: slices, splits and limits.
"""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
from PIL import Image

from fastssl.data.sources.decode import CorruptImageError, decode_image
from fastssl.errors import FastSSLError

# Consecutive undecodable images tolerated by skip_corrupt before the data is declared broken.
_MAX_CORRUPT_RUN = 64


class ImageSource:
    """Base class. Subclasses set `labels`, `num_classes` and implement `encoded` and `name`."""

    labels: np.ndarray  # int64 [n]
    num_classes: int = 0
    # Set by open_source from DataConfig; `sample` reads it.
    skip_corrupt: bool = False

    def __len__(self) -> int:
        return len(self.labels)

    def encoded(self, i: int) -> bytes:
        raise NotImplementedError

    def name(self, i: int) -> str:
        raise NotImplementedError

    def image(self, i: int) -> Image.Image:
        return decode_image(self.encoded(i), self.name(i))

    def sample(self, i: int, on_skip: Callable[[str, str], None] | None = None) -> tuple[Image.Image, int]:
        """`(image(i), label(i))`; with skip_corrupt, the next decodable image and its label.

        Each corrupt image skipped on the way is passed to `on_skip(name, reason)`, or warned about
        without it (a loader whose workers skip them reports them once per run instead).
        """
        if not self.skip_corrupt:
            return self.image(i), int(self.labels[i])
        n = len(self)
        for k in range(min(n, _MAX_CORRUPT_RUN)):
            j = (i + k) % n
            try:
                return self.image(j), int(self.labels[j])
            except CorruptImageError as e:
                if on_skip is not None:
                    on_skip(e.image_name, e.reason)
                else:
                    warnings.warn(f"skipping corrupt image {e.image_name} ({e.reason})", stacklevel=2)
        raise FastSSLError(
            f"{min(n, _MAX_CORRUPT_RUN)} consecutive images from {self.name(i)} on failed to decode; "
            "the data looks broken, re-create or re-convert it"
        )

    def subset(self, start: int | None, stop: int | None) -> "ImageSource":
        """Contiguous range with Python slice semantics (negative indices count from the end)."""
        return IndexedSource(self, np.arange(len(self))[slice(start, stop)])

    def head(self, n: int) -> "ImageSource":
        """The first n images (all of them when n <= 0): what `--data.limit` selects."""
        return self if n <= 0 or n >= len(self) else self.subset(0, n)


class IndexedSource(ImageSource):
    """A view of another source through an index array (slices, splits, limits)."""

    def __init__(self, base: ImageSource, indices: np.ndarray):
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)  # [m] positions in base
        self.labels = base.labels[self.indices]
        self.num_classes = base.num_classes
        self.skip_corrupt = base.skip_corrupt

    def encoded(self, i: int) -> bytes:
        return self.base.encoded(int(self.indices[i]))

    def name(self, i: int) -> str:
        return self.base.name(int(self.indices[i]))

    def image(self, i: int) -> Image.Image:
        return self.base.image(int(self.indices[i]))


def source_paths(source: ImageSource) -> list[str] | None:
    """File paths aligned with the source's indices, when its images are plain files."""
    paths = getattr(source, "paths", None)
    if paths is not None:
        return list(paths)
    if isinstance(source, IndexedSource):
        base_paths = source_paths(source.base)
        return None if base_paths is None else [base_paths[int(i)] for i in source.indices]
    return None
