"""Recipes: named, complete configs. `--recipe NAME` starts from one; overrides go on top."""

from __future__ import annotations

import difflib
from typing import Callable

from fastssl.config import Config
from fastssl.errors import FastSSLError


def default() -> Config:
    """SimCLR on the built-in 8x8 digits (upscaled to 16 px): trains in minutes on 2 CPU cores."""
    c = Config(recipe="default")
    c.data.dataset, c.data.image_size, c.data.num_workers = "digits", 16, 2
    c.aug.crop_scale_min, c.aug.flip_p = 0.3, 0.0  # digits are not mirror-symmetric
    c.aug.jitter_p, c.aug.grayscale_p = 0.8, 0.0
    c.aug.blur_p, c.aug.solarize_p = (0.0, 0.0), (0.0, 0.0)  # 16 px is too small to blur
    c.model.name = "resnet-tiny"
    c.method.name, c.method.temperature = "simclr", 0.2
    c.method.proj_hidden_dim, c.method.proj_dim = 256, 64
    c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.warmup_epochs = "adamw", 0.002, 1e-4, 2
    c.train.epochs, c.train.batch_size, c.train.out = 20, 128, "runs/default"
    return c


def simclr_resnet18_cifar10() -> Config:
    """SimCLR's CIFAR-10 setting: ResNet-18 with the 3x3 stem, no blur, T = 0.5."""
    c = Config(recipe="simclr-resnet18-cifar10")
    c.data.dataset, c.data.image_size, c.data.num_workers = "npz", 32, 4
    c.aug.brightness, c.aug.contrast, c.aug.saturation, c.aug.hue = 0.4, 0.4, 0.4, 0.1
    c.aug.blur_p, c.aug.solarize_p = (0.0, 0.0), (0.0, 0.0)
    c.aug.normalize_mean, c.aug.normalize_std = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)
    c.model.name = "resnet18-cifar"
    c.method.name, c.method.temperature = "simclr", 0.5
    c.method.proj_hidden_dim, c.method.proj_dim = 2048, 128
    c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.warmup_epochs = "lars", 0.3, 1e-6, 10
    c.train.epochs, c.train.batch_size, c.train.out = 800, 512, "runs/simclr-resnet18-cifar10"
    return c


def byol_resnet18_cifar10() -> Config:
    """BYOL on CIFAR-10 (solo-learn's setting): asymmetric solarisation, tau 0.99 -> 1."""
    c = simclr_resnet18_cifar10()
    c.recipe = "byol-resnet18-cifar10"
    c.aug.solarize_p = (0.0, 0.2)
    c.method.name = "byol"
    c.method.proj_hidden_dim, c.method.proj_dim, c.method.pred_hidden_dim = 4096, 256, 4096
    c.method.momentum_base, c.method.momentum_final = 0.99, 1.0
    c.optim.name, c.optim.base_lr, c.optim.weight_decay = "lars", 1.0, 1e-5
    c.train.batch_size, c.train.out = 256, "runs/byol-resnet18-cifar10"
    return c


def simclr_resnet50_imagenet() -> Config:
    """SimCLR's ImageNet setting (batch 4096, LARS lr 4.8, T = 0.1), for GPU runs with DALI."""
    c = Config(recipe="simclr-resnet50-imagenet")
    c.data.dataset, c.data.image_size, c.data.backend, c.data.num_workers = "folder", 224, "auto", 8
    c.data.dtype = "bf16"
    c.aug.brightness, c.aug.contrast, c.aug.saturation, c.aug.hue = 0.8, 0.8, 0.8, 0.2
    c.aug.blur_p, c.aug.solarize_p = (0.5, 0.5), (0.0, 0.0)
    c.model.name = "resnet50"
    c.method.name, c.method.temperature = "simclr", 0.1
    c.method.proj_hidden_dim, c.method.proj_dim = 2048, 128
    c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.warmup_epochs = "lars", 0.3, 1e-6, 10
    c.train.epochs, c.train.batch_size, c.train.out = 100, 4096, "runs/simclr-resnet50-imagenet"
    c.train.knn_at_end = False
    return c


RECIPES: dict[str, Callable[[], Config]] = {
    "default": default,
    "simclr-resnet18-cifar10": simclr_resnet18_cifar10,
    "byol-resnet18-cifar10": byol_resnet18_cifar10,
    "simclr-resnet50-imagenet": simclr_resnet50_imagenet,
}


def get_recipe(name: str) -> Config:
    if name not in RECIPES:
        close = difflib.get_close_matches(name, list(RECIPES), n=1, cutoff=0.4)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise FastSSLError(f"unknown recipe '{name}'.{hint} Run `fastssl recipes` to list them.")
    return RECIPES[name]()
