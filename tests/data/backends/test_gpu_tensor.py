"""gpu-tensor backend on CPU tensors: decode-once storage, loader contract, sharding, resume."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from fastssl.config import Config
from fastssl.data.factory import build_pretrain_loader
from fastssl.distributed import World


def _quiet() -> Config:
    cfg = Config()
    a = cfg.aug
    a.flip_p = a.jitter_p = a.grayscale_p = 0.0
    a.blur_p, a.solarize_p = (0.0, 0.0), (0.0, 0.0)
    return cfg


def build_gpu_tensor_loader(cfg: Config, world: World):
    cfg.data.backend = "gpu-tensor"
    loader = build_pretrain_loader(cfg, world)
    assert loader.backend == "gpu-tensor"
    return loader


def _npz(tmp_path, n=40, size=12) -> str:
    """n flat PNGs whose grey level encodes the index; label = index % 3."""
    blobs = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(np.full((size, size, 3), 5 * i + 10, np.uint8)).save(buf, "PNG")
        blobs.append(buf.getvalue())
    off = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    path = tmp_path / "d.npz"
    np.savez(path, jpeg=np.frombuffer(b"".join(blobs), np.uint8), offsets=off, labels=np.arange(n) % 3)
    return str(path)


def _cfg(path: str, **data) -> Config:
    cfg = _quiet()
    cfg.data.dataset, cfg.data.path, cfg.data.backend, cfg.data.test_path = "npz", path, "gpu-tensor", "unused"
    cfg.data.image_size, cfg.data.num_workers = 8, 1
    cfg.train.batch_size = 8
    for k, v in data.items():
        setattr(cfg.data, k, v)
    return cfg


def _ids(v: torch.Tensor, cfg) -> list[int]:
    mean = torch.tensor(cfg.aug.normalize_mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.aug.normalize_std).view(1, 3, 1, 1)
    return [round((float(x) - 10) / 5) for x in ((v.float() * std + mean) * 255).mean((1, 2, 3))]


def test_loader_contract_labels_and_dtype(tmp_path):
    cfg = _cfg(_npz(tmp_path), dtype="bf16")
    cfg.aug.local_crops, cfg.aug.local_size = 2, 4
    loader = build_gpu_tensor_loader(cfg, World())
    assert loader.images.dtype == torch.uint8 and tuple(loader.images.shape) == (40, 3, 12, 12)
    assert len(loader) == 5 and loader.batch_size == 8 and loader.num_images == 40
    loader.set_epoch(0)
    seen = []
    for views, labels in loader:
        assert [tuple(v.shape) for v in views] == [(8, 3, 8, 8)] * 2 + [(8, 3, 4, 4)] * 2
        assert all(v.dtype == torch.bfloat16 for v in views) and labels.dtype == torch.int64
        ids = _ids(views[0], cfg)
        assert labels.tolist() == [i % 3 for i in ids]
        seen += ids
    assert sorted(seen) == list(range(40))


def test_two_views_differ_and_batches_are_deterministic(tmp_path):
    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(16):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, "PNG")
        blobs.append(buf.getvalue())
    off = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    np.savez(tmp_path / "r.npz", jpeg=np.frombuffer(b"".join(blobs), np.uint8), offsets=off)
    cfg = Config()
    cfg.data.dataset, cfg.data.path, cfg.data.test_path, cfg.data.image_size = "npz", str(tmp_path / "r.npz"), "x", 16
    cfg.train.batch_size = 4
    loader = build_gpu_tensor_loader(cfg, World())
    loader.set_epoch(2)
    full = list(loader)
    v0, v1 = full[0][0]
    assert bool(((v0 - v1).abs().flatten(1).mean(1) > 0.05).all())
    loader.set_epoch(2, start_step=1)
    resumed = list(loader)
    assert len(resumed) == 3
    assert all(torch.equal(a, b) for (va, _), (vb, _) in zip(full[1:], resumed) for a, b in zip(va, vb))
    loader.set_epoch(3)
    assert not torch.equal(next(iter(loader))[0][0], full[0][0][0])


def test_rank_shards_disjoint_and_covering(tmp_path):
    cfg = _cfg(_npz(tmp_path))
    per_rank = []
    for rank in range(2):
        loader = build_gpu_tensor_loader(cfg, World(rank=rank, world_size=2))
        loader.set_epoch(1)
        per_rank.append([i for views, _ in loader for i in _ids(views[0], cfg)])
    assert not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == list(range(40))


def test_mixed_sizes_are_stored_square(tmp_path):
    for i, (h, w) in enumerate([(10, 20), (30, 12), (16, 16)]):
        (tmp_path / f"{i}.png").write_bytes(_png_bytes(np.full((h, w, 3), 100, np.uint8)))
    cfg = Config()
    cfg.data.dataset, cfg.data.path, cfg.data.test_path, cfg.data.image_size = "folder", str(tmp_path), "x", 8
    cfg.train.batch_size = 2
    loader = build_gpu_tensor_loader(cfg, World())
    assert tuple(loader.images.shape) == (3, 3, 9, 9)
    assert int(loader.images.min()) == int(loader.images.max()) == 100


def test_the_size_probe_decodes_its_images_once(tmp_path):
    """40 images are decoded once each, plus the 15 distinct images of the size probe, once."""
    from fastssl.data.sources.npz_shards import NpzShardSource

    class Counting(NpzShardSource):
        calls = 0

        def image(self, i):
            Counting.calls += 1
            return super().image(i)

    cfg = _cfg(_npz(tmp_path))
    source = Counting(cfg.data.path)
    loader = build_pretrain_loader(cfg, World(), source=source)
    assert loader.backend == "gpu-tensor" and Counting.calls == 40 + 15


def _png_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def test_corrupt_image_is_named(tmp_path):
    from fastssl.errors import FastSSLError

    for i in range(4):
        (tmp_path / f"{i}.png").write_bytes(_png_bytes(np.full((8, 8, 3), 9, np.uint8)))
    (tmp_path / "2.png").write_bytes(b"broken")
    cfg = Config()
    cfg.data.dataset, cfg.data.path, cfg.data.test_path, cfg.data.image_size = "folder", str(tmp_path), "x", 8
    cfg.train.batch_size = 2
    with pytest.raises(FastSSLError, match="2.png"):
        build_gpu_tensor_loader(cfg, World())
