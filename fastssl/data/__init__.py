"""Datasets, augmentation and loaders.

- `sources`: `ImageSource` and `open_source` (digits, npz shards, image folders, torchvision sets);
- `augment`: SimCLR/BYOL view transforms and the eval transform;
- `loader`: `build_pretrain_loader` (backend factory) and `build_eval_loader`.
"""

from fastssl.data.augment import build_eval_transform, build_view_transforms
from fastssl.data.loader import BACKENDS, PretrainLoader, build_eval_loader, build_pretrain_loader, resolve_backend
from fastssl.data.sources import DATASETS, ImageSource, open_eval_sources, open_pretrain_source, open_source

__all__ = [
    "BACKENDS",
    "DATASETS",
    "ImageSource",
    "PretrainLoader",
    "build_eval_loader",
    "build_eval_transform",
    "build_pretrain_loader",
    "build_view_transforms",
    "open_eval_sources",
    "open_pretrain_source",
    "open_source",
    "resolve_backend",
]
