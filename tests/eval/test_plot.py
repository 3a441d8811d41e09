import numpy as np
import torch
from PIL import Image

from fastssl.eval.plot import plot_tsne, subsample


def test_plot_writes_a_valid_png(tmp_path):
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(60, 64, generator=g)  # > 50 dims: goes through PCA first
    labels = torch.arange(3).repeat(20)
    out = plot_tsne(feats, labels, tmp_path / "sub" / "tsne.png", max_points=2000)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as im:
        im.verify()
    with Image.open(out) as im:
        assert im.size[0] > 100 and im.size[1] > 100


def test_plot_subsamples_and_accepts_numpy(tmp_path):
    feats = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
    labels = np.arange(40) % 25  # more than 20 classes: no legend, continuous colours
    out = plot_tsne(feats, labels, tmp_path / "t.png", max_points=30)
    assert out.stat().st_size > 1000


def test_subsample_is_seeded_bounded_and_sorted():
    a, b = subsample(5000, 2000, seed=1), subsample(5000, 2000, seed=1)
    assert np.array_equal(a, b) and len(a) == 2000 and len(np.unique(a)) == 2000
    assert np.all(np.diff(a) > 0)
    assert np.array_equal(subsample(10, 2000), np.arange(10))
