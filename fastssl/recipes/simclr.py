"""SimCLR recipes, including `default`, the built-in-data quick start."""

from __future__ import annotations

from fastssl.config import Config
from fastssl.recipes.datasets import cifar10, digits, imagenet
from fastssl.registry import RECIPES


@RECIPES.register("default")
def default() -> Config:
    """SimCLR on the built-in 8x8 digits (upscaled to 16 px): trains in minutes on 2 CPU cores."""
    c = digits("default", "resnet-tiny")
    c.aug.crop_scale_min, c.aug.flip_p = 0.3, 0.0  # digits are not mirror-symmetric
    c.aug.jitter_p, c.aug.grayscale_p = 0.8, 0.0
    c.aug.blur_p, c.aug.solarize_p = (0.0, 0.0), (0.0, 0.0)  # 16 px is too small to blur
    m = c.set_method("simclr")
    m.temperature, m.proj_hidden_dim, m.proj_dim = 0.2, 256, 64  # measured on digits (README)
    c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.warmup_epochs = "adamw", 0.002, 1e-4, 2
    c.train.epochs, c.train.batch_size = 20, 128
    return c


def default_with(name: str, method: str) -> Config:
    """The digits setting of `default` (tiny ResNet, 16 px, batch 128, 20 epochs, AdamW) with
    `method` in place of SimCLR: the base of most `*-cpu` recipes."""
    c = default()
    c.recipe = name
    c.set_method(method)
    c.train.out = f"runs/{name}"
    return c


@RECIPES.register("simclr-resnet18-cifar10")
def simclr_resnet18_cifar10() -> Config:
    """SimCLR's CIFAR-10 setting: ResNet-18 with the 3x3 stem, no blur, T = 0.5."""
    # Chen et al. 2020, App. B.9: CIFAR-10 with the 3x3 stem and no max-pool, no blur, colour
    # strength 0.5, T = 0.5, LARS, lr = 0.3 x batch/256 at batch 512 (Fig. B.7's best), wd 1e-6.
    c = cifar10("simclr-resnet18-cifar10", "resnet18-cifar")
    c.aug.brightness, c.aug.contrast, c.aug.saturation, c.aug.hue = 0.4, 0.4, 0.4, 0.1
    c.aug.blur_p, c.aug.solarize_p = (0.0, 0.0), (0.0, 0.0)
    m = c.set_method("simclr")
    m.temperature, m.proj_hidden_dim, m.proj_dim = 0.5, 2048, 128
    # LARS eta = 0.001 as in SimCLR's lars_optimizer.py (the OptimConfig default).
    c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.warmup_epochs = "lars", 0.3, 1e-6, 10
    c.train.epochs, c.train.batch_size = 800, 512
    return c


@RECIPES.register("simclr-resnet50-imagenet")
def simclr_resnet50_imagenet() -> Config:
    """SimCLR's ImageNet setting (batch 4096, LARS lr 4.8, T = 0.1), for GPU runs with DALI."""
    # Chen et al. 2020, Sec. B.1 / google-research/simclr run.py: batch 4096, LARS with
    # lr = 0.3 x batch/256 = 4.8, eta 0.001, wd 1e-6, 10 warm-up epochs, T = 0.1, colour strength
    # 1.0 (0.8, 0.8, 0.8, 0.2), blur p = 0.5 on both views, 100 epochs.
    c = imagenet("simclr-resnet50-imagenet", "resnet50")
    c.aug.brightness, c.aug.contrast, c.aug.saturation, c.aug.hue = 0.8, 0.8, 0.8, 0.2
    c.aug.blur_p, c.aug.solarize_p = (0.5, 0.5), (0.0, 0.0)
    m = c.set_method("simclr")
    m.temperature, m.proj_hidden_dim, m.proj_dim = 0.1, 2048, 128
    c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.warmup_epochs = "lars", 0.3, 1e-6, 10
    c.optim.lars_eta = 0.001
    c.train.epochs, c.train.batch_size = 100, 4096
    return c
