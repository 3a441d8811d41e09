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
