"""Non-contrastive recipes: VICReg, Barlow Twins, SimSiam (no negatives, no EMA target), and
NNCLR (SimCLR's negatives, a nearest neighbour from a support set as the positive)."""

from __future__ import annotations

from fastssl.config import Config
from fastssl.recipes.datasets import imagenet
from fastssl.recipes.simclr import default_with
from fastssl.registry import RECIPES


@RECIPES.register("vicreg-cpu")
def vicreg_cpu() -> Config:
    """VICReg on the built-in digits (16 px, tiny ResNet): trains in minutes on 2 CPU cores."""
    # The paper's expander shape (3 layers, as wide as its output) narrowed to 256-256-256 for the
    # tiny ResNet's 64 features; weights 25/25/1 as the paper. AdamW lr, measured on digits.
    c = default_with("vicreg-cpu", "vicreg")
    m = c.method
    m.proj_hidden_dim, m.proj_dim, m.proj_layers = 256, 256, 3
    return c


@RECIPES.register("barlowtwins-cpu")
def barlowtwins_cpu() -> Config:
    """Barlow Twins on the built-in digits (16 px, tiny ResNet): trains in minutes on 2 CPU cores."""
    # The paper's projector shape narrowed to 256-256-256; lambd 0.0051 as main.py (with D = 256
    # the off-diagonal sum has ~32x fewer terms than at 8192, so it weighs less, as in the paper's
    # Fig. 4 sweep, where lambd is insensitive within an order of magnitude).
    c = default_with("barlowtwins-cpu", "barlowtwins")
    m = c.method
    m.proj_hidden_dim, m.proj_dim, m.proj_layers, m.lambd = 256, 256, 3, 0.0051
    return c


@RECIPES.register("simsiam-cpu")
def simsiam_cpu() -> Config:
    """SimSiam on the built-in digits (16 px, tiny ResNet): trains in minutes on 2 CPU cores."""
    # The paper's heads narrowed: projector 3 layers 256-256 (builder.py uses the backbone's
    # width), predictor bottleneck 256-64-256 (2048-512-2048 in the paper, the same 4x ratio);
    # the predictor keeps the peak lr (--fix-pred-lr).
    c = default_with("simsiam-cpu", "simsiam")
    m = c.method
    m.proj_hidden_dim, m.proj_dim, m.proj_layers, m.pred_hidden_dim = 256, 256, 3, 64
    return c


@RECIPES.register("nnclr-cpu")
def nnclr_cpu() -> Config:
    """NNCLR on the built-in digits (16 px, tiny ResNet): trains in minutes on 2 CPU cores."""
    # The paper's heads narrowed to the tiny ResNet: projector 3 layers 256 -> 64, predictor
    # 64-256-64 (2048 -> 256 and 256-4096-256 in the paper). A support set of 8 global batches
    # (1,024 of the ~1,600 digits; the paper's 98,304 is ~8% of ImageNet, which would here hold
    # under one class per neighbour), T 0.2 (solo-learn's CIFAR value, as mocov3-cpu), AdamW as
    # the other digits recipes.
    c = default_with("nnclr-cpu", "nnclr")
    m = c.method
    m.proj_hidden_dim, m.proj_dim, m.proj_layers, m.pred_hidden_dim = 256, 64, 3, 256
    m.queue_size, m.temperature = 1024, 0.2
    return c


@RECIPES.register("vicreg-resnet50-imagenet")
def vicreg_resnet50_imagenet() -> Config:
    """VICReg's ImageNet setting (ResNet-50, batch 2048, LARS, 1000 epochs), for GPU runs."""
    # Bardes et al. 2022, Sec. 4.1 and App. C; facebookresearch/vicreg main_vicreg.py: expander
    # 8192-8192-8192, lambda = mu = 25, nu = 1; LARS (eta 0.001, no decay or adaptation on biases
    # and norms), lr = base_lr 0.2 x batch / 256, wd 1e-6, batch 2048, 10 warm-up epochs then
    # cosine to lr x 0.001 (adjust_learning_rate end_lr); 1000 epochs (paper; main_vicreg.py's
    # default --epochs is 100). Augmentation: BYOL's (the AugConfig defaults: blur 1.0 / 0.1,
    # solarisation 0 / 0.2, jitter (0.4, 0.4, 0.2, 0.1) p 0.8, grayscale 0.2, crop 0.08-1).
    c = imagenet("vicreg-resnet50-imagenet", "resnet50")
    m = c.set_method("vicreg")
    m.proj_hidden_dim, m.proj_dim, m.proj_layers = 8192, 8192, 3
    m.sim_weight, m.var_weight, m.cov_weight = 25.0, 25.0, 1.0
    c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.warmup_epochs = "lars", 0.2, 1e-6, 10
    c.optim.lars_eta, c.optim.min_lr_ratio = 0.001, 0.001
    c.train.epochs, c.train.batch_size = 1000, 2048
    return c


@RECIPES.register("barlowtwins-resnet50-imagenet")
def barlowtwins_resnet50_imagenet() -> Config:
    """Barlow Twins' ImageNet setting (ResNet-50, batch 2048, LARS, 1000 epochs), for GPU runs."""
    # Zbontar et al. 2021, Sec. 4; facebookresearch/barlowtwins main.py: projector 8192-8192-8192,
    # lambd 0.0051; LARS (eta 0.001, biases and BN excluded from decay and adaptation),
    # --learning-rate-weights 0.2 x batch / 256, wd 1.5e-6 (paper Sec. 4; main.py's default is
    # 1e-6), batch 2048, 10 warm-up epochs then cosine to lr x 0.001, 1000 epochs. main.py's
    # biases and BN (its ndim == 1 parameters) take --learning-rate-biases 0.0048 on the same
    # schedule (adjust_learning_rate): 0.0048 / 0.2 = 0.024 of the weights' lr. Augmentation:
    # BYOL's (AugConfig defaults).
    c = imagenet("barlowtwins-resnet50-imagenet", "resnet50")
    m = c.set_method("barlowtwins")
    m.proj_hidden_dim, m.proj_dim, m.proj_layers, m.lambd = 8192, 8192, 3, 0.0051
    c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.warmup_epochs = "lars", 0.2, 1.5e-6, 10
    c.optim.lars_eta, c.optim.min_lr_ratio, c.optim.bias_lr_scale = 0.001, 0.001, 0.0048 / 0.2
    c.train.epochs, c.train.batch_size = 1000, 2048
    return c


@RECIPES.register("simsiam-resnet50-imagenet")
def simsiam_resnet50_imagenet() -> Config:
    """SimSiam's ImageNet setting (ResNet-50, batch 512, SGD lr 0.1, 100 epochs), for GPU runs."""
    # Chen & He 2021, Sec. 4.1; facebookresearch/simsiam main_simsiam.py: SGD lr 0.05 x batch / 256
    # (= 0.1 at batch 512), momentum 0.9, wd 1e-4, cosine with no warm-up, 100 epochs, --fix-pred-lr;
    # projector 2048 x 3 with an affine-free output BN, predictor 2048-512-2048 (builder.py).
    # Augmentation: MoCo v2's (crop 0.2-1, jitter (0.4, 0.4, 0.4, 0.1) p 0.8, grayscale 0.2,
    # blur p 0.5, flip). main_simsiam.py decays every parameter; here biases and BN are not decayed.
    c = imagenet("simsiam-resnet50-imagenet", "resnet50")
    c.aug.crop_scale_min = 0.2
    c.aug.brightness, c.aug.contrast, c.aug.saturation, c.aug.hue = 0.4, 0.4, 0.4, 0.1
    c.aug.blur_p, c.aug.solarize_p = (0.5, 0.5), (0.0, 0.0)
    m = c.set_method("simsiam")
    m.proj_hidden_dim, m.proj_dim, m.proj_layers, m.pred_hidden_dim, m.fix_pred_lr = 2048, 2048, 3, 512, True
    c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.momentum = "sgd", 0.05, 1e-4, 0.9
    c.optim.warmup_epochs, c.optim.min_lr_ratio = 0, 0.0
    c.train.epochs, c.train.batch_size = 100, 512
    return c


@RECIPES.register("nnclr-resnet50-imagenet")
def nnclr_resnet50_imagenet() -> Config:
    """NNCLR's ImageNet setting (ResNet-50, batch 4096, LARS, 1000 epochs), for GPU runs."""
    # Dwibedi et al. 2021, Sec. 4 (implementation details): projector 3 layers 2048 -> 256,
    # predictor 256-4096-256, support set 98,304, T 0.1; LARS with base lr 0.3 (lr = 0.3 x
    # batch / 256 = 4.8), wd 1e-6, 10 warm-up epochs then cosine, batch 4096, 1000 epochs; BYOL's
    # augmentations (the AugConfig defaults). LARS leaves biases and BN out of decay and
    # adaptation (fastssl.train.optim), as BYOL's and SimCLR's code, which the paper follows.
    c = imagenet("nnclr-resnet50-imagenet", "resnet50")
    m = c.set_method("nnclr")
    m.proj_hidden_dim, m.proj_dim, m.proj_layers, m.pred_hidden_dim = 2048, 256, 3, 4096
    m.queue_size, m.temperature = 98304, 0.1
    c.optim.name, c.optim.base_lr, c.optim.weight_decay, c.optim.warmup_epochs = "lars", 0.3, 1e-6, 10
    c.train.epochs, c.train.batch_size = 1000, 4096
    return c


