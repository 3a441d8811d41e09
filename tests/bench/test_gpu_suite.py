"""benchmarks/gpu_suite.sh parses, and refuses to run without a GPU unless told to (with the reason)."""

import os
import subprocess
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_suite.sh"


def test_gpu_suite_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the suite would run")
def test_gpu_suite_without_gpu_says_so(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out")}
    env.pop("FASTSSL_SUITE_ALLOW_CPU", None)
    r = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "no CUDA GPU" in r.stdout
