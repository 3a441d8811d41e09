"""Jigsaw puzzles (Noroozi & Favaro, ECCV 2016): recognise which permutation shuffled 9 tiles.

The image is split into a 3x3 grid of cells; one tile is cropped at a random position inside
each cell (the gaps and the jitter stop the network from matching tile edges), the tiles are
shuffled by one permutation of a fixed set, and a context-free network (CFN) predicts which:
the backbone encodes each tile on its own (shared weights), a per-tile fc6 follows, and fc7/fc8
classify the 9 concatenated tile features into the set's `num_permutations` classes.

The set is chosen once, greedily for maximal average Hamming distance (the paper's Algorithm 1),
from a seeded random start, and kept as a buffer so the run's checkpoints carry it.
On tiny images the tiles are tiny too (24 px image -> 8 px cells -> 7 px tiles); the backbone
pools whatever spatial size it is given, and kNN/linear probes later run on whole images.
"""

from __future__ import annotations

import functools
import itertools
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fastssl.config.pretext import JigsawConfig
from fastssl.errors import FastSSLError
from fastssl.methods.base import SSLMethod
from fastssl.methods.batch_draws import global_randint
from fastssl.models.backbone import Backbone
from fastssl.registry import METHODS

if TYPE_CHECKING:
    from fastssl.config import Config
    from fastssl.data.views import ViewSpec

GRID = 3
NUM_TILES = GRID * GRID


@functools.lru_cache(maxsize=4)
def _maximal_hamming_permutations(num: int, seed: int, min_hamming: int) -> torch.Tensor:
    # numpy: this loop runs up to 1000 times over 9! candidates, and numpy's single-threaded
    # byte additions are several times faster than torch's here.
    candidates = np.array(list(itertools.permutations(range(NUM_TILES))), dtype=np.uint8)  # [9!, 9]
    total = candidates.shape[0]
    # same[i][v] [9!] = 1 where a candidate puts tile v at position i. Hamming distance to p is
    # 9 - (positions that agree), so maximising the summed distance to the selected set is
    # minimising the summed agreement: nine byte-vector additions per selected permutation.
    same = [[(candidates[:, i] == v).astype(np.uint8) for v in range(NUM_TILES)] for i in range(NUM_TILES)]
    agree_sum = np.zeros(total, np.int32)  # summed agreement with the selected set
    agree_max = np.zeros(total, np.uint8)  # agreement with the closest selected one
    agree = np.empty(total, np.uint8)
    free = np.ones(total, bool)
    j = int(torch.randint(total, (1,), generator=torch.Generator().manual_seed(seed)))
    chosen = [j]
    for _ in range(num - 1):
        p = candidates[j]
        np.copyto(agree, same[0][p[0]])  # [9!] positions each candidate shares with the newest
        for i in range(1, NUM_TILES):
            agree += same[i][p[i]]
        agree_sum += agree
        np.maximum(agree_max, agree, out=agree_max)
        free[j] = False
        eligible = free & (agree_max <= NUM_TILES - min_hamming)
        if not eligible.any():
            raise FastSSLError(
                f"only {len(chosen)} permutations are {min_hamming} apart; lower --method.min_hamming "
                f"or --method.num_permutations={num}"
            )
        # Algorithm 1: the candidate with the largest mean distance to the set (the first on ties).
        j = int(np.where(eligible, agree_sum, np.iinfo(np.int32).max).argmin())
        chosen.append(j)
    return torch.from_numpy(candidates[chosen].astype(np.int64))


def maximal_hamming_permutations(num: int, seed: int = 0, min_hamming: int = 0) -> torch.Tensor:
    """`num` permutations of 9 tiles, greedily maximising the mean Hamming distance: int64 [num, 9]."""
    return _maximal_hamming_permutations(num, seed, min_hamming).clone()


def tile_size_for(cell: int, tile_size: int) -> int:
    """The paper's 64 px tiles in 75 px cells, scaled to `cell` (0 = derive), at least 1 px."""
    return tile_size if tile_size > 0 else max(1, round(cell * 64 / 75))


def cut_tiles(x: torch.Tensor, tile: int, offsets: torch.Tensor) -> torch.Tensor:
    """The 3x3 tiles of x [N, C, S, S] in raster order: [N, 9, C, tile, tile].

    offsets [N, 9, 2] (int, in [0, cell - tile]) place each tile inside its cell (row, column).
    The grid covers the central 3 * (S // 3) pixels.
    """
    n, _, size, _ = x.shape
    cell = size // GRID
    origin = (size - GRID * cell) // 2
    pos = torch.arange(NUM_TILES, device=x.device)
    top = origin + (pos // GRID) * cell + offsets[..., 0]  # [N, 9]
    left = origin + (pos % GRID) * cell + offsets[..., 1]  # [N, 9]
    ar = torch.arange(tile, device=x.device)
    rows, cols = top[..., None] + ar, left[..., None] + ar  # [N, 9, tile] each
    img = torch.arange(n, device=x.device)[:, None, None, None]
    tiles = x[img, :, rows[..., :, None], cols[..., None, :]]  # [N, 9, tile, tile, C]
    return tiles.permute(0, 1, 4, 2, 3)


def shuffle_tiles(tiles: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Position i of image n receives tile order[n, i]: tiles [N, 9, ...], order [N, 9] -> [N, 9, ...]."""
    idx = order.view(*order.shape, *([1] * (tiles.dim() - 2))).expand_as(tiles)
    return tiles.gather(1, idx)


def normalize_tiles(tiles: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Each tile [.., C, t, t] to zero mean and unit std over its pixels and channels."""
    mean = tiles.mean(dim=(-3, -2, -1), keepdim=True)
    var = tiles.var(dim=(-3, -2, -1), keepdim=True, unbiased=False)
    return (tiles - mean) / torch.sqrt(var + eps)


@METHODS.register("jigsaw", config=JigsawConfig)
class Jigsaw(SSLMethod):
    def __init__(self, backbone: Backbone, cfg: JigsawConfig):
        super().__init__(backbone, cfg)
        # A buffer: saved in every checkpoint, so the classes keep their meaning on resume.
        self.register_buffer("permutations", maximal_hamming_permutations(
            cfg.num_permutations, cfg.perm_seed, cfg.min_hamming))  # [P, 9]
        self.fc6 = nn.Sequential(nn.Linear(backbone.num_features, cfg.tile_dim), nn.ReLU(inplace=True),
                                 nn.Dropout(cfg.dropout))
        self.fc7 = nn.Sequential(nn.Linear(NUM_TILES * cfg.tile_dim, cfg.head_hidden_dim), nn.ReLU(inplace=True),
                                 nn.Dropout(cfg.dropout))
        self.fc8 = nn.Linear(cfg.head_hidden_dim, cfg.num_permutations)

    @classmethod
    def view_spec(cls, cfg: "Config") -> "ViewSpec":
        from fastssl.data.views import views_from_aug

        m = cfg.method
        cell = cfg.data.image_size // GRID
        if cell < 1 or tile_size_for(cell, m.tile_size) > cell:
            raise FastSSLError(
                f"jigsaw tiles of {tile_size_for(max(cell, 1), m.tile_size)} px do not fit 3x3 cells of "
                f"data.image_size={cfg.data.image_size}; raise --data.image_size or lower --method.tile_size"
            )
        return views_from_aug(cfg.aug, cfg.data.image_size, num_global=1)

    def make_puzzles(self, x: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, C, S, S] -> shuffled tiles [N, 9, C, t, t] and permutation labels [N]."""
        n, cell = x.shape[0], x.shape[-1] // GRID
        tile = tile_size_for(cell, self.cfg.tile_size)
        if tile > cell:
            raise FastSSLError(f"--method.tile_size={tile} exceeds the {cell} px cells of {x.shape[-1]} px views")
        offsets = global_randint(cell - tile + 1, n, NUM_TILES, 2, step=step, salt="jigsaw-jitter", device=x.device)
        labels = global_randint(self.permutations.shape[0], n, step=step, salt="jigsaw-perm", device=x.device)
        tiles = cut_tiles(x, tile, offsets)  # [N, 9, C, t, t]
        if self.cfg.tile_normalize:
            tiles = normalize_tiles(tiles)
        return shuffle_tiles(tiles, self.permutations[labels]), labels

    def forward_tiles(self, tiles: torch.Tensor) -> torch.Tensor:
        """The CFN: tiles [N, 9, C, t, t] -> permutation logits [N, P]."""
        n = tiles.shape[0]
        feats = self.fc6(self.backbone(tiles.flatten(0, 1)))  # [9N, tile_dim], one shared encoder
        return self.fc8(self.fc7(feats.view(n, -1)))  # [N, 9 * tile_dim] -> [N, P]

    def forward(self, views: list[torch.Tensor], step: int = 0, schedule_len: float = 1.0) -> dict[str, torch.Tensor]:
        x = views[0]  # [N, 3, S, S]
        tiles, labels = self.make_puzzles(x, step)
        logits = self.forward_tiles(tiles)  # [N, P]
        loss = F.cross_entropy(logits, labels)
        with torch.no_grad():
            accuracy = (logits.argmax(1) == labels).float().mean()
        return {"loss": loss, "jigsaw_acc": accuracy}
