"""DINOv2 recipes (Oquab et al. 2023)."""

from __future__ import annotations

from fastssl.config import Config
from fastssl.recipes.datasets import imagenet
from fastssl.recipes.dino import dino_cpu
from fastssl.registry import RECIPES


@RECIPES.register("dinov2-cpu")
def dinov2_cpu() -> Config:
    """DINOv2 on the built-in digits: vit_nano/4 at 16 px, 2 global + 2 local 8 px crops; minutes on 2 CPU cores."""
    # dino-cpu's crops and optimiser on a ViT (DINOv2 needs patch tokens): vit_nano with 4 px
    # patches (a 4 x 4 grid, so block masks of >= 4 patches fit), a small head (K = 1024,
    # bottleneck 64) shared by the class and patch tokens as ssl_default_config.yaml, Sinkhorn-
    # Knopp targets, KoLeo 0.1 and the reference's masking; the teacher temperature stays at 0.04
    # (no 30-epoch warm-up in an 8-epoch run).
    c = dino_cpu()
    c.recipe, c.train.out = "dinov2-cpu", "runs/dinov2-cpu"
    c.model.name, c.model.patch_size = "vit_nano", 4
    m = c.set_method("dinov2")
    m.out_dim, m.proj_hidden_dim, m.bottleneck_dim = 1024, 256, 64
    m.warmup_teacher_temp, m.teacher_temp, m.warmup_teacher_temp_epochs = 0.04, 0.04, 0
    m.momentum_base, m.momentum_final = 0.992, 1.0
    return c


@RECIPES.register("dinov2-vit-large-imagenet")
def dinov2_vit_large_imagenet() -> Config:
    """DINOv2 ViT-L/16 on ImageNet-1k (vitl16_short.yaml): FSDP, bf16, activation checkpointing."""
    # facebookresearch/dinov2 configs/train/vitl16_short.yaml on ssl_default_config.yaml, on 32
    # GPUs (README: 4 nodes x 8) x 64 = batch 2048. ViT-L/16, drop_path 0.3; heads 65536 x 2048 x
    # 256, 3 layers, iBOT shares the DINO head; centering "centering" (EMA centre, momentum 0.9);
    # KoLeo 0.1; masks (0.1, 0.5) on half the global crops; teacher momentum 0.992 -> 1, T 0.04 ->
    # 0.07 over 30 epochs; AdamW (0.9, 0.999), base_lr 0.004 per 1024 with sqrt scaling = 0.00566
    # at 2048 (fastssl scales linearly per 256: 0.00566 / 8), wd 0.04 (-> 0.4 cosine there;
    # constant here), layerwise_decay 0.9, clip 3.0, min_lr 1e-6. Crops: globals 224 px scale
    # (0.32, 1), 8 locals 96 px scale (0.05, 0.32). An "epoch" there is OFFICIAL_EPOCH_LENGTH 1250
    # iterations = 2.56 M images ~ 2 ImageNet passes, so 100 / 10 / 30 / 1 of its epochs are
    # 200 / 20 / 60 / 2 here. Not reproduced: layerscale 1e-5, patch_embed_lr_mult 0.2, wd schedule.
    c = imagenet("dinov2-vit-large-imagenet", "vit_large", workers=10)
    c.aug.crop_scale_min, c.aug.crop_scale_max = 0.32, 1.0
    c.aug.brightness, c.aug.contrast, c.aug.saturation, c.aug.hue = 0.4, 0.4, 0.2, 0.1
    c.aug.blur_p, c.aug.solarize_p, c.aug.local_blur_p = (1.0, 0.1), (0.0, 0.2), 0.5  # DataAugmentationDINO
    c.aug.local_crops, c.aug.local_size, c.aug.local_scale_min, c.aug.local_scale_max = 8, 96, 0.05, 0.32
    c.model.patch_size, c.model.drop_path = 16, 0.3
    m = c.set_method("dinov2")
    m.out_dim, m.proj_hidden_dim, m.bottleneck_dim, m.proj_layers = 65536, 2048, 256, 3
    m.ibot_separate_head, m.centering, m.center_momentum = False, "centering", 0.9
    m.koleo_weight, m.ibot_weight = 0.1, 1.0
    m.mask_ratio_min, m.mask_ratio_max, m.mask_sample_probability = 0.1, 0.5, 0.5
    m.momentum_base, m.momentum_final = 0.992, 1.0
    m.student_temp, m.warmup_teacher_temp, m.teacher_temp, m.warmup_teacher_temp_epochs = 0.1, 0.04, 0.07, 60
    m.freeze_last_layer_epochs = 2
    c.optim.name, c.optim.betas, c.optim.weight_decay = "adamw", (0.9, 0.999), 0.04
    c.optim.base_lr = 0.004 * (2048 / 1024) ** 0.5 / (2048 / 256)
    c.optim.warmup_epochs, c.optim.layer_decay, c.optim.clip_grad = 20, 0.9, 3.0
    c.optim.min_lr_ratio = 1e-6 / (0.004 * (2048 / 1024) ** 0.5)
    c.train.epochs, c.train.batch_size = 200, 2048
    c.train.precision, c.train.activation_checkpointing = "bf16", True
    c.dist.strategy = "fsdp"  # FSDP2 per block of student and teacher (SSLMethod.shard_units), as dinov2's FSDP
    return c
