"""skip_corrupt's reports: each corrupt file named once per run, its repeats counted per epoch,
from the main process, on the torch backend with workers and on DALI."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from fastssl.data.backends.corrupt_report import CorruptReport

COUNT_LINE = "fastssl: skipped 1 corrupt image this epoch (1 already reported)"


def _jpeg_folder(root) -> str:
    """8 flat 8x8 JPEGs, of which 3.jpg is truncated: with a batch of 4 every epoch reads all 8."""
    root.mkdir()
    for i in range(8):
        buf = io.BytesIO()
        Image.fromarray(np.full((8, 8, 3), 20 * i, np.uint8)).save(buf, format="JPEG")
        (root / f"{i}.jpg").write_bytes(buf.getvalue()[: 40 if i == 3 else None])
    return str(root / "3.jpg")


def test_a_file_is_named_once_and_its_repeats_counted_per_epoch(capsys):
    report = CorruptReport()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch in range(3):
            report.skipped("/d/a.jpg", "truncated")
            report.skipped("/d/a.jpg", "truncated")  # twice in one epoch counts once
            if epoch == 1:
                report.skipped("/d/b.jpg")
            report.end_epoch()
    assert [str(w.message) for w in caught] == ["skipping corrupt image /d/a.jpg (truncated)",
                                                "skipping corrupt image /d/b.jpg"]
    err = capsys.readouterr().err.splitlines()
    assert err == ["fastssl: skipped 2 corrupt images this epoch (1 already reported)",
                   "fastssl: skipped 1 corrupt image this epoch (1 already reported)"]


# Three epochs of the torch backend with 2 workers; what it prints to stderr is what a user sees.
_THREE_EPOCHS = """
import sys
from fastssl.config import Config
from fastssl.data import build_pretrain_loader
from fastssl.distributed import World
cfg = Config()
cfg.data.dataset, cfg.data.path, cfg.data.test_path, cfg.data.backend = "folder", sys.argv[1], "unused", "torch"
cfg.data.image_size, cfg.data.num_workers, cfg.data.skip_corrupt = 8, 2, True
# Seed 2 puts 3.jpg in step 1 of epoch 0 and step 0 of epochs 1 and 2: both workers meet it.
cfg.train.batch_size, cfg.train.seed = 4, 2
loader = build_pretrain_loader(cfg, World())
for epoch in range(3):
    loader.set_epoch(epoch)
    assert len(list(loader)) == 2
loader.close()
"""


def test_torch_workers_name_a_corrupt_file_once_per_run(tmp_path):
    bad = _jpeg_folder(tmp_path / "imgs")
    # PYTHONWARNINGS=always: Python's default filter would hide a repeat from the same process, and
    # the rule under test is fastssl's own.
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="always")
    r = subprocess.run([sys.executable, "-c", _THREE_EPOCHS, os.path.dirname(bad)], capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr.count(bad) == 1, r.stderr
    assert r.stderr.count(COUNT_LINE) == 2, r.stderr  # epochs 1 and 2


def test_dali_names_a_corrupt_file_once_per_run(tmp_path, capsys):
    pytest.importorskip("nvidia.dali")
    from fastssl.config import Config
    from fastssl.data import build_pretrain_loader
    from fastssl.distributed import World

    bad = _jpeg_folder(tmp_path / "imgs")
    cfg = Config()
    cfg.data.dataset, cfg.data.path, cfg.data.backend = "folder", str(tmp_path / "imgs"), "dali-cpu"
    cfg.data.test_path = "unused"  # every image is a training image
    cfg.data.image_size, cfg.data.num_workers, cfg.data.skip_corrupt = 8, 1, True
    cfg.train.batch_size = 4
    loader = build_pretrain_loader(cfg, World())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch in range(3):
            loader.set_epoch(epoch)
            assert len(list(loader)) == 2
    loader.close()
    assert [str(w.message) for w in caught if "corrupt" in str(w.message)] == [f"skipping corrupt image {bad}"]
    assert capsys.readouterr().err.count(COUNT_LINE) == 2
