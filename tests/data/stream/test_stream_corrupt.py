"""Corrupt webdataset members (a truncated image, a sample without an image) are skipped with one
warning each and counted; the epoch keeps its steps, and training goes on."""

from __future__ import annotations

import json
import warnings

from fastssl.data import build_pretrain_loader
from fastssl.distributed import World
from tests.data.stream.conftest import stream_cfg, write_tars

BAD = {"s0_002": "truncated", "s1_005": "noimage"}


def test_corrupt_members_are_skipped_once_each_and_counted(tmp_path, monkeypatch):
    write_tars(tmp_path / "wds", [16, 16], bad=BAD)  # 32 samples, 4 steps of 8: nothing dropped
    monkeypatch.setenv("FASTSSL_RECORD_KEYS", str(tmp_path))
    loader = build_pretrain_loader(stream_cfg(tmp_path / "wds"), World())
    loader.set_epoch(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = [labels for _, labels in loader]
    messages = [str(w.message) for w in caught if "corrupt webdataset sample" in str(w.message)]
    assert len(batches) == 4 and all(len(b) == 8 for b in batches)
    assert sorted(m.split("sample ")[1].split(" ")[0] for m in messages) == ["shard-000.tar/s0_002", "shard-001.tar/s1_005"]
    assert "no image member" in " ".join(messages)
    assert loader.corrupt == 2
    keys = [k for line in (tmp_path / "keys-rank0.jsonl").read_text().splitlines() for k in json.loads(line)["keys"]]
    good = [k for k in keys if not k.endswith("#pad")]
    assert len(good) == len(set(good)) == 30 and not {f"shard-000.tar/{k}" for k in BAD} & set(good)
    assert len(keys) - len(good) == 2  # the last batch is padded with repeats of good samples


def test_training_goes_on_past_corrupt_members(tmp_path):
    from fastssl.config import apply_overrides
    from fastssl.recipes import get_recipe
    from fastssl.train.trainer import train
    from tests.train.conftest import tiny_overrides

    write_tars(tmp_path / "wds", [16, 16], bad=BAD)
    cfg = apply_overrides(get_recipe("default"), tiny_overrides(tmp_path / "run") + [
        f"--data.path={tmp_path / 'wds'}", "--data.dataset=auto", "--data.backend=torch", "--data.limit=0",
        "--train.batch_size=8", "--train.epochs=1"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = train(cfg)
    assert summary["step"] == 4
