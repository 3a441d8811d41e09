"""`fastssl train` streams webdataset tars on the torch backend and resumes mid-epoch onto the same
batches (2 ranks x 2 workers), or onto the rest of the epoch's samples on another world size.

A "kill after step 3" is a copy of the run folder that keeps only its step-3 checkpoint: the
checkpoint a stop at step 3 writes (the stop path itself is covered by tests/train).
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.data.stream.conftest import write_tars

pytestmark = pytest.mark.slow


def _train(out, nproc, shards, keys, monkeypatch, *extra):
    from tests.parallel.conftest import train_cli

    keys.mkdir(exist_ok=True)
    monkeypatch.setenv("FASTSSL_RECORD_KEYS", str(keys))
    return train_cli(out, nproc, f"--data.path={shards}", "--data.dataset=auto", "--data.backend=torch", "--data.limit=0",
                     "--data.num_workers=2", "--data.shuffle_buffer=6", "--train.batch_size=8",
                     "--train.epochs=1", "--train.ckpt_every_steps=3", "--train.keep_last=5",
                     "--optim.name=sgd", *extra)


def _keys(folder, nproc) -> dict[tuple[int, int], list[str]]:
    out = {}
    for r in range(nproc):
        for line in (folder / f"keys-rank{r}.jsonl").read_text().splitlines():
            rec = json.loads(line)
            out[rec["step"], rec["rank"]] = rec["keys"]
    return out


def _stopped_at_3(run, copy):
    shutil.copytree(run, copy)
    for ckpt in (copy / "checkpoints").iterdir():
        if ckpt.name != "step_00000003":
            shutil.rmtree(ckpt)


def test_resume_2x2_onto_the_same_batches_and_weights(tmp_path, monkeypatch):
    from tests.parallel.conftest import checkpoints

    shards = tmp_path / "wds"
    write_tars(shards, [20, 9, 17, 13, 11])
    whole = tmp_path / "whole"
    _train(whole, 2, shards, tmp_path / "k_whole", monkeypatch)
    _stopped_at_3(whole, tmp_path / "resumed")
    r = _train(tmp_path / "resumed", 2, shards, tmp_path / "k_resumed", monkeypatch, "--resume")
    assert "resumed from" in r.stdout
    want = {k: v for k, v in _keys(tmp_path / "k_whole", 2).items() if k[0] >= 3}
    assert sorted(want) == [(s, r) for s in range(3, 8) for r in range(2)]
    assert _keys(tmp_path / "k_resumed", 2) == want
    a, b = checkpoints(whole)[8], checkpoints(tmp_path / "resumed")[8]
    for k, v in a["model"].items():
        assert b["model"][k].equal(v), k  # bitwise: the same batches, in the same order, with SGD


def test_resume_1_to_2_ranks_reads_the_rest_of_the_epoch_once(tmp_path, monkeypatch):
    shards = tmp_path / "wds"
    write_tars(shards, [20, 9, 17, 13, 11])
    one = tmp_path / "one"
    _train(one, 1, shards, tmp_path / "k_one", monkeypatch)
    epoch = {k for ks in _keys(tmp_path / "k_one", 1).values() for k in ks}
    _stopped_at_3(one, tmp_path / "two")
    r = _train(tmp_path / "two", 2, shards, tmp_path / "k_two", monkeypatch, "--resume")
    assert "none repeated, none dropped" in r.stdout
    seen = [k for (step, _), ks in _keys(tmp_path / "k_one", 1).items() if step < 3 for k in ks]
    seen += [k for ks in _keys(tmp_path / "k_two", 2).values() for k in ks]
    assert len(seen) == len(set(seen)) == 64
    assert set(seen) == epoch
