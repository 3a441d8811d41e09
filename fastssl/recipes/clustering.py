"""Clustering-family recipes: SwAV and DeepCluster v2, on the built-in digits and at paper scale."""

from __future__ import annotations

from fastssl.config import Config
from fastssl.recipes.datasets import cifar10, imagenet
from fastssl.recipes.simclr import default_with
from fastssl.registry import RECIPES


@RECIPES.register("swav-cpu")
def swav_cpu() -> Config:
    """SwAV on the built-in digits (16 px, resnet-tiny, 2 + 2 crops): minutes on 2 CPU cores."""
    c = default_with("swav-cpu", "swav")
    # Multi-crop at digit scale: two 16 px global crops and two 8 px local crops of (0.2, 0.5)
    # of the image, the ratio of swav's 224 / 96 px crops of (0.14, 1) / (0.05, 0.14).
    c.aug.local_crops, c.aug.local_size, c.aug.local_scale_min, c.aug.local_scale_max = 2, 8, 0.2, 0.5
    c.aug.local_blur_p = 0.0  # 8 px is too small to blur
    m = c.method
    # More prototypes than embedding dimensions, as swav's 3000 > 128: with K <= D every
    # embedding can be orthogonal to all prototype differences, predictions go uniform and the
    # loss sits at log K (measured here with K = 30, D = 64: stuck at 3.40 from epoch 4). 100
    # prototypes for a batch of 128 is swav's ratio (3000 for 4096); no queue at that ratio.
    m.proj_hidden_dim, m.proj_dim, m.num_prototypes = 256, 32, 100
    m.temperature, m.epsilon, m.queue_length = 0.1, 0.05, 0
    return c


@RECIPES.register("deepcluster-cpu")
def deepcluster_cpu() -> Config:
    """DeepCluster v2 on the built-in digits (16 px, resnet-tiny, k = 30 x 3): minutes on 2 CPU cores."""
    c = default_with("deepcluster-cpu", "deepcluster")
    m = c.method
    # Three k-means of 30 clusters for 10 classes, as main_deepclusterv2.py's 3 x 3000 for 1000.
    m.proj_hidden_dim, m.proj_dim, m.num_prototypes, m.temperature = 256, 64, "30,30,30", 0.1
    return c


def _swav_crops(c: Config) -> None:
    # facebookresearch/swav src/multicropdataset.py and the scripts: 2 x 224 px crops of
    # (0.14, 1) and 6 x 96 px crops of (0.05, 0.14); colour distortion strength 1 (jitter 0.8,
    # 0.8, 0.8, 0.2 with p 0.8, grayscale 0.2), Gaussian blur p 0.5 on every crop, flips, no
    # solarisation.
    c.aug.crop_scale_min, c.aug.crop_scale_max = 0.14, 1.0
    c.aug.local_crops, c.aug.local_size, c.aug.local_scale_min, c.aug.local_scale_max = 6, 96, 0.05, 0.14
    c.aug.brightness, c.aug.contrast, c.aug.saturation, c.aug.hue = 0.8, 0.8, 0.8, 0.2
    c.aug.jitter_p, c.aug.grayscale_p, c.aug.flip_p = 0.8, 0.2, 0.5
    c.aug.blur_p, c.aug.local_blur_p, c.aug.solarize_p = (0.5, 0.5), 0.5, (0.0, 0.0)


@RECIPES.register("swav-resnet50-imagenet")
def swav_resnet50_imagenet() -> Config:
    """SwAV's 800-epoch ImageNet run (batch 4096, 2x224 + 6x96 crops, LARS 4.8), for GPU clusters."""
    # facebookresearch/swav scripts/swav_800ep_pretrain.sh: 64 GPUs x 64 = batch 4096, LARS
    # (LARC, trust 0.001, no clip) base lr 4.8 -> final 0.0048, 10 warm-up epochs, wd 1e-6,
    # eps 0.05, 3 Sinkhorn iterations, T 0.1, 128-d features, 3000 prototypes, no queue,
    # prototypes frozen 313 iterations (one epoch). Linear top-1 75.3% (README).
    c = imagenet("swav-resnet50-imagenet", "resnet50")
    _swav_crops(c)
    m = c.set_method("swav")
    m.proj_hidden_dim, m.proj_dim, m.num_prototypes = 2048, 128, 3000
    m.temperature, m.epsilon, m.sinkhorn_iterations, m.queue_length = 0.1, 0.05, 3, 0
    m.freeze_prototypes_epochs = 1
    c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.warmup_epochs = "lars", 0.3, 1e-6, 10
    c.optim.min_lr_ratio = 0.001  # final_lr 0.0048 of base 4.8 (4.8 = 0.3 x 4096 / 256)
    c.train.epochs, c.train.batch_size = 800, 4096
    return c


@RECIPES.register("swav-resnet50-imagenet-bs256")
def swav_resnet50_imagenet_bs256() -> Config:
    """SwAV at batch 256 (200 epochs, a queue of 3840 from epoch 15): one 8-GPU node."""
    # facebookresearch/swav scripts/swav_200ep_bs256_pretrain.sh: batch 256 (4 x 64), base lr
    # 0.6 -> 0.0006 (SGD under LARC), no warm-up, queue 3840 from epoch 15, prototypes frozen
    # 5005 iterations (one epoch at batch 256). Linear top-1 72.7% (README, 200 epochs).
    c = swav_resnet50_imagenet()
    c.recipe, c.train.out = "swav-resnet50-imagenet-bs256", "runs/swav-resnet50-imagenet-bs256"
    c.method.queue_length, c.method.queue_start_epoch = 3840, 15
    c.optim.base_lr, c.optim.warmup_epochs, c.optim.min_lr_ratio = 0.6, 0, 0.001  # 0.6 = 0.6 x 256 / 256
    c.train.epochs, c.train.batch_size = 200, 256
    return c


@RECIPES.register("deepcluster-resnet50-imagenet")
def deepcluster_resnet50_imagenet() -> Config:
    """DeepCluster v2's 800-epoch ImageNet run (3 x 3000 clusters, 2x224 + 6x96 crops), for GPU clusters."""
    # facebookresearch/swav scripts/deepclusterv2_800ep_pretrain.sh: batch 4096, LARS 4.8 ->
    # 0.0048, 10 warm-up epochs, wd 1e-6, T 0.1, 128-d features, --nmb_prototypes 3000 3000
    # 3000, prototypes never trained. Linear top-1 75.2% (README).
    c = imagenet("deepcluster-resnet50-imagenet", "resnet50")
    _swav_crops(c)
    m = c.set_method("deepcluster")
    m.proj_hidden_dim, m.proj_dim, m.num_prototypes, m.temperature = 2048, 128, "3000,3000,3000", 0.1
    c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.warmup_epochs = "lars", 0.3, 1e-6, 10
    c.optim.min_lr_ratio = 0.001
    c.train.epochs, c.train.batch_size = 800, 4096
    return c


def _solo_cifar10(name: str) -> Config:
    c = cifar10(name, "resnet18-cifar")
    # solo-learn scripts/pretrain/cifar/augmentations/symmetric.yaml: 2 crops of 32 px, scale
    # (0.08, 1), jitter 0.8 (0.8, 0.8, 0.8, 0.2), grayscale 0.2, blur 0.5, no solarisation.
    c.aug.brightness, c.aug.contrast, c.aug.saturation, c.aug.hue = 0.8, 0.8, 0.8, 0.2
    c.aug.blur_p, c.aug.solarize_p = (0.5, 0.5), (0.0, 0.0)
    # solo-learn: LARS lr 0.6 at batch 256 with eta 0.02 and clip_lr, wd 1e-6, 1000 epochs.
    c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.warmup_epochs = "lars", 0.6, 1e-6, 10
    c.optim.lars_eta, c.optim.lars_clip_lr = 0.02, True
    c.train.epochs, c.train.batch_size = 1000, 256
    return c


@RECIPES.register("swav-resnet18-cifar10")
def swav_resnet18_cifar10() -> Config:
    """SwAV on CIFAR-10 (solo-learn's setting: 3000 prototypes, queue 3840 from epoch 50)."""
    # solo-learn scripts/pretrain/cifar/swav.yaml: proj 2048 -> 128, 3000 prototypes, T 0.1,
    # queue 3840 from epoch 50, prototypes frozen 2 epochs.
    c = _solo_cifar10("swav-resnet18-cifar10")
    m = c.set_method("swav")
    m.proj_hidden_dim, m.proj_dim, m.num_prototypes, m.temperature = 2048, 128, 3000, 0.1
    m.queue_length, m.queue_start_epoch, m.freeze_prototypes_epochs = 3840, 50, 2
    return c


@RECIPES.register("deepcluster-resnet18-cifar10")
def deepcluster_resnet18_cifar10() -> Config:
    """DeepCluster v2 on CIFAR-10 (solo-learn's setting: 3 x 3000 clusters)."""
    # solo-learn scripts/pretrain/cifar/deepclusterv2.yaml: proj 2048 -> 128, prototypes
    # [3000, 3000, 3000], warm-up 11 epochs, min lr 0.0006 (of 0.6).
    c = _solo_cifar10("deepcluster-resnet18-cifar10")
    m = c.set_method("deepcluster")
    m.proj_hidden_dim, m.proj_dim, m.num_prototypes, m.temperature = 2048, 128, "3000,3000,3000", 0.1
    c.optim.warmup_epochs, c.optim.min_lr_ratio = 11, 0.001
    return c
