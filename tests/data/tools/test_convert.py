"""`fastssl data convert`: npz <-> folder / file list / webdataset round trips keep bytes and labels."""

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from fastssl.cli import main
from fastssl.data.sources.file_list import read_file_list
from fastssl.data.sources.npz_shards import NpzShardSource
from fastssl.data.sources.webdataset import count_wds_samples, iter_wds, list_wds_tars
from fastssl.data.tools.convert import convert
from fastssl.errors import FastSSLError


def _blobs(n=10):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, "JPEG" if i % 2 else "PNG")
        out.append(buf.getvalue())
    return out


@pytest.fixture
def npz(tmp_path):
    blobs = _blobs()
    off = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    path = tmp_path / "src.npz"
    np.savez(path, jpeg=np.frombuffer(b"".join(blobs), np.uint8), offsets=off, labels=np.arange(10) % 3)
    return str(path), blobs


@pytest.mark.parametrize("fmt", ["folder", "filelist", "webdataset"])
def test_round_trip_keeps_bytes_and_labels(tmp_path, npz, fmt):
    path, blobs = npz
    mid = tmp_path / fmt
    convert(path, str(mid), fmt, shard_size=4)
    src = str(mid / "list.txt") if fmt == "filelist" else str(mid)
    convert(src, str(tmp_path / "back"), "npz", shard_size=3)
    back = NpzShardSource(str(tmp_path / "back"))
    assert len(back.shards) == 4  # 10 images, 3 per shard
    got = sorted((back.encoded(i), int(back.labels[i])) for i in range(len(back)))
    assert got == sorted((b, i % 3) for i, b in enumerate(blobs))


def test_webdataset_layout_and_dali_index(tmp_path, npz):
    convert(npz[0], str(tmp_path / "w"), "webdataset", shard_size=4)
    tars = list_wds_tars(str(tmp_path / "w"))
    assert [t.rsplit("/", 1)[1] for t in tars] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert count_wds_samples(tars) == 10
    with tarfile.open(tars[0]) as tf:
        names = tf.getnames()
        assert names[:2] == ["00000000.png", "00000000.cls"]
        data = tf.extractfile("00000001.jpg").read()
    # Every index line points at the member's bytes inside the tar.
    lines = open(tars[0][:-4] + ".idx").read().splitlines()
    assert lines[0] == "v1.2 4"
    ext, off, size, name = lines[2].split()[:4]
    raw = open(tars[0], "rb").read()
    assert (ext, name) == ("jpg", "00000001.jpg") and raw[int(off) : int(off) + int(size)] == data
    # Without the index the count comes from the tar headers.
    for t in tars:
        import os

        os.remove(t[:-4] + ".idx")
    assert count_wds_samples(tars) == 10
    assert [y for _, _, y in iter_wds(tars)] == [i % 3 for i in range(10)]


def test_file_list_format(tmp_path, npz):
    convert(npz[0], str(tmp_path / "l"), "filelist")
    files, labels = read_file_list(str(tmp_path / "l" / "list.txt"))
    assert len(files) == 10 and files[0].endswith("images/00000000.png")
    assert labels.tolist() == [i % 3 for i in range(10)]


def test_unlabelled_folder_goes_flat(tmp_path):
    src = tmp_path / "flat"
    src.mkdir()
    for i, b in enumerate(_blobs(3)):
        (src / f"{i}.{'jpg' if i % 2 else 'png'}").write_bytes(b)
    convert(str(src), str(tmp_path / "f"), "folder")
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == ["00000000.png", "00000001.jpg", "00000002.png"]


def test_corrupt_images_fail_or_are_dropped_with_validate(tmp_path, npz):
    path, blobs = npz
    bad = [blobs[0], b"garbage bytes!", blobs[1][:30]]
    off = np.concatenate([[0], np.cumsum([len(b) for b in bad])]).astype(np.int64)
    np.savez(tmp_path / "bad.npz", jpeg=np.frombuffer(b"".join(bad), np.uint8), offsets=off)
    with pytest.raises(FastSSLError, match=r"bad.npz\[1\].*--validate"):
        convert(str(tmp_path / "bad.npz"), str(tmp_path / "o1"), "npz")
    summary = convert(str(tmp_path / "bad.npz"), str(tmp_path / "o2"), "npz", validate=True)
    assert summary["images"] == 1 and summary["dropped"] == 2


def test_refuses_non_empty_output(tmp_path, npz):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "x").write_text("")
    with pytest.raises(FastSSLError, match="not empty"):
        convert(npz[0], str(tmp_path / "o"), "npz")


def test_cli(tmp_path, npz, capsys):
    assert main(["data", "convert", npz[0], str(tmp_path / "c"), "--to", "webdataset", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["images"] == 10
    assert main(["data", "convert", npz[0], str(tmp_path / "c"), "--to", "npz"]) == 2
