import io
import pickle

import numpy as np
import pytest
from PIL import Image

from fastssl.data.sources.npz_shards import NpzShardSource, write_shard
from fastssl.errors import FastSSLError


def _jpeg(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (value, 255 - value, 128)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture
def shards(tmp_path):
    """Two shards, 5 + 7 images; image i has red channel 20 * i and label i % 3."""
    values = [20 * i for i in range(12)]
    write_shard(str(tmp_path / "train-0.npz"), [_jpeg(v) for v in values[:5]], [i % 3 for i in range(5)])
    write_shard(str(tmp_path / "train-1.npz"), [_jpeg(v) for v in values[5:]], [i % 3 for i in range(5, 12)])
    return tmp_path


def test_folder_of_shards_concatenates_in_name_order(shards):
    src = NpzShardSource(str(shards))
    assert len(src) == 12 and src.num_classes == 3
    assert src.labels.dtype == np.int64 and src.labels.tolist() == [i % 3 for i in range(12)]
    assert src.name(6) == f"{shards / 'train-1.npz'}[1]"
    for i in (0, 4, 5, 11):
        red = np.asarray(src.image(i))[..., 0].mean()
        assert abs(red - 20 * i) < 6, (i, red)
    assert src.encoded(7)[:2] == b"\xff\xd8"  # JPEG SOI: the stored bytes, not a re-encode


def test_single_shard_file(shards):
    src = NpzShardSource(str(shards / "train-1.npz"))
    assert len(src) == 7 and src.name(0).endswith("train-1.npz[0]")


def test_uncompressed_shards_are_memory_mapped_and_pickle_without_data(shards):
    src = NpzShardSource(str(shards))
    first = src.encoded(3)
    assert isinstance(src.shards[0].jpeg, np.memmap)
    blob = pickle.dumps(src)
    assert len(blob) < 2000  # offsets + labels only, not the JPEG bytes
    assert pickle.loads(blob).encoded(3) == first


def test_compressed_shard_falls_back_to_loading(tmp_path):
    data = [_jpeg(10), _jpeg(200)]
    offsets = np.array([0, len(data[0]), len(data[0]) + len(data[1])], dtype=np.int64)
    np.savez_compressed(tmp_path / "c.npz", jpeg=np.frombuffer(b"".join(data), np.uint8), offsets=offsets,
                        labels=np.array([1, 0], np.int16))
    src = NpzShardSource(str(tmp_path / "c.npz"))
    assert src.encoded(1) == data[1] and src.labels.tolist() == [1, 0] and src.num_classes == 2


def test_missing_labels_mean_unlabelled(tmp_path):
    write_shard(str(tmp_path / "u.npz"), [_jpeg(1), _jpeg(2)])
    src = NpzShardSource(str(tmp_path / "u.npz"))
    assert src.labels.tolist() == [-1, -1] and src.num_classes == 0


def test_shard_missing_arrays_names_them(tmp_path):
    np.savez(tmp_path / "bad.npz", jpeg=np.zeros(10, np.uint8), labels=np.zeros(2, np.int16))
    with pytest.raises(FastSSLError, match=r"bad\.npz lacks array\(s\) offsets"):
        NpzShardSource(str(tmp_path))


def test_inconsistent_offsets_fail(tmp_path):
    np.savez(tmp_path / "bad.npz", jpeg=np.zeros(10, np.uint8), offsets=np.array([0, 5, 3]), labels=np.zeros(2))
    with pytest.raises(FastSSLError, match="inconsistent"):
        NpzShardSource(str(tmp_path))


def test_folder_without_shards_fails(tmp_path):
    with pytest.raises(FastSSLError, match="no .npz shards"):
        NpzShardSource(str(tmp_path))
