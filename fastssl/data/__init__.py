"""Datasets, view augmentation and loaders. The data flows through the sub-packages in order:

- `sources/`: `ImageSource` and `open_source` (digits, npz shards, image folders, file lists,
  torchvision sets; webdataset helpers);
- `views.py`: `View` / `ViewSpec`, the one view specification every backend reads
  (`views_from_aug` for SimCLR/BYOL/MoCo/DINO, `single_view` for MAE);
- `backends/`: torch, dali / dali-cpu and gpu-tensor loaders, and the shared per-rank order;
- `factory.py`: `resolve_backend`, `build_pretrain_loader`, `build_eval_loader`;
- `tools/`: `fastssl data convert` (the loader benchmark lives in fastssl.bench).

Import the names below from `fastssl.data`; the module paths are internal.
"""

from fastssl.data.backends.torch_augment import build_eval_transform, build_view_transforms
from fastssl.data.dtypes import OUTPUT_DTYPES, output_dtype
from fastssl.data.factory import BACKENDS, PretrainLoader, build_eval_loader, build_pretrain_loader, resolve_backend
from fastssl.data.sources.base import ImageSource, IndexedSource
from fastssl.data.sources.factory import (
    DATASETS,
    open_eval_sources,
    open_pretrain_source,
    open_source,
    parse_slice,
    resolve_dataset,
)
from fastssl.data.views import View, ViewSpec, single_view, views_from_aug

__all__ = [
    "BACKENDS",
    "DATASETS",
    "OUTPUT_DTYPES",
    "ImageSource",
    "IndexedSource",
    "PretrainLoader",
    "View",
    "ViewSpec",
    "build_eval_loader",
    "build_eval_transform",
    "build_pretrain_loader",
    "build_view_transforms",
    "open_eval_sources",
    "open_pretrain_source",
    "open_source",
    "output_dtype",
    "parse_slice",
    "resolve_backend",
    "resolve_dataset",
    "single_view",
    "views_from_aug",
]
