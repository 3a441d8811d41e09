"""The typed sections of a run's config (all but `method`, which is per method: methods.py).

Defaults live here, in code; recipes (fastssl/recipes/) override them by name.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DataConfig:
    # "auto" guesses from `path` ("" = the built-in digits); or "digits" (built in, no download),
    # "npz" (JPEG shards), "folder" (ImageFolder), "cifar10" | "stl10" | "mnist" (torchvision),
    # "filelist" (.txt of `path label` lines) | "webdataset" (tar shards, streamed by every backend).
    dataset: str = "auto"
    path: str = ""
    # Where eval commands and the end-of-run kNN read held-out data; "" = the dataset's own split.
    test_path: str = ""
    # "torch" (torchvision, CPU workers), "gpu-tensor", "dali", "dali-cpu", or "auto".
    backend: str = "torch"
    image_size: int = 32
    num_workers: int = 2
    # Use only the first N training images (0 = all). Handy for smoke runs.
    limit: int = 0
    # Skip undecodable images with a warning instead of failing on the first one.
    skip_corrupt: bool = False
    # torchvision datasets only; never the default, these machines have no internet.
    download: bool = False
    # Fraction of a single-split dataset (digits, npz, folder) held out for evaluation when
    # `test_path` is empty; training never sees it.
    val_fraction: float = 0.1
    pin_memory: bool = True
    # Output dtype of GPU backends ("fp32" | "bf16" | "fp16").
    dtype: str = "fp32"
    # Webdataset tars: samples each (rank, worker) stream holds to shuffle within (1 = tar order).
    # 1000 as the webdataset README's `.shuffle(1000)`; DALI's reader fills 1024.
    shuffle_buffer: int = 1000
    # Where image folders' and file lists' cached indexes go; "" = beside the data
    # (`<folder>/.fastssl-index/`), or ~/.cache/fastssl/index when that is not writable.
    index_dir: str = ""


@dataclass
class AugConfig:
    """SimCLR/BYOL view augmentation. Per-view probabilities are tuples (view 1, view 2)."""

    crop_scale_min: float = 0.08
    crop_scale_max: float = 1.0
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: tuple[float, float] = (1.0, 0.1)
    blur_sigma_min: float = 0.1
    blur_sigma_max: float = 2.0
    solarize_p: tuple[float, float] = (0.0, 0.2)
    # Multi-crop (DINO): number of extra local crops, their size and scale range.
    local_crops: int = 0
    local_size: int = 96
    local_scale_min: float = 0.05
    local_scale_max: float = 0.4
    local_blur_p: float = 0.5
    normalize_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    normalize_std: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass
class ModelConfig:
    # resnet18 | resnet50 | resnet18-cifar | resnet50-cifar | resnet-tiny | vit_tiny | vit_small | vit_base
    name: str = "resnet18"
    # ViT only. The image size comes from data.image_size.
    patch_size: int = 16
    # Stochastic depth (ViT) / drop path rate.
    drop_path: float = 0.0


@dataclass
class OptimConfig:
    name: str = "lars"  # lars | adamw | sgd
    # Scaled as lr = base_lr * global_batch / 256.
    base_lr: float = 0.3
    weight_decay: float = 1e-6
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.95)
    # LARS trust coefficient: 0.001 in SimCLR (google-research/simclr lars_optimizer.py, eeta=0.001)
    # and BYOL (Grill et al. 2020, App. C: "trust coefficient 1e-3"). solo-learn's 0.02 is only
    # meant together with its clip_lr, which caps each layer's adaptive lr at the group lr.
    lars_eta: float = 0.001
    # Cap each layer's LARS trust ratio at 1 (solo-learn's `exclude_bias_n_norm_lars` + `clip_lr`,
    # from NVIDIA Apex LARC with clip=True): the layer's step never exceeds lr x its gradient.
    lars_clip_lr: bool = False
    warmup_epochs: float = 10.0
    # Final lr as a fraction of the peak lr.
    min_lr_ratio: float = 0.0
    # Max global grad norm; 0 disables clipping.
    clip_grad: float = 0.0


@dataclass
class TrainConfig:
    epochs: int = 100
    # Global batch across all ranks; each rank gets batch_size // world_size.
    batch_size: int = 256
    # Stop after this many optimiser steps (0 = run all epochs). For smoke runs.
    max_steps: int = 0
    seed: int = 0
    out: str = "runs/default"
    # Resume from the newest checkpoint in `out` with the run's saved config; flags given with
    # --resume change only their own keys (the CLI's --resume sets this).
    resume: bool = False
    # Clear `out`'s checkpoints, metrics and config before starting afresh (the CLI's --overwrite).
    overwrite: bool = False
    ckpt_every_steps: int = 0  # 0 = once per epoch
    keep_last: int = 3
    log_every: int = 10
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp32
    channels_last: bool = True  # applied on CUDA only
    compile: bool = False
    # Stop after this many non-finite losses in a row; the last good checkpoint is kept.
    max_bad_steps: int = 5
    progress: bool = True
    tensorboard: bool = True
    # Run a kNN evaluation on held-out data at the end of training (0 = off).
    knn_at_end: bool = True
    # Recompute each shard unit's activations in backward (ViT blocks, ResNet stages): less memory,
    # about one extra forward of compute. Applied before compile and sharding (fastssl/parallel).
    activation_checkpointing: bool = False
    # Wall-clock budget ("30s", "10m", "2h"; "" = none): the schedule is laid over the steps that
    # fit, timed on steps the loader did not prefetch (fastssl/train/time_budget.py).
    time_budget: str = ""
    # Re-plan the remaining steps (warm-up included) when the projected end misses the budget by
    # more than this share of it, narrowing to half of it over the run's second half; the schedule
    # is remapped, not restarted. 0 = plan once and never revise. Why 0.05: README.md "Time to
    # accuracy" (at 0.1 a 30-minute run planned from slow first steps stopped 256 s early).
    time_budget_tolerance: float = 0.05


@dataclass
class EvalConfig:
    knn_k: int = 200
    knn_t: float = 0.1
    # End-of-run kNN only: images in the feature bank (0 = data.limit if set, else all) and
    # held-out queries (0 = all). Standalone `fastssl eval knn` takes --limit-train instead.
    knn_train_limit: int = 0
    knn_test_limit: int = 0
    # Periodic kNN during training: every N steps ("500") or every stretch of training time
    # ("2m", "90s"); "" = off. On a held-out slice of at most knn_every_train bank images and
    # knn_every_test queries, so its cost stays bounded (fastssl/train/knn_monitor.py).
    knn_every: str = ""
    knn_every_train: int = 2000
    knn_every_test: int = 500
    batch_size: int = 256
    linear_epochs: int = 30
    linear_lr: float = 0.1
    finetune_epochs: int = 30
    finetune_lr: float = 0.01
    # Few-label fine-tuning is set in optimizer steps (fastssl/eval/fewlabel.py): 30 epochs of
    # 200 images are only ~60 steps. 0 = use finetune_epochs instead.
    finetune_steps: int = 500
    # Share of each class's labelled images held out to choose the step count (early stopping);
    # the model is then refit on all of them.
    finetune_val_fraction: float = 0.2
    finetune_weight_decay: float = 0.0
    labels_per_class: int = 10


@dataclass
class DistConfig:
    backend: str = "auto"  # auto (nccl on CUDA, gloo on CPU) | nccl | gloo
    # ddp (replicated) | fsdp (FSDP2 fully_shard per block, then the root) | deepspeed (ZeRO).
    strategy: str = "ddp"
    # DeepSpeed ZeRO stage: 1 shards optimizer state, 2 also gradients, 3 also parameters.
    zero_stage: int = 2
    # FSDP2: free each block's gathered parameters after its forward (ZeRO-3-like memory; one more
    # all-gather in backward). False keeps them until backward (ZeRO-2-like speed).
    reshard_after_forward: bool = True
    timeout_s: int = 1800
