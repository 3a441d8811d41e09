"""Stopping as clusters stop runs: SIGTERM/SIGINT/SIGUSR1 to the process group, SIGTERM to torchrun.

Each ends with a checkpoint at the stop step, exit status 128 + signal and a line saying how to
resume, and the resumed run is bitwise the uninterrupted one. The runs use loader workers
(`--data.num_workers=2`): a signal to the group reaches them too, and they used to die first.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fastssl.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from fastssl.train.trainer import train
from tests.train.conftest import tiny_overrides

LAUNCH = Path(__file__).resolve().parents[2] / "launch"
# 40 epochs of 3 steps; a checkpoint every 5 steps tells the test the run is under way.
LONG = ["--train.epochs=40", "--train.ckpt_every_steps=5", "--train.keep_last=2", "--data.num_workers=2"]


def _spawn(cmd, **kw):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
                            start_new_session=True, **kw)  # its own process group, as under SLURM


def _wait_for_step(proc, out, min_step, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        ckpts = list_checkpoints(out)
        if ckpts and int(ckpts[-1].name.split("_")[1]) >= min_step:
            return
        if proc.poll() is not None:
            pytest.fail(f"run ended before step {min_step}: {proc.stdout.read()[-3000:]}")
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail("no checkpoint appeared")


def _stopped_record(out):
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["kind"] == "stopped"][-1]


def _assert_bitwise(a, b):
    wa, wb = load_checkpoint(latest_checkpoint(a))["model"], load_checkpoint(latest_checkpoint(b))["model"]
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.mark.slow
@pytest.mark.parametrize("sig,to_group", [(signal.SIGTERM, True), (signal.SIGINT, True), (signal.SIGUSR1, False)])
def test_stop_signal_checkpoints_at_the_stop_step_and_resumes_bitwise(tiny_cfg, tmp_path, sig, to_group):
    out = tmp_path / "stopped"
    proc = _spawn([sys.executable, "-m", "fastssl", "train", *tiny_overrides(out), *LONG])
    _wait_for_step(proc, out, 10)
    (os.killpg if to_group else os.kill)(proc.pid, sig)
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, text[-3000:]
    stop = _stopped_record(out)
    assert stop["stopped"] == signal.Signals(sig).name and stop["exit_status"] == 128 + sig
    assert latest_checkpoint(out).name == f"step_{stop['step']:08d}"  # written at the stop step itself
    assert f"stopped by {signal.Signals(sig).name} at step {stop['step']}" in text and "--resume" in text
    assert "Traceback" not in text
    assert 10 <= stop["step"] < 120
    resumed = train(tiny_cfg(*LONG, "--train.resume=true", out=out))
    full = train(tiny_cfg(*LONG, out=tmp_path / "full"))
    assert resumed["step"] == full["step"] == 120
    _assert_bitwise(out, tmp_path / "full")


def _torchrun(out, *extra):
    return [*tiny_overrides(out), *LONG, "--dist.backend=gloo", *extra]


@pytest.mark.slow
@pytest.mark.distributed
def test_sigterm_to_torchrun_stops_every_rank_at_one_step_and_resumes_bitwise(tmp_path):
    out = tmp_path / "stopped"
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "fastssl", "train"]
    proc = _spawn([*run, *_torchrun(out)])
    _wait_for_step(proc, out, 10)
    os.kill(proc.pid, signal.SIGTERM)  # torchrun alone: it forwards SIGTERM to each rank's process group
    text, _ = proc.communicate(timeout=120)
    stop = _stopped_record(out)
    assert stop["exit_status"] == 143 and latest_checkpoint(out).name == f"step_{stop['step']:08d}", text[-3000:]
    resumed = subprocess.run([*run, *_torchrun(out, "--train.resume=true")], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    full = subprocess.run([*run, *_torchrun(tmp_path / "full")], capture_output=True, text=True)
    assert full.returncode == 0, full.stderr[-3000:]
    _assert_bitwise(out, tmp_path / "full")


@pytest.mark.slow
@pytest.mark.distributed
def test_launcher_turns_a_group_sigterm_into_one_stop_and_exit_143(tmp_path):
    out = tmp_path / "stopped"
    proc = _spawn(["bash", str(LAUNCH / "torchrun.sh"), *_torchrun(out)], cwd=tmp_path)
    _wait_for_step(proc, out, 10)
    os.killpg(proc.pid, signal.SIGTERM)  # `timeout`, Ctrl-C and SLURM signal the whole group
    text, _ = proc.communicate(timeout=150)
    assert proc.returncode == 143, text[-3000:]
    assert text.count("launch: got SIGTERM") == 1
    stop = _stopped_record(out)
    assert latest_checkpoint(out).name == f"step_{stop['step']:08d}"


@pytest.mark.slow
def test_a_crash_with_loader_workers_exits_instead_of_hanging(tmp_path):
    """An uncaught error (a bug) while DataLoader workers run: the workers ignore SIGTERM, so the
    interpreter's exit would wait for them forever unless the trainer closes the loader first."""
    code = (
        "import sys, fastssl.train.trainer as t\n"
        "def boom(*a, **k): raise RuntimeError('injected bug')\n"
        "t.train_step = boom\n"
        "from fastssl.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    args = ["train", f"--train.out={tmp_path / 'run'}", "--data.limit=64", "--train.batch_size=16",
            "--data.num_workers=2", "--train.max_steps=4", "--train.progress=false", "--train.tensorboard=false"]
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 1, r.stderr[-2000:]
    assert "injected bug" in r.stderr  # a bug keeps its traceback
