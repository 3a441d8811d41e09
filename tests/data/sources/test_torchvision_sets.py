import struct

import numpy as np
import pytest

from fastssl.data.sources.torchvision_sets import open_torchvision
from fastssl.errors import FastSSLError


def _idx(path, array: np.ndarray):
    """MNIST's IDX format: magic (0, 0, dtype 0x08 = ubyte, ndim), big-endian dims, data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


@pytest.fixture
def mnist_root(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 6), ("t10k", 4)):
        _idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    return tmp_path


def test_mnist_splits_from_local_files(mnist_root):
    train = open_torchvision("mnist", str(mnist_root), "train")
    test = open_torchvision("mnist", str(mnist_root), "test")
    both = open_torchvision("mnist", str(mnist_root), "all")
    assert (len(train), len(test), len(both)) == (6, 4, 10)
    assert train.labels.tolist() == [0, 1, 2, 3, 4, 5] and train.num_classes == 10
    img = train.image(1)
    assert img.mode == "RGB" and img.size == (28, 28)
    assert train.encoded(1)[:4] == b"\x89PNG"


@pytest.mark.parametrize("dataset", ["cifar10", "stl10", "mnist"])
def test_missing_dataset_says_how_to_get_it(tmp_path, dataset):
    with pytest.raises(FastSSLError) as err:
        open_torchvision(dataset, str(tmp_path), "train", download=False)
    assert "--data.download=true" in str(err.value) and "--data.path" in str(err.value)


def test_unknown_split(tmp_path):
    with pytest.raises(FastSSLError, match="unknown split 'unlabeled' for cifar10"):
        open_torchvision("cifar10", str(tmp_path), "unlabeled")
