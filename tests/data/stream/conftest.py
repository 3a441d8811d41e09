"""Tiny webdataset tars for the stream tests: 8 px PNGs, keys `s<shard>_<i>`, label = i % 4."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from fastssl.config import Config
from fastssl.distributed import World


def png(seed: int, size: int = 8) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def write_tars(folder, sizes: list[int], bad: dict[str, str] | None = None) -> list[str]:
    """One tar per entry of `sizes`; `bad` maps a key to "truncated" or "noimage"."""
    folder.mkdir(parents=True, exist_ok=True)
    bad = bad or {}
    paths = []
    for s, n in enumerate(sizes):
        path = folder / f"shard-{s:03d}.tar"
        with tarfile.open(path, "w") as tf:
            for i in range(n):
                key = f"s{s}_{i:03d}"
                if bad.get(key) == "noimage":
                    add(tf, f"{key}.txt", b"caption only")
                else:
                    data = png(s * 1000 + i)
                    add(tf, f"{key}.png", data[: len(data) // 2] if bad.get(key) == "truncated" else data)
                add(tf, f"{key}.cls", str(i % 4).encode())
        paths.append(str(path))
    return paths


@pytest.fixture
def shards_dir(tmp_path):
    """5 uneven shards, 70 samples."""
    write_tars(tmp_path / "wds", [20, 9, 17, 13, 11])
    return tmp_path / "wds"


def stream_cfg(path, *, batch: int = 8, workers: int = 0, shuffle: int = 6, backend: str = "torch") -> Config:
    cfg = Config()
    cfg.data.path, cfg.data.backend, cfg.data.image_size = str(path), backend, 8
    cfg.data.num_workers, cfg.data.shuffle_buffer = workers, shuffle
    cfg.aug.local_crops = 0
    cfg.train.batch_size, cfg.train.seed = batch, 3
    return cfg


def ranks(n: int) -> list[World]:
    return [World(rank=r, world_size=n) for r in range(n)]
