"""Typed configuration: one dataclass per section, defaults in code.

A run is fully described by a `Config`. Recipes (fastssl/recipes.py) are named `Config`s; the CLI
applies `--section.key=value` overrides on top with `apply_overrides`, which type-checks values and
rejects unknown keys with the closest valid one. The resolved config is printed at start and
saved as `config.json` beside the checkpoints.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from fastssl.errors import FastSSLError


@dataclass
class DataConfig:
    # "auto" guesses from `path` ("" = the built-in digits); or "digits" (built in, no download),
    # "npz" (JPEG shards), "folder" (ImageFolder), "cifar10" | "stl10" | "mnist" (torchvision),
    # "webdataset" (tar shards) | "filelist" (.txt of `path label` lines): DALI backends only.
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
class MethodConfig:
    name: str = "simclr"  # simclr | byol
    proj_hidden_dim: int = 2048
    proj_dim: int = 128
    proj_layers: int = 2
    # SimCLR / InfoNCE
    temperature: float = 0.2
    loss_impl: str = "auto"  # auto | torch | triton
    gather_distributed: bool = True
    # BYOL
    pred_hidden_dim: int = 4096
    momentum_base: float = 0.996
    momentum_final: float = 1.0


@dataclass
class OptimConfig:
    name: str = "lars"  # lars | adamw | sgd
    # Scaled as lr = base_lr * global_batch / 256.
    base_lr: float = 0.3
    weight_decay: float = 1e-6
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.95)
    lars_eta: float = 0.02
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
    # Resume from the newest checkpoint in `out` (the CLI's --resume sets this).
    resume: bool = False
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


@dataclass
class EvalConfig:
    knn_k: int = 200
    knn_t: float = 0.1
    # End-of-run kNN only: images in the feature bank (0 = data.limit if set, else all) and
    # held-out queries (0 = all). Standalone `fastssl eval knn` takes --limit-train instead.
    knn_train_limit: int = 0
    knn_test_limit: int = 0
    batch_size: int = 256
    linear_epochs: int = 30
    linear_lr: float = 0.1
    finetune_epochs: int = 30
    finetune_lr: float = 0.01
    labels_per_class: int = 10


@dataclass
class DistConfig:
    backend: str = "auto"  # auto (nccl on CUDA, gloo on CPU) | nccl | gloo
    strategy: str = "ddp"  # ddp (fsdp / deepspeed arrive with the scale-out issue)
    timeout_s: int = 1800


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    recipe: str = "default"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        """Inverse of to_dict. Unknown keys fail like CLI overrides do."""
        cfg = cls()
        for section, values in d.items():
            if section == "recipe":
                cfg.recipe = str(values)
                continue
            for key, value in values.items():
                set_value(cfg, f"{section}.{key}", value)
        return cfg


def _sections(cfg: Config) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "recipe"}


def all_keys(cfg: Config | None = None) -> list[str]:
    cfg = cfg or Config()
    return [
        f"{name}.{f.name}"
        for name, section in _sections(cfg).items()
        for f in dataclasses.fields(section)
    ]


def _unknown(key: str, choices: list[str], what: str) -> FastSSLError:
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return FastSSLError(f"unknown {what} '{key}'.{hint} Run `fastssl config --keys` to list them.")


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Convert a CLI string (or JSON value) to the field's declared type, or fail clearly."""
    origin = typing.get_origin(typ)
    if origin is tuple:
        args = typing.get_args(typ)
        items = value.split(",") if isinstance(value, str) else list(value)
        if len(items) != len(args):
            raise FastSSLError(
                f"{key} takes {len(args)} comma-separated values, got {value!r}; "
                f"write e.g. --{key}={','.join(str(_example(a)) for a in args)}"
            )
        return tuple(_coerce(v.strip() if isinstance(v, str) else v, a, key) for v, a in zip(items, args))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        return _coerce(value, args[0], key)
    if typ is bool:
        if isinstance(value, bool):
            return value
        s = str(value).strip().lower()
        if s in ("1", "true", "yes", "on"):
            return True
        if s in ("0", "false", "no", "off"):
            return False
        raise FastSSLError(f"{key} is a bool; write --{key}=true or --{key}=false, not {value!r}")
    if typ is int:
        if isinstance(value, bool):
            raise FastSSLError(f"{key} is an int, got {value!r}")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise FastSSLError(f"{key} is an int; write e.g. --{key}=8, not {value!r}") from None
        if f != int(f):
            raise FastSSLError(f"{key} is an int; write e.g. --{key}=8, not {value!r}")
        return int(f)
    if typ is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise FastSSLError(f"{key} is a float; write e.g. --{key}=0.1, not {value!r}") from None
    if typ is str:
        return str(value)
    raise TypeError(f"unsupported config type {typ!r} for {key}")


def _example(typ: Any) -> Any:
    return {int: 1, float: 0.5, bool: "true", str: "x"}.get(typ, "x")


def set_value(cfg: Config, key: str, value: Any) -> None:
    """Set `section.key` on cfg with type checking. Unknown sections/keys name the closest key."""
    if key.count(".") != 1:
        raise _unknown(key, all_keys(cfg), "config key")
    section_name, name = key.split(".")
    sections = _sections(cfg)
    if section_name not in sections:
        raise _unknown(key, all_keys(cfg), "config key")
    section = sections[section_name]
    hints = typing.get_type_hints(type(section))
    if name not in hints:
        raise _unknown(key, all_keys(cfg), "config key")
    setattr(section, name, _coerce(value, hints[name], key))


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply `--section.key=value` (or `section.key=value`) strings in order."""
    for item in overrides:
        s = item[2:] if item.startswith("--") else item
        if "=" not in s:
            raise FastSSLError(f"override {item!r} has no value; write --{s}=VALUE")
        key, value = s.split("=", 1)
        set_value(cfg, key.strip(), value)
    return cfg


def format_config(cfg: Config) -> str:
    """The resolved config as `section.key = value` lines, printed at the start of a run."""
    lines = [f"recipe = {cfg.recipe}"]
    for name, section in _sections(cfg).items():
        for f in dataclasses.fields(section):
            lines.append(f"{name}.{f.name} = {getattr(section, f.name)!r}")
    return "\n".join(lines)
