"""t-SNE map of features, coloured by label, written as a PNG.

t-SNE is quadratic in memory and slow past a few thousand points, so a fixed seeded subset of
at most `max_points` is embedded. Features are PCA-reduced to 50 dimensions first, as van der
Maaten recommends, which also makes the result far faster to compute.

Matplotlib is driven through `Figure` + the Agg canvas, never pyplot, so plotting works on
headless machines and never switches the backend of a caller's notebook.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fastssl.errors import FastSSLError


def subsample(n: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded random subset of size min(n, max_points)."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def tsne_embed(feats: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D t-SNE of `[N, D]` features -> `[N, 2]`."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    n = len(feats)
    if n < 3:
        raise FastSSLError(f"t-SNE needs at least 3 images, got {n}; use a larger --data.test")
    feats = feats.astype(np.float32)
    if feats.shape[1] > 50 and n > 50:
        feats = PCA(n_components=50, random_state=seed).fit_transform(feats)
    # Perplexity must stay below the number of points; 30 is the usual value for larger sets.
    perplexity = float(min(30.0, (n - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(feats)


def _colour(i: int, n: int):
    from matplotlib import colormaps

    # Qualitative maps keep up to 20 classes distinct; beyond that a continuous map at least spreads them.
    if n <= 10:
        return colormaps["tab10"](i)
    if n <= 20:
        return colormaps["tab20"](i)
    return colormaps["turbo"](i / max(n - 1, 1))


def plot_tsne(feats: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, out: str | Path,
              max_points: int = 2000, seed: int = 0, title: str | None = None,
              class_names: list[str] | None = None) -> Path:
    """Embed (a subset of) features with t-SNE and save a labelled scatter plot to `out`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    feats = feats.detach().cpu().numpy() if isinstance(feats, torch.Tensor) else np.asarray(feats)
    labels = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    keep = subsample(len(feats), max_points, seed)
    xy = tsne_embed(feats[keep], seed)  # [M, 2]
    labels = labels[keep]

    fig = Figure(figsize=(7, 6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    classes = np.unique(labels)
    size = float(np.clip(12000 / max(len(labels), 1), 4, 24))  # bigger dots when there are few
    for i, c in enumerate(classes):
        m = labels == c
        name = class_names[c] if class_names is not None and 0 <= c < len(class_names) else str(c)
        ax.scatter(xy[m, 0], xy[m, 1], s=size, color=_colour(i, len(classes)), label=name, linewidths=0)
    if len(classes) <= 20:
        ax.legend(markerscale=3, fontsize=7, loc="best", frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"t-SNE of {len(keep)} test features")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out
