import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from fastssl.errors import FastSSLError
from fastssl.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from fastssl.checkpoint.layout import COMPLETE
from fastssl.methods import build_method
from fastssl.train.trainer import train
from tests.train.conftest import tiny_overrides


def _weights(out):
    return load_checkpoint(latest_checkpoint(out))["model"]


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_train_writes_config_checkpoints_and_metrics(tiny_cfg, tmp_path):
    cfg = tiny_cfg("--train.keep_last=1")
    summary = train(cfg)
    out = tmp_path / "run"
    assert summary["step"] == 6
    assert json.loads((out / "config.json").read_text())["train"]["batch_size"] == 16
    assert [p.name for p in list_checkpoints(out)] == ["step_00000006"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train_records] == [1, 2, 3, 4, 5, 6]
    assert all({"loss", "lr", "images_per_s", "pos_sim"} <= r.keys() for r in train_records)
    assert records[-1]["kind"] == "summary"


def test_byol_trains_and_loss_is_finite(tiny_cfg, tmp_path):
    cfg = tiny_cfg("--method.name=byol", "--method.pred_hidden_dim=16", "--train.epochs=1")
    torch.manual_seed(cfg.train.seed)  # the trainer's init: the same seed, then build_method
    init = {k: v.clone() for k, v in build_method(cfg).backbone.state_dict().items()}
    summary = train(cfg)
    assert summary["step"] == 3
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # A skipped (non-finite) step advances the step but logs no train record.
    losses = {r["step"]: r["loss"] for r in records if r["kind"] == "train"}
    assert sorted(losses) == [1, 2, 3] and all(math.isfinite(v) for v in losses.values()), losses
    trained = {k[len("backbone."):]: v for k, v in _weights(tmp_path / "run").items() if k.startswith("backbone.")}
    assert trained.keys() == init.keys()
    weights = [k for k, v in init.items() if v.is_floating_point() and "running_" not in k]
    assert weights and all(torch.isfinite(trained[k]).all() for k in weights)
    changed = [k for k in weights if not torch.equal(trained[k], init[k])]
    assert len(changed) == len(weights), sorted(set(weights) - set(changed))


def test_resume_in_process_equals_uninterrupted(tiny_cfg, tmp_path):
    train(tiny_cfg(out=tmp_path / "full"))
    # "Interrupt" after epoch 1 by keeping only the first epoch's checkpoint, then resume.
    train(tiny_cfg("--train.ckpt_every_steps=1", "--train.keep_last=10", out=tmp_path / "part"))
    for p in list_checkpoints(tmp_path / "part")[4:]:
        shutil.rmtree(p)
    assert latest_checkpoint(tmp_path / "part").name == "step_00000004"  # mid-epoch 2
    summary = train(tiny_cfg("--train.resume=true", out=tmp_path / "part"))
    assert summary["step"] == 6
    _assert_same_weights(_weights(tmp_path / "full"), _weights(tmp_path / "part"))


def _spawn(out, *extra):
    args = [sys.executable, "-m", "fastssl", "train", *tiny_overrides(out), *extra]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)


def _wait_for_checkpoint(proc, out, min_step, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        ckpts = list_checkpoints(out)
        if ckpts and int(ckpts[-1].stem.split("_")[1]) >= min_step:
            return
        if proc.poll() is not None:
            pytest.fail(f"run ended before step {min_step}: {proc.stdout.read()[-2000:]}")
        time.sleep(0.01)
    proc.kill()
    pytest.fail("no checkpoint appeared")


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tiny_cfg, tmp_path):
    long = ["--train.epochs=40", "--train.ckpt_every_steps=5", "--train.keep_last=2"]
    proc = _spawn(tmp_path / "killed", *long)
    _wait_for_checkpoint(proc, tmp_path / "killed", 10)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = int(latest_checkpoint(tmp_path / "killed").stem.split("_")[1])
    assert 10 <= killed_at < 120
    # Every checkpoint folder resume could pick is complete; a save the kill cut short stays in
    # a .tmp-step_* folder that nothing reads.
    for p in (tmp_path / "killed" / "checkpoints").iterdir():
        assert (p / COMPLETE).is_file() if p.name.startswith("step_") else p.name.startswith(".tmp-step_")
    resumed = train(tiny_cfg(*long, "--train.resume=true", out=tmp_path / "killed"))
    full = train(tiny_cfg(*long, out=tmp_path / "full"))
    assert resumed["step"] == full["step"] == 120
    _assert_same_weights(_weights(tmp_path / "full"), _weights(tmp_path / "killed"))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny_cfg, tmp_path, monkeypatch):
    import fastssl.train.trainer as trainer_mod

    real_build = trainer_mod.build_method

    def build_poisoned(cfg):
        method = real_build(cfg)
        forward = method.forward

        def poisoned(views, step=0, schedule_len=1.0):
            out = forward(views, step, schedule_len)
            if step >= 2:
                out["loss"] = out["loss"] * float("nan")
            return out

        method.forward = poisoned
        return method

    monkeypatch.setattr(trainer_mod, "build_method", build_poisoned)
    cfg = tiny_cfg("--train.ckpt_every_steps=1", "--train.max_bad_steps=3", "--train.keep_last=5")
    with pytest.raises(FastSSLError, match=r"not finite for 3 steps.*last good checkpoint is .*step_0000000[23]"):
        train(cfg)
    # Skipped steps never update weights, so every kept checkpoint is finite and resumable.
    for ckpt in list_checkpoints(tmp_path / "run"):
        assert all(torch.isfinite(t).all() for t in load_checkpoint(ckpt)["model"].values() if t.is_floating_point())
    _assert_same_weights(load_checkpoint(list_checkpoints(tmp_path / "run")[-1])["model"],
                         load_checkpoint(tmp_path / "run" / "checkpoints" / "step_00000002")["model"])
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in records) == 2


def test_batch_too_small_for_contrastive_loss(tiny_cfg):
    with pytest.raises(FastSSLError, match="batch_size"):
        train(tiny_cfg("--train.batch_size=1"))


def test_existing_run_is_not_overwritten(tiny_cfg, tmp_path):
    train(tiny_cfg("--train.epochs=1"))
    ckpt = latest_checkpoint(tmp_path / "run")
    before = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    with pytest.raises(FastSSLError, match="--resume"):
        train(tiny_cfg("--train.epochs=1"))
    assert latest_checkpoint(tmp_path / "run") == ckpt and {p.name: p.read_bytes() for p in ckpt.iterdir()} == before


def test_resume_with_another_model_fails_clearly(tiny_cfg):
    train(tiny_cfg("--train.epochs=1"))
    with pytest.raises(FastSSLError, match="holds a simclr/resnet-tiny model"):
        train(tiny_cfg("--train.resume=true", "--model.name=resnet18-cifar"))


def test_knn_at_end_uses_the_limited_bank_and_logs_it(tiny_cfg, tmp_path):
    summary = train(tiny_cfg("--train.epochs=1", "--train.knn_at_end=true", "--eval.knn_test_limit=20"))
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    knn = [r for r in records if r["kind"] == "knn"][0]
    assert (knn["n_train"], knn["n_test"]) == (48, 20)
    assert 0 <= summary["knn_top1"] <= 100 and summary["knn_top1"] == knn["top1"]


def test_simclr_trains_with_the_triton_loss(tiny_cfg, monkeypatch):
    """Runs the fused kernel (in the Triton interpreter on CPU) inside a real training loop."""
    pytest.importorskip("triton")
    import fastssl_kernels.nt_xent as kernel

    calls = []
    real = kernel.nt_xent_triton
    monkeypatch.setattr(kernel, "nt_xent_triton", lambda *a, **k: calls.append(1) or real(*a, **k))
    summary = train(tiny_cfg("--train.epochs=1", "--method.loss_impl=triton"))
    assert summary["step"] == 3 and len(calls) == 3


@pytest.mark.parametrize("backend", ["torch", "dali-cpu", "gpu-tensor"])
def test_train_accepts_every_cpu_backend(tiny_cfg, backend):
    if backend == "dali-cpu":
        pytest.importorskip("nvidia.dali")
    summary = train(tiny_cfg("--train.epochs=1", f"--data.backend={backend}"))
    assert summary["step"] == 3
