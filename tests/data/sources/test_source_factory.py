import io

import numpy as np
import pytest
from PIL import Image

from fastssl.config import DataConfig
from fastssl.data.sources.npz_shards import write_shard
from fastssl.data.sources.factory import (
    digits_path_note,
    open_eval_sources,
    open_pretrain_source,
    open_source,
    parse_slice,
    resolve_dataset,
)
from fastssl.errors import FastSSLError


def _jpeg(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (value, value, value)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture
def shards(tmp_path):
    """Folder of 2 shards x 10 images; image i has gray level 10 * i and label i % 4."""
    root = tmp_path / "shards"
    root.mkdir()
    for s in range(2):
        ids = range(10 * s, 10 * s + 10)
        write_shard(str(root / f"train-{s}.npz"), [_jpeg(10 * i) for i in ids], [i % 4 for i in ids])
    return root


def _ids(src) -> list[int]:
    """Recover each image's index from its gray level."""
    return [int(round(np.asarray(src.image(i)).mean() / 10)) for i in range(len(src))]


def test_parse_slice():
    assert parse_slice("a/b.npz[5000:]") == ("a/b.npz", 5000, None)
    assert parse_slice("a[:-10]") == ("a", None, -10)
    assert parse_slice("a[2:7]") == ("a", 2, 7)
    assert parse_slice("plain/path") == ("plain/path", None, None)


def test_auto_detects_every_kind(shards, tmp_path):
    assert type(open_source(str(shards), split="all")).__name__ == "NpzShardSource"
    assert type(open_source(str(shards / "train-1.npz"), split="all")).__name__ == "NpzShardSource"
    folder = tmp_path / "imgs" / "a"
    folder.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(folder / "x.png")
    assert type(open_source(str(tmp_path / "imgs"), split="all")).__name__ == "ImageFolderSource"
    assert len(open_source("", split="all")) == 1797  # "" = built-in digits


def test_slice_selects_a_contiguous_range(shards):
    assert _ids(open_source(f"{shards}/train-1.npz[5:]", "npz", "all")) == [15, 16, 17, 18, 19]
    assert _ids(open_source(f"{shards}[8:12]", split="all")) == [8, 9, 10, 11]
    tail = open_source(f"{shards}[-3:]", split="all")
    assert _ids(tail) == [17, 18, 19] and tail.labels.tolist() == [1, 2, 3]
    assert tail.name(0).endswith("train-1.npz[7]")


def test_single_split_train_and_test_are_disjoint_and_cover(shards):
    cfg = DataConfig(val_fraction=0.25)
    train = open_source(str(shards), "npz", "train", cfg)
    test = open_source(str(shards), "npz", "test", cfg)
    assert (len(train), len(test)) == (15, 5)
    assert sorted(_ids(train) + _ids(test)) == list(range(20))
    assert _ids(open_source(str(shards), "npz", "test", cfg)) == _ids(test)  # fixed, not random
    # With held-out data named explicitly, all of `path` trains.
    assert len(open_source(str(shards), "npz", "train", DataConfig(test_path="elsewhere"))) == 20


def test_digits_split():
    train, test = open_source("", "digits", "train"), open_source("", "digits", "test")
    assert len(train) + len(test) == 1797 and abs(len(test) - 180) <= 1
    assert not set(train.indices) & set(test.indices)
    assert len(open_source("[:100]", "digits", "all")) == 100


def test_limit_and_pretrain_source(shards):
    cfg = DataConfig(dataset="npz", path=str(shards), test_path="x", limit=7)
    src = open_pretrain_source(cfg)
    assert _ids(src) == list(range(7))
    assert len(src.head(0)) == 7 and len(src.head(100)) == 7 and len(src.head(3)) == 3
    # A caller's own source gets the same limit, from the same place.
    assert _ids(open_pretrain_source(cfg, open_source(str(shards), "npz", "all"))) == list(range(7))


def test_eval_sources_use_test_path(shards):
    cfg = DataConfig(dataset="npz", path=f"{shards}/train-0.npz", test_path=f"{shards}/train-1.npz[6:]", limit=2)
    train, test = open_eval_sources(cfg)
    assert _ids(train) == list(range(10)) and _ids(test) == [16, 17, 18, 19]


def test_missing_path(tmp_path):
    with pytest.raises(FastSSLError, match="does not exist; fix --data.path"):
        open_source(str(tmp_path / "nope"))
    with pytest.raises(FastSSLError, match="--data.dataset=npz needs --data.path"):
        open_source("", "npz")
    with pytest.raises(FastSSLError, match="does not exist; fix --data.test_path"):
        open_eval_sources(DataConfig(test_path=str(tmp_path / "held-out")))


def test_empty_folder(tmp_path):
    with pytest.raises(FastSSLError, match=r"no images found .*\.jpg"):
        open_source(str(tmp_path))


def test_unknown_dataset_suggests_closest():
    with pytest.raises(FastSSLError, match=r"--data.dataset=cifar-10. Did you mean 'cifar10'\?"):
        open_source("", "cifar-10")


def test_a_path_given_with_digits_is_read_and_its_dataset_guessed(shards):
    """The default recipe pins digits; a newcomer's --data.path must still be read."""
    src = open_source(str(shards), "digits", "all")
    assert type(src).__name__ == "NpzShardSource" and _ids(src) == list(range(20))
    assert resolve_dataset("digits", f"{shards}[2:]") == "npz"
    note = digits_path_note(DataConfig(dataset="digits", path=str(shards)))
    assert "--data.dataset=npz" in note and str(shards) in note
    assert digits_path_note(DataConfig(dataset="digits")) is None
    assert digits_path_note(DataConfig(dataset="npz", path=str(shards))) is None


def test_file_lists_and_tars_are_recognised(shards, tmp_path):
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (10 * i,) * 3).save(tmp_path / "imgs" / f"{i}.png")
    (tmp_path / "list.txt").write_text("imgs/0.png 4\nimgs/1.png\nimgs/2.png 1\n")
    src = open_source(str(tmp_path / "list.txt"), split="all")
    assert type(src).__name__ == "FileListSource" and src.labels.tolist() == [4, -1, 1]
    assert _ids(src) == [0, 1, 2] and src.paths[1].endswith("imgs/1.png")
    (tmp_path / "wds").mkdir()
    (tmp_path / "wds" / "shard-0.tar").write_bytes(b"")
    assert resolve_dataset("auto", str(tmp_path / "wds")) == "webdataset"
    with pytest.raises(FastSSLError, match="only training streams"):
        open_source(str(tmp_path / "wds"))


def test_unknown_dataset_names_the_key():
    with pytest.raises(FastSSLError, match="unknown --data.dataset=imagefolder.* Valid: auto, digits"):
        resolve_dataset("imagefolder", "")


def test_corrupt_image_fails_naming_it_or_is_skipped_with_warning(shards, tmp_path):
    enc = [_jpeg(10 * i) for i in range(4)]
    enc[1] = enc[1][:30]
    write_shard(str(tmp_path / "bad.npz"), enc, [0, 1, 2, 3])
    src = open_source(str(tmp_path / "bad.npz"), split="all")
    with pytest.raises(FastSSLError, match=r"bad\.npz\[1\].*--data\.skip_corrupt=true"):
        src.sample(1)
    skipping = open_source(str(tmp_path / "bad.npz"), split="all", data_cfg=DataConfig(skip_corrupt=True))
    with pytest.warns(UserWarning, match=r"skipping corrupt image .*bad\.npz\[1\]"):
        image, label = skipping.sample(1)
    assert label == 2 and round(np.asarray(image).mean() / 10) == 2  # the next good image
    assert skipping.sample(0)[1] == 0


def test_all_corrupt_gives_up(tmp_path):
    write_shard(str(tmp_path / "bad.npz"), [b"junk"] * 3, [0, 1, 2])
    src = open_source(str(tmp_path / "bad.npz"), split="all", data_cfg=DataConfig(skip_corrupt=True))
    with pytest.warns(UserWarning), pytest.raises(FastSSLError, match="looks broken"):
        src.sample(0)


def test_zero_val_fraction_trains_on_everything():
    cfg = DataConfig(val_fraction=0.0)
    assert len(open_source("", "digits", "train", cfg)) == 1797
    with pytest.raises(FastSSLError, match="--data.val_fraction"):
        open_source("", "digits", "test", cfg)
