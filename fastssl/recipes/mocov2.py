"""MoCo v2 recipes."""

from __future__ import annotations

from fastssl.config import Config
from fastssl.recipes.datasets import cifar10, imagenet
from fastssl.recipes.simclr import default_with
from fastssl.registry import RECIPES


@RECIPES.register("mocov2-cpu")
def mocov2_cpu() -> Config:
    """MoCo v2 on the built-in digits (16 px, tiny ResNet): trains in minutes on 2 CPU cores."""
    # The digits setting of `default` (SimCLR); MoCo's knobs scaled to ~1,600 images and 12
    # steps per epoch, measured on this CPU (README): a queue of 8 batches, momentum 0.99 (the
    # MoCo CIFAR-10 demo's, for short runs; 0.999 barely moves the key encoder in 240 steps),
    # the paper's asymmetric loss (half the cost of a symmetric step), ShuffleBN over 4 groups
    # of 32 as on 4 GPUs.
    c = default_with("mocov2-cpu", "mocov2")
    m = c.method
    m.proj_hidden_dim, m.proj_dim = 256, 64
    m.queue_size, m.temperature, m.symmetric = 1024, 0.2, False
    m.momentum_base = m.momentum_final = 0.99
    m.bn, m.shuffle_bn_groups = "shuffle", 4
    c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.warmup_epochs = "adamw", 0.002, 1e-4, 2
    c.train.epochs, c.train.batch_size = 20, 128
    return c


@RECIPES.register("mocov2-resnet18-cifar10")
def mocov2_resnet18_cifar10() -> Config:
    """MoCo v2+ on CIFAR-10 (solo-learn's setting), with ShuffleBN over 8 groups."""
    # solo-learn scripts/pretrain/cifar/mocov2plus.yaml: ResNet-18, proj 2048 -> 256, queue 32768,
    # T 0.2, tau 0.99 -> 0.999 (cosine), symmetric (mocov2plus.py), SGD lr 0.3 at batch 256,
    # wd 1e-4, warm-up 10 epochs then cosine, 1000 epochs; augmentations/symmetric_weak.yaml:
    # jitter (0.4, 0.4, 0.4, 0.1) p 0.8, grayscale 0.2, blur 0.5, no solarisation.
    # solo-learn uses SyncBN; fastssl defaults to the paper's ShuffleBN, which the MoCo CIFAR-10
    # demo found worth 4 points at 800 epochs (facebookresearch/moco colab, --bn-splits 8).
    c = cifar10("mocov2-resnet18-cifar10", "resnet18-cifar")
    c.aug.brightness, c.aug.contrast, c.aug.saturation, c.aug.hue = 0.4, 0.4, 0.4, 0.1
    c.aug.blur_p, c.aug.solarize_p = (0.5, 0.5), (0.0, 0.0)
    m = c.set_method("mocov2")
    m.proj_hidden_dim, m.proj_dim, m.queue_size, m.temperature = 2048, 256, 32768, 0.2
    m.momentum_base, m.momentum_final, m.symmetric = 0.99, 0.999, True
    m.bn, m.shuffle_bn_groups = "shuffle", 8
    c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.momentum = "sgd", 0.3, 1e-4, 0.9
    c.optim.warmup_epochs = 10
    c.train.epochs, c.train.batch_size = 1000, 256
    return c


@RECIPES.register("mocov2-resnet50-imagenet")
def mocov2_resnet50_imagenet() -> Config:
    """MoCo v2's ImageNet setting (ResNet-50, 200 epochs, K 65536, m 0.999, T 0.2), for GPU runs."""
    # Chen et al. 2020 (MoCo v2), facebookresearch/moco main_moco.py with --mlp --aug-plus --cos:
    # SGD lr 0.03 at batch 256 (8 GPUs), momentum 0.9, wd 1e-4, 200 epochs, cosine, no warm-up;
    # K 65536, m 0.999, T 0.2; asymmetric loss; ShuffleBN over 8 GPUs x 32 images. Augmentation
    # (--aug-plus): crop 0.2-1, jitter (0.4, 0.4, 0.4, 0.1) p 0.8, grayscale 0.2, blur p 0.5, flip.
    c = imagenet("mocov2-resnet50-imagenet", "resnet50")
    c.aug.crop_scale_min = 0.2
    c.aug.brightness, c.aug.contrast, c.aug.saturation, c.aug.hue = 0.4, 0.4, 0.4, 0.1
    c.aug.blur_p, c.aug.solarize_p = (0.5, 0.5), (0.0, 0.0)
    m = c.set_method("mocov2")
    m.proj_hidden_dim, m.proj_dim, m.queue_size, m.temperature = 2048, 128, 65536, 0.2
    m.momentum_base = m.momentum_final = 0.999
    m.bn, m.shuffle_bn_groups, m.symmetric = "shuffle", 8, False
    c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.momentum = "sgd", 0.03, 1e-4, 0.9
    c.optim.warmup_epochs = 0
    c.train.epochs, c.train.batch_size = 200, 256
    return c
