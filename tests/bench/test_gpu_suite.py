"""benchmarks/gpu_suite.sh: what it reports, what it leaves in $OUT, and its CPU dry run.

The GPU machine sends back at most 8 files from $OUT, gets a copy of the tree (not an install)
and has no network: the suite must install offline, report a broken part as failed, and pack
everything but the summary and 3 plots into one archive.
"""

import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_suite.sh"
LIB = ROOT / "benchmarks" / "suite_lib.sh"
PARTS = ("install", "tests", "train-simclr-ddp", "train-byol-ddp", "train-mae-ddp", "train-dino-ddp",
         "train-simclr-fsdp", "train-byol-fsdp", "train-mae-fsdp", "train-dino-fsdp", "train-report", "loss",
         "backbone", "step", "loader")


def test_gpu_suite_parses():
    for script in ("gpu_suite.sh", "suite_lib.sh", "suite_train.sh", "prepare_gpu_suite.sh"):
        subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / script)], check=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the suite would run")
def test_gpu_suite_without_gpu_says_so(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out")}
    env.pop("FASTSSL_SUITE_ALLOW_CPU", None)
    r = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "no CUDA GPU" in r.stdout


def _lib(tmp_path, body: str) -> subprocess.CompletedProcess:
    """Run `body` in bash with suite_lib.sh sourced, WORK and DEST under tmp_path."""
    (tmp_path / "work").mkdir(exist_ok=True)
    (tmp_path / "dest").mkdir(exist_ok=True)
    script = (f"START=$(date +%s); TOTAL_S=100; WORK={tmp_path}/work; DEST={tmp_path}/dest\n"
              f"source {LIB}\n{body}\n")
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)


def test_a_failing_command_is_a_failed_part(tmp_path):
    r = _lib(tmp_path, 'part broken 10 - python -c "import fastssl_kernels_missing"\n'
                       'part fine 10 - true\nprintf "%s\\n" "${SUMMARY[@]}"; echo "FAILED=$FAILED"')
    assert re.search(r"broken\s+FAILED, exit status 1", r.stdout) and re.search(r"fine\s+ok", r.stdout)
    assert "FAILED=1" in r.stdout
    assert "ModuleNotFoundError" in (tmp_path / "work" / "broken.log").read_text()


def test_exit_0_with_failed_rows_is_a_failed_part(tmp_path):
    # bench loss exits 0 when every Triton row failed (fastssl_kernels not importable): the CSV says so.
    csv = tmp_path / "loss.csv"
    csv.write_text('case,provider,status\ntimed,torch,ok\n'
                   'timed,triton,"failed: impl=\'triton\' cannot run here: triton is not importable"\n')
    r = _lib(tmp_path, f'part loss 10 {csv} true\nprintf "%s\\n" "${{SUMMARY[@]}}"; echo "FAILED=$FAILED"')
    assert re.search(r"loss\s+FAILED: 1 row\(s\) with a failed status in loss.csv", r.stdout), r.stdout
    assert "FAILED=1" in r.stdout


def test_results_are_packed_into_at_most_8_files(tmp_path):
    body = ("for i in $(seq 20); do echo $i > $WORK/part$i.log; done\n"
            "mkdir -p $WORK/runs/a/checkpoints; echo big > $WORK/runs/a/checkpoints/x.pt; echo m > $WORK/runs/a/metrics.jsonl\n"
            "for p in a b c d e; do printf '\\x89PNG' > $WORK/$p.png; done\n"
            "record tests 'ok (1 s)' 0\npack_results $WORK/a.png $WORK/b.png $WORK/missing.png $WORK/c.png $WORK/d.png")
    r = _lib(tmp_path, body)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path / "dest")) == ["a.png", "b.png", "c.png", "results.tgz", "summary.txt"]
    with tarfile.open(tmp_path / "dest" / "results.tgz") as t:
        names = t.getnames()
    assert "./part20.log" in names and "./runs/a/metrics.jsonl" in names and "./summary.txt" in names
    assert not any("checkpoints" in n for n in names)


# A Python where pip cannot install and fastssl_kernels is missing unless PYTHONPATH names a
# "pypath" folder: what the GPU machine looks like when its pip lacks setuptools.
NO_PIP_PYTHON = """#!/usr/bin/env bash
if [ "$1" = -m ] && [ "$2" = pip ]; then echo "pip: no module named setuptools" >&2; exit 1; fi
if [ "$1" = -c ]; then
    exec {python} -c "import importlib.abc, sys
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == 'fastssl_kernels' and not any(p.endswith('pypath') for p in sys.path):
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Missing())
exec(sys.argv[1])" "$2"
fi
exec {python} "$@"
"""


def test_install_falls_back_to_a_pythonpath_link_when_pip_cannot(tmp_path):
    py = tmp_path / "python"
    py.write_text(NO_PIP_PYTHON.format(python=sys.executable))
    py.chmod(0o755)
    r = _lib(tmp_path, f'cd {ROOT}; PY={py}; ensure_importable; printf "%s\\n" "${{SUMMARY[@]}}"; '
                       'echo "FAILED=$FAILED"; echo "PYTHONPATH=$PYTHONPATH"')
    assert re.search(r"install\s+ok \(pip failed", r.stdout), r.stdout + r.stderr
    assert "FAILED=0" in r.stdout and "/pypath" in r.stdout
    assert os.path.realpath(tmp_path / "work" / "pypath" / "fastssl_kernels") == str(ROOT / "kernels")
    assert "no module named setuptools" in (tmp_path / "work" / "install.log").read_text()


def _tiny_data_root(root: Path) -> Path:
    """16 small JPEGs as imagenet-sample/, no cifar10/: the suite's inputs without ../shared/data."""
    import numpy as np
    from PIL import Image

    images = root / "imagenet-sample"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(16):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(images / f"img_{i:02d}.JPEG")
    return root


@pytest.mark.slow
def test_cpu_dry_run_runs_or_skips_every_part(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OUT": str(out), "FASTSSL_SUITE_ALLOW_CPU": "1", "OMP_NUM_THREADS": "1",
           "DATA_ROOT": str(_tiny_data_root(tmp_path / "data")), "PYTHON": sys.executable}
    t0 = time.monotonic()
    r = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=600)
    took = time.monotonic() - t0
    summary = (out / "summary.txt").read_text()
    assert r.returncode == 0, summary + r.stdout[-3000:]
    files = sorted(os.listdir(out))
    assert len(files) <= 8 and {"summary.txt", "results.tgz"} <= set(files), files
    assert sum(f.endswith(".png") for f in files) <= 3
    lines = {line.split()[0]: line for line in summary.splitlines()[1:] if line.startswith("  ")}
    for part in PARTS:
        assert part in lines, f"{part} missing from the summary:\n{summary}"
        assert re.search(r"\s(ok \(|skipped: \S)", lines[part]), lines[part]
    with tarfile.open(out / "results.tgz") as t:
        names = t.getnames()
    for f in ("environment.txt", "loss.csv", "train.csv", "backbone.csv", "step.csv", "loader.csv", "tests.log"):
        assert f"./{f}" in names, names
    print(f"CPU dry run: {took:.0f} s")


@pytest.mark.slow
def test_offline_install_in_a_clean_venv(tmp_path):
    """What the suite runs where nothing is installed and there is no network."""
    copy = tmp_path / "repo"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", "runs", "*.egg-info", "__pycache__",
                                                              "results", "suite-data", "build"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    # A proxy that refuses every connection: any attempt to reach an index fails the install.
    env = {**os.environ, "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    r = subprocess.run([str(py), "-m", "pip", "install", "--no-index", "--no-build-isolation", "--no-deps", "-e",
                        str(copy)], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    r = subprocess.run([str(py), "-c", "import fastssl_kernels, fastssl; print(fastssl_kernels.__file__); "
                        "print(fastssl.__file__)"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    kernels_file, fastssl_file = r.stdout.split()
    # From the copy just installed, not from the checkout installed in the system site-packages.
    assert kernels_file.startswith(str(copy / "kernels")) and fastssl_file.startswith(str(copy / "fastssl"))
