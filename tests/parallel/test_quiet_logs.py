"""A 2-rank run prints no third-party deprecation warnings: fastssl fixes them where it causes them
(its own differentiable all-reduce, DDP's buffer flag by torch version) and filters DeepSpeed's own
once (fastssl/parallel/engines/deepspeed.py)."""

import importlib.util

import pytest

from tests.parallel.conftest import THREE_STEPS, strategy_args, train_cli

STRATEGIES = ["ddp", "fsdp", pytest.param("zero2", marks=pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None, reason="needs deepspeed"))]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_two_ranks_print_no_deprecation_warnings(strategy, tmp_path):
    r = train_cli(tmp_path / "run", 2, *THREE_STEPS, *strategy_args(strategy))
    noise = [line for line in r.stderr.splitlines() if "Warning" in line or "[WARNING]" in line]
    assert noise == [], noise[:5]
