"""Streaming webdataset: one epoch's samples, and exact mid-epoch resume on the same or another layout.

Sample keys come from the loader's test hook (FASTSSL_RECORD_KEYS). 5 uneven shards of 70
samples, global batch 8: an epoch of 8 steps, 64 samples (the permuted order's last 6 dropped).
"""

from __future__ import annotations

import json

import pytest

from fastssl.data import build_pretrain_loader
from fastssl.data.backends.dali_loader import dali_available

from tests.data.stream.conftest import ranks, stream_cfg


def keys_by_step(folder, n_ranks: int, below: int = 1 << 30) -> dict[tuple[int, int], list[str]]:
    """(step, rank) -> keys of the steps before `below` (the trained ones), from every rank's hook
    file; a step recorded twice fails."""
    out = {}
    for r in range(n_ranks):
        path = folder / f"keys-rank{r}.jsonl"
        for line in path.read_text().splitlines() if path.exists() else []:
            rec = json.loads(line)
            if rec["step"] >= below:
                continue
            assert (rec["step"], rec["rank"]) not in out, "a step was fed twice"
            out[rec["step"], rec["rank"]] = rec["keys"]
    return out


def run(cfg, n_ranks: int, start: int = 0, stop: int | None = None, states=None):
    """Train epoch 0 on every rank from `start` to `stop`; returns every rank's state at `stop`.

    A stopped loop holds one batch it did not train (as the trainer does when a signal comes), so
    the state at `stop` is the position before the latest batch the loader handed out."""
    loaders = [build_pretrain_loader(cfg, w) for w in ranks(n_ranks)]
    for loader in loaders:
        if states is not None:
            loader.load_state_dict(states)
        loader.set_epoch(0, start)
        for step, _ in enumerate(loader, start=start):
            if stop is not None and step >= stop:
                break
        loader.close()
    return [loader.state_dict(0, stop or len(loader)) for loader in loaders]


@pytest.fixture
def record(tmp_path, monkeypatch):
    def at(name):
        folder = tmp_path / name
        folder.mkdir()
        monkeypatch.setenv("FASTSSL_RECORD_KEYS", str(folder))
        return folder

    return at


def test_an_epoch_reads_each_sample_once_on_every_rank_and_worker(shards_dir, record):
    cfg = stream_cfg(shards_dir, workers=2)
    folder = record("full")
    run(cfg, 2)
    seen = keys_by_step(folder, 2)
    assert sorted(seen) == [(s, r) for s in range(8) for r in range(2)]  # every rank: 8 steps
    keys = [k for ks in seen.values() for k in ks]
    assert len(keys) == 64 and len(set(keys)) == 64


BACKENDS = ["torch", pytest.param("dali-cpu", marks=pytest.mark.skipif(not dali_available(), reason="no DALI"))]


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_same_layout_continues_with_the_same_batches(shards_dir, record, backend):
    cfg = stream_cfg(shards_dir, workers=2, backend=backend)
    folder = record("whole")
    run(cfg, 2)
    whole = keys_by_step(folder, 2)
    first = record("first")
    states = run(cfg, 2, stop=3)
    assert [s["step"] for s in states] == [3, 3]
    second = record("second")
    run(cfg, 2, start=3, states=states)
    resumed = {**keys_by_step(first, 2, below=3), **keys_by_step(second, 2)}
    assert resumed == whole


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("before,after", [(1, 2), (2, 1)])
def test_resume_on_another_world_size_finishes_the_epoch_exactly(shards_dir, record, capsys, before, after, backend):
    cfg_before = stream_cfg(shards_dir, workers=2, backend=backend)
    whole = record("whole")
    run(cfg_before, 1)
    epoch_keys = {k for ks in keys_by_step(whole, 1).values() for k in ks}
    first = record("first")
    states = run(cfg_before, before, stop=3)
    second = record("second")
    run(stream_cfg(shards_dir, workers=1 if after == 2 else 2, backend=backend), after, start=3, states=states)
    seen = [k for ks in keys_by_step(first, before, below=3).values() for k in ks]
    seen += [k for ks in keys_by_step(second, after).values() for k in ks]
    assert len(seen) == len(set(seen)) == 64, "a sample was repeated or dropped"
    assert set(seen) == epoch_keys
    assert "none repeated, none dropped" in capsys.readouterr().out


@pytest.mark.skipif(not dali_available(), reason="no DALI")
def test_dali_reads_the_batches_torch_reads(shards_dir, record):
    """fastssl drives DALI's order: the same plan, slots and shuffle as the torch backend."""
    folders = {}
    for backend in ("torch", "dali-cpu"):
        folders[backend] = record(backend)
        run(stream_cfg(shards_dir, workers=2, backend=backend), 2)
    assert keys_by_step(folders["dali-cpu"], 2) == keys_by_step(folders["torch"], 2)


def test_resume_after_corrupt_samples_uses_the_saved_positions(tmp_path, record):
    """Skipped samples move a slot's position past what its step count implies: only the saved
    positions land the resumed run on the same batches."""
    from tests.data.stream.conftest import write_tars

    bad = {f"s{s}_{i:03d}": "noimage" for s in range(4) for i in (1, 3, 10)}
    write_tars(tmp_path / "wds", [16, 16, 16, 16], bad=bad)
    cfg = stream_cfg(tmp_path / "wds", workers=2)
    folder = record("whole")
    with pytest.warns(UserWarning, match="corrupt"):
        run(cfg, 2)
    first = record("first")
    with pytest.warns(UserWarning, match="corrupt"):
        states = run(cfg, 2, stop=3)
    assert any(n % 4 for s in states for n in s["emitted"].values()), "no corrupt sample before step 3"
    second = record("second")
    with pytest.warns(UserWarning, match="corrupt"):
        run(cfg, 2, start=3, states=states)
    assert {**keys_by_step(first, 2, below=3), **keys_by_step(second, 2)} == keys_by_step(folder, 2)
