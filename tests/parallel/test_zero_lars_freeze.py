"""LARS and frozen parameters under DeepSpeed ZeRO 1/2/3 on 2 gloo ranks equal one process.

LARS: ZeRO steps the optimizer on flat partitions that cut across layers; each layer's trust
ratio must still be its own (norms summed over its pieces on every rank). A wrong ratio shows in
LARS's momentum `mu` (trust ratio * gradient, compared per tensor) by the ratio's own error, and
in the weights, which the adapted steps move by ~20x the tolerance.

Freeze: DINO's last layer, frozen in epoch 0, must end every step bit for bit as the 1-process
run's (rtol = atol = 0), with no weight decay, momentum, AdamW moment or step count applied.

Equal means |a - b| <= 1e-5 + 1e-4 max|b| per tensor of the checkpoints after steps 1 and 3
(weights, BatchNorm statistics, EMA targets, optimizer state; exceptions below, each with its
reason) and rel 1e-4 on the 3 logged losses, as in test_engine_equivalence.py: 2 ranks reduce
in another order than 1 process, so they agree to fp32 round-off, not bitwise.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.parallel.conftest import CASES, THREE_STEPS, assert_same_state, checkpoints, losses, strategy_args, train_cli

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

RTOL, ATOL = 1e-4, 1e-5
# Large LARS steps (each adapted layer moves ~2e-3 of its norm per step, 20x the tolerance),
# plain-SGD steps on the excluded ones small enough that 3 steps stay well conditioned.
LARS = ["--optim.name=lars", "--optim.base_lr=0.3", "--optim.lars_eta=0.1", "--optim.weight_decay=0.01",
        "--optim.lars_clip_lr=true"]
# 48 images of 8 px in batches of 16: the 3 steps are epoch 0, where the last layer is frozen.
DINO = ["--data.limit=48", "--data.image_size=8", "--data.num_workers=0", "--train.batch_size=16",
        "--train.progress=false", "--train.tensorboard=false", "--train.knn_at_end=false", "--train.log_every=1",
        "--method.name=dino", "--model.name=vit_nano", "--model.patch_size=4", "--aug.local_crops=2",
        "--aug.local_size=4", "--method.out_dim=32", "--method.proj_hidden_dim=16", "--method.bottleneck_dim=8",
        "--method.center_momentum=0.5", "--optim.weight_decay=0.1", "--optim.base_lr=0.5"]
LAST_LAYER = "head.last_layer.weight_v"


@pytest.fixture(scope="module")
def lars_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("lars-ref")
    train_cli(out, 1, *THREE_STEPS, *LARS, *CASES["simclr"])
    return losses(out), checkpoints(out)


def lars_adapted(name: str, v: torch.Tensor) -> bool:
    return v.ndim >= 2 and "pos_embed" not in name and "cls_token" not in name  # optim.param_groups


@pytest.mark.parametrize("strategy", ["zero1", "zero2", "zero3"])
def test_lars_under_zero_equals_one_process(tmp_path, lars_reference, strategy):
    out = tmp_path / "run"
    train_cli(out, 2, *THREE_STEPS, *LARS, *CASES["simclr"], *strategy_args(strategy))
    ref_losses, ref = lars_reference
    assert losses(out) == pytest.approx(ref_losses, rel=RTOL, abs=ATOL)  # steps 1, 2, 3
    ckpts = checkpoints(out)
    # After step 1 LARS's momentum is each layer's trust ratio * (gradient + wd * weight): the ratios.
    assert_same_state(ckpts[1], ref[1], RTOL, ATOL)
    # After step 3 the momentum of the excluded parameters is left out: the final norm's bias gets a
    # gradient that is 0 in exact arithmetic (the projector's BatchNorm removes any shift), so its
    # momentum is pure round-off, as different between 1 and 2 DDP ranks as here.
    model = ref[3]["model"]
    adapted = {k: v for k, v in ckpts[3]["optim"].items() if lars_adapted(k[: -len(".mu")], model[k[: -len(".mu")]])}
    assert_same_state({**ckpts[3], "optim": adapted},
                      {**ref[3], "optim": {k: ref[3]["optim"][k] for k in adapted}}, RTOL, ATOL)
    # Not vacuous: every adapted backbone layer moved by far more than the tolerance in 2 steps.
    for k, v in model.items():
        if k.startswith("backbone.") and lars_adapted(k, v):
            assert (v - ref[1]["model"][k]).abs().max() > 10 * (ATOL + RTOL * v.abs().max()), k


def grad_norms(out) -> list[float]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["grad_norm"] for r in rows if r["kind"] == "train"]


def dino_cli(out, nproc: int, *args: str) -> None:
    """`fastssl train` of DINO (conftest's tiny overrides carry SimCLR-only keys)."""
    argv = ["train", f"--train.out={out}", *DINO, *THREE_STEPS, *args]
    launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else []
    r = subprocess.run([sys.executable, *launch, "-m", "fastssl", *argv], capture_output=True, text=True,
                       env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]


@pytest.fixture(scope="module")
def dino_reference(tmp_path_factory):
    cache = {}

    def get(optim: str):
        if optim not in cache:
            out = tmp_path_factory.mktemp(f"dino-ref-{optim}")
            dino_cli(out, 1, f"--optim.name={optim}")
            cache[optim] = losses(out), checkpoints(out), grad_norms(out)
        return cache[optim]

    return get


DINO_MATRIX = [("zero1", "sgd"), ("zero2", "sgd"), ("zero3", "sgd"), ("zero1", "adamw"), ("zero3", "adamw"),
               ("zero2", "lars")]  # DINO's recipes: LARS


@pytest.mark.parametrize("strategy,optim", DINO_MATRIX, ids=[f"{s}-{o}" for s, o in DINO_MATRIX])
def test_dino_frozen_last_layer_under_zero(tmp_path, dino_reference, strategy, optim):
    """3 steps, all in epoch 0: the last layer is frozen throughout, and the rest trains as with one process."""
    out = tmp_path / "run"
    dino_cli(out, 2, f"--optim.name={optim}", *strategy_args(strategy))
    ref_losses, ref, ref_norms = dino_reference(optim)
    assert losses(out) == pytest.approx(ref_losses, rel=RTOL, abs=ATOL)
    # The global norm (clipping's) leaves the frozen gradient out, as DDP's `grad = None` does.
    # (AdamW's noise, below, reaches the norm from step 2 on.)
    n = 1 if optim == "adamw" else 3
    assert grad_norms(out)[:n] == pytest.approx(ref_norms[:n], rel=RTOL)
    ckpts = checkpoints(out)
    for step in (1, 3):
        torch.testing.assert_close(ckpts[step]["model"][LAST_LAYER], ref[step]["model"][LAST_LAYER], rtol=0, atol=0)
        # The 1-process run has no optimizer state for the last layer: its gradient was None.
        mine = {k: v for k, v in ckpts[step]["optim"].items() if not k.startswith(LAST_LAYER + ".")}
        # AdamW turns the round-off of a gradient that is 0 in exact arithmetic (the key bias under
        # softmax) into full-size +-lr steps, so its state is compared through the losses only.
        sections = () if optim == "adamw" else ("model", "optim")
        assert_same_state({**ckpts[step], "optim": mine}, ref[step], RTOL, ATOL, sections=sections)
    # No momentum, no Adam moments, no step counted for the frozen group; no weight decay either,
    # or the weights above would have shrunk.
    state = {k[len(LAST_LAYER) + 1:]: v for k, v in ckpts[3]["optim"].items() if k.startswith(LAST_LAYER + ".")}
    assert state and all(v.abs().max() == 0 for v in state.values()), state.keys()
    # Not vacuous: the rest of the head moved.
    mlp = [k for k in ref[3]["model"] if k.startswith("head.mlp") and k.endswith(".weight")]
    assert mlp and all(not torch.equal(ckpts[3]["model"][k], ckpts[1]["model"][k]) for k in mlp)


def test_dino_adamw_resume_under_zero_keeps_each_groups_step_count(tmp_path):
    """The frozen group's AdamW step count (0) and the others' (2) are saved and restored per group:
    stopped after step 2 and resumed, step 3 is the uninterrupted run's, bit for bit (same ranks,
    same strategy, so the same reduction order)."""
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    # A constant teacher momentum: the schedule otherwise depends on --train.max_steps.
    args = ["--optim.name=adamw", "--method.momentum_final=0.996", *strategy_args("zero2")]
    dino_cli(whole, 2, *args)
    dino_cli(resumed, 2, *args, "--train.max_steps=2")
    saved = checkpoints(resumed)[2]["optim"]
    assert saved[LAST_LAYER + ".step"] == 0 and saved["head.mlp.0.weight.step"] == 2
    dino_cli(resumed, 2, *args, "--train.resume=true")
    a, b = checkpoints(resumed)[3], checkpoints(whole)[3]
    assert_same_state(a, b, rtol=0, atol=0)
    assert a["optim"][LAST_LAYER + ".step"] == 0 and a["optim"]["head.mlp.0.weight.step"] == 3
