"""MAE recipes (He et al. 2022). MAE's features are weak for kNN: judge them by fine-tuning or a linear probe."""

from __future__ import annotations

from fastssl.config import Config
from fastssl.recipes.datasets import cifar10, digits, imagenet
from fastssl.registry import RECIPES


def _mae_aug(c: Config, scale_min: float) -> None:
    # MAE main_pretrain.py: RandomResizedCrop(scale=(0.2, 1.0), bicubic) + flip, no colour
    # (the method's single_view spec ignores the colour keys; they are zeroed so the printed
    # config says what runs).
    c.aug.crop_scale_min, c.aug.crop_scale_max = scale_min, 1.0
    c.aug.jitter_p, c.aug.grayscale_p = 0.0, 0.0
    c.aug.blur_p, c.aug.solarize_p = (0.0, 0.0), (0.0, 0.0)


@RECIPES.register("mae-cpu")
def mae_cpu() -> Config:
    """MAE on the built-in digits with a 4-block ViT (4 px patches at 16 px): minutes on 2 CPU cores."""
    # Measured on digits (2-core CPU; numbers in the session report): mask 0.75 of 16 patches
    # leaves 4 visible; a 2-block, 64-wide decoder; AdamW with MAE's betas and weight decay.
    c = digits("mae-cpu", "vit_nano")
    _mae_aug(c, 0.5)
    c.aug.flip_p = 0.0  # digits are not mirror-symmetric
    c.model.patch_size = 4
    m = c.set_method("mae")
    m.mask_ratio, m.norm_pix_loss = 0.75, True
    m.decoder_dim, m.decoder_depth, m.decoder_heads = 64, 2, 4
    c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.betas = "adamw", 1.5e-3, 0.05, (0.9, 0.95)
    c.optim.warmup_epochs = 3
    c.train.epochs, c.train.batch_size = 30, 128
    # kNN is a poor judge of MAE features (He et al. 2022, Sec. 4: MAE is "not linearly separable"
    # as contrastive features are); `fastssl eval finetune` is the meaningful figure.
    return c


@RECIPES.register("mae-vit-small-cifar10")
def mae_vit_small_cifar10() -> Config:
    """MAE on CIFAR-10 (solo-learn's setting): ViT-S/4 at 32 px, decoder 512 x 8, AdamW lr 2e-4."""
    # solo-learn scripts/pretrain/cifar/mae.yaml: vit_small, patch 4, img 32; decoder 512 wide,
    # 8 blocks, 16 heads; mask 0.75, norm_pix_loss; AdamW lr 2e-4 at batch 256 (scaled per 256),
    # wd 0.05, betas (0.9, 0.95); warmup_cosine (10 warm-up epochs); 1000 epochs;
    # augmentations/reconstruction.yaml: RandomResizedCrop(0.08, 1) + flip 0.5, nothing else.
    c = cifar10("mae-vit-small-cifar10", "vit_small")
    _mae_aug(c, 0.08)
    c.model.patch_size = 4
    m = c.set_method("mae")
    m.mask_ratio, m.norm_pix_loss = 0.75, True
    m.decoder_dim, m.decoder_depth, m.decoder_heads = 512, 8, 16
    c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.betas = "adamw", 2.0e-4, 0.05, (0.9, 0.95)
    c.optim.warmup_epochs = 10
    c.train.epochs, c.train.batch_size = 1000, 256
    c.train.knn_at_end = False
    return c


@RECIPES.register("mae-vit-base-imagenet")
def mae_vit_base_imagenet() -> Config:
    """MAE ViT-B/16 on ImageNet (the paper's 800-epoch setting), sharded per block with FSDP."""
    # He et al. 2022, App. A.1 / main_pretrain.py: AdamW, blr 1.5e-4 (lr = blr x batch / 256),
    # betas (0.9, 0.95), wd 0.05, batch 4096, 40 warm-up epochs, cosine, 800 epochs; mask 0.75,
    # norm_pix_loss; RandomResizedCrop(0.2, 1) + flip. models_mae.py mae_vit_base_patch16_dec512d8b:
    # decoder 512 wide, 8 blocks, 16 heads (the MAEConfig defaults).
    c = imagenet("mae-vit-base-imagenet", "vit_base")
    _mae_aug(c, 0.2)
    c.model.patch_size = 16
    m = c.set_method("mae")
    m.mask_ratio, m.norm_pix_loss = 0.75, True
    m.decoder_dim, m.decoder_depth, m.decoder_heads = 512, 8, 16
    c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.betas = "adamw", 1.5e-4, 0.05, (0.9, 0.95)
    c.optim.warmup_epochs = 40
    c.train.epochs, c.train.batch_size = 800, 4096
    c.dist.strategy = "fsdp"  # FSDP2 per encoder and decoder block (MAE.shard_units)
    return c
