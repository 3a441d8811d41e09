"""Resume on another world size and strategy continues at the exact step with the same state.

One chain covers the four directions the issue names: DDP on 2 ranks (step 1) -> FSDP2 on one
process (step 2: 2 -> 1, ddp -> fsdp) -> DeepSpeed ZeRO-3 on 2 ranks (step 3: 1 -> 2,
fsdp -> deepspeed). The lr and EMA momentum are constant, so stopping with --train.max_steps and
resuming is the same computation as one uninterrupted run, to fp32 round-off of the changing
reduction order (|a - b| <= 1e-5 + 1e-4 max|b| per tensor, as test_engine_equivalence.py).

A single-process chain with AdamW (ddp -> ZeRO-2 -> fsdp) checks the conversion of Adam's moments
and step count; on one process nothing is reduced, so it is compared bitwise.
"""

import pytest

from tests.parallel.conftest import (
    CASES,
    THREE_STEPS,
    assert_same_state,
    checkpoints,
    losses,
    strategy_args,
    train_cli,
)

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def _leg(out, nproc, strategy, max_steps, *extra):
    r = train_cli(out, nproc, *THREE_STEPS, f"--train.max_steps={max_steps}", *strategy_args(strategy), *extra,
                  *([] if max_steps == 1 else ["--train.resume=true"]))
    if max_steps > 1:
        assert f"at step {max_steps - 1}" in r.stdout, r.stdout[-1000:]
    return r


def test_resume_2_to_1_to_2_ranks_across_ddp_fsdp_deepspeed(tmp_path, reference_run):
    out = tmp_path / "chain"
    args = ["--optim.name=sgd", *CASES["byol"]]
    _leg(out, 2, "ddp", 1, *args)
    _leg(out, 1, "fsdp", 2, *args)
    _leg(out, 2, "zero3", 3, *args)
    ref_losses, ref = reference_run("byol")
    assert losses(out) == pytest.approx(ref_losses, rel=1e-4, abs=1e-5)
    ckpts = checkpoints(out)
    assert [(ckpts[s]["strategy"], ckpts[s]["world_size"]) for s in (1, 2, 3)] == [
        ("ddp", 2), ("fsdp", 1), ("deepspeed", 2)]
    for step in (2, 3):
        assert_same_state(ckpts[step], ref[step], rtol=1e-4, atol=1e-5)


def test_adamw_state_survives_ddp_zero2_fsdp_bitwise(tmp_path, reference_run):
    out = tmp_path / "chain"
    args = ["--optim.name=adamw", *CASES["byol"]]
    _leg(out, 1, "ddp", 1, *args)
    _leg(out, 1, "zero2", 2, *args)
    _leg(out, 1, "fsdp", 3, *args)
    _, ref = reference_run("byol", "adamw")
    ckpts = checkpoints(out)
    assert {"exp_avg", "exp_avg_sq", "step"} <= {k.rsplit(".", 1)[1] for k in ckpts[3]["optim"]}
    for step in (2, 3):
        assert_same_state(ckpts[step], ref[step], rtol=0, atol=0)
