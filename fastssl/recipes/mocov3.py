"""MoCo v3 recipes."""

from __future__ import annotations

from fastssl.config import Config
from fastssl.recipes.datasets import cifar10, imagenet
from fastssl.recipes.simclr import default_with
from fastssl.registry import RECIPES


@RECIPES.register("mocov3-cpu")
def mocov3_cpu() -> Config:
    """MoCo v3 on the built-in digits (16 px, tiny ResNet): trains in minutes on 2 CPU cores."""
    # The digits setting of `default` (SimCLR) with MoCo v3's ResNet heads (2-layer projector,
    # predictor without a final BN) 256 wide, 64-d; T 0.2 (solo-learn's CIFAR value), momentum
    # 0.99 -> 1 (cosine), AdamW. The tiny ViT (vit_nano, 4 px patches) had not left random-init
    # kNN after 2 epochs at this budget (measured), so the CPU recipe uses the tiny ResNet;
    # `--model.name=vit_nano --model.patch_size=4` runs the ViT variant (frozen patch projection).
    c = default_with("mocov3-cpu", "mocov3")
    m = c.method
    m.proj_hidden_dim, m.proj_dim, m.pred_hidden_dim, m.proj_layers = 256, 64, 256, 0
    m.temperature, m.momentum_base, m.momentum_final, m.freeze_patch_embed = 0.2, 0.99, 1.0, True
    c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.warmup_epochs = "adamw", 0.002, 1e-4, 2
    c.train.epochs, c.train.batch_size = 10, 128
    return c


@RECIPES.register("mocov3-resnet18-cifar10")
def mocov3_resnet18_cifar10() -> Config:
    """MoCo v3 on CIFAR-10 with ResNet-18 (solo-learn's setting): LARS, asymmetric solarisation."""
    # solo-learn scripts/pretrain/cifar/mocov3.yaml: ResNet-18, proj 4096 -> 256 (2 layers for
    # ResNet), pred 4096, T 0.2, tau 0.99 -> 1, LARS lr 0.3 at batch 256, wd 1e-6, eta 0.02 with
    # clip_lr and no decay/adaptation on biases and norms, warm-up 10 epochs then cosine, 1000
    # epochs; augmentations/asymmetric.yaml: jitter (0.4, 0.4, 0.2, 0.1) p 0.8, grayscale 0.2,
    # no blur, solarisation (0, 0.2).
    c = cifar10("mocov3-resnet18-cifar10", "resnet18-cifar")
    c.aug.brightness, c.aug.contrast, c.aug.saturation, c.aug.hue = 0.4, 0.4, 0.2, 0.1
    c.aug.blur_p, c.aug.solarize_p = (0.0, 0.0), (0.0, 0.2)
    m = c.set_method("mocov3")
    m.proj_hidden_dim, m.proj_dim, m.pred_hidden_dim, m.proj_layers = 4096, 256, 4096, 2
    m.temperature, m.momentum_base, m.momentum_final = 0.2, 0.99, 1.0
    c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.warmup_epochs = "lars", 0.3, 1e-6, 10
    c.optim.lars_eta, c.optim.lars_clip_lr = 0.02, True
    c.train.epochs, c.train.batch_size = 1000, 256
    return c


@RECIPES.register("mocov3-vit-small-imagenet")
def mocov3_vit_small_imagenet() -> Config:
    """MoCo v3's ViT-Small setting (AdamW, batch 4096, 300 epochs, frozen patch projection), for GPU runs."""
    # Chen, Xie, He 2021; facebookresearch/moco-v3 CONFIG.md (ViT-Small, 300 epochs): AdamW
    # lr 1.5e-4 x batch/256 with default betas (0.9, 0.999), wd 0.1, batch 4096 (main_moco.py
    # default), warm-up 40 epochs then cosine, --stop-grad-conv1 --moco-m-cos --moco-t=.2;
    # proj 3 layers 4096 -> 256, pred 4096. main_moco.py's BYOL augmentation: crop 0.08-1,
    # jitter (0.4, 0.4, 0.2, 0.1) p 0.8, grayscale 0.2, blur (1.0, 0.1), solarisation (0, 0.2).
    c = imagenet("mocov3-vit-small-imagenet", "vit_small")
    c.aug.brightness, c.aug.contrast, c.aug.saturation, c.aug.hue = 0.4, 0.4, 0.2, 0.1
    c.aug.blur_p, c.aug.solarize_p = (1.0, 0.1), (0.0, 0.2)
    c.model.patch_size = 16
    m = c.set_method("mocov3")
    m.proj_hidden_dim, m.proj_dim, m.pred_hidden_dim, m.proj_layers = 4096, 256, 4096, 3
    m.temperature, m.momentum_base, m.momentum_final, m.freeze_patch_embed = 0.2, 0.99, 1.0, True
    c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.warmup_epochs = "adamw", 1.5e-4, 0.1, 40
    c.optim.betas = (0.9, 0.999)
    c.train.epochs, c.train.batch_size = 300, 4096
    return c
