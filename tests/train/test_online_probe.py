"""The online linear probe (fastssl/train/online_probe.py): it watches training without changing it."""

import json
import os
import subprocess
import sys

import pytest
import torch

from fastssl.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, read_train_state
from fastssl.config import apply_overrides
from fastssl.errors import FastSSLError
from fastssl.recipes import get_recipe
from fastssl.train.trainer import train
from tests.methods.pretext_runs import pretext_overrides
from tests.train.test_knn_monitor import _flat_jpegs, _train_cli

PROBE = ["--eval.online_probe=true"]
KNN = ["--eval.knn_every=3", "--eval.knn_every_train=30", "--eval.knn_every_test=12"]


def _records(out) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def _assert_same_ssl_state(a, b) -> None:
    """Model tensors and SSL optimizer state of the two runs' last checkpoints are bit-identical."""
    a, b = (load_checkpoint(latest_checkpoint(x), optimizer=True) for x in (a, b))
    for section in ("model", "optim"):
        assert a[section].keys() == b[section].keys()
        assert all(torch.equal(a[section][k], b[section][k]) for k in a[section]), f"{section} tensors differ"


def _probe_state(out) -> dict:
    return read_train_state(latest_checkpoint(out))["online_probe"]


def test_probe_leaves_training_bit_identical_and_logs(tiny_cfg, tmp_path, capsys):
    train(tiny_cfg(*KNN, out=tmp_path / "plain"))
    train(tiny_cfg(*KNN, *PROBE, out=tmp_path / "probed"))
    _assert_same_ssl_state(tmp_path / "plain", tmp_path / "probed")
    assert "online probe: reads the features of the method's own forward" in capsys.readouterr().err
    rows = _records(tmp_path / "probed")
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert len(train_rows) == 6 and all(0 <= r["online_probe_top1"] <= 100 and r["online_probe_loss"] > 0
                                        for r in train_rows)
    held_out = [r for r in rows if r["kind"] == "knn_every"]
    assert [r["step"] for r in held_out] == [3, 6] and all(0 <= r["online_probe_top1"] <= 100 for r in held_out)
    assert not any("online_probe_top1" in r for r in _records(tmp_path / "plain"))
    # The probe moved (so "identical" above is not about a probe that does nothing).
    assert _probe_state(tmp_path / "probed")["optimizer"]["state"]


@pytest.mark.parametrize("recipe, extra", [
    # RotNet with one random rotation per image: its backbone never sees the plain first view.
    ("rotation-cpu", ["--method.rotations=random", "--data.image_size=8"]),
    # MAE never calls the pooled forward.
    ("mae-cpu", ["--method.decoder_dim=16", "--method.decoder_depth=1", "--method.decoder_heads=2",
                 "--train.batch_size=16", "--data.image_size=8"]),
])
def test_probe_with_its_own_forward_leaves_training_bit_identical(tmp_path, capsys, recipe, extra):
    def run(out, *more):
        train(apply_overrides(get_recipe(recipe), [*pretext_overrides(out), *extra, *more]))

    run(tmp_path / "plain")
    run(tmp_path / "probed", *PROBE)
    assert "one eval-mode forward of the first view per step" in capsys.readouterr().err
    _assert_same_ssl_state(tmp_path / "plain", tmp_path / "probed")
    assert all("online_probe_top1" in r for r in _records(tmp_path / "probed") if r["kind"] == "train")


@pytest.mark.slow
def test_probe_learns_above_chance(tiny_cfg, tmp_path):
    # 10 digit classes (chance 10%). Raw pooled features (as solo-learn's probe takes them) share a
    # large mean, so a linear probe learns slowly: 60 steps at 16 px. Measured: held-out 43%.
    train(tiny_cfg(*PROBE, "--data.limit=320", "--data.image_size=16", "--train.batch_size=32", "--train.epochs=6",
                   "--train.log_every=10", "--eval.online_probe_lr=1.0", "--eval.knn_every=60",
                   "--eval.knn_every_train=30", "--eval.knn_every_test=100", out=tmp_path / "run"))
    rows = _records(tmp_path / "run")
    curve = [r["online_probe_top1"] for r in rows if r["kind"] == "train"]  # every 10 steps
    held_out = [r["online_probe_top1"] for r in rows if r["kind"] == "knn_every"]
    assert min(curve[-2:]) > 15 and len(held_out) == 1 and held_out[0] > 25, (curve, held_out)


def test_probe_is_off_with_a_notice_on_unlabelled_images(tmp_path, capsys):
    flat = _flat_jpegs(tmp_path / "flat")
    assert _train_cli(tmp_path, f"--data.path={flat}", *PROBE) == 0
    notes = [ln for ln in capsys.readouterr().err.splitlines() if "online probe" in ln]
    assert notes == [f"fastssl: online probe off: --data.path={flat} has images without labels; "
                     f"the run trains without it"]
    assert not any("online_probe_top1" in r for r in _records(tmp_path / "run"))
    assert "online_probe" not in read_train_state(latest_checkpoint(tmp_path / "run"))


def test_bad_probe_lr_is_refused(tiny_cfg):
    with pytest.raises(FastSSLError, match="--eval.online_probe_lr=0.0 must be > 0"):
        train(tiny_cfg(*PROBE, "--eval.online_probe_lr=0"))


def test_resume_continues_the_probe(tiny_cfg, tmp_path, capsys):
    train(tiny_cfg(*PROBE, out=tmp_path / "full"))
    train(tiny_cfg(*PROBE, "--train.ckpt_every_steps=1", "--train.keep_last=10", out=tmp_path / "part"))
    for p in list_checkpoints(tmp_path / "part")[4:]:
        p.rename(p.with_name(".gone-" + p.name))  # "interrupted" at step 4, mid-epoch 2
    train(tiny_cfg(*PROBE, "--train.resume=true", out=tmp_path / "part"))
    a, b = _probe_state(tmp_path / "full"), _probe_state(tmp_path / "part")
    assert all(torch.equal(a["linear"][k], b["linear"][k]) for k in a["linear"])
    assert "starts afresh" not in capsys.readouterr().err


def test_resume_without_probe_state_starts_it_afresh(tiny_cfg, tmp_path, capsys):
    train(tiny_cfg("--train.epochs=1", out=tmp_path / "run"))
    summary = train(tiny_cfg(*PROBE, "--train.resume=true", out=tmp_path / "run"))
    assert summary["step"] == 6
    assert "holds no probe for 10 classes; the probe starts afresh" in capsys.readouterr().err
    assert "online_probe" in read_train_state(latest_checkpoint(tmp_path / "run"))


_DUMP_PROBE = """
import sys, torch
from fastssl.cli import resolve_config
from fastssl.distributed import destroy_distributed, init_distributed
from fastssl.train.trainer import Trainer
cfg = resolve_config(None, sys.argv[2:])
world = init_distributed(cfg.dist.backend, cfg.train.device, cfg.dist.timeout_s)
trainer = Trainer(cfg, world)
trainer.run()
torch.save(trainer.probe.linear.state_dict(), f"{sys.argv[1]}/probe_rank{world.rank}.pt")
destroy_distributed()
"""


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_probe_is_identical_on_two_ranks(tmp_path, strategy):
    from tests.train.conftest import tiny_overrides

    script = tmp_path / "dump_probe.py"
    script.write_text(_DUMP_PROBE)
    # Different batches per rank, so each rank's own gradient differs: only the all-reduce makes them agree.
    args = [*tiny_overrides(tmp_path / "run"), *PROBE, "--train.epochs=1", "--dist.backend=gloo",
            f"--dist.strategy={strategy}", "--method.name=byol", "--model.name=resnet-tiny",
            "--method.pred_hidden_dim=16"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(tmp_path), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    p0, p1 = (torch.load(tmp_path / f"probe_rank{i}.pt") for i in (0, 1))
    assert all(torch.equal(p0[k], p1[k]) for k in p0)
    saved = _probe_state(tmp_path / "run")["linear"]
    assert all(torch.equal(saved[k], p0[k]) for k in p0)
