"""metrics.jsonl after a resume: the steps after the checkpoint are logged once, not twice."""

import json

from fastssl.train.metrics import MetricLogger


def _steps(out):
    return [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_resume_drops_the_records_after_the_checkpoint_step(tmp_path):
    log = MetricLogger(tmp_path, tensorboard=False, progress=False)
    for step in range(1, 11):
        log.log(step, {"loss": 1.0})
    log.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "ste')  # the torn line of a killed run
    log = MetricLogger(tmp_path, tensorboard=False, progress=False, resume_step=6)
    for step in (7, 8):
        log.log(step, {"loss": 1.0})
    log.close()
    assert _steps(tmp_path) == [1, 2, 3, 4, 5, 6, 7, 8]


def test_a_fresh_logger_appends(tmp_path):
    for _ in range(2):
        log = MetricLogger(tmp_path, tensorboard=False, progress=False)
        log.log(1, {"loss": 1.0})
        log.close()
    assert _steps(tmp_path) == [1, 1]


def test_resumed_run_logs_each_step_once(tiny_cfg, tmp_path):
    import shutil

    from fastssl.checkpoint import list_checkpoints
    from fastssl.train.trainer import train

    train(tiny_cfg("--train.ckpt_every_steps=1", "--train.keep_last=10"))
    for p in list_checkpoints(tmp_path / "run")[3:]:  # as if killed after step 3's checkpoint
        shutil.rmtree(p)
    train(tiny_cfg("--train.resume=true"))
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_log_progress_prints_every_n_steps_or_30_s_and_at_the_end(capsys):
    from fastssl.train.metrics import LineProgress

    now = [0.0]
    lines = LineProgress(total=10, initial=0, every=4, clock=lambda: now[0])
    for step in range(1, 11):
        now[0] += 31.0 if step == 6 else 1.0  # step 6 took 31 s: the clock, not the count, prints it
        lines.update(1, {"loss": 2.0 - step / 10, "lr": 0.1, "img_s": 100.0 if step <= 4 else 50.0})
    printed = capsys.readouterr().err.splitlines()
    assert [ln.split()[2] for ln in printed] == ["4/10", "6/10", "10/10"]  # every 4 steps, 30 s, the last
    assert printed[0] == "fastssl: step 4/10 loss 1.6 lr 0.1 img/s 100.0 ETA 0m06s"
    assert "img/s 50.0" in printed[1] and "ETA" not in printed[2]


def test_a_run_logging_to_a_file_shows_progress_lines_and_only_the_changed_config(tmp_path):
    import subprocess
    import sys

    from tests.train.conftest import tiny_overrides

    args = [*tiny_overrides(tmp_path / "run"), "--train.progress=true", "--train.log_every=2", "--train.epochs=1"]
    r = subprocess.run([sys.executable, "-m", "fastssl", "train", *args], capture_output=True, text=True,
                       timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    progress = [ln for ln in r.stderr.splitlines() if ln.startswith("fastssl: step ")]
    assert [ln.split()[2] for ln in progress] == ["2/3", "3/3"], r.stderr
    assert all(f" {k} " in progress[0] for k in ("loss", "lr", "img/s", "ETA"))
    assert "\r" not in r.stderr  # no bar redraws in a log file
    config = [ln for ln in r.stdout.splitlines() if " -> " in ln]
    given = {a[2:].split("=")[0] for a in args}
    assert "  train.batch_size: 128 -> 16" in config and {ln.split(":")[0].strip() for ln in config} <= given
    assert "aug." not in r.stdout and "fastssl: full config in" in r.stdout
