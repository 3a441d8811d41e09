"""Pretext-task recipes: rotation (RotNet), jigsaw, colourisation and CPC v2.

The `*-cpu` recipes run on the built-in digits in minutes on 2 CPU cores (measured numbers in
the README's method table / the session report); the others carry the papers' settings. The
schedule is fastssl's warm-up + cosine; the papers' step schedules are noted where they differ.
"""

from __future__ import annotations

from fastssl.config import Config
from fastssl.recipes.datasets import CIFAR10_MEAN, CIFAR10_STD, cifar10, digits, imagenet
from fastssl.registry import RECIPES


def _digits(name: str, size: int) -> Config:
    c = digits(name, "resnet-tiny", size)
    # Pretext targets are built from one view: a crop and nothing else. Digits are not mirror
    # symmetric (a flip would also alias with rotations) and are grey (colour jitter is a no-op).
    c.aug.crop_scale_min, c.aug.crop_scale_max, c.aug.flip_p = 0.5, 1.0, 0.0
    c.aug.jitter_p, c.aug.grayscale_p = 0.0, 0.0
    c.aug.blur_p, c.aug.solarize_p = (0.0, 0.0), (0.0, 0.0)
    c.train.batch_size = 128
    return c


def _crop_flip_only(c: Config, scale_min: float) -> None:
    c.aug.crop_scale_min, c.aug.crop_scale_max, c.aug.flip_p = scale_min, 1.0, 0.5
    c.aug.jitter_p, c.aug.grayscale_p = 0.0, 0.0
    c.aug.blur_p, c.aug.solarize_p = (0.0, 0.0), (0.0, 0.0)



# --- rotation ----------------------------------------------------------------------------------
@RECIPES.register("rotation-cpu")
def rotation_cpu() -> Config:
    """RotNet on the built-in digits (all 4 rotations per image, 16 px): minutes on 2 CPU cores."""
    c = _digits("rotation-cpu", 16)
    m = c.set_method("rotation")
    m.rotations, m.head_hidden_dim = "all", 0
    # RotNet's optimiser (SGD, momentum 0.9, wd 5e-4, lr 0.1 at batch 128: FeatureLearningRotNet
    # config/CIFAR10_RotNet_NIN4blocks.py), with fastssl's warm-up + cosine and 20 epochs.
    c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.warmup_epochs = "sgd", 0.2, 5e-4, 1
    c.train.epochs = 20
    return c


@RECIPES.register("rotation-resnet18-cifar10")
def rotation_resnet18_cifar10() -> Config:
    """RotNet's CIFAR-10 setting (SGD lr 0.1, batch 128, wd 5e-4, 200 epochs) on a CIFAR ResNet-18."""
    # FeatureLearningRotNet config/CIFAR10_RotNet_NIN4blocks.py: batch 128 (x4 rotated copies),
    # SGD nesterov, momentum 0.9, wd 5e-4, lr 0.1 dropped x0.2 at epochs 60/120/160, 200 epochs;
    # random crop + flip. The paper's network is a 4-block NIN; ResNet-18 (CIFAR stem) stands in,
    # and cosine replaces the step schedule (no nesterov).
    c = cifar10("rotation-resnet18-cifar10", "resnet18-cifar")
    _crop_flip_only(c, 0.6)
    c.set_method("rotation").rotations = "all"
    c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.warmup_epochs = "sgd", 0.2, 5e-4, 0
    c.train.epochs, c.train.batch_size = 200, 128
    return c


@RECIPES.register("rotation-resnet50-imagenet")
def rotation_resnet50_imagenet() -> Config:
    """RotNet's ImageNet setting (batch 192, SGD lr 0.01, wd 5e-4) on a ResNet-50."""
    # FeatureLearningRotNet config/ImageNet_RotNet_AlexNet.py: batch 192 (x4 copies), SGD
    # momentum 0.9, wd 5e-4, lr 0.01 dropped x10 at epochs 15/30/45, 50 epochs, random-sized
    # crop. AlexNet in the paper; ResNet-50 here (the paper's Table 8 also reports one).
    c = imagenet("rotation-resnet50-imagenet", "resnet50")
    _crop_flip_only(c, 0.08)
    c.set_method("rotation").rotations = "all"
    c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.warmup_epochs = "sgd", 0.01 * 256 / 192, 5e-4, 0
    c.train.epochs, c.train.batch_size = 50, 192
    return c


# --- jigsaw ------------------------------------------------------------------------------------
@RECIPES.register("jigsaw-cpu")
def jigsaw_cpu() -> Config:
    """Jigsaw on the built-in digits at 24 px (3x3 cells of 8 px, 7 px tiles), 100 permutations."""
    c = _digits("jigsaw-cpu", 24)
    m = c.set_method("jigsaw")
    m.num_permutations, m.tile_size, m.tile_normalize = 100, 7, True
    m.tile_dim, m.head_hidden_dim, m.dropout = 128, 512, 0.5
    c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.warmup_epochs = "adamw", 0.002, 1e-4, 2
    c.train.epochs = 20
    return c


@RECIPES.register("jigsaw-resnet50-imagenet")
def jigsaw_resnet50_imagenet() -> Config:
    """Noroozi & Favaro's ImageNet setting: 225 px, 75 px cells, 64 px tiles, 1000 permutations."""
    # Paper Sec. 3.1-3.2: 225 px crops, 3x3 cells of 75 px, 64 px tiles, 1000 permutations of
    # maximal Hamming distance, tiles normalised one by one. bbrattoli/JigsawPuzzlePytorch
    # (JigsawTrain.py, run_jigsaw_training.sh): SGD momentum 0.9, wd 5e-4, lr 0.001 at batch 128,
    # x0.1 every 20 of 70 epochs. The CFN's AlexNet trunk is a ResNet-50 here.
    c = imagenet("jigsaw-resnet50-imagenet", "resnet50", image_size=225, dtype="fp32")
    _crop_flip_only(c, 0.08)
    m = c.set_method("jigsaw")
    m.num_permutations, m.tile_size = 1000, 64
    c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.warmup_epochs = "sgd", 0.002, 5e-4, 0
    c.train.epochs, c.train.batch_size = 70, 256
    return c


# --- colourisation -----------------------------------------------------------------------------
@RECIPES.register("colorize-cpu")
def colorize_cpu() -> Config:
    """Colourisation on the built-in digits (16 px, 4x4 cells): a pipeline check, digits are grey."""
    # The digits have no colour (a = b = 0 everywhere), so every image is grey and carries no
    # loss (skip_gray, as the reference code). This recipe checks the pipeline; learning needs
    # colour images: see colorize-cifar10-cpu.
    c = _digits("colorize-cpu", 16)
    m = c.set_method("colorize")
    m.ab_grid, m.out_cells, m.decoder_hidden_dim = 20.0, 4, 256
    m.rgb_mean, m.rgb_std = c.aug.normalize_mean, c.aug.normalize_std
    c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.warmup_epochs = "adamw", 0.002, 1e-4, 2
    c.train.epochs = 20
    return c


@RECIPES.register("colorize-cifar10-cpu")
def colorize_cifar10_cpu() -> Config:
    """Colourisation on 5,000 CIFAR-10 images at 16 px (npz shards, --data.path): minutes on 2 cores."""
    c = Config(recipe="colorize-cifar10-cpu")
    c.data.dataset, c.data.image_size, c.data.num_workers, c.data.limit = "npz", 16, 2, 5000
    _crop_flip_only(c, 0.5)
    c.aug.normalize_mean, c.aug.normalize_std = CIFAR10_MEAN, CIFAR10_STD
    c.model.name = "resnet-tiny"
    m = c.set_method("colorize")
    m.ab_grid, m.out_cells, m.decoder_hidden_dim = 20.0, 4, 256
    m.rgb_mean, m.rgb_std = CIFAR10_MEAN, CIFAR10_STD
    c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.warmup_epochs = "adamw", 0.002, 1e-4, 1
    c.train.epochs, c.train.batch_size, c.train.out = 5, 128, "runs/colorize-cifar10-cpu"
    return c


@RECIPES.register("colorize-resnet50-imagenet")
def colorize_resnet50_imagenet() -> Config:
    """Zhang et al.'s ImageNet setting (Adam lr 3e-5, betas 0.9/0.99, wd 1e-3, batch 40), coarse 7x7 ab."""
    # richzhang/colorization train/solver.prototxt: Adam, base_lr 3e-5, momentum 0.9, momentum2
    # 0.99, weight_decay 1e-3, 500k iterations (x0.1 at 225k); models/colorization_train_val_v2
    # .prototxt: batch 40, 176 px crops with mirroring; Q = 313 bins of grid 10 (grid 10 here).
    c = imagenet("colorize-resnet50-imagenet", "resnet50", image_size=176, dtype="fp32")
    _crop_flip_only(c, 0.08)
    m = c.set_method("colorize")
    m.ab_grid, m.out_cells = 10.0, 7
    c.optim.name, c.optim.base_lr, c.optim.betas = "adamw", 3e-5 * 256 / 40, (0.9, 0.99)
    # Caffe's weight_decay is L2 added to the gradient; AdamW decouples it (the closest fastssl has).
    c.optim.weight_decay, c.optim.warmup_epochs = 1e-3, 0
    c.train.epochs, c.train.batch_size = 16, 40
    return c


# --- CPC v2 ------------------------------------------------------------------------------------
@RECIPES.register("cpc-cpu")
def cpc_cpu() -> Config:
    """CPC v2 on the built-in digits at 16 px: a 3x3 grid of 8 px patches (stride 4), 4 directions."""
    # The one non-overlapping offset of a 3x3 grid (row 0 -> row 2), in each of the 4 directions:
    # 9 patches per image keep a step within ~1.5x SimCLR's cost on the default recipe.
    c = _digits("cpc-cpu", 16)
    m = c.set_method("cpc")
    m.patch_size, m.patch_stride, m.pred_steps, m.directions = 8, 4, 1, 4
    m.context_blocks, m.context_dim, m.temperature = 2, 128, 0.1
    c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.warmup_epochs = "adamw", 0.002, 1e-4, 2
    c.train.epochs = 20
    return c


@RECIPES.register("cpc-resnet18-cifar10")
def cpc_resnet18_cifar10() -> Config:
    """CPC v2 on CIFAR-10: 8 px patches at stride 4 (7x7 grid), 5 rows ahead, 4 directions."""
    # Lightning-bolts cpc_module.py (CIFAR-10): patch 8, overlap 4, Adam lr 1e-4, betas
    # (0.8, 0.999), wd 1e-5. Directions and offsets as CPC v2 (Fig. 3) and CPC v1 (Sec. 3.3).
    c = cifar10("cpc-resnet18-cifar10", "resnet18-cifar")
    _crop_flip_only(c, 0.6)
    m = c.set_method("cpc")
    m.patch_size, m.patch_stride, m.pred_steps, m.directions = 8, 4, 5, 4
    c.optim.name, c.optim.base_lr, c.optim.betas, c.optim.weight_decay = "adamw", 1e-4, (0.8, 0.999), 1e-5
    c.optim.warmup_epochs = 0
    c.train.epochs, c.train.batch_size = 300, 256
    return c


@RECIPES.register("cpc-resnet50-imagenet")
def cpc_resnet50_imagenet() -> Config:
    """CPC v2 on ImageNet: 256 px, 7x7 grid of 64 px patches at stride 32, 5 rows ahead, 4 directions."""
    # Oord et al. 2018 Sec. 3.3 / Hénaff et al. 2020 Sec. 3.1: 64 px patches with 32 px overlap
    # on a 7x7 grid of a 256 px image; up to 5 rows ahead; v2 predicts in four directions.
    # Optimiser: Lightning-bolts cpc_module.py (Adam lr 1e-4, betas (0.8, 0.999), wd 1e-5).
    # v2's ResNet-161 with LayerNorm is a ResNet-50 (BatchNorm) here.
    c = imagenet("cpc-resnet50-imagenet", "resnet50", image_size=256)
    _crop_flip_only(c, 0.08)
    m = c.set_method("cpc")
    m.patch_size, m.patch_stride, m.pred_steps, m.directions = 64, 32, 5, 4
    c.optim.name, c.optim.base_lr, c.optim.betas, c.optim.weight_decay = "adamw", 1e-4, (0.8, 0.999), 1e-5
    c.optim.warmup_epochs = 0
    c.train.epochs, c.train.batch_size = 100, 512
    return c
