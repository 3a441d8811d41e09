"""BYOL recipes."""

from __future__ import annotations

from fastssl.config import Config
from fastssl.recipes.simclr import default_with, simclr_resnet18_cifar10
from fastssl.registry import RECIPES


@RECIPES.register("byol-cpu")
def byol_cpu() -> Config:
    """BYOL on the built-in digits (16 px, tiny ResNet): trains in minutes on 2 CPU cores."""
    # The digits setting of `default` (SimCLR) with BYOL's heads narrowed as the other CPU
    # recipes narrow theirs (projector and predictor 256 -> 64; the paper's 4096 -> 256 is the
    # same shape), and tau 0.99 -> 1: solo-learn's CIFAR base (byol.yaml), since the paper's 0.996
    # barely moves the target in 240 steps.
    c = default_with("byol-cpu", "byol")
    m = c.method
    m.proj_hidden_dim, m.proj_dim, m.pred_hidden_dim = 256, 64, 256
    m.momentum_base, m.momentum_final = 0.99, 1.0
    return c


@RECIPES.register("byol-resnet18-cifar10")
def byol_resnet18_cifar10() -> Config:
    """BYOL on CIFAR-10 (solo-learn's setting): asymmetric solarisation, tau 0.99 -> 1."""
    # solo-learn scripts/pretrain/cifar/byol.yaml: proj 4096 -> 256, pred 4096, tau 0.99 -> 1,
    # LARS lr 1.0 (batch 256), wd 1e-5, eta 0.02 WITH clip_lr (exclude_bias_n_norm), solarise
    # (0, 0.2), blur off at 32 px.
    c = simclr_resnet18_cifar10()
    c.recipe = "byol-resnet18-cifar10"
    c.aug.solarize_p = (0.0, 0.2)
    m = c.set_method("byol")
    m.proj_hidden_dim, m.proj_dim, m.pred_hidden_dim = 4096, 256, 4096
    m.momentum_base, m.momentum_final = 0.99, 1.0
    c.optim.name, c.optim.base_lr, c.optim.weight_decay = "lars", 1.0, 1e-5
    c.optim.lars_eta, c.optim.lars_clip_lr = 0.02, True
    c.train.batch_size, c.train.out = 256, "runs/byol-resnet18-cifar10"
    return c
