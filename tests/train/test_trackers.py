"""W&B (offline) and MLflow (local file store) get the scalars metrics.jsonl gets, plus the config,
and a resumed run continues the same tracker run. Nothing here touches the network."""

import json
import struct

import pytest

from fastssl.cli import main
from tests.train.conftest import tiny_overrides


@pytest.fixture
def offline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default MLflow store is ./mlruns
    for key, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "wb"), "WANDB_SILENT": "true",
                       "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true",
                       "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}.items():
        monkeypatch.setenv(key, value)
    (tmp_path / "wb").mkdir()
    return tmp_path


def _wandb_records(path):
    """The protobuf records of an offline `.wandb` file (a LevelDB log: 7-byte header, 32 KiB blocks,
    each chunk `crc32 u32, length u16, type u8` then data; type 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, pos, block, parts = path.read_bytes(), 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the rest of a block too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        parts += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = Record()
            record.ParseFromString(parts)
            yield record
            parts = b""
        elif kind == 0:
            break


def _wandb_history(wb_dir):
    runs = sorted((wb_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    rows, config = [], {}
    for f in runs:
        for r in _wandb_records(f):
            if r.HasField("history"):
                items = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item}
                rows.append((r.history.step.num, items))
            if r.HasField("run"):  # the config passed to wandb.init
                config.update({i.key: json.loads(i.value_json) for i in r.run.config.update})
    return {f.stem.removeprefix("run-") for f in runs}, rows, config


def _jsonl(out, kind="train"):
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


@pytest.mark.slow
def test_wandb_and_mlflow_log_what_jsonl_logs_and_resume_into_the_same_run(offline):
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    out = offline / "run"
    trackers = ["--log.wandb=true", "--log.wandb_mode=offline", "--log.mlflow=true", "--log.run_name=tiny"]
    assert main(["train", *tiny_overrides(out), "--train.epochs=1", *trackers]) == 0
    ids = json.loads((out / "trackers.json").read_text())
    assert main(["train", "--resume", f"--train.out={out}", "--train.epochs=2"]) == 0
    assert json.loads((out / "trackers.json").read_text()) == ids  # the same runs, not new ones

    jsonl = {r["step"]: r["loss"] for r in _jsonl(out)}
    assert len(jsonl) == 6  # 3 steps per epoch, 2 epochs

    client = MlflowClient(tracking_uri=(offline / "mlruns").as_uri())
    runs = client.search_runs([client.get_experiment_by_name("fastssl").experiment_id])
    assert [r.info.run_id for r in runs] == [ids["mlflow"]] and runs[0].info.run_name == "tiny"
    logged = {m.step: m.value for m in client.get_metric_history(ids["mlflow"], "train/loss")}
    assert logged == pytest.approx(jsonl)
    saved = json.loads((out / "config.json").read_text())
    assert runs[0].data.params["model.name"] == saved["model"]["name"] and runs[0].data.params["train.batch_size"] == "16"

    run_ids, rows, config = _wandb_history(offline / "wb")
    assert run_ids == {ids["wandb"]}  # both sessions wrote into the one run id
    wb = {step: row["train/loss"] for step, row in rows if "train/loss" in row}
    assert wb == pytest.approx(jsonl)
    assert config["model"]["name"] == saved["model"]["name"] and config["train"]["batch_size"] == 16


def test_missing_tracker_package_fails_before_any_work(tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    assert main(["train", *tiny_overrides(tmp_path / "run"), "--log.wandb=true"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install "fastssl[wandb]"' in err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_no_tracker_by_default(tmp_path):
    from fastssl.config import Config
    from fastssl.train.trackers import open_trackers

    cfg = Config()
    cfg.train.out = str(tmp_path)
    assert open_trackers(cfg) == [] and not (tmp_path / "trackers.json").exists()
