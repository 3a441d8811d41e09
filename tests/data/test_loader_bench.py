"""`fastssl bench loader` on CPU: prints JSON, appends a CSV row with the documented columns."""

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from fastssl.cli import main
from fastssl.data.loader_bench import CSV_FIELDS


@pytest.fixture
def npz(tmp_path):
    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(32):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, "JPEG")
        blobs.append(buf.getvalue())
    off = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    np.savez(tmp_path / "d.npz", jpeg=np.frombuffer(b"".join(blobs), np.uint8), offsets=off)
    return str(tmp_path / "d.npz")


def _bench(backend, npz, csv_path, capsys):
    argv = ["bench", "loader", "--backend", backend, "--data", npz, "--image-size", "16", "--batch", "8",
            "--steps", "5", "--warmup", "1", "--workers", "0" if backend == "torch" else "1",
            "--device", "cpu", "--csv", str(csv_path), "--json"]
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize("backend", ["torch", "gpu-tensor", "dali-cpu"])
def test_bench_loader_json_and_csv(tmp_path, npz, capsys, backend):
    if backend == "dali-cpu":
        pytest.importorskip("nvidia.dali")
    csv_path = tmp_path / "out" / "loader.csv"
    row = _bench(backend, npz, csv_path, capsys)
    assert row["backend"] == backend and row["device"].startswith("cpu")
    assert row["views"] == 2 and row["batch"] == 8 and row["image_size"] == 16
    assert row["images_per_s"] > 0 and row["views_per_s"] == pytest.approx(2 * row["images_per_s"], rel=1e-3)
    _bench(backend, npz, csv_path, capsys)  # a second run appends, header once
    rows = list(csv.DictReader(open(csv_path)))
    assert list(rows[0].keys()) == list(CSV_FIELDS) and len(rows) == 2
    assert float(rows[1]["images_per_s"]) > 0


def test_dali_on_cpu_device_explains(tmp_path, npz, capsys):
    pytest.importorskip("nvidia.dali")
    argv = ["bench", "loader", "--backend", "dali", "--data", npz, "--image-size", "16", "--batch", "8",
            "--steps", "1", "--device", "cpu", "--csv", ""]
    assert main(argv) == 2
    assert "dali-cpu" in capsys.readouterr().err
