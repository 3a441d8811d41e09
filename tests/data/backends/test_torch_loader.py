"""The torch backend: batches, labels, sharding, worker-count independence, resume, corrupt images."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from fastssl.config import AugConfig, Config
from fastssl.data.backends.torch_loader import ShardedBatchSampler, unwrap_worker_error
from fastssl.data.factory import build_pretrain_loader
from fastssl.data.sources.base import ImageSource
from fastssl.data.sources.decode import encode_png
from fastssl.data.sources.factory import open_source
from fastssl.data.sources.npz_shards import write_shard
from fastssl.distributed import World
from fastssl.errors import FastSSLError

N = 40


def _label(i: int) -> int:
    return (7 * i) % 5


@pytest.fixture
def id_shards(tmp_path):
    """2 PNG shards of N flat gray images; image i has gray level 5 * i, so batches reveal ids."""
    root = tmp_path / "ids"
    root.mkdir()
    for s, ids in enumerate((range(0, 15), range(15, N))):
        write_shard(str(root / f"s{s}.npz"), [encode_png(np.full((8, 8, 3), 5 * i, np.uint8)) for i in ids],
                    [_label(i) for i in ids])
    return root


@pytest.fixture
def noise_shards(tmp_path):
    """2 JPEG shards of N random 8x8 images: every augmentation visibly changes them."""
    root = tmp_path / "noise"
    root.mkdir()
    rng = np.random.default_rng(0)
    enc = []
    for _ in range(N):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, format="JPEG")
        enc.append(buf.getvalue())
    write_shard(str(root / "a.npz"), enc[:20], [_label(i) for i in range(20)])
    write_shard(str(root / "b.npz"), enc[20:], [_label(i) for i in range(20, N)])
    return root


def _cfg(path, batch_size=8, **data) -> Config:
    cfg = Config()
    cfg.data.dataset, cfg.data.path, cfg.data.test_path = "npz", str(path), "held-out-elsewhere"
    cfg.data.image_size, cfg.data.num_workers = 8, 0
    for k, v in data.items():
        setattr(cfg.data, k, v)
    cfg.train.batch_size, cfg.train.seed = batch_size, 3
    return cfg


def _id_cfg(path, **kw) -> Config:
    """Augmentations that keep a flat gray image flat gray, and identity normalisation."""
    cfg = _cfg(path, **kw)
    cfg.aug = AugConfig(jitter_p=0.0, solarize_p=(0.0, 0.0), normalize_mean=(0.0,) * 3, normalize_std=(1.0,) * 3)
    return cfg


def _ids(view: torch.Tensor) -> list[int]:
    return (view.mean(dim=(1, 2, 3)) * 255 / 5).round().long().tolist()  # [B]


def _epoch(loader, epoch, start_step=0):
    loader.set_epoch(epoch, start_step)
    return list(loader)


def test_batches_shapes_dtypes_ranges_and_distinct_views(noise_shards):
    cfg = _cfg(noise_shards)
    loader = build_pretrain_loader(cfg, World())
    assert len(loader) == N // 8 and loader.batch_size == 8 and loader.num_images == N
    batches = _epoch(loader, 0)
    assert len(batches) == len(loader)
    for views, labels in batches:
        assert len(views) == 2 and labels.dtype == torch.long and labels.shape == (8,)
        for v in views:
            assert v.shape == (8, 3, 8, 8) and v.dtype == torch.float32
            assert v.min() >= -2.2 and v.max() <= 2.7  # ImageNet-normalised [0, 1]
        assert not torch.equal(views[0], views[1])


def test_labels_pass_through_and_an_epoch_covers_every_image(id_shards):
    loader = build_pretrain_loader(_id_cfg(id_shards), World())
    seen = []
    for views, labels in _epoch(loader, 0):
        ids = _ids(views[0])
        assert ids == _ids(views[1])
        assert labels.tolist() == [_label(i) for i in ids]
        seen += ids
    assert sorted(seen) == list(range(N))


def test_rank_shards_are_disjoint_and_cover(id_shards):
    per_rank = []
    for rank in range(2):
        loader = build_pretrain_loader(_id_cfg(id_shards), World(rank=rank, world_size=2))
        assert loader.batch_size == 4 and len(loader) == N // 8
        per_rank.append([i for views, _ in _epoch(loader, 1) for i in _ids(views[0])])
    assert not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == list(range(N))


def test_sampler_shards_and_reshuffles_per_epoch():
    def batches(rank, epoch):
        s = ShardedBatchSampler(50, 4, rank, 2, seed=0)
        s.set_epoch(epoch)
        return [[i for i, e in b] for b in s]

    r0, r1 = batches(0, 0), batches(1, 0)
    assert len(r0) == len(r1) == 6  # 50 // 8, the last 2 images dropped
    flat0, flat1 = sum(r0, []), sum(r1, [])
    assert not set(flat0) & set(flat1) and len(set(flat0 + flat1)) == 48
    assert batches(0, 0) == r0 and batches(0, 1) != r0


def test_same_batches_with_0_and_2_workers(noise_shards):
    runs = []
    for workers in (0, 2):
        loader = build_pretrain_loader(_cfg(noise_shards, num_workers=workers), World())
        runs.append(_epoch(loader, 2) + _epoch(loader, 3))
    assert len(runs[0]) == len(runs[1]) == 10
    for (va, la), (vb, lb) in zip(*runs):
        assert torch.equal(la, lb) and all(torch.equal(a, b) for a, b in zip(va, vb))


class _Counting(ImageSource):
    def __init__(self, base: ImageSource):
        self.base, self.labels, self.num_classes, self.calls = base, base.labels, base.num_classes, 0

    def name(self, i):
        return self.base.name(i)

    def image(self, i):
        self.calls += 1
        return self.base.image(i)


def test_resume_mid_epoch_matches_and_skips_decoding(noise_shards):
    cfg = _cfg(noise_shards)
    full = _epoch(build_pretrain_loader(cfg, World()), 1)
    source = _Counting(open_source(str(noise_shards), split="all"))
    resumed_loader = build_pretrain_loader(cfg, World(), source=source)
    resumed = _epoch(resumed_loader, 1, start_step=2)
    assert len(resumed) == len(full) - 2 and source.calls == 3 * 8
    for (va, la), (vb, lb) in zip(full[2:], resumed):
        assert torch.equal(la, lb) and all(torch.equal(a, b) for a, b in zip(va, vb))
    assert len(_epoch(resumed_loader, 2)) == len(full)  # the next epoch is whole again
    with pytest.raises(FastSSLError, match="--train.batch_size"):
        resumed_loader.set_epoch(1, start_step=6)


def test_loader_leaves_the_main_process_rng_alone(noise_shards):
    loader = build_pretrain_loader(_cfg(noise_shards), World())
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    _epoch(loader, 0)
    assert torch.equal(torch.rand(3), expected)


def test_limit_and_multicrop(id_shards):
    cfg = _id_cfg(id_shards, limit=16)
    cfg.aug.local_crops, cfg.aug.local_size = 2, 4
    loader = build_pretrain_loader(cfg, World())
    assert loader.num_images == 16 and len(loader) == 2
    batches = _epoch(loader, 0)
    assert [tuple(v.shape) for v in batches[0][0]] == [(8, 3, 8, 8)] * 2 + [(8, 3, 4, 4)] * 2
    assert sorted(i for views, _ in batches for i in _ids(views[0])) == list(range(16))


def test_corrupt_image_in_an_epoch(tmp_path):
    enc = [encode_png(np.full((8, 8, 3), 5 * i, np.uint8)) for i in range(8)]
    enc[3] = b"\x89PNG broken"
    write_shard(str(tmp_path / "c.npz"), enc, list(range(8)))
    cfg = _id_cfg(tmp_path / "c.npz", batch_size=4)
    with pytest.raises(FastSSLError, match=r"c\.npz\[3\].*--data\.skip_corrupt=true"):
        _epoch(build_pretrain_loader(cfg, World()), 0)
    cfg.data.skip_corrupt = True
    with pytest.warns(UserWarning, match=r"skipping corrupt image .*c\.npz\[3\]"):
        batches = _epoch(build_pretrain_loader(cfg, World()), 0)
    ids = sorted(i for views, _ in batches for i in _ids(views[0]))
    assert len(ids) == 8 and 3 not in ids and ids.count(4) == 2  # image 4 stood in for 3


def test_worker_errors_keep_their_one_line_message():
    wrapped = FastSSLError("Caught CorruptImageError in DataLoader worker process 0.\nOriginal Traceback "
                           "(most recent call last):\n  File x\nfastssl.data.decode.CorruptImageError: cannot decode y")
    assert str(unwrap_worker_error(wrapped)) == "cannot decode y"
    plain = FastSSLError("just this")
    assert unwrap_worker_error(plain) is plain
