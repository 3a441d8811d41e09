"""SimSiam's predictor keeps the peak lr (main_simsiam.py --fix-pred-lr) under DeepSpeed ZeRO 1/2/3.

DeepSpeed steps the torch optimizer on flat partitions of its own; the `fixed_lr` mark that
`fastssl.train.optim` puts on the predictor's groups must survive that, so `Engine.set_lr` still
gives them the peak lr while the schedule warms the rest up. 3 SGD steps in warm-up on 2 ranks
under each ZeRO stage equal the 1-process DDP run (where test_simsiam.py checks the lrs step by
step), and differ from a run with the predictor on the schedule.
"""

import importlib.util

import pytest

from tests.parallel.conftest import THREE_STEPS, assert_same_state, checkpoints, losses, strategy_args, train_cli

pytestmark = [pytest.mark.distributed, pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="needs deepspeed")]

# Warm-up over the 3 steps (3 per epoch): the schedule's lr changes every step, the predictor's not.
SIMSIAM = ["--method.name=simsiam", "--method.pred_hidden_dim=8", "--optim.name=sgd", "--optim.base_lr=2.0",
           "--optim.warmup_epochs=1"]
PREDICTOR = "predictor."


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    def run(*extra):
        out = tmp_path_factory.mktemp("ref")
        train_cli(out, 1, *THREE_STEPS, *SIMSIAM, *extra)
        return losses(out), checkpoints(out)

    return run(), run("--method.fix_pred_lr=false")


@pytest.mark.parametrize("strategy", ["zero1", "zero2", "zero3"])
def test_predictor_keeps_the_peak_lr_under_zero(tmp_path, reference, strategy):
    (ref_losses, ref), (_, scheduled) = reference
    out = tmp_path / "run"
    train_cli(out, 2, *THREE_STEPS, *SIMSIAM, *strategy_args(strategy))
    assert losses(out) == pytest.approx(ref_losses, rel=1e-4, abs=1e-5)
    ckpts = checkpoints(out)
    for step in (1, 2, 3):
        assert_same_state(ckpts[step], ref[step], rtol=1e-4, atol=1e-5)
    # Not vacuous: with the predictor on the schedule its weights end elsewhere.
    moved = [k for k, v in scheduled[3]["model"].items() if k.startswith(PREDICTOR) and v.is_floating_point()
             and (v - ref[3]["model"][k]).abs().max() > 10 * (1e-5 + 1e-4 * v.abs().max())]
    assert moved
