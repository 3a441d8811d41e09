"""`open_source`: which `ImageSource` class reads a `(path, dataset, split)`.

A path may end in a slice, e.g. `cifar10/train-4.npz[5000:]`, which selects a contiguous range
of the stored images (Python slice semantics); this is how a validation split is carved out of
shards.

Datasets. "auto" guesses from the path (`guess_dataset`). "digits" is the built-in default and
reads no path: when a path IS given with it (the default recipe pins digits, so a newcomer who
only passes `--data.path` gets this), the path is read and its dataset guessed, as for "auto".
"webdataset" tars are read by DALI's own reader only (see fastssl.data.factory).

Splits. "digits", "npz", "folder" and "filelist" have a single split on disk, so "train" is the
data minus a held-out `data_cfg.val_fraction` (chosen by a fixed seeded permutation), "test" is
that held-out part, and "all" is everything. When `data_cfg.test_path` is set the user has named
the held-out data explicitly, so "train" is everything. A slice applies before this hold-out (it
defines which stored images form the dataset). torchvision sets use their own splits
("train"/"test"; STL-10 also "unlabeled" and "train+unlabeled"; "all" = train + test, or
STL-10's train+unlabeled) and a slice applies within the chosen split.
"""

from __future__ import annotations

import os
import re

import numpy as np

from fastssl.config import DataConfig
from fastssl.data.sources.base import ImageSource, IndexedSource
from fastssl.data.sources.webdataset import list_wds_tars
from fastssl.errors import FastSSLError, did_you_mean
from fastssl.registry import SOURCES

# "auto" guesses; every other name is a registered source (fastssl/registry.py), in the order the
# sources package imports them. Torchvision sets keep their own splits (single_split=False).
DATASETS = ("auto", *SOURCES.names())
TORCHVISION_DATASETS = tuple(e.name for e in SOURCES.entries() if not e.meta["single_split"])
SPLITS = ("train", "test", "all")
# Fixed so that "train" and "test" never overlap across runs, machines or library versions.
_SPLIT_SEED = 0
_SLICE = re.compile(r"^(?P<base>.*)\[(?P<start>-?\d*):(?P<stop>-?\d*)\]$")


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


def guess_dataset(path: str, key: str = "--data.path") -> str:
    """What "auto" means for a path (already stripped of any slice); `key` is the option that set it."""
    if not path:
        return "digits"
    if not os.path.exists(path):
        raise FastSSLError(f"data path '{path}' does not exist; fix {key}")
    if os.path.isfile(path):
        for ext, dataset in ((".npz", "npz"), (".txt", "filelist"), (".tar", "webdataset")):
            if path.endswith(ext):
                return dataset
        raise FastSSLError(
            f"data path '{path}' is a file but not a .npz shard, .txt file list or .tar shard; point "
            f"{key} at one of those, a folder of them or an image folder"
        )
    entries = os.listdir(path)
    if any(e.endswith(".npz") for e in entries):
        return "npz"
    if list_wds_tars(path):
        return "webdataset"
    # The folders torchvision's own downloads create under their root.
    markers = {"cifar-10-batches-py": "cifar10", "stl10_binary": "stl10", "MNIST": "mnist"}
    for marker, dataset in markers.items():
        if marker in entries:
            return dataset
    return "folder"


def resolve_dataset(dataset: str, path: str, key: str = "--data.path") -> str:
    """The concrete dataset read for `--data.dataset` and `--data.path` (path may end in a slice).

    "auto" is guessed from the path, and so is "digits" when a path is given (see the module
    docstring); anything else is checked against DATASETS.
    """
    if dataset not in DATASETS:
        raise FastSSLError(
            f"unknown --data.dataset={dataset}.{did_you_mean(dataset, DATASETS)} Valid: {', '.join(DATASETS)}"
        )
    base = parse_slice(path)[0]
    if dataset == "auto" or (dataset == "digits" and base):
        return guess_dataset(base, key)
    return dataset


def digits_path_note(data_cfg: DataConfig) -> str | None:
    """The one line to print when `--data.dataset=digits` came with a path that is read instead."""
    base = parse_slice(data_cfg.path)[0]
    if data_cfg.dataset != "digits" or not base:
        return None
    guessed = resolve_dataset("digits", data_cfg.path)
    return (
        f"fastssl: reading --data.path={base} as --data.dataset={guessed} (the recipe's dataset is the "
        f"built-in digits, which reads no path; set --data.dataset to choose)"
    )


def open_source(
    path: str,
    dataset: str = "auto",
    split: str = "train",
    data_cfg: DataConfig | None = None,
    key: str = "--data.path",
) -> ImageSource:
    """Open `path` (optionally ending in `[a:b]`) as an ImageSource. See the module docstring.

    `key` is the option the path came from, named in errors ("--data.test_path" for held-out data).
    """
    data_cfg = data_cfg or DataConfig()
    base, start, stop = parse_slice(path)
    dataset = resolve_dataset(dataset, path, key)
    opener = SOURCES.entry(dataset)
    reads_path = opener.meta.get("reads_path", True)
    if reads_path and not base:
        what = {"npz": "a folder of .npz shards or a .npz file", "filelist": "a .txt file list"}
        raise FastSSLError(f"--data.dataset={dataset} needs {key}=<{what.get(dataset, 'the dataset folder')}>")
    if reads_path and not os.path.exists(base):
        if not (dataset in TORCHVISION_DATASETS and data_cfg.download):
            raise FastSSLError(f"data path '{base}' does not exist; fix {key}")

    source: ImageSource
    if not opener.meta["single_split"]:
        source = opener.obj(dataset, base, split, download=data_cfg.download)
        if start is not None or stop is not None:
            source = source.subset(start, stop)
    else:
        if split not in SPLITS:
            raise FastSSLError(f"unknown split '{split}' for {dataset}; use one of {', '.join(SPLITS)}")
        # indexed: the source caches its listing (listing_index.py), where --data.index_dir says.
        kwargs = {"index_dir": data_cfg.index_dir} if opener.meta.get("indexed") else {}
        source = opener.obj(base, **kwargs) if reads_path else opener.obj()
        # The slice picks which stored images make up the dataset; the hold-out comes from those.
        if start is not None or stop is not None:
            source = source.subset(start, stop)
        if split == "train" and data_cfg.test_path:
            split = "all"
        if split != "all":
            source = IndexedSource(source, split_indices(len(source), split, data_cfg.val_fraction))
    source.skip_corrupt = data_cfg.skip_corrupt
    return source


def open_pretrain_source(data_cfg: DataConfig, source: ImageSource | None = None) -> ImageSource:
    """The images pretraining reads, `limit` applied: `source` when given (a caller's own), else
    the "train" split of `data_cfg.path` (STL-10: train+unlabeled). The one place `limit` applies."""
    if source is None:
        split = "train+unlabeled" if resolve_dataset(data_cfg.dataset, data_cfg.path) == "stl10" else "train"
        source = open_source(data_cfg.path, data_cfg.dataset, split, data_cfg)
    source = source.head(data_cfg.limit)
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
        # The training set's dataset says nothing about the test path's format unless it is a
        # concrete format ("digits" reads no path; "auto" guesses per path).
        dataset = data_cfg.dataset if data_cfg.dataset not in ("digits", "auto") else "auto"
        dataset = resolve_dataset(dataset, data_cfg.test_path, "--data.test_path")
        split = "test" if dataset in TORCHVISION_DATASETS else "all"
        test = open_source(data_cfg.test_path, dataset, split, data_cfg, key="--data.test_path")
    else:
        test = open_source(data_cfg.path, data_cfg.dataset, "test", data_cfg)
    return train, test
