"""CIE Lab colour and the quantised ab space of Zhang, Isola & Efros (ECCV 2016), in torch.

- `rgb_to_lab` / `lab_to_rgb`: sRGB in [0, 1] (D65 white) <-> L in [0, 100], a and b in about
  [-110, 110], the same formulas and matrix as skimage.color (which the paper's code uses);
- `ab_bin_centres(grid)`: centres of the grid cells of the ab plane that some sRGB colour falls
  into (the paper keeps the Q = 313 in-gamut cells of a 10-wide grid);
- `soft_encode` (Sec. 2.1: 5 nearest bins, Gaussian sigma 5), `nearest_bin`, `annealed_mean`
  (Sec. 2.3, T = 0.38) and `rebalance_weights` (Sec. 2.2, lambda = 1/2, prior smoothed by a
  Gaussian of sigma 5) for training and decoding.

Everything runs in float32 whatever the autocast dtype: the cube root and the gamma curve need it.
"""

from __future__ import annotations

import functools

import torch

# sRGB (linear) -> XYZ under D65, as skimage.color.xyz_from_rgb.
_XYZ_FROM_RGB = torch.tensor([[0.412453, 0.357580, 0.180423],
                              [0.212671, 0.715160, 0.072169],
                              [0.019334, 0.119193, 0.950227]])
_WHITE = _XYZ_FROM_RGB.sum(1)  # XYZ of RGB (1, 1, 1): the D65 reference white (0.9505, 1.0, 1.0888)
_DELTA = 6.0 / 29.0
AB_RANGE = 110.0  # |a|, |b| of sRGB colours stay below this (the paper's data_ab range)


def _srgb_to_linear(c: torch.Tensor) -> torch.Tensor:
    return torch.where(c <= 0.04045, c / 12.92, ((c.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(c: torch.Tensor) -> torch.Tensor:
    return torch.where(c <= 0.0031308, 12.92 * c, 1.055 * c.clamp(min=0.0031308) ** (1 / 2.4) - 0.055)


def _f(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t > _DELTA**3, t.clamp(min=_DELTA**3) ** (1 / 3), t / (3 * _DELTA**2) + 4 / 29)


def _f_inv(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t > _DELTA, t**3, 3 * _DELTA**2 * (t - 4 / 29))


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """rgb [N, 3, H, W] in [0, 1] -> Lab [N, 3, H, W] (L in [0, 100])."""
    rgb = rgb.float()
    m, white = _XYZ_FROM_RGB.to(rgb.device), _WHITE.to(rgb.device)
    xyz = torch.einsum("ij,njhw->nihw", m, _srgb_to_linear(rgb)) / white[:, None, None]  # [N, 3, H, W]
    fx, fy, fz = _f(xyz).unbind(1)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], 1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Lab [N, 3, H, W] -> sRGB [N, 3, H, W], not clipped (out-of-gamut colours leave [0, 1])."""
    lab = lab.float()
    L, a, b = lab.unbind(1)
    fy = (L + 16) / 116
    xyz = torch.stack([_f_inv(fy + a / 500), _f_inv(fy), _f_inv(fy - b / 200)], 1)  # [N, 3, H, W]
    xyz = xyz * _WHITE.to(lab.device)[:, None, None]
    lin = torch.einsum("ij,njhw->nihw", torch.linalg.inv(_XYZ_FROM_RGB).to(lab.device), xyz)
    return _linear_to_srgb(lin)


def gray_rgb(L: torch.Tensor) -> torch.Tensor:
    """L [N, 1, H, W] -> the grey sRGB image with that lightness (a = b = 0), [N, 3, H, W].

    With a = b = 0 the XYZ is a multiple of the white point, so R = G = B: replicating L as an
    RGB image loses nothing and keeps the backbone an RGB encoder.
    """
    y = _f_inv((L.float() + 16) / 116)
    return _linear_to_srgb(y).clamp(0, 1).expand(-1, 3, -1, -1)


@functools.lru_cache(maxsize=8)
def _in_gamut_centres(grid: float, steps: int) -> torch.Tensor:
    axis = torch.linspace(0, 1, steps)
    cube = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij")).reshape(1, 3, -1, 1)  # every sRGB colour
    ab = rgb_to_lab(cube)[0, 1:, :, 0].T  # [steps^3, 2]
    cells = torch.unique(torch.round(ab / grid).long(), dim=0)  # [Q, 2], a-major order
    return cells.float() * grid


def ab_bin_centres(grid: float = 10.0, steps: int = 64) -> torch.Tensor:
    """Centres [Q, 2] (a, b) of the `grid`-wide ab cells that some sRGB colour falls into.

    The sRGB cube is sampled at `steps` levels per channel; a cell is in gamut when a sample
    rounds to it. For grid 10 this gives 261 cells spanning the same ranges as the paper's
    313-cell set (a in [-90, 100], b in [-110, 90]); that set (pts_in_hull.npy) is a hull, so
    it also keeps cells between the ones sRGB colours reach. Grid 20 gives 76 cells.
    """
    return _in_gamut_centres(float(grid), steps).clone()


def nearest_bin(ab: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """ab [M, 2] -> index of the nearest centre [M]."""
    return torch.cdist(ab.float(), centres).argmin(1)


def soft_encode(ab: torch.Tensor, centres: torch.Tensor, k: int = 5, sigma: float = 5.0) -> torch.Tensor:
    """ab [M, 2] -> target distributions [M, Q]: the k nearest centres, weighted by a Gaussian."""
    dist = torch.cdist(ab.float(), centres)  # [M, Q]
    d, idx = dist.topk(min(k, centres.shape[0]), dim=1, largest=False)  # [M, k]
    w = torch.softmax(-(d**2) / (2 * sigma**2), dim=1)  # normalised Gaussian weights
    return torch.zeros_like(dist).scatter_(1, idx, w)


def annealed_mean(probs: torch.Tensor, centres: torch.Tensor, temperature: float = 0.38) -> torch.Tensor:
    """probs [M, Q] -> ab [M, 2]: the mean of the distribution sharpened to exp(log p / T)."""
    sharp = torch.softmax(torch.log(probs.float().clamp(min=1e-12)) / temperature, dim=1)
    return sharp @ centres


def rebalance_weights(counts: torch.Tensor, centres: torch.Tensor, lam: float = 0.5, sigma: float = 5.0) -> torch.Tensor:
    """Per-bin weights [Q] from bin counts [Q]: w ~ ((1 - lam) p~ + lam / Q)^-1, E_p~[w] = 1.

    p~ is the empirical distribution smoothed by a Gaussian over the ab plane. With no counts
    yet every weight is 1.
    """
    total = counts.sum()
    if total <= 0:
        return torch.ones_like(counts, dtype=torch.float32)
    kernel = torch.exp(-torch.cdist(centres, centres) ** 2 / (2 * sigma**2))  # [Q, Q]
    smoothed = kernel @ (counts.float() / total)
    smoothed = smoothed / smoothed.sum()
    w = 1.0 / ((1 - lam) * smoothed + lam / centres.shape[0])
    return w / (smoothed * w).sum()
