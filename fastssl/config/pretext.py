"""Method configs of the pretext family; each method registers its class with it (fastssl/registry.py).

Every default cites its paper or repository.
Sizes that depend on the image (jigsaw tiles, CPC patches, colourisation cells) are set by the
recipes; the defaults here are the papers' ImageNet settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastssl.config.methods import MethodConfig


@dataclass
class RotationConfig(MethodConfig):
    name: str = "rotation"
    # Gidaris et al. 2018 (RotNet), Sec. 2.2 / FeatureLearningRotNet dataloader.py: all four
    # rotated copies of every image go into the same mini-batch ("all"), which the paper found
    # better than one random rotation per image ("random").
    rotations: str = "all"
    # FeatureLearningRotNet architectures/NetworkInNetwork.py: the rotation classifier is global
    # average pooling + one Linear layer, so 0 (no hidden layer) is the paper's head.
    head_hidden_dim: int = 0

    def check(self) -> list[tuple[str, str]]:
        problems = super().check()
        if self.rotations not in ("all", "random"):
            problems.append(("rotations", f"must be 'all' or 'random', got {self.rotations!r}"))
        if self.head_hidden_dim < 0:
            problems.append(("head_hidden_dim", f"must be >= 0 (0 = linear head), got {self.head_hidden_dim}"))
        return problems


@dataclass
class JigsawConfig(MethodConfig):
    name: str = "jigsaw"
    # Noroozi & Favaro 2016, Sec. 3.2 and Table 3: 1000 permutations chosen greedily for maximal
    # average Hamming distance (their Algorithm 1), starting from a random one (seeded here).
    num_permutations: int = 1000
    perm_seed: int = 0
    # Extra constraint (not in the paper): every pair of selected permutations differs in at
    # least this many positions; 0 = the paper's unconstrained greedy selection.
    min_hamming: int = 0
    # Sec. 3.1: a 225 px image is split into 3x3 cells of 75 px and a 64 px tile is cropped at a
    # random position inside each cell (gaps and per-tile jitter against edge-continuity
    # shortcuts). tile_size = 0 derives it as round(cell * 64 / 75); tile_size = cell turns both off.
    tile_size: int = 0
    # Sec. 3.1 / bbrattoli/JigsawPuzzlePytorch JigsawImageLoader.py: each tile is normalised to
    # zero mean and unit std on its own, so low-level statistics cannot solve the puzzle.
    tile_normalize: bool = True
    # bbrattoli JigsawNetwork.py: a shared fc6 of 1024 per tile, then fc7 of 4096 over the 9
    # concatenated tiles and fc8 over the permutations (dropout 0.5 after fc6 and fc7).
    tile_dim: int = 1024
    head_hidden_dim: int = 4096
    dropout: float = 0.5

    def check(self) -> list[tuple[str, str]]:
        problems = super().check()
        if not 2 <= self.num_permutations <= 362880:
            problems.append(("num_permutations", f"must be in [2, 9!], got {self.num_permutations}"))
        if not 0 <= self.min_hamming <= 9:
            problems.append(("min_hamming", f"must be in [0, 9], got {self.min_hamming}"))
        for key in ("tile_dim", "head_hidden_dim"):
            if getattr(self, key) < 1:
                problems.append((key, f"must be >= 1, got {getattr(self, key)}"))
        if self.tile_size < 0:
            problems.append(("tile_size", f"must be >= 0 (0 = 64/75 of a cell), got {self.tile_size}"))
        if not 0 <= self.dropout < 1:
            problems.append(("dropout", f"must be in [0, 1), got {self.dropout}"))
        return problems


@dataclass
class ColorizeConfig(MethodConfig):
    name: str = "colorize"
    # Zhang, Isola, Efros 2016 (Sec. 2.1): the ab plane quantised with grid size 10, keeping the
    # Q = 313 in-gamut bins (richzhang/colorization pts_in_hull.npy). Here the in-gamut bins are
    # computed (a bin is kept when some L in [0, 100] maps it into sRGB), see methods/lab_colour.py.
    ab_grid: float = 10.0
    # Sec. 2.1: soft-encode each ab target over its 5 nearest bins with a Gaussian of sigma 5.
    soft_neighbours: int = 5
    soft_sigma: float = 5.0
    # Sec. 2.2: rebalancing weights w ~ ((1 - lambda) p~ + lambda / Q)^-1 with lambda = 1/2,
    # p~ the empirical ab distribution smoothed by a Gaussian of sigma 5 (estimated here from the
    # images seen so far, updated after each successful step).
    rebalance_lambda: float = 0.5
    prior_sigma: float = 5.0
    # Sec. 2.3: the annealed mean with T = 0.38 turns a predicted distribution into an ab value.
    decode_temperature: float = 0.38
    # richzhang/colorization colorization_train_val_v2.prototxt (NonGrayMaskLayer): images with
    # no ab value above 5 in magnitude carry no loss (grey images teach nothing about colour).
    skip_gray: bool = True
    # The paper predicts ab at 1/4 resolution (56 x 56 at 224 px) from a fully convolutional net.
    # fastssl's backbone contract gives pooled features, so an MLP decodes them to a coarse
    # out_cells x out_cells grid of ab distributions (see methods/colorize.py): 7 x 7 cells of
    # 32 px at 224 px, the resolution of a ResNet's last feature map. Recipes set it per size.
    out_cells: int = 7
    decoder_hidden_dim: int = 1024
    # The loader's normalisation, to recover RGB in [0, 1] for the Lab conversion and to
    # normalise the grey input exactly like the eval transform normalises RGB images. Must equal
    # --aug.normalize_mean/std (checked when the views are built).
    rgb_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    rgb_std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def check(self) -> list[tuple[str, str]]:
        problems = super().check()
        for key in ("ab_grid", "soft_sigma", "prior_sigma", "decode_temperature"):
            if not getattr(self, key) > 0:
                problems.append((key, f"must be > 0, got {getattr(self, key)}"))
        if self.soft_neighbours < 1:
            problems.append(("soft_neighbours", f"must be >= 1, got {self.soft_neighbours}"))
        if not 0 < self.rebalance_lambda <= 1:
            problems.append(("rebalance_lambda", f"must be in (0, 1], got {self.rebalance_lambda}"))
        if self.out_cells < 1:
            problems.append(("out_cells", f"must be >= 1, got {self.out_cells}"))
        if self.decoder_hidden_dim < 1:
            problems.append(("decoder_hidden_dim", f"must be >= 1, got {self.decoder_hidden_dim}"))
        if len(self.rgb_mean) != 3 or len(self.rgb_std) != 3 or min(self.rgb_std) <= 0:
            problems.append(("rgb_std", "rgb_mean and rgb_std need 3 values each and std > 0"))
        return problems


@dataclass
class CPCConfig(MethodConfig):
    name: str = "cpc"
    # Hénaff et al. 2020 (CPC v2), Sec. 3.1 / Oord et al. 2018 Sec. 3.3: overlapping patches on a
    # grid, 64 px at a stride of 32 (half-patch overlap).
    patch_size: int = 64
    patch_stride: int = 32
    # Oord et al. 2018, Sec. 3.3: predict up to 5 rows below. Offsets start at the first row that
    # shares no pixels with the context row (GreedyInfoMax / CPCV2-PyTorch skip_step), so the
    # task cannot be solved by copying the overlap.
    pred_steps: int = 5
    # CPC v2, Fig. 3 ("BU" bottom-up and "HP" horizontal predictions): 4 = predict downwards,
    # upwards, rightwards and leftwards, each with its own context network; 1 = top-down only.
    directions: int = 4
    # Context network: a PixelCNN-style stack of residual masked-convolution blocks (CPC v2,
    # App. A.2; pl_bolts PixelCNN: 5 blocks, 256 hidden channels).
    context_blocks: int = 5
    context_dim: int = 256
    # InfoNCE through fastssl.losses.info_nce, which compares cosine similarities / temperature
    # (CPC uses raw dot products); 0.1 as in MoCo v2 / SimCLR's ImageNet setting.
    temperature: float = 0.1
    # Negatives from every rank's patches (CPC v2 draws them from the whole batch).
    gather_distributed: bool = True
    loss_impl: str = "auto"  # auto | torch | chunked | triton (fastssl.losses)

    def check(self) -> list[tuple[str, str]]:
        problems = super().check()
        for key in ("patch_size", "patch_stride", "pred_steps", "context_blocks", "context_dim"):
            if getattr(self, key) < 1:
                problems.append((key, f"must be >= 1, got {getattr(self, key)}"))
        if self.directions not in (1, 2, 4):
            problems.append(("directions", f"must be 1 (down), 2 (down, up) or 4 (also right, left), got {self.directions}"))
        return problems
