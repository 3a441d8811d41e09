"""MFU: achieved FLOP/s over the GPU's dense bf16 peak, None where the peak is unknown (CPU too)."""

import argparse

import pytest
import torch

from fastssl.bench import mfu as mfu_mod
from fastssl.bench.mfu import device_peak_flops, mfu, peak_bf16_flops


@pytest.mark.parametrize("name, tflops", [
    ("NVIDIA H200", 989.5), ("NVIDIA H100 80GB HBM3", 989.5), ("NVIDIA H100 PCIe", 756.5),
    ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA A100 80GB PCIe", 312.0), ("NVIDIA L4", 121.0),
    ("NVIDIA GeForce RTX 4090", 165.2),
])
def test_peak_by_device_name(name, tflops):
    assert peak_bf16_flops(name) == pytest.approx(tflops * 1e12)


def test_unknown_gpu_and_cpu_have_no_peak():
    assert peak_bf16_flops("NVIDIA GeForce GTX 1080") is None and peak_bf16_flops("") is None
    assert device_peak_flops("cpu") is None
    assert mfu(1e12, 1.0, None) is None and mfu(None, 1.0, 1e15) is None and mfu(1e12, 0.0, 1e15) is None


def test_mfu_is_achieved_over_peak():
    # The H200's 790 TFLOP/s measured on an 8192^3 bf16 matmul: 0.80 of its 989.5 dense peak.
    flops = 2 * 8192**3
    assert mfu(flops, flops / 790e12, peak_bf16_flops("NVIDIA H200")) == pytest.approx(790 / 989.5)


def test_device_peak_reads_the_gpu_name(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H200")
    assert device_peak_flops(torch.device("cuda", 3)) == pytest.approx(989.5e12)


def _ns(**kw):
    return argparse.Namespace(**kw)


@pytest.mark.parametrize("module", ["loss", "backbone", "step"])
def test_mfu_is_a_column_of_loss_backbone_and_step(module):
    import importlib

    mod = importlib.import_module(f"fastssl.bench.{module}")
    assert "mfu" in mod.FIELDS and "mfu" in mod.COLUMNS
    assert mfu_mod.__name__ == "fastssl.bench.mfu"


def test_bench_backbone_mfu_on_a_known_gpu(monkeypatch, tmp_path):
    """On a GPU in the table the backbone row's MFU = its FLOPs per step time / peak (peak mocked on CPU)."""
    from fastssl.bench import backbone

    monkeypatch.setattr(backbone, "device_peak_flops", lambda device: 1e12)
    args = _ns(models="resnet-tiny", image_size=16, batch=2, amp="none", warmup=1, repeats=1, max_case_s=30.0,
               memory=False, device="cpu", threads=None, csv=str(tmp_path / "b.csv"), plot="", json=True)
    row = backbone.run(args)["rows"][0]
    assert row["mfu"] == pytest.approx(row["tflops"] * 1e12 / 1e12)


def test_bench_loss_mfu_empty_on_cpu(tmp_path):
    import csv

    from fastssl.bench import loss

    args = _ns(sizes="64", dims="8", dtype="fp32", providers="torch", max_two_n="", temperature=0.1, warmup=0,
               repeats=1, max_case_s=5.0, mem_budget_mb=64.0, verify_max_s=0.0, device="cpu", threads=None,
               csv=str(tmp_path / "l.csv"), plot="", json=True)
    result = loss.run(args)
    assert result["rows"][0]["mfu"] is None
    assert next(csv.DictReader(open(tmp_path / "l.csv")))["mfu"] == ""
