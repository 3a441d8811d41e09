"""`fastssl bench {loss,loader,backbone}` run at toy sizes and print JSON with the documented keys.

Only shapes of results are checked, never speeds (speed goals live in benchmarks/README.md).
"""

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from fastssl.bench import backbone, loader, loss
from fastssl.bench.harness import Provenance
from fastssl.cli import main

RESULT_KEYS = {"benchmark", "provenance", "rows", "notes", "csv", "plot"}


def _run(argv, capsys):
    assert main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, "under --json stdout holds the JSON object alone"
    return json.loads(out[0])


def _check_outputs(result, fields, name):
    assert set(result) >= RESULT_KEYS and result["benchmark"] == name
    assert set(result["provenance"]) == set(Provenance.fields())
    rows = list(csv.DictReader(open(result["csv"])))
    assert list(rows[0]) == list(fields) and len(rows) == len(result["rows"])
    assert open(result["plot"], "rb").read(4) == b"\x89PNG"


def test_bench_loss_torch(tmp_path, capsys):
    out = tmp_path / "loss.csv"
    result = _run(["bench", "loss", "--sizes", "64,256", "--dims", "8", "--providers", "torch,triton",
                   "--repeats", "2", "--verify-max-s", "0", "--csv", str(out), "--json"], capsys)
    _check_outputs(result, loss.FIELDS, "loss")
    timed = [r for r in result["rows"] if r["case"] == "timed"]
    assert [r["two_n"] for r in timed] == [64, 256]
    for r in timed:
        assert r["status"] == "ok" and r["provider"] == "torch" and r["d"] == 8
        assert r["fwd_ms"] > 0 and r["fwd_bwd_p10_ms"] <= r["fwd_bwd_ms"] <= r["fwd_bwd_p90_ms"]
        # torch: logits, then dQ and dK from autograd: 3 products of 2 (2N)^2 d FLOPs.
        assert r["flops_fwd_bwd"] == 6 * r["two_n"] ** 2 * 8 and r["tflops"] > 0
        assert r["peak_extra_mb"] >= 0 and r["mem_method"] in ("vmhwm-reset", "ru-maxrss")
        assert r["time_ratio_vs_torch"] == 1.0
    assert any("triton" in n and "CUDA" in n for n in result["notes"])  # no GPU here: skipped with a note
    budget = [r for r in result["rows"] if r["case"] == "budget-max"]
    assert len(budget) == 1 and budget[0]["provider"] == "torch" and budget[0]["status"]


def test_bench_loss_skips_sizes_predicted_over_budget(tmp_path, capsys):
    # The torch reference holds ~3 x 4 B x (2N)^2: 2N = 4096 needs ~190 MiB, far over 8 MiB.
    result = _run(["bench", "loss", "--sizes", "256,512,4096", "--dims", "8", "--providers", "torch",
                   "--repeats", "1", "--mem-budget-mb", "8", "--verify-max-s", "60", "--csv", str(tmp_path / "l.csv"),
                   "--json"], capsys)
    big = next(r for r in result["rows"] if r["case"] == "timed" and r["two_n"] == 4096)
    assert big["status"].startswith("skipped: predicted") and big["predicted_peak_mb"] > 8
    assert "fwd_bwd_ms" not in big
    budget = next(r for r in result["rows"] if r["case"] == "budget-max")
    assert 512 <= budget["two_n"] < 4096 and budget["predicted_peak_mb"] <= 8
    # One run at that size checks the prediction (a few MiB of slack: the fit is from two sizes).
    assert budget["status"].startswith("verified") and 0 < budget["peak_extra_mb"] <= 8 * 1.25


def test_bench_loss_chunked_against_torch(tmp_path, capsys):
    from fastssl.losses import IMPLS

    if "chunked" not in IMPLS:
        pytest.skip("fastssl.losses has no impl='chunked' yet")
    result = _run(["bench", "loss", "--sizes", "128,256", "--dims", "8", "--providers", "torch,chunked",
                   "--repeats", "1", "--verify-max-s", "0", "--csv", str(tmp_path / "l.csv"), "--json"], capsys)
    chunked = [r for r in result["rows"] if r["case"] == "timed" and r["provider"] == "chunked"]
    assert len(chunked) == 2 and all(r["status"] == "ok" and r["time_ratio_vs_torch"] > 0 for r in chunked)


def test_memory_model_extrapolates_by_provider_order():
    m = loss.MemoryModel()
    for n in (1000, 2000):
        m.add(("torch", 8, "fp32"), n, 100 + 12 * n * n)
        m.add(("chunked", 8, "fp32"), n, 100 + 4096 * n)
    assert m.predict(("torch", 8, "fp32"), 4000) == pytest.approx(100 + 12 * 4000**2)
    assert m.predict(("chunked", 8, "fp32"), 4000) == pytest.approx(100 + 4096 * 4000)
    n = m.largest_fitting(("torch", 8, "fp32"), 12 * 10_000**2)
    assert n % 256 == 0 and 9_700 <= n <= 10_000
    assert m.predict(("triton", 8, "fp32"), 4000) is None  # no measurements, no prediction


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


def _loader_argv(npz, backend, csv_path):
    return ["bench", "loader", "--backend", backend, "--data", npz, "--image-size", "16", "--batch", "8",
            "--steps", "2", "--repeats", "2", "--warmup", "1", "--workers", "1", "--device", "cpu",
            "--csv", str(csv_path), "--json"]


def test_bench_loader_compares_backends(tmp_path, npz, capsys):
    result = _run(_loader_argv(npz, "torch,gpu-tensor,dali", tmp_path / "loader.csv"), capsys)
    _check_outputs(result, loader.FIELDS, "loader")
    rows = {r["backend"]: r for r in result["rows"]}
    assert set(rows) == {"torch", "gpu-tensor"}
    assert any(n.startswith("dali skipped") for n in result["notes"])  # dali needs a GPU
    for r in rows.values():
        assert r["views"] == 2 and r["batch"] == 8 and r["image_size"] == 16 and r["repeats"] == 2
        assert r["images_per_s_p10"] <= r["images_per_s"] <= r["images_per_s_p90"]
        assert r["views_per_s"] == pytest.approx(2 * r["images_per_s"])
    assert rows["torch"]["ratio_vs_torch"] == 1.0
    assert rows["gpu-tensor"]["ratio_vs_torch"] == pytest.approx(
        rows["gpu-tensor"]["images_per_s"] / rows["torch"]["images_per_s"])
    _run(_loader_argv(npz, "torch", tmp_path / "loader.csv"), capsys)  # appends under the same header
    assert len(list(csv.DictReader(open(tmp_path / "loader.csv")))) == 3


def test_bench_loader_single_backend_error_is_the_commands(tmp_path, npz, capsys):
    argv = _loader_argv(npz, "dali", tmp_path / "loader.csv")
    assert main(argv) == 2
    assert "dali-cpu" in capsys.readouterr().err


def test_bench_backbone(tmp_path, capsys):
    result = _run(["bench", "backbone", "--models", "resnet-tiny,vit_nano", "--image-size", "16", "--batch", "2",
                   "--repeats", "1", "--csv", str(tmp_path / "b.csv"), "--json"], capsys)
    _check_outputs(result, backbone.FIELDS, "backbone")
    rows = {r["model"]: r for r in result["rows"]}
    assert set(rows) == {"resnet-tiny", "vit_nano"}
    for r in rows.values():
        assert r["status"] == "ok" and r["image_size"] == 16 and r["size_from"] == "--image-size"
        assert r["images_per_s"] > 0 and r["gflops_per_image"] > 0 and r["params_m"] > 0
        assert r["peak_extra_mb"] >= 0 and r["mem_method"]


def test_backbone_size_comes_from_its_recipe():
    size, patch, source = backbone.recipe_size("resnet18-cifar")
    assert size == 32 and source.startswith("recipe ")
    assert backbone.recipe_size("resnet50")[0] == 224


def test_bench_user_errors_exit_2(capsys):
    assert main(["bench", "loss", "--sizes", "63", "--csv", ""]) == 2
    assert "even" in capsys.readouterr().err
    assert main(["bench", "backbone", "--models", "resnet19", "--csv", ""]) == 2
    assert "unknown backbone" in capsys.readouterr().err


def test_default_rows_go_under_the_current_directory_not_the_tracked_results(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "loss", "--sizes", "64", "--dims", "8", "--providers", "torch", "--repeats", "1",
                 "--verify-max-s", "0"]) == 0
    assert (tmp_path / "runs" / "bench" / "loss.csv").exists()
    assert not (tmp_path / "benchmarks").exists()
