"""DALI augmentation statistics agree with the torch path (fastssl.data.augment) and with p.

Each op is measured alone (the others switched off) on a probe image built so that the op is
visible in every output: coordinate ramps for crops and flips, a saturated colour for
grayscale, a flat bright grey for solarisation, a 1-px checkerboard for blur.
"""

import io

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("nvidia.dali")

from fastssl.config import Config  # noqa: E402
from fastssl.data.augment import build_view_transform  # noqa: E402
from fastssl.data.dali_loader import build_dali_loader  # noqa: E402
from fastssl.distributed import World  # noqa: E402

pytestmark = pytest.mark.dali

PROBE = 64  # probe side in px
OUT = 32  # view side
BATCH = 64
STEPS = 4  # 2 views x 64 x 4 = 512 samples per statistic


def _ramp() -> np.ndarray:
    # R encodes x, G encodes y (4 levels per px), B constant: crop box and flip are readable.
    y, x = np.mgrid[0:PROBE, 0:PROBE]
    return np.stack([4 * x, 4 * y, np.full_like(x, 128)], -1).astype(np.uint8)


def _checker() -> np.ndarray:
    y, x = np.mgrid[0:OUT, 0:OUT]
    return np.repeat((((x + y) % 2) * 255)[..., None], 3, -1).astype(np.uint8)


def _flat(rgb) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, np.uint8), (PROBE, PROBE, 3)).copy()


def _quiet_cfg() -> Config:
    """Every op off; each test switches on the one it measures."""
    cfg = Config()
    cfg.data.image_size, cfg.data.num_workers, cfg.data.test_path = OUT, 1, "unused"
    cfg.train.batch_size = BATCH
    a = cfg.aug
    a.flip_p = a.jitter_p = a.grayscale_p = 0.0
    a.blur_p, a.solarize_p = (0.0, 0.0), (0.0, 0.0)
    return cfg


def _dali_views(tmp_path, probe: np.ndarray, cfg: Config) -> list[torch.Tensor]:
    """All views of STEPS batches of the probe, de-normalised to [0, 255]: list of [B, 3, S, S]."""
    buf = io.BytesIO()
    Image.fromarray(probe).save(buf, "PNG")
    blob = buf.getvalue()
    n = BATCH * STEPS
    off = np.arange(n + 1, dtype=np.int64) * len(blob)
    np.savez(tmp_path / "p.npz", jpeg=np.frombuffer(blob * n, np.uint8), offsets=off, labels=np.zeros(n, np.int16))
    cfg.data.dataset, cfg.data.path, cfg.data.backend = "npz", str(tmp_path / "p.npz"), "dali-cpu"
    loader = build_dali_loader(cfg, World())
    loader.set_epoch(0)
    out = [[], []]
    for views, _ in loader:
        for k in range(2):
            out[k].append(_denorm(views[k], cfg))
    return [torch.cat(v) for v in out]


def _torch_views(probe: np.ndarray, cfg: Config, view: int, n: int) -> torch.Tensor:
    a = cfg.aug
    t = build_view_transform(a, OUT, (a.crop_scale_min, a.crop_scale_max), a.blur_p[view], a.solarize_p[view])
    img = Image.fromarray(probe)
    return _denorm(torch.stack([t(img) for _ in range(n)]), cfg)


def _denorm(v: torch.Tensor, cfg: Config) -> torch.Tensor:
    mean = torch.tensor(cfg.aug.normalize_mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.aug.normalize_std).view(1, 3, 1, 1)
    return (v.float() * std + mean) * 255


def crop_area_and_flip(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From ramp-probe views: crop area as a fraction of the probe, and whether x was mirrored."""
    q1, q3 = OUT // 4, 3 * OUT // 4
    # Ramp slope over the interior (away from resampling borders) = 4 * crop_side / OUT.
    sx = (v[:, 0, :, q3] - v[:, 0, :, q1]).mean(1) / (q3 - q1)
    sy = (v[:, 1, q3, :] - v[:, 1, q1, :]).mean(1) / (q3 - q1)
    w, h = sx.abs() * OUT / 4, sy.abs() * OUT / 4
    return (w * h) / PROBE**2, sx < 0


def test_crop_area_matches_torch_path(tmp_path):
    cfg = _quiet_cfg()
    dali = torch.cat(_dali_views(tmp_path, _ramp(), cfg))
    ref = _torch_views(_ramp(), cfg, 0, 384)
    area_dali, flipped = crop_area_and_flip(dali)
    area_ref, _ = crop_area_and_flip(ref)
    assert not flipped.any()
    assert 0.08 - 0.02 <= float(area_dali.min()) and float(area_dali.max()) <= 1.02
    # E[area] of RandomResizedCrop(0.08, 1) is ~0.5; std error of each mean is ~0.013.
    assert abs(float(area_dali.mean()) - float(area_ref.mean())) < 0.06


def test_local_crop_scale(tmp_path):
    cfg = _quiet_cfg()
    cfg.aug.crop_scale_min, cfg.aug.crop_scale_max = 0.05, 0.4
    area, _ = crop_area_and_flip(torch.cat(_dali_views(tmp_path, _ramp(), cfg)))
    assert float(area.max()) < 0.45 and 0.15 < float(area.mean()) < 0.28


def test_flip_rate_is_half(tmp_path):
    cfg = _quiet_cfg()
    cfg.aug.flip_p = 0.5
    _, flipped = crop_area_and_flip(torch.cat(_dali_views(tmp_path, _ramp(), cfg)))
    assert abs(flipped.float().mean().item() - 0.5) < 0.08


def _is_gray(v: torch.Tensor) -> torch.Tensor:
    return (v.amax(1) - v.amin(1)).mean((1, 2)) < 3


def test_grayscale_rate_matches_p_and_torch(tmp_path):
    cfg = _quiet_cfg()
    cfg.aug.grayscale_p = 0.3
    probe = _flat((200, 40, 60))
    dali = _is_gray(torch.cat(_dali_views(tmp_path, probe, cfg))).float().mean().item()
    ref = _is_gray(_torch_views(probe, cfg, 0, 300)).float().mean().item()
    assert abs(dali - 0.3) < 0.08 and abs(ref - 0.3) < 0.1


def test_jitter_rate_matches_p(tmp_path):
    cfg = _quiet_cfg()
    cfg.aug.jitter_p = 0.8
    cfg.aug.contrast = cfg.aug.saturation = cfg.aug.hue = 0.0  # brightness alone: flat grey moves
    v = torch.cat(_dali_views(tmp_path, _flat((128, 128, 128)), cfg))
    changed = (v.mean((1, 2, 3)) - 128).abs() > 1.5
    assert abs(changed.float().mean().item() - 0.8) < 0.08


def test_solarize_rate_per_view(tmp_path):
    cfg = _quiet_cfg()
    cfg.aug.solarize_p = (0.0, 0.5)
    v0, v1 = _dali_views(tmp_path, _flat((200, 200, 200)), cfg)
    dark = lambda v: v.mean((1, 2, 3)) < 128  # noqa: E731 - 200 solarises to 55
    assert dark(v0).sum().item() == 0
    assert abs(dark(v1).float().mean().item() - 0.5) < 0.08
    ref = dark(_torch_views(_flat((200, 200, 200)), cfg, 1, 300)).float().mean().item()
    assert abs(ref - 0.5) < 0.1


def test_blur_rate_per_view(tmp_path):
    cfg = _quiet_cfg()
    cfg.aug.crop_scale_min = 1.0  # whole probe, no resampling of the checkerboard
    cfg.aug.blur_p, cfg.aug.blur_sigma_min = (1.0, 0.3), 1.0
    v0, v1 = _dali_views(tmp_path, _checker(), cfg)
    blurred = lambda v: v.std((1, 2, 3)) < 60  # noqa: E731 - sharp checkerboard has std ~127
    assert blurred(v0).all()
    assert abs(blurred(v1).float().mean().item() - 0.3) < 0.08
