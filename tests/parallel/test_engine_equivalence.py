"""FSDP2 and DeepSpeed ZeRO 1/2/3 on 2 gloo processes equal one process on the same global batch.

Each 2-rank run trains 3 steps with a checkpoint after each; its per-step losses and its
checkpoints after steps 1 and 3 (weights, BatchNorm statistics, EMA targets, optimizer state)
are compared with one uninterrupted single-process run. Tolerance |a - b| <= 1e-5 + 1e-4 max|b|
per tensor: the ranks reduce gradients and BatchNorm statistics in another order than one
process, so the two agree to fp32 round-off of each tensor's scale, not bitwise.
"""

import json

import pytest
import torch

from fastssl.checkpoint.export import export_backbone
from fastssl.eval.features import load_eval_model
from tests.parallel.conftest import CASES, THREE_STEPS, assert_same_state, checkpoints, losses, strategy_args, train_cli

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

# ViT runs cover the parameter-sharding strategies; the ResNet (BatchNorm, EMA target) runs all.
MATRIX = [("byol", "fsdp"), ("byol", "zero1"), ("byol", "zero2"), ("byol", "zero3"),
          ("simclr", "fsdp"), ("simclr", "zero3")]
RTOL, ATOL = 1e-4, 1e-5


@pytest.mark.parametrize("method,strategy", MATRIX, ids=[f"{m}-{s}" for m, s in MATRIX])
def test_two_ranks_equal_one_process(tmp_path, reference_run, method, strategy):
    out = tmp_path / "run"
    # The end-of-run kNN needs every rank's shards for its forward: it must run, and not hang.
    train_cli(out, 2, *THREE_STEPS, "--optim.name=sgd", *CASES[method], *strategy_args(strategy),
              "--train.knn_at_end=true", "--eval.knn_test_limit=60")
    knn = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"knn"' in x]
    assert len(knn) == 1 and 0 <= knn[0]["top1"] <= 100 and knn[0]["n_test"] == 60
    ref_losses, ref = reference_run(method)
    assert losses(out) == pytest.approx(ref_losses, rel=RTOL, abs=ATOL)  # steps 1, 2 and 3
    ckpts = checkpoints(out)
    assert sorted(ckpts) == [1, 2, 3] and ckpts[3]["world_size"] == 2
    for step in (1, 3):
        assert_same_state(ckpts[step], ref[step], RTOL, ATOL)
    # Not vacuous: the steps moved the backbone, and the optimizer state is there.
    moved = [k for k, v in ckpts[3]["model"].items() if k.startswith("backbone.") and v.is_floating_point()
             and not torch.equal(v, ckpts[1]["model"][k])]
    assert moved and any(k.endswith("momentum_buffer") for k in ckpts[3]["optim"])
    if method == "byol":
        # The EMA target, updated shard by shard (FSDP2 local shards, ZeRO-3 partitions), equals
        # the single-process EMA and really moved.
        target = [k for k in ckpts[3]["model"] if k.startswith("target_backbone.") and k.endswith(".weight")]
        assert target and any(not torch.equal(ckpts[3]["model"][k], ckpts[1]["model"][k]) for k in target)
    # One process reads the sharded checkpoint: evaluation and export.
    model, _, _ = load_eval_model(out)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, ckpts[3]["model"][k], rtol=0, atol=0, msg=k)
    info = export_backbone(out, tmp_path / "backbone.pt")
    exported = torch.load(info["out"])
    trunk = {k[len("backbone.trunk."):]: v for k, v in ref[3]["model"].items() if k.startswith("backbone.trunk.")}
    assert exported.keys() == trunk.keys()
    for k in trunk:
        torch.testing.assert_close(exported[k], trunk[k], rtol=RTOL, atol=ATOL)
