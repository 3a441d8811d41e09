"""`ImageSource`: random access to a dataset's images, whatever format they are stored in.

Every data backend reads through this one contract, so a new format means one new source class:

- `len(source)`; `source.labels` int64 `[n]` (-1 = unknown); `source.num_classes` (0 = unknown);
- `source.encoded(i)`: the encoded file bytes (JPEG/PNG), which DALI decodes itself;
- `source.image(i)`: an RGB `PIL.Image`; an undecodable image raises `FastSSLError` naming it;
- `source.name(i)`: a human name for messages, e.g. `/data/train-3.npz[17]` or a file path;
- `source.sample(i)`: `(image, label)`, honouring `skip_corrupt` (the CPU loaders use this).

`open_source(path, dataset, split, data_cfg)` picks the class. A path may end in a slice, e.g.
`cifar10/train-4.npz[5000:]`, which selects a contiguous range of the stored images (Python slice
semantics); this is how a validation split is carved out of shards.

Splits. "digits", "npz" and "folder" have a single split on disk, so "train" is the data minus a
held-out `data_cfg.val_fraction` (chosen by a fixed seeded permutation), "test" is that held-out
part, and "all" is everything. When `data_cfg.test_path` is set the user has named the held-out
data explicitly, so "train" is everything. A slice applies before this hold-out (it defines
which stored images form the dataset). torchvision sets use their own splits ("train"/"test";
STL-10 also "unlabeled" and "train+unlabeled"; "all" = train + test, or STL-10's train+unlabeled)
and a slice applies within the chosen split.
"""

from __future__ import annotations

import difflib
import os
import re
import warnings

import numpy as np
from PIL import Image

from fastssl.config import DataConfig
from fastssl.data.decode import CorruptImageError, decode_image
from fastssl.errors import FastSSLError

DATASETS = ("auto", "digits", "npz", "folder", "cifar10", "stl10", "mnist")
TORCHVISION_DATASETS = ("cifar10", "stl10", "mnist")
SPLITS = ("train", "test", "all")
# Consecutive undecodable images tolerated by skip_corrupt before the data is declared broken.
_MAX_CORRUPT_RUN = 64
# Fixed so that "train" and "test" never overlap across runs, machines or library versions.
_SPLIT_SEED = 0
_SLICE = re.compile(r"^(?P<base>.*)\[(?P<start>-?\d*):(?P<stop>-?\d*)\]$")


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

    def sample(self, i: int) -> tuple[Image.Image, int]:
        """`(image(i), label(i))`; with skip_corrupt, the next decodable image and its label."""
        if not self.skip_corrupt:
            return self.image(i), int(self.labels[i])
        n = len(self)
        for k in range(min(n, _MAX_CORRUPT_RUN)):
            j = (i + k) % n
            try:
                return self.image(j), int(self.labels[j])
            except CorruptImageError as e:
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


def split_indices(n: int, split: str, val_fraction: float) -> np.ndarray:
    """Positions of `split` in a single-split dataset of n items: a fixed seeded hold-out."""
    if split == "all" or (split == "train" and val_fraction == 0.0):
        return np.arange(n)
    if not 0.0 < val_fraction < 1.0:
        raise FastSSLError(
            f"--data.val_fraction={val_fraction} must be in (0, 1) to hold out a '{split}' split; "
            "set e.g. --data.val_fraction=0.1 or point --data.test_path at held-out data"
        )
    perm = np.random.default_rng(_SPLIT_SEED).permutation(n)
    n_train = int(round(n * (1.0 - val_fraction)))
    return np.sort(perm[:n_train] if split == "train" else perm[n_train:])


def parse_slice(path: str) -> tuple[str, int | None, int | None]:
    """`'x.npz[5000:]'` -> `('x.npz', 5000, None)`; a path without a slice -> `(path, None, None)`."""
    m = _SLICE.match(path.strip())
    if not m:
        return path.strip(), None, None
    start, stop = m["start"], m["stop"]
    return m["base"], int(start) if start else None, int(stop) if stop else None


def guess_dataset(path: str) -> str:
    """What "auto" means for a path (already stripped of any slice)."""
    if not path:
        return "digits"
    if not os.path.exists(path):
        raise FastSSLError(f"data path '{path}' does not exist; fix --data.path (or --data.test_path)")
    if os.path.isfile(path):
        if path.endswith(".npz"):
            return "npz"
        raise FastSSLError(
            f"data path '{path}' is a file but not a .npz shard; point --data.path at a .npz file, "
            "a folder of .npz shards or an image folder"
        )
    entries = os.listdir(path)
    if any(e.endswith(".npz") for e in entries):
        return "npz"
    # The folders torchvision's own downloads create under their root.
    markers = {"cifar-10-batches-py": "cifar10", "stl10_binary": "stl10", "MNIST": "mnist"}
    for marker, dataset in markers.items():
        if marker in entries:
            return dataset
    return "folder"


def open_source(
    path: str, dataset: str = "auto", split: str = "train", data_cfg: DataConfig | None = None
) -> ImageSource:
    """Open `path` (optionally ending in `[a:b]`) as an ImageSource. See the module docstring."""
    data_cfg = data_cfg or DataConfig()
    if dataset not in DATASETS:
        close = difflib.get_close_matches(dataset, DATASETS, n=1, cutoff=0.4)
        hint = f"did you mean --data.dataset={close[0]}? " if close else ""
        raise FastSSLError(f"unknown dataset '{dataset}'; {hint}valid: {', '.join(DATASETS)}")
    base, start, stop = parse_slice(path)
    if dataset == "auto":
        dataset = guess_dataset(base)
    elif dataset == "digits" and base:
        # The default dataset is "digits": a user who only set --data.path meant their own data.
        raise FastSSLError(
            f"--data.dataset=digits is built in and reads no path, but --data.path='{base}' was given; "
            "pass --data.dataset=auto (or npz / folder) to read it"
        )
    elif dataset != "digits" and not base:
        what = "a folder of .npz shards or a .npz file" if dataset == "npz" else "the dataset's folder"
        raise FastSSLError(f"--data.dataset={dataset} needs --data.path=<{what}>")
    elif dataset != "digits" and not os.path.exists(base):
        if not (dataset in TORCHVISION_DATASETS and data_cfg.download):
            raise FastSSLError(f"data path '{base}' does not exist; fix --data.path (or --data.test_path)")

    source: ImageSource
    if dataset in TORCHVISION_DATASETS:
        from fastssl.data.torchvision_sets import open_torchvision

        source = open_torchvision(dataset, base, split, download=data_cfg.download)
    else:
        if split not in SPLITS:
            raise FastSSLError(f"unknown split '{split}' for {dataset}; use one of {', '.join(SPLITS)}")
        if dataset == "digits":
            from fastssl.data.builtin_digits import DigitsSource

            source = DigitsSource()
        elif dataset == "npz":
            from fastssl.data.npz_shards import NpzShardSource

            source = NpzShardSource(base)
        else:
            from fastssl.data.image_folder import ImageFolderSource

            source = ImageFolderSource(base)
        # The slice picks which stored images make up the dataset; the hold-out comes from those.
        if start is not None or stop is not None:
            source = source.subset(start, stop)
        if split == "train" and data_cfg.test_path:
            split = "all"
        if split != "all":
            source = IndexedSource(source, split_indices(len(source), split, data_cfg.val_fraction))
    if dataset in TORCHVISION_DATASETS and (start is not None or stop is not None):
        source = source.subset(start, stop)
    source.skip_corrupt = data_cfg.skip_corrupt
    return source


def open_pretrain_source(data_cfg: DataConfig) -> ImageSource:
    """The images pretraining reads: the "train" split (STL-10: train+unlabeled), `limit` applied."""
    split = "train+unlabeled" if data_cfg.dataset == "stl10" else "train"
    source = open_source(data_cfg.path, data_cfg.dataset, split, data_cfg).head(data_cfg.limit)
    if len(source) == 0:
        raise FastSSLError(
            f"no training images in '{data_cfg.path or data_cfg.dataset}' after the split, slice and "
            f"--data.limit={data_cfg.limit}; widen the slice, raise the limit or fix --data.path"
        )
    return source


def open_eval_sources(data_cfg: DataConfig) -> tuple[ImageSource, ImageSource]:
    """`(train, held_out)` labelled sources for kNN / linear evaluation.

    The held-out part is `data_cfg.test_path` when set (all of it; a torchvision root gives its
    "test" split), else the dataset's own test split or hold-out. STL-10's train is its 5k
    labelled images. `limit` is a pretraining knob and does not apply here.
    """
    train = open_source(data_cfg.path, data_cfg.dataset, "train", data_cfg)
    if data_cfg.test_path:
        dataset = data_cfg.dataset if data_cfg.dataset != "digits" else "auto"
        if dataset == "auto":
            dataset = guess_dataset(parse_slice(data_cfg.test_path)[0])
        split = "test" if dataset in TORCHVISION_DATASETS else "all"
        test = open_source(data_cfg.test_path, dataset, split, data_cfg)
    else:
        test = open_source(data_cfg.path, data_cfg.dataset, "test", data_cfg)
    return train, test
