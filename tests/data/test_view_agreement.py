"""One ViewSpec through every backend that runs on a CPU: the same operations at the same rates.

torch (torchvision on PIL), dali-cpu (DALI's CPU operators) and gpu-tensor (batched torch ops,
here on CPU tensors) each build their augmentation from the spec alone. The spec below gives
each operation a view of its own, so every view isolates one operation, and the probe image
is built so that operation is readable from every output:

- R = 4x and G = 4y (coordinate ramps): a crop's width and height are the ramps' slopes in
  the output, a flip is a negative x slope (global and local crop views);
- B = a 1-px checkerboard: blurring flattens it (full-image blur view);
- the ramps make the three channels differ everywhere, so a grayscale output is one whose
  channels agree (grayscale view); solarisation turns the bright right quarter of R dark
  (solarize view); brightness jitter moves the mean (jitter view).

Every rate is checked against its probability within 4 standard errors of a binomial rate over
N_SAMPLES images, and crop areas against torchvision's own crop sampler.
"""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

import fastssl.data.backends.dali_loader as dl
from fastssl.config import Config
from fastssl.data.factory import build_pretrain_loader
from fastssl.data.views import View, ViewSpec
from fastssl.distributed import World

PROBE = 64  # probe side, px
BATCH, STEPS = 64, 8
N_SAMPLES = BATCH * STEPS  # per view and backend: binomial SE of a rate near 0.5 is 0.022
BACKENDS = ["torch", "gpu-tensor"] + (["dali-cpu"] if dl.dali_available() else [])

GLOBAL = View(32, scale=(0.08, 1.0), flip_p=0.5)
LOCAL = View(16, scale=(0.05, 0.4), flip_p=0.5)
# Full-image views at the probe's size: no resampling, so each op below sees the probe itself.
_FULL = dict(size=PROBE, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0)
GRAY = View(**_FULL, grayscale_p=0.3)
SOLARIZE = View(**_FULL, solarize_p=0.4)
# Not 0.5: a backend that hard-codes a blur probability (as DALI once did for local crops) fails.
BLUR = View(**_FULL, blur_p=0.25, blur_sigma=(1.0, 2.0))
JITTER = View(**_FULL, jitter_p=0.8, brightness=0.4)
SPEC = ViewSpec((GLOBAL, LOCAL, GRAY, SOLARIZE, BLUR, JITTER), mean=(0.0,) * 3, std=(1.0,) * 3)


def _probe() -> np.ndarray:
    y, x = np.mgrid[0:PROBE, 0:PROBE]
    checker = np.where((x + y) % 2 == 0, 64, 192)
    return np.stack([4 * x, 4 * y, checker], -1).astype(np.uint8)  # [H, W, 3]


@pytest.fixture(scope="module")
def probe_npz(tmp_path_factory) -> str:
    buf = io.BytesIO()
    Image.fromarray(_probe()).save(buf, "PNG")
    blob = buf.getvalue()
    off = np.arange(N_SAMPLES + 1, dtype=np.int64) * len(blob)
    path = tmp_path_factory.mktemp("probe") / "p.npz"
    np.savez(path, jpeg=np.frombuffer(blob * N_SAMPLES, np.uint8), offsets=off, labels=np.zeros(N_SAMPLES, np.int16))
    return str(path)


@pytest.fixture(scope="module")
def outputs(probe_npz) -> dict[str, list[torch.Tensor]]:
    """backend -> one [N_SAMPLES, 3, S, S] tensor per view, in pixel units (0..255)."""
    out = {}
    for backend in BACKENDS:
        cfg = Config()
        cfg.data.dataset, cfg.data.path, cfg.data.test_path = "npz", probe_npz, "all-images-train"
        cfg.data.backend, cfg.data.image_size, cfg.data.num_workers = backend, 32, 0 if backend == "torch" else 1
        cfg.train.batch_size = BATCH
        loader = build_pretrain_loader(cfg, World(), views=SPEC)
        assert loader.backend == backend and len(loader) == STEPS
        loader.set_epoch(0)
        batches = [views for views, _ in loader]
        out[backend] = [torch.cat([b[k] for b in batches]).float() * 255 for k in range(len(SPEC.views))]
    return out


# --- what each view shows ----------------------------------------------------------------------


def crop_area_and_flip(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From ramp views [N, 3, S, S]: crop area as a fraction of the probe, and whether x was mirrored."""
    s = v.shape[-1]
    q1, q3 = s // 4, 3 * s // 4  # interior columns/rows, away from resampling borders
    sx = (v[:, 0, :, q3] - v[:, 0, :, q1]).mean(1) / (q3 - q1)  # = +-4 * crop_width / s
    sy = (v[:, 1, q3, :] - v[:, 1, q1, :]).mean(1) / (q3 - q1)
    w, h = sx.abs() * s / 4, sy.abs() * s / 4
    return (w * h) / PROBE**2, sx < 0


def is_gray(v: torch.Tensor) -> torch.Tensor:
    return (v.amax(1) - v.amin(1)).mean((1, 2)) < 3  # the probe's channels differ by ~100 on average


def is_solarized(v: torch.Tensor) -> torch.Tensor:
    return v[:, 0, :, 3 * PROBE // 4 :].mean((1, 2)) < 128  # R >= 192 there; solarised <= 63


def is_blurred(v: torch.Tensor) -> torch.Tensor:
    b = v[:, 2, 8:-8, 8:-8]  # the checkerboard, away from the padded border
    return (b[:, :, 1:] - b[:, :, :-1]).abs().mean((1, 2)) < 64  # sharp: exactly 128


def is_jittered(v: torch.Tensor) -> torch.Tensor:
    return (v.mean((1, 2, 3)) - float(_probe().mean())).abs() > 1.5


def _jitter_detectable_p() -> float:
    """P(jittered and visible): brightness factors within 1.5 grey levels of 1 do not show."""
    delta = 1.5 / float(_probe().mean())
    return JITTER.jitter_p * (1 - 2 * delta / (2 * JITTER.brightness))


RATES = {  # view index, detector, expected rate
    "flip (global)": (0, lambda v: crop_area_and_flip(v)[1], GLOBAL.flip_p),
    "flip (local)": (1, lambda v: crop_area_and_flip(v)[1], LOCAL.flip_p),
    "grayscale": (2, is_gray, GRAY.grayscale_p),
    "solarize": (3, is_solarized, SOLARIZE.solarize_p),
    "blur": (4, is_blurred, BLUR.blur_p),
    "jitter": (5, is_jittered, _jitter_detectable_p()),
}


def _tolerance(p: float) -> float:
    return 4 * (p * (1 - p) / N_SAMPLES) ** 0.5


@pytest.mark.parametrize("op", list(RATES))
def test_every_backend_applies_each_op_at_its_rate(outputs, op):
    view, detect, p = RATES[op]
    rates = {b: detect(outputs[b][view]).float().mean().item() for b in BACKENDS}
    print(f"\n{op:>14}: p={p:.3f} " + " ".join(f"{b}={r:.3f}" for b, r in rates.items()))
    for backend, rate in rates.items():
        assert abs(rate - p) < _tolerance(p), f"{backend}: {op} rate {rate:.3f}, expected {p:.3f}"


def _reference_area(view: View, n: int = 8000) -> torch.Tensor:
    """Crop areas from torchvision's own RandomResizedCrop sampler on the probe."""
    g = torch.random.fork_rng()
    with g:
        torch.manual_seed(0)
        img = torch.zeros(1, PROBE, PROBE)
        boxes = [v2.RandomResizedCrop.get_params(img, list(view.scale), list(view.ratio)) for _ in range(n)]
    return torch.tensor([h * w for _, _, h, w in boxes], dtype=torch.float32) / PROBE**2


@pytest.mark.parametrize("view_index, name", [(0, "global"), (1, "local")])
def test_crop_areas_agree_with_torchvision_on_every_backend(outputs, view_index, name):
    view = SPEC.views[view_index]
    ref = _reference_area(view)
    # 4 standard errors of a mean over N_SAMPLES crops, plus 1% for sub-pixel box rounding.
    tol = 4 * float(ref.std()) / N_SAMPLES**0.5 + 0.01
    for backend in BACKENDS:
        area, _ = crop_area_and_flip(outputs[backend][view_index])
        print(f"\ncrop area ({name}) {backend}: mean {float(area.mean()):.3f} (torchvision {float(ref.mean()):.3f}), "
              f"range {float(area.min()):.3f}..{float(area.max()):.3f}")
        assert abs(float(area.mean()) - float(ref.mean())) < tol, backend
        assert view.scale[0] - 0.03 <= float(area.min()) and float(area.max()) <= view.scale[1] + 0.03, backend


def test_disabled_ops_stay_off(outputs):
    """Views with an op at p = 0 never show it: no backend applies an op the spec did not ask for."""
    for backend in BACKENDS:
        views = outputs[backend]
        assert not crop_area_and_flip(views[4])[1].any(), backend  # the blur view has flip_p = 0
        assert not is_gray(views[3]).any() and not is_gray(views[0]).any(), backend
        assert not is_solarized(views[2]).any() and not is_solarized(views[4]).any(), backend
        assert not is_blurred(views[5]).any() and not is_jittered(views[4]).any(), backend
