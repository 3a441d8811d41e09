"""The loader factory: backend resolution, the view spec reaching every backend, batch errors,
the digits-with-a-path rule, and the in-order eval loader."""

import numpy as np
import pytest
import torch

import fastssl.data.backends.dali_loader as dl
from fastssl.config import AugConfig, Config
from fastssl.data import (
    View,
    ViewSpec,
    build_eval_loader,
    build_pretrain_loader,
    open_source,
    resolve_backend,
    single_view,
)
from fastssl.data.sources.decode import encode_png
from fastssl.data.sources.npz_shards import write_shard
from fastssl.distributed import World
from fastssl.errors import FastSSLError

N = 40
HAS_DALI = dl.dali_available()
CPU_BACKENDS = ["torch", "gpu-tensor"] + (["dali-cpu"] if HAS_DALI else [])


def _label(i: int) -> int:
    return (7 * i) % 5


@pytest.fixture
def id_shards(tmp_path):
    """2 PNG shards of N flat gray 12x12 images; image i has gray level 5 * i, so batches reveal ids."""
    root = tmp_path / "ids"
    root.mkdir()
    for s, ids in enumerate((range(0, 15), range(15, N))):
        write_shard(str(root / f"s{s}.npz"), [encode_png(np.full((12, 12, 3), 5 * i, np.uint8)) for i in ids],
                    [_label(i) for i in ids])
    return root


def _id_cfg(path, batch_size=8, **data) -> Config:
    """Augmentations that keep a flat gray image flat gray, and identity normalisation."""
    cfg = Config()
    cfg.data.dataset, cfg.data.path, cfg.data.test_path = "npz", str(path), "held-out-elsewhere"
    cfg.data.image_size, cfg.data.num_workers = 8, 0
    for k, v in data.items():
        setattr(cfg.data, k, v)
    cfg.train.batch_size, cfg.train.seed = batch_size, 3
    cfg.aug = AugConfig(jitter_p=0.0, solarize_p=(0.0, 0.0), normalize_mean=(0.0,) * 3, normalize_std=(1.0,) * 3)
    return cfg


def _ids(view: torch.Tensor) -> list[int]:
    return (view.float().mean(dim=(1, 2, 3)) * 255 / 5).round().long().tolist()  # [B]


@pytest.mark.parametrize(
    "batch_size, world_size, limit, match",
    [
        (7, 2, 0, "not divisible"),
        (2, 2, 0, "at least 4"),
        (64, 1, 0, "fewer than one global batch"),
        (8, 1, 5, r"--data.limit=5\)"),
    ],
)
def test_batch_errors_name_the_fix(id_shards, batch_size, world_size, limit, match):
    cfg = _id_cfg(id_shards, batch_size=batch_size, limit=limit)
    with pytest.raises(FastSSLError, match=match) as err:
        build_pretrain_loader(cfg, World(world_size=world_size))
    assert "--train.batch_size" in str(err.value)


def test_resolve_backend(id_shards, monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(dl, "dali_available", lambda: False)
    assert resolve_backend("auto", cpu) == "torch"
    assert resolve_backend("gpu-tensor", cpu) == "gpu-tensor"
    with pytest.raises(FastSSLError, match=r"pip install fastssl\[dali\]"):
        resolve_backend("dali-cpu", cpu)
    with pytest.raises(FastSSLError, match=r"pip install fastssl\[dali\]"):
        resolve_backend("dali", cpu)
    monkeypatch.setattr(dl, "dali_available", lambda: True)
    assert resolve_backend("auto", cpu) == "dali-cpu"
    assert resolve_backend("dali-cpu", cpu) == "dali-cpu"
    with pytest.raises(FastSSLError, match="needs a CUDA GPU.*--data.backend=dali-cpu"):
        resolve_backend("dali", cpu)
    with pytest.raises(FastSSLError, match=r"unknown --data.backend=pytorch. Did you mean 'torch'\? Valid: auto, torch"):
        build_pretrain_loader(_id_cfg(id_shards, backend="pytorch"), World())


def test_auto_runs_the_backend_it_resolved(id_shards):
    """Regression: auto on a CPU machine with DALI resolved to dali-cpu, then the DALI loader
    re-read `auto` from the config, took it for "dali" and asked for a CUDA GPU."""
    loader = build_pretrain_loader(_id_cfg(id_shards, backend="auto"), World())
    assert loader.backend == ("dali-cpu" if HAS_DALI else "torch")
    loader.set_epoch(0)
    views, labels = next(iter(loader))
    assert len(views) == 2 and labels.tolist() == [_label(i) for i in _ids(views[0])]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_a_methods_own_views_reach_every_backend(id_shards, backend):
    """One view (MAE) and 1 + 2 views of different sizes (multi-crop), from the spec alone."""
    cfg = _id_cfg(id_shards, backend=backend, dtype="fp32")
    one = build_pretrain_loader(cfg, World(), views=single_view(cfg.aug, 8))
    assert one.backend == backend and one.num_views == 1
    one.set_epoch(0)
    views, labels = next(iter(one))
    assert [tuple(v.shape) for v in views] == [(8, 3, 8, 8)] and labels.shape == (8,)
    spec = ViewSpec((View(12, scale=(0.5, 1.0)), View(6, flip_p=0.0), View(4, blur_p=1.0)), (0.0,) * 3, (1.0,) * 3)
    multi = build_pretrain_loader(cfg, World(), views=spec)
    multi.set_epoch(1)
    batches = list(multi)
    assert len(batches) == N // 8
    for views, labels in batches:
        assert [tuple(v.shape) for v in views] == [(8, 3, 12, 12), (8, 3, 6, 6), (8, 3, 4, 4)]
        ids = _ids(views[0])
        assert all(_ids(v) == ids for v in views[1:])  # flat images: every view shows the same image
        assert labels.tolist() == [_label(i) for i in ids]


def test_an_invalid_spec_is_refused(id_shards):
    bad = ViewSpec((View(8, flip_p=2.0),), (0.0,) * 3, (1.0,) * 3)
    with pytest.raises(ValueError, match="view 0 .*flip_p=2.0"):
        build_pretrain_loader(_id_cfg(id_shards), World(), views=bad)
    with pytest.raises(ValueError, match="at least one view"):
        build_pretrain_loader(_id_cfg(id_shards), World(), views=ViewSpec((), (0.0,) * 3, (1.0,) * 3))


def test_digits_with_a_path_reads_the_path_and_says_so_on_rank_0(id_shards, capsys):
    cfg = _id_cfg(id_shards, dataset="digits")
    loader = build_pretrain_loader(cfg, World())
    assert loader.num_images == N
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "--data.dataset=npz" in out[0] and str(id_shards) in out[0]
    build_pretrain_loader(cfg, World(rank=1, world_size=2))
    assert capsys.readouterr().out == ""


def test_webdataset_errors_name_the_fix(tmp_path):
    (tmp_path / "shard-0.tar").write_bytes(b"")
    cfg = _id_cfg(tmp_path, dataset="auto", backend="torch")
    with pytest.raises(FastSSLError, match="cannot read tar shard .*shard-0.tar.*re-create it"):
        build_pretrain_loader(cfg, World())
    cfg = _id_cfg(tmp_path, dataset="auto", backend="gpu-tensor")
    with pytest.raises(FastSSLError, match="gpu-tensor cannot .*--data.backend=torch"):
        build_pretrain_loader(cfg, World())


def test_bad_dtype_names_the_key(id_shards):
    cfg = _id_cfg(id_shards, backend="gpu-tensor", dtype="float32")
    with pytest.raises(FastSSLError, match="--data.dtype='float32' .*fp32, bf16, fp16"):
        build_pretrain_loader(cfg, World())


def test_eval_loader_in_order_without_dropping(id_shards):
    source = open_source(f"{id_shards}[:10]", split="all")
    aug = AugConfig(normalize_mean=(0.0,) * 3, normalize_std=(1.0,) * 3)
    batches = list(build_eval_loader(source, aug, image_size=8, batch_size=4))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    images = torch.cat([x for x, _ in batches])
    assert images.shape == (10, 3, 8, 8) and images.dtype == torch.float32
    assert _ids(images) == list(range(10))
    assert torch.cat([y for _, y in batches]).tolist() == [_label(i) for i in range(10)]
