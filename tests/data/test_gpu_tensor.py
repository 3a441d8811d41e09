"""gpu-tensor backend on CPU tensors: batched augmentation statistics, loader contract, resume."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from fastssl.config import Config
from fastssl.data.augment import build_view_transform
from fastssl.data.dali_pipeline import ViewSpec
from fastssl.data.gpu_tensor import (
    _hsv_to_rgb,
    _rgb_to_hsv,
    augment_views,
    build_gpu_tensor_loader,
    crop_boxes,
)
from fastssl.distributed import World

PROBE, OUT, N_STAT = 64, 32, 512


def _quiet() -> Config:
    cfg = Config()
    cfg.data.image_size = OUT
    a = cfg.aug
    a.flip_p = a.jitter_p = a.grayscale_p = 0.0
    a.blur_p, a.solarize_p = (0.0, 0.0), (0.0, 0.0)
    return cfg


def _views(probe: np.ndarray, cfg: Config, specs=None, n=N_STAT, seed=0) -> list[torch.Tensor]:
    """Augment n copies of the probe; views de-normalised to [0, 255]."""
    x = torch.from_numpy(probe).permute(2, 0, 1).unsqueeze(0).expand(n, -1, -1, -1).contiguous()
    a = cfg.aug
    specs = specs or [ViewSpec(OUT, (a.crop_scale_min, a.crop_scale_max), a.blur_p[v], a.solarize_p[v]) for v in (0, 1)]
    g = torch.Generator().manual_seed(seed)
    mean = torch.tensor(a.normalize_mean).view(1, 3, 1, 1)
    std = torch.tensor(a.normalize_std).view(1, 3, 1, 1)
    return [(v * std + mean) * 255 for v in augment_views(x, specs, a, g)]


def _ramp() -> np.ndarray:
    y, x = np.mgrid[0:PROBE, 0:PROBE]
    return np.stack([4 * x, 4 * y, np.full_like(x, 128)], -1).astype(np.uint8)


def _flat(rgb) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, np.uint8), (PROBE, PROBE, 3)).copy()


def _area_flip(v: torch.Tensor):
    q1, q3 = OUT // 4, 3 * OUT // 4
    sx = (v[:, 0, :, q3] - v[:, 0, :, q1]).mean(1) / (q3 - q1)
    sy = (v[:, 1, q3, :] - v[:, 1, q1, :]).mean(1) / (q3 - q1)
    return (sx.abs() * OUT / 4) * (sy.abs() * OUT / 4) / PROBE**2, sx < 0


def test_crop_boxes_follow_torchvision_distribution():
    g = torch.Generator().manual_seed(0)
    boxes = crop_boxes(4000, 48, 64, (0.08, 1.0), g, "cpu")
    top, left, h, w = boxes.unbind(1)
    assert bool(((top >= 0) & (left >= 0) & (top + h <= 48) & (left + w <= 64)).all())
    from torchvision.transforms import v2

    torch.manual_seed(0)
    ref = [v2.RandomResizedCrop.get_params(torch.zeros(1, 48, 64), [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(4000)]
    ref_area = np.mean([hh * ww for _, _, hh, ww in ref]) / (48 * 64)
    assert abs(float((h * w).mean()) / (48 * 64) - ref_area) < 0.02


def test_crop_area_and_flip_rate_match_torch_path():
    cfg = _quiet()
    cfg.aug.flip_p = 0.5
    area, flipped = _area_flip(torch.cat(_views(_ramp(), cfg)))
    t = build_view_transform(cfg.aug, OUT, (0.08, 1.0), 0.0, 0.0)
    img = Image.fromarray(_ramp())
    mean = torch.tensor(cfg.aug.normalize_mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.aug.normalize_std).view(1, 3, 1, 1)
    ref = (torch.stack([t(img) for _ in range(384)]) * std + mean) * 255
    ref_area, ref_flip = _area_flip(ref)
    assert abs(float(area.mean()) - float(ref_area.mean())) < 0.06
    assert abs(flipped.float().mean().item() - 0.5) < 0.07
    assert abs(ref_flip.float().mean().item() - 0.5) < 0.1


def test_grayscale_jitter_solarize_blur_rates():
    cfg = _quiet()
    cfg.aug.grayscale_p = 0.3
    v = torch.cat(_views(_flat((200, 40, 60)), cfg))
    gray = (v.amax(1) - v.amin(1)).mean((1, 2)) < 3
    assert abs(gray.float().mean().item() - 0.3) < 0.06

    cfg = _quiet()
    cfg.aug.jitter_p = 0.8
    v = torch.cat(_views(_flat((128, 128, 128)), cfg))
    assert abs(((v.mean((1, 2, 3)) - 128).abs() > 1.5).float().mean().item() - 0.8) < 0.06

    cfg = _quiet()
    cfg.aug.solarize_p = (0.0, 0.5)
    v0, v1 = _views(_flat((200, 200, 200)), cfg)
    assert (v0.mean((1, 2, 3)) < 128).sum() == 0
    assert abs((v1.mean((1, 2, 3)) < 128).float().mean().item() - 0.5) < 0.07

    cfg = _quiet()
    cfg.aug.crop_scale_min, cfg.aug.blur_p, cfg.aug.blur_sigma_min = 1.0, (1.0, 0.3), 1.0
    y, x = np.mgrid[0:OUT, 0:OUT]
    checker = np.repeat((((x + y) % 2) * 255)[..., None], 3, -1).astype(np.uint8)
    specs = [ViewSpec(OUT, (1.0, 1.0), 1.0, 0.0), ViewSpec(OUT, (1.0, 1.0), 0.3, 0.0)]
    v0, v1 = _views(checker, cfg, specs)
    assert bool((v0.std((1, 2, 3)) < 60).all())
    assert abs((v1.std((1, 2, 3)) < 60).float().mean().item() - 0.3) < 0.07


def test_hsv_round_trip_and_hue_shift_matches_torchvision():
    x = torch.rand(4, 3, 8, 8)
    assert torch.allclose(_hsv_to_rgb(_rgb_to_hsv(x)), x, atol=1e-5)
    from torchvision.transforms.v2 import functional as TF

    hsv = _rgb_to_hsv(x)
    hsv[:, 0] = (hsv[:, 0] + 0.2) % 1.0
    assert torch.allclose(_hsv_to_rgb(hsv), TF.adjust_hue(x, 0.2), atol=1e-3)


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
