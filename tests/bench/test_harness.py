"""The benchmark harness: quantiles, warm-up/repeat accounting, CSV, provenance, plots, peak memory."""

import csv
import time

import numpy as np
import pytest

from fastssl.bench.harness import (
    MIB,
    Provenance,
    Timing,
    measure,
    measure_peak_memory_subprocess,
    quantile,
    target_name,
)
from fastssl.bench.report import CsvWriter, format_table, plot


@pytest.mark.parametrize("q", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_quantile_matches_numpy_linear(q):
    vals = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0]
    assert quantile(vals, q) == pytest.approx(float(np.quantile(vals, q)))


def test_timing_from_samples():
    t = Timing.from_samples([4.0, 1.0, 3.0, 2.0, 10.0])
    assert (t.median_s, t.min_s, t.repeats, t.cold) == (3.0, 1.0, 5, False)
    assert t.p10_s == pytest.approx(1.4) and t.p90_s == pytest.approx(7.6)


def test_measure_discards_warmup_and_counts_repeats():
    calls, synced = [], []
    t = measure(lambda: calls.append(1), warmup=2, repeats=4, sync=lambda: synced.append(1))
    assert len(calls) == 6 and t.repeats == 4 and not t.cold
    assert len(synced) == 7  # once before the first call, then after every call


def test_measure_without_warmup_keeps_the_first_call():
    calls = []
    t = measure(lambda: calls.append(1), warmup=0, repeats=3)
    assert len(calls) == 3 and t.repeats == 3


def test_measure_slow_case_reports_one_cold_call():
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.05)

    t = measure(slow, warmup=1, repeats=5, max_s=0.1)  # the first call alone takes half of max_s
    assert len(calls) == 1 and t.repeats == 1 and t.cold and t.median_s >= 0.05


def test_csv_header_once_then_appends(tmp_path):
    path = tmp_path / "out" / "r.csv"
    w = CsvWriter(str(path), ["a", "b"])
    w.append([{"a": 1, "b": 0.5}])
    CsvWriter(str(path), ["a", "b"]).append([{"a": 2}, {"a": 3, "b": True}])
    rows = list(csv.reader(open(path)))
    assert rows == [["a", "b"], ["1", "0.5"], ["2", ""], ["3", "yes"]]


def test_csv_with_another_header_goes_to_a_suffixed_file(tmp_path):
    path = tmp_path / "r.csv"
    CsvWriter(str(path), ["a", "b"]).append([{"a": 1, "b": 2}])
    w = CsvWriter(str(path), ["a", "c"])
    assert w.append([{"a": 1, "c": 3}]) == str(tmp_path / "r-2.csv")
    assert "different header" in w.note and "r-2.csv" in w.note
    assert next(csv.reader(open(path))) == ["a", "b"]  # the old file is untouched
    assert list(csv.reader(open(tmp_path / "r-2.csv"))) == [["a", "c"], ["1", "3"]]
    # The next run with the new header finds r-2.csv and appends there.
    assert CsvWriter(str(path), ["a", "c"]).append([{"a": 4, "c": 5}]) == str(tmp_path / "r-2.csv")
    assert len(list(csv.reader(open(tmp_path / "r-2.csv")))) == 3


def test_provenance_fields_present():
    p = Provenance.collect("cpu").as_row()
    for k in ("device", "cpu_model", "cpu_cores", "gpu_name", "commit", "date", "torch", "triton", "dali",
              "torch_threads"):
        assert k in p
    assert p["device"].startswith("cpu") and p["cpu_cores"] >= 1 and p["torch"] and p["cpu_model"]
    assert len(p["date"]) >= 16 and p["commit"]
    assert set(p) == set(Provenance.fields())


def test_plot_writes_png(tmp_path):
    rows = [{"n": n, "ms": n * 0.1, "mb": n * 2.0, "impl": impl} for n in (64, 128, 256) for impl in ("a", "b")]
    out = plot(rows, "n", ["ms", "mb"], "impl", str(tmp_path / "p" / "x.png"), logx=True, logy=True, title="t")
    assert out and open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    bar = plot(rows[:2], "impl", "ms", "impl", str(tmp_path / "bar.png"), kind="bar")
    assert open(bar, "rb").read(4) == b"\x89PNG"
    assert plot([{"n": 1, "ms": ""}], "n", "ms", "impl", str(tmp_path / "none.png")) is None


def test_format_table_aligns_columns():
    lines = format_table([{"a": 1.23456, "b": "x"}, {"a": None, "b": "yy"}], ["a", "b"]).splitlines()
    assert len({len(line) for line in lines}) == 1 and "1.235" in lines[1]


def allocate(setup_mb: int, run_mb: int):
    """Child-process target: holds setup_mb of inputs, then allocates and writes run_mb."""
    import torch

    held = torch.ones(setup_mb * MIB // 4)

    def run():
        x = torch.ones(run_mb * MIB // 4)  # written, so every page is resident
        return float(x[-1]) + float(held[0])

    return run


def test_subprocess_peak_memory_sees_a_50_mb_allocation():
    mem = measure_peak_memory_subprocess(allocate, {"setup_mb": 100, "run_mb": 50},
                                         prime_kwargs={"setup_mb": 1, "run_mb": 1})
    assert mem.method in ("vmhwm-reset", "ru-maxrss")
    # The 100 MiB held by set-up is not counted; the 50 MiB allocated inside the call is.
    assert 48 <= mem.extra_mb <= 56, mem


def test_subprocess_target_must_be_importable():
    with pytest.raises(ValueError, match="module-level"):
        target_name(lambda: None)
    assert target_name(allocate).endswith(":allocate")
