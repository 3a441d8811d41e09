"""DALI loader on CPU (dali-cpu): readers, sharding, resume, labels, corrupt images.

Images are constant-colour PNGs whose grey level encodes their index, so with colour ops off any
crop of any view still says which image it came from.
"""

import io
import os

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("nvidia.dali")

from fastssl.config import Config  # noqa: E402
from fastssl.data.backends.dali_loader import dali_unavailable_reason  # noqa: E402
from fastssl.data.factory import build_pretrain_loader  # noqa: E402
from fastssl.data.tools import convert  # noqa: E402
from fastssl.distributed import World  # noqa: E402
from fastssl.errors import FastSSLError  # noqa: E402

pytestmark = pytest.mark.dali

N = 40


def _png(level: int, size: int = 20) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size + 4, 3), level, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _level(i: int) -> int:
    return 5 * i + 10


def _write_npz(path, blobs, labels):
    off = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    np.savez(path, jpeg=np.frombuffer(b"".join(blobs), np.uint8), offsets=off, labels=np.asarray(labels, np.int16))


@pytest.fixture
def data(tmp_path):
    """The same 40 indexed images as npz, folder, file list and webdataset; label = index % 4."""
    npz = tmp_path / "a.npz"
    _write_npz(npz, [_png(_level(i)) for i in range(N)], [i % 4 for i in range(N)])
    paths = {"npz": str(npz)}
    for fmt in ("folder", "filelist", "webdataset"):
        convert.convert(str(npz), str(tmp_path / fmt), fmt, shard_size=16)
    paths["folder"] = str(tmp_path / "folder")
    paths["filelist"] = str(tmp_path / "filelist" / "list.txt")
    paths["webdataset"] = str(tmp_path / "webdataset")
    return paths


def _cfg(dataset, path, **data) -> Config:
    cfg = Config()
    cfg.data.dataset, cfg.data.path, cfg.data.backend = dataset, path, "dali-cpu"
    cfg.data.image_size, cfg.data.num_workers = 16, 1
    # Every image is a training image, so coverage is checkable.
    cfg.data.test_path = "unused"
    cfg.train.batch_size = 8
    cfg.aug.jitter_p = cfg.aug.grayscale_p = 0.0
    cfg.aug.solarize_p = (0.0, 0.0)
    for k, v in data.items():
        setattr(cfg.data, k, v)
    return cfg


def build_dali_loader(cfg: Config, world: World):
    loader = build_pretrain_loader(cfg, world)
    assert loader.backend == "dali-cpu"
    return loader


def _ids(view: torch.Tensor, cfg: Config) -> list[int]:
    """Recover image indices from a constant-colour view [B, 3, S, S]."""
    mean = torch.tensor(cfg.aug.normalize_mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.aug.normalize_std).view(1, 3, 1, 1)
    level = (view.float() * std + mean).mul(255).mean((1, 2, 3))
    return [round((float(v) - 10) / 5) for v in level]


def _epoch_ids(loader, cfg, epoch, start=0):
    loader.set_epoch(epoch, start)
    ids, labels = [], []
    for views, lab in loader:
        ids += _ids(views[0], cfg)
        assert _ids(views[1], cfg) == _ids(views[0], cfg)
        labels += lab.tolist()
    return ids, labels


@pytest.mark.parametrize("fmt", ["npz", "folder", "filelist", "webdataset"])
def test_every_reader_yields_indexed_images_with_their_labels(data, fmt):
    cfg = _cfg(fmt, data[fmt])
    loader = build_dali_loader(cfg, World())
    assert loader.mode == {"npz": "external", "folder": "files", "filelist": "files", "webdataset": "webdataset"}[fmt]
    assert loader.num_images == N and len(loader) == N // 8
    ids, labels = _epoch_ids(loader, cfg, 0)
    assert len(ids) == len(set(ids)) == N
    assert labels == [i % 4 for i in ids]


def test_views_shapes_dtypes_ranges_and_multicrop(data):
    cfg = _cfg("npz", data["npz"], dtype="bf16")
    cfg.aug.local_crops, cfg.aug.local_size = 2, 8
    cfg.aug.jitter_p, cfg.aug.grayscale_p, cfg.aug.solarize_p = 0.8, 0.2, (0.0, 0.2)
    loader = build_dali_loader(cfg, World())
    loader.set_epoch(0)
    views, labels = next(iter(loader))
    assert [tuple(v.shape) for v in views] == [(8, 3, 16, 16)] * 2 + [(8, 3, 8, 8)] * 2
    assert all(v.dtype == torch.bfloat16 for v in views)
    assert labels.dtype == torch.int64 and labels.shape == (8,)
    lo = (0 - max(cfg.aug.normalize_mean)) / min(cfg.aug.normalize_std)
    hi = (1 - min(cfg.aug.normalize_mean)) / min(cfg.aug.normalize_std)
    assert all(lo - 0.05 <= float(v.min()) and float(v.max()) <= hi + 0.05 for v in views)


def test_fp16_output(data):
    cfg = _cfg("npz", data["npz"], dtype="fp16")
    loader = build_dali_loader(cfg, World())
    views, _ = next(iter(loader))
    assert views[0].dtype == torch.float16


def test_two_views_differ(tmp_path):
    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(16):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
        blobs.append(buf.getvalue())
    _write_npz(tmp_path / "r.npz", blobs, [0] * 16)
    cfg = _cfg("npz", str(tmp_path / "r.npz"))
    cfg.train.batch_size = 16
    views, _ = next(iter(build_dali_loader(cfg, World())))
    per_sample = (views[0] - views[1]).abs().flatten(1).mean(1)
    assert bool((per_sample > 0.05).all())


@pytest.mark.parametrize("fmt", ["npz", "folder", "webdataset"])
def test_rank_shards_are_disjoint_and_cover(data, fmt):
    cfg = _cfg(fmt, data[fmt])
    cfg.train.batch_size = 8  # 4 per rank
    per_rank = []
    for rank in range(2):
        loader = build_dali_loader(cfg, World(rank=rank, world_size=2))
        assert loader.batch_size == 4 and len(loader) == 5
        per_rank.append(_epoch_ids(loader, cfg, 1)[0])
    assert not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == list(range(N))


def test_epochs_reshuffle_and_resume_is_exact(data):
    cfg = _cfg("npz", data["npz"])
    loader = build_dali_loader(cfg, World())
    e0, _ = _epoch_ids(loader, cfg, 0)
    e1, _ = _epoch_ids(loader, cfg, 1)  # continues the live pipeline
    assert e0 != e1 and sorted(e0) == sorted(e1)
    fresh = build_dali_loader(cfg, World())
    resumed, _ = _epoch_ids(fresh, cfg, 1, start=2)  # rebuilds at (1, 2)
    assert resumed == e1[2 * 8 :]


def test_files_reader_resumes_mid_epoch(data):
    cfg = _cfg("folder", data["folder"])
    loader = build_dali_loader(cfg, World())
    full, _ = _epoch_ids(loader, cfg, 3)
    assert _epoch_ids(loader, cfg, 3, start=1)[0] == full[8:]


def test_webdataset_without_labels_gives_minus_one(tmp_path):
    src = tmp_path / "flat"
    src.mkdir()
    for i in range(16):
        (src / f"{i:02d}.png").write_bytes(_png(_level(i)))
    convert.convert(str(src), str(tmp_path / "wds"), "webdataset")
    cfg = _cfg("webdataset", str(tmp_path / "wds"))
    _, labels = _epoch_ids(build_dali_loader(cfg, World()), cfg, 0)
    assert labels == [-1] * 16


def _with_corrupt(tmp_path, blob: bytes) -> tuple[str, str]:
    root = tmp_path / "imgs" / "c0"
    root.mkdir(parents=True)
    for i in range(24):
        (root / f"{i:02d}.png").write_bytes(_png(_level(i)))
    bad = root / "07.png"
    bad.write_bytes(blob)
    return str(tmp_path / "imgs"), str(bad)


TRUNCATED = _png(50)[:40]


@pytest.mark.parametrize("dataset", ["folder", "npz"])
@pytest.mark.parametrize("blob", [b"not an image at all" * 4, TRUNCATED], ids=["garbage", "truncated"])
def test_corrupt_image_error_names_it(tmp_path, dataset, blob):
    folder, bad = _with_corrupt(tmp_path, blob)
    path = folder
    if dataset == "npz":
        files = sorted(os.path.join(folder, "c0", f) for f in os.listdir(os.path.join(folder, "c0")))
        _write_npz(tmp_path / "c.npz", [open(f, "rb").read() for f in files], [0] * len(files))
        path, bad = str(tmp_path / "c.npz"), f"{tmp_path / 'c.npz'}[7]"
    cfg = _cfg(dataset, path)
    loader = build_dali_loader(cfg, World())
    with pytest.raises(FastSSLError, match="skip_corrupt") as e:
        _epoch_ids(loader, cfg, 0)
    assert bad in str(e.value)


@pytest.mark.parametrize("dataset", ["folder", "npz"])
def test_corrupt_image_skipped_with_skip_corrupt(tmp_path, dataset):
    folder, _ = _with_corrupt(tmp_path, TRUNCATED)
    path = folder
    if dataset == "npz":
        files = sorted(os.path.join(folder, "c0", f) for f in os.listdir(os.path.join(folder, "c0")))
        _write_npz(tmp_path / "c.npz", [open(f, "rb").read() for f in files], [0] * len(files))
        path = str(tmp_path / "c.npz")
    cfg = _cfg(dataset, path, skip_corrupt=True)
    loader = build_dali_loader(cfg, World())
    with pytest.warns(UserWarning, match="skipping corrupt image"):
        ids, _ = _epoch_ids(loader, cfg, 0)
    assert len(ids) == 24 and 7 not in ids
    # Next epoch: the corrupt file is already known, no new failure.
    ids2, _ = _epoch_ids(loader, cfg, 1)
    assert len(ids2) == 24 and 7 not in ids2


def test_unavailable_backends_explain_the_fix():
    msg = dali_unavailable_reason("dali", torch.device("cpu"))
    assert "dali-cpu" in msg and "CUDA" in msg
    assert dali_unavailable_reason("dali-cpu", torch.device("cpu")) is None


def test_same_images_per_step_as_torch_backend(data):
    cfg = _cfg("npz", data["npz"])
    cfg.data.num_workers = 0
    ids_dali, _ = _epoch_ids(build_pretrain_loader(cfg, World(rank=1, world_size=2)), cfg, 2)
    cfg.data.backend = "torch"
    ids_torch, _ = _epoch_ids(build_pretrain_loader(cfg, World(rank=1, world_size=2)), cfg, 2)
    assert ids_dali == ids_torch and len(ids_dali) == N // 2


def test_corrupt_webdataset_sample_names_the_tars(tmp_path):
    folder, _ = _with_corrupt(tmp_path, TRUNCATED)
    convert.convert(folder, str(tmp_path / "wds"), "webdataset")  # no --validate: the truncated one stays
    cfg = _cfg("webdataset", str(tmp_path / "wds"))
    with pytest.raises(FastSSLError, match=r"webdataset tars .*shard-000000.tar.*--validate"):
        _epoch_ids(build_dali_loader(cfg, World()), cfg, 0)
