"""DINO recipes (Caron et al. 2021)."""

from __future__ import annotations

from fastssl.config import Config
from fastssl.recipes.datasets import digits, imagenet
from fastssl.recipes.simclr import simclr_resnet18_cifar10
from fastssl.registry import RECIPES


@RECIPES.register("dino-cpu")
def dino_cpu() -> Config:
    """DINO on the built-in digits: 2 global 16 px + 2 local 8 px crops, tiny ResNet; minutes on 2 CPU cores."""
    # Measured on digits (2-core CPU): a small head (K = 1024 prototypes, bottleneck 64) with
    # BatchNorm (main_dino.py --use_bn_in_head true) and tau 0.996 -> 1 keeps the teacher's
    # entropy well below ln K; without BN, or with tau 0.99, these 200 steps drift to the uniform
    # collapse (entropy -> ln 1024, loss -> 6.93) and kNN falls. A ViT (vit_nano/4) learned far
    # less in the same budget. main_dino.py's temperatures (0.1 / 0.04) and 1 frozen epoch.
    c = digits("dino-cpu", "resnet-tiny")
    c.aug.crop_scale_min, c.aug.crop_scale_max, c.aug.flip_p = 0.4, 1.0, 0.0  # digits are not mirror-symmetric
    c.aug.jitter_p, c.aug.grayscale_p = 0.8, 0.0
    c.aug.blur_p, c.aug.solarize_p, c.aug.local_blur_p = (0.0, 0.0), (0.0, 0.0), 0.0  # too small to blur
    c.aug.local_crops, c.aug.local_size = 2, 8
    c.aug.local_scale_min, c.aug.local_scale_max = 0.1, 0.4
    m = c.set_method("dino")
    m.out_dim, m.proj_hidden_dim, m.bottleneck_dim = 1024, 256, 64
    m.use_bn_in_head = True
    m.momentum_base, m.momentum_final = 0.996, 1.0
    m.warmup_teacher_temp, m.teacher_temp, m.warmup_teacher_temp_epochs = 0.04, 0.04, 0
    m.freeze_last_layer_epochs = 1
    c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.warmup_epochs = "adamw", 2e-3, 1e-4, 1
    c.train.epochs, c.train.batch_size = 8, 64
    return c


@RECIPES.register("dino-resnet18-cifar10")
def dino_resnet18_cifar10() -> Config:
    """DINO on CIFAR-10 (solo-learn's setting): ResNet-18, 2 crops, K = 4096, LARS lr 0.3."""
    # solo-learn scripts/pretrain/cifar/dino.yaml (+ augmentations/asymmetric.yaml, solo/methods/
    # dino.py defaults): ResNet-18, no multi-crop, head 2048 -> 256 -> 4096 prototypes, no BN,
    # norm_last_layer, last layer frozen 1 epoch; tau 0.9995 -> 1; student T 0.1, teacher T
    # 0.04 -> 0.07 over 50 epochs; LARS lr 0.3 (batch 256), wd 1e-6, eta 0.02 with clip_lr;
    # 1000 epochs, 10 warm-up; solarise (0, 0.2), no blur at 32 px.
    c = simclr_resnet18_cifar10()
    c.recipe = "dino-resnet18-cifar10"
    c.aug.brightness, c.aug.contrast, c.aug.saturation, c.aug.hue = 0.4, 0.4, 0.2, 0.1
    c.aug.solarize_p, c.aug.local_crops = (0.0, 0.2), 0
    m = c.set_method("dino")
    m.out_dim, m.proj_hidden_dim, m.bottleneck_dim, m.proj_layers = 4096, 2048, 256, 3
    m.norm_last_layer, m.use_bn_in_head, m.freeze_last_layer_epochs = True, False, 1
    m.momentum_base, m.momentum_final = 0.9995, 1.0
    m.student_temp, m.warmup_teacher_temp, m.teacher_temp, m.warmup_teacher_temp_epochs = 0.1, 0.04, 0.07, 50
    c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.warmup_epochs = "lars", 0.3, 1e-6, 10
    c.optim.lars_eta, c.optim.lars_clip_lr = 0.02, True
    c.train.epochs, c.train.batch_size, c.train.out = 1000, 256, "runs/dino-resnet18-cifar10"
    return c


@RECIPES.register("dino-vit-small-imagenet")
def dino_vit_small_imagenet() -> Config:
    """DINO ViT-S/16 on ImageNet (the README's boosted 300-epoch run), multi-crop on DALI."""
    # facebookresearch/dino README "Boosting DINO performance" full command + main_dino.py
    # defaults: vit_small, patch 16, out_dim 65536, --norm_last_layer false, momentum 0.996 -> 1,
    # teacher T 0.04 -> 0.07 over 30 epochs, student T 0.1, AdamW lr 0.0005 x batch / 256 with
    # 10 warm-up epochs and cosine to min_lr 1e-6, wd 0.04 (main_dino.py raises it to 0.4 with a
    # cosine; fastssl keeps it constant), clip_grad 3.0 (per parameter in DINO; a global norm
    # here), drop_path 0.1, freeze_last_layer 1, batch 64 x 16 GPUs = 1024, 300 epochs.
    # Multi-crop (DataAugmentationDINO): globals 224 px scale (0.4, 1), blur 1.0 / 0.1,
    # solarise 0 / 0.2; 10 locals 96 px scale (0.05, 0.4), blur 0.5 (main_dino.py's default is 8).
    c = imagenet("dino-vit-small-imagenet", "vit_small")
    c.aug.crop_scale_min, c.aug.crop_scale_max = 0.4, 1.0
    c.aug.brightness, c.aug.contrast, c.aug.saturation, c.aug.hue = 0.4, 0.4, 0.2, 0.1
    c.aug.blur_p, c.aug.solarize_p, c.aug.local_blur_p = (1.0, 0.1), (0.0, 0.2), 0.5
    c.aug.local_crops, c.aug.local_size, c.aug.local_scale_min, c.aug.local_scale_max = 10, 96, 0.05, 0.4
    c.model.patch_size, c.model.drop_path = 16, 0.1
    m = c.set_method("dino")
    m.out_dim, m.proj_hidden_dim, m.bottleneck_dim, m.proj_layers = 65536, 2048, 256, 3
    m.norm_last_layer, m.freeze_last_layer_epochs = False, 1
    m.momentum_base, m.momentum_final = 0.996, 1.0
    m.student_temp, m.warmup_teacher_temp, m.teacher_temp, m.warmup_teacher_temp_epochs = 0.1, 0.04, 0.07, 30
    m.center_momentum = 0.9
    c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.warmup_epochs = "adamw", 5e-4, 0.04, 10
    c.optim.betas = (0.9, 0.999)  # torch AdamW's defaults, which main_dino.py uses
    c.optim.min_lr_ratio = 1e-6 / (5e-4 * 1024 / 256)  # min_lr 1e-6 at the peak lr 0.002
    c.optim.clip_grad = 3.0
    c.train.epochs, c.train.batch_size = 300, 1024
    return c
