"""CIFAR-10, STL-10 and MNIST through torchvision's downloaders and on-disk formats.

`path` is the torchvision root (the folder holding `cifar-10-batches-py/`, `stl10_binary/` or
`MNIST/`). Splits: "train", "test", "all" (= train + test); STL-10 also has "unlabeled" (100k,
labels -1) and "train+unlabeled" ("all" means this one for STL-10, the usual SSL pretraining set).
The decoded pixel arrays are kept in memory; these sets are small.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from fastssl.data.sources.base import ImageSource
from fastssl.data.sources.decode import encode_png
from fastssl.errors import FastSSLError
from fastssl.registry import SOURCES

_SPLITS = {
    "cifar10": ("train", "test", "all"),
    "mnist": ("train", "test", "all"),
    "stl10": ("train", "test", "unlabeled", "train+unlabeled", "all"),
}


class ArraySource(ImageSource):
    """Images held as one uint8 array: `[n, H, W]` (grayscale) or `[n, H, W, 3]`."""

    def __init__(self, pixels: np.ndarray, labels: np.ndarray, num_classes: int, prefix: str):
        self.pixels = pixels
        self.labels = np.asarray(labels, dtype=np.int64)
        self.num_classes = num_classes
        self.prefix = prefix

    def encoded(self, i: int) -> bytes:
        return encode_png(self.pixels[i])

    def name(self, i: int) -> str:
        return f"{self.prefix}[{i}]"

    def image(self, i: int) -> Image.Image:
        return Image.fromarray(self.pixels[i]).convert("RGB")


def _load(dataset: str, root: str, split: str, download: bool) -> tuple[np.ndarray, np.ndarray]:
    import torchvision.datasets as tvd

    if dataset == "cifar10":
        ds = tvd.CIFAR10(root, train=split == "train", download=download)
        return np.asarray(ds.data), np.asarray(ds.targets)  # [n, 32, 32, 3]
    if dataset == "mnist":
        ds = tvd.MNIST(root, train=split == "train", download=download)
        return ds.data.numpy(), ds.targets.numpy()  # [n, 28, 28]
    ds = tvd.STL10(root, split=split, download=download)
    return np.ascontiguousarray(ds.data.transpose(0, 2, 3, 1)), np.asarray(ds.labels)  # [n, 96, 96, 3]


# Own splits on disk ("train"/"test"; STL-10 also "unlabeled"), so no seeded hold-out.
@SOURCES.register("mnist", single_split=False)
@SOURCES.register("stl10", single_split=False)
@SOURCES.register("cifar10", single_split=False)
def open_torchvision(dataset: str, root: str, split: str, download: bool = False) -> ArraySource:
    if split not in _SPLITS[dataset]:
        raise FastSSLError(f"unknown split '{split}' for {dataset}; use one of {', '.join(_SPLITS[dataset])}")
    if split == "all":
        parts = ["train+unlabeled"] if dataset == "stl10" else ["train", "test"]
    else:
        parts = [split]
    pixels, labels = [], []
    for part in parts:
        try:
            x, y = _load(dataset, root, part, download)
        except RuntimeError:
            raise FastSSLError(
                f"{dataset} not found under '{root}'; pass --data.download=true to download it, "
                f"or point --data.path at the folder that holds torchvision's {dataset} files"
            ) from None
        except OSError as e:
            raise FastSSLError(
                f"could not download {dataset} to '{root}' ({e}); download it elsewhere and point --data.path at it"
            ) from None
        pixels.append(x)
        labels.append(y)
    pixels_all = pixels[0] if len(pixels) == 1 else np.concatenate(pixels)
    labels_all = np.concatenate(labels)
    return ArraySource(pixels_all, labels_all, num_classes=10, prefix=f"{dataset}:{root}:{split}")
