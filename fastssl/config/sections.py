"""The typed sections of a run's config (all but `method`, which is per method: methods.py).

Defaults live here, in code; recipes (fastssl/recipes/) override them by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fastssl.config.typed import Section


@dataclass
class DataConfig(Section):
    section: ClassVar[str] = "data"

    # "auto" guesses from `path` ("" = the built-in digits); or "digits" (built in, no download),
    # "npz" (JPEG shards), "folder" (ImageFolder), "cifar10" | "stl10" | "mnist" (torchvision),
    # "filelist" (.txt of `path label` lines) | "webdataset" (tar shards, streamed by every backend).
    dataset: str = "auto"
    # Training images: a folder (ImageFolder, .npz shards, .tar shards), a .npz / .txt / .tar file,
    # optionally sliced (`train-4.npz[5000:]`); "" = the built-in digits.
    path: str = ""
    # Where eval commands and the end-of-run kNN read held-out data; "" = the dataset's own split.
    test_path: str = ""
    # "torch" (torchvision, CPU workers), "gpu-tensor", "dali", "dali-cpu", or "auto".
    backend: str = "torch"
    # Side of the square training views in pixels (global crops for multi-crop methods).
    image_size: int = 32
    # Loader worker processes per rank (torch backend); 0 decodes in the training process.
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
    # Page-locked host batches for faster copies to the GPU (ignored on CPU).
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
class AugConfig(Section):
    """SimCLR/BYOL view augmentation. Per-view probabilities are tuples (view 1, view 2)."""
    section: ClassVar[str] = "aug"


    # Random resized crop's area range, as a share of the image (BYOL Table 6 / SimCLR: 0.08-1).
    crop_scale_min: float = 0.08
    # Upper end of the random resized crop's area range.
    crop_scale_max: float = 1.0
    # Horizontal flip probability (BYOL Table 6: 0.5).
    flip_p: float = 0.5
    # Colour jitter probability (BYOL Table 6: 0.8), with the strengths below.
    jitter_p: float = 0.8
    # Colour jitter brightness strength (BYOL Table 6: 0.4).
    brightness: float = 0.4
    # Colour jitter contrast strength (BYOL Table 6: 0.4).
    contrast: float = 0.4
    # Colour jitter saturation strength (BYOL Table 6: 0.2).
    saturation: float = 0.2
    # Colour jitter hue strength (BYOL Table 6: 0.1).
    hue: float = 0.1
    # Grayscale probability (BYOL Table 6: 0.2).
    grayscale_p: float = 0.2
    # Gaussian blur probability per view (BYOL Table 6: 1.0 and 0.1).
    blur_p: tuple[float, float] = (1.0, 0.1)
    # Gaussian blur sigma range, low end (BYOL Table 6: 0.1-2.0).
    blur_sigma_min: float = 0.1
    # Gaussian blur sigma range, high end.
    blur_sigma_max: float = 2.0
    # Solarisation probability per view (BYOL Table 6: 0 and 0.2).
    solarize_p: tuple[float, float] = (0.0, 0.2)
    # Multi-crop (DINO, SwAV): number of extra local crops (0 = two views only).
    local_crops: int = 0
    # Side of each local crop in pixels (DINO main_dino.py: 96).
    local_size: int = 96
    # Local crops' area range, low end (DINO --local_crops_scale 0.05 0.4).
    local_scale_min: float = 0.05
    # Local crops' area range, high end; also the global crops' low end in DINO.
    local_scale_max: float = 0.4
    # Gaussian blur probability of local crops (DINO main_dino.py: 0.5).
    local_blur_p: float = 0.5
    # Per-channel mean subtracted after augmentation (ImageNet's, as timm and torchvision).
    normalize_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    # Per-channel std divided after augmentation (ImageNet's).
    normalize_std: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass
class ModelConfig(Section):
    section: ClassVar[str] = "model"

    # resnet18 | resnet50 | resnet18-cifar | resnet50-cifar | resnet-tiny | vit_tiny | vit_small | vit_base
    name: str = "resnet18"
    # ViT only. The image size comes from data.image_size.
    patch_size: int = 16
    # Stochastic depth (ViT) / drop path rate.
    drop_path: float = 0.0
    # Continue pretraining from these backbone weights: a timm state_dict file, a `fastssl export`
    # file or a fastssl checkpoint. Step, optimizer and schedule start afresh (unlike --resume).
    init: str = ""
    # ViT only: register tokens (Darcet et al. 2024 use 4), dropped from the pooled features. 0 = none.
    registers: int = 0


@dataclass
class OptimConfig(Section):
    section: ClassVar[str] = "optim"

    name: str = "lars"  # lars | adamw | sgd
    # Scaled as lr = base_lr * global_batch / 256.
    base_lr: float = 0.3
    # Weight decay (LARS in SimCLR: 1e-6); biases and norm weights are excluded (fastssl/train/optim.py).
    weight_decay: float = 1e-6
    # SGD / LARS momentum (SimCLR, BYOL: 0.9).
    momentum: float = 0.9
    # AdamW betas (MAE, MoCo v3: 0.9, 0.95).
    betas: tuple[float, float] = (0.9, 0.95)
    # LARS trust coefficient: 0.001 in SimCLR (google-research/simclr lars_optimizer.py, eeta=0.001)
    # and BYOL (Grill et al. 2020, App. C: "trust coefficient 1e-3"). solo-learn's 0.02 is only
    # meant together with its clip_lr, which caps each layer's adaptive lr at the group lr.
    lars_eta: float = 0.001
    # Cap each layer's LARS trust ratio at 1 (solo-learn's `exclude_bias_n_norm_lars` + `clip_lr`,
    # from NVIDIA Apex LARC with clip=True): the layer's step never exceeds lr x its gradient.
    lars_clip_lr: bool = False
    # lr of biases and normalisation parameters (the group without weight decay or LARS
    # adaptation) as a fraction of the weights' lr, on the same schedule. 1 in SimCLR, BYOL and
    # MoCo; facebookresearch/barlowtwins main.py trains them at --learning-rate-biases 0.0048
    # against --learning-rate-weights 0.2, a fraction of 0.024.
    bias_lr_scale: float = 1.0
    # Linear lr warm-up from 0, in epochs (SimCLR: 10), then cosine decay to min_lr_ratio.
    warmup_epochs: float = 10.0
    # Final lr as a fraction of the peak lr.
    min_lr_ratio: float = 0.0
    # Max global grad norm; 0 disables clipping.
    clip_grad: float = 0.0
    # Layer-wise lr decay: block i of L gets lr x layer_decay^(L - i), the stem layer_decay^(L + 1),
    # heads 1 (BEiT; DINOv2 ssl_default_config.yaml layerwise_decay 0.9 for ViT-L). 1.0 = off.
    layer_decay: float = 1.0


@dataclass
class TrainConfig(Section):
    section: ClassVar[str] = "train"

    # Passes over the training set; the lr schedule spans them.
    epochs: int = 100
    # Global batch across all ranks; each rank gets batch_size // world_size.
    batch_size: int = 256
    # Stop after this many optimiser steps (0 = run all epochs). For smoke runs.
    max_steps: int = 0
    # Seeds the init, the data order and every augmentation (per sample, so any world size agrees).
    seed: int = 0
    # The run folder: checkpoints/, metrics.jsonl, TensorBoard events and config.json.
    out: str = "runs/default"
    # Resume from the newest checkpoint in `out` with the run's saved config; flags given with
    # --resume change only their own keys (the CLI's --resume sets this).
    resume: bool = False
    # Clear `out`'s checkpoints, metrics and config before starting afresh (the CLI's --overwrite).
    overwrite: bool = False
    ckpt_every_steps: int = 0  # 0 = once per epoch
    # Checkpoints kept; older ones are deleted once a newer one is published.
    keep_last: int = 3
    # Steps between train records in metrics.jsonl and TensorBoard.
    log_every: int = 10
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp32
    channels_last: bool = True  # applied on CUDA only
    # torch.compile the backbone (DDP) or each shard unit (FSDP2, ZeRO-3) (fastssl/parallel).
    compile: bool = False
    # Stop after this many non-finite losses in a row; the last good checkpoint is kept.
    max_bad_steps: int = 5
    # A progress line on rank 0 (a bar on a terminal, plain lines when stderr is a file).
    progress: bool = True
    # Write TensorBoard events beside metrics.jsonl.
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
    # is remapped, not restarted. 0 = plan once and never revise. Why 0.05: benchmarks/README.md,
    # "Time to accuracy".
    time_budget_tolerance: float = 0.05
    # Micro-batches per optimizer step: each rank runs K of batch_size / (data-parallel size x K)
    # images and steps once, so batch_size stays the global batch (torchtitan's
    # `gradient_accumulation_steps`; 1 = no accumulation).
    grad_accum_steps: int = 1
    # GradCache (Gao et al. 2021, luyug/GradCache) for losses that couple samples (SimCLR, MoCo v3):
    # the loss and its gradient are computed on the whole batch's embeddings, so K > 1 equals the
    # large batch. auto = on when grad_accum_steps > 1 and the method's loss couples samples | on | off.
    grad_cache: str = "auto"


@dataclass
class EvalConfig(Section):
    section: ClassVar[str] = "eval"

    # Neighbours of the weighted kNN (Wu et al. 2018, InstDisc Sec. 4.1: k = 200).
    knn_k: int = 200
    # Temperature of the kNN's similarity weights (InstDisc: 0.07; MoCo's kNN monitor: 0.1).
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
    # Train a linear classifier on the detached backbone features of the labelled training batches
    # during pretraining and log its top-1 (online_probe_top1), and on the periodic kNN's held-out
    # queries when --eval.knn_every is set; off on unlabelled data (fastssl/train/online_probe.py).
    online_probe: bool = False
    # Its SGD lr (momentum 0.9, no weight decay, constant), scaled by global batch / 256: solo-learn's
    # classifier_lr 0.1 (scripts/pretrain/cifar/*.yaml; scaled in solo/args/pretrain.py).
    online_probe_lr: float = 0.1
    # Images per forward when extracting features for evaluation.
    batch_size: int = 256
    # Linear probe epochs on frozen features (`fastssl eval linear`).
    linear_epochs: int = 30
    # Linear probe learning rate (SGD with cosine decay).
    linear_lr: float = 0.1
    # Fine-tuning epochs (`fastssl eval finetune`) when finetune_steps is 0.
    finetune_epochs: int = 30
    # Fine-tuning learning rate of the whole network.
    finetune_lr: float = 0.01
    # Few-label fine-tuning is set in optimizer steps (fastssl/eval/fewlabel.py): 30 epochs of
    # 200 images are only ~60 steps. 0 = use finetune_epochs instead.
    finetune_steps: int = 500
    # Share of each class's labelled images held out to choose the step count (early stopping);
    # the model is then refit on all of them.
    finetune_val_fraction: float = 0.2
    # Fine-tuning weight decay.
    finetune_weight_decay: float = 0.0
    # Labelled images per class for few-label evaluation (`fastssl eval finetune`, `report few-label`).
    labels_per_class: int = 10


@dataclass
class DistConfig(Section):
    section: ClassVar[str] = "dist"

    backend: str = "auto"  # auto (nccl on CUDA, gloo on CPU) | nccl | gloo
    # ddp (replicated) | fsdp (FSDP2 fully_shard per block, then the root) | deepspeed (ZeRO).
    strategy: str = "ddp"
    # DeepSpeed ZeRO stage: 1 shards optimizer state, 2 also gradients, 3 also parameters.
    zero_stage: int = 2
    # FSDP2: free each block's gathered parameters after its forward (ZeRO-3-like memory; one more
    # all-gather in backward). False keeps them until backward (ZeRO-2-like speed).
    reshard_after_forward: bool = True
    # Seconds a collective may wait before the process group fails (a hung rank ends the job).
    timeout_s: int = 1800
    # Data-parallel mesh dp_replicate x dp_shard = world size (torchtitan ParallelDims; -1: the ranks
    # the other dim leaves). fsdp shards within dp_shard and replicates across dp_replicate (HSDP:
    # one node per replica keeps all-gathers and reduce-scatters on intra-node links); ddp ignores
    # the split; deepspeed maps dp_replicate > 1 to ZeRO++ hpZ. Defaults 1 x -1: shard over all ranks.
    dp_replicate: int = 1  # torchtitan JobConfig parallelism.data_parallel_replicate_degree = 1
    dp_shard: int = -1  # torchtitan JobConfig parallelism.data_parallel_shard_degree = -1

    def check(self) -> list[tuple[str, str]]:
        """(key, problem) for the mesh values wrong on any world size (the world size: at start,
        fastssl/parallel_dims.py)."""
        return check_mesh(self.dp_replicate, self.dp_shard)


def check_mesh(dp_replicate: int, dp_shard: int) -> list[tuple[str, str]]:
    out = []
    for key, v in (("dp_replicate", dp_replicate), ("dp_shard", dp_shard)):
        if v != -1 and v < 1:
            out.append((key, "must be >= 1, or -1 for the ranks the other dim leaves"))
    if dp_replicate == -1 and dp_shard == -1:
        out.append(("dp_replicate", "and --dist.dp_shard cannot both be -1; set one of them"))
    return out


@dataclass
class LogConfig:
    """Experiment trackers beside metrics.jsonl: the same scalars (rank 0) and the run's config."""

    # Log to Weights & Biases (`pip install "fastssl[wandb]"`), as solo-learn and torchtitan do.
    wandb: bool = False
    # W&B project.
    wandb_project: str = "fastssl"
    # W&B entity (user or team); "" = your account's default.
    wandb_entity: str = ""
    # "online" | "offline" (writes under the run folder, upload later with `wandb sync`).
    wandb_mode: str = "online"
    # Log to MLflow (`pip install "fastssl[mlflow]"`), e.g. an on-premises tracking server.
    mlflow: bool = False
    # MLflow tracking URI; "" = a local `mlruns/` file store in the current directory.
    mlflow_uri: str = ""
    # MLflow experiment the run is filed under.
    mlflow_experiment: str = "fastssl"
    # The run's name in W&B and MLflow; "" = the run folder's name.
    run_name: str = ""
