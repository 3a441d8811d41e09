"""Experiment trackers: W&B (`--log.wandb=true`) and MLflow (`--log.mlflow=true`), rank 0 only.

Each gets the config once and then every record `MetricLogger` writes to metrics.jsonl, as
`{kind}/{key}` scalars at the record's step (`train/loss`, `eval/knn_top1`, `summary/...`), so the
tracker and the JSONL file hold the same numbers. The tracker's run id is kept in the run folder
(`trackers.json`), so a resumed run continues the same tracker run rather than starting another.
W&B drops the records of steps a resume trains again (its steps only increase); MLflow keeps both.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

IDS_FILE = "trackers.json"


class WandbTracker:
    def __init__(self, log_cfg, out: Path, config: dict[str, Any], run_id: str | None, name: str):
        import wandb

        # Offline runs go to the run folder unless WANDB_DIR says otherwise.
        self.run = wandb.init(project=log_cfg.wandb_project, entity=log_cfg.wandb_entity or None, name=name,
                              mode=log_cfg.wandb_mode, dir=None if os.environ.get("WANDB_DIR") else str(out),
                              id=run_id, resume="allow", config=config)
        self.id = self.run.id

    def log(self, kind: str, step: int, scalars: dict[str, float]) -> None:
        self.run.log({f"{kind}/{k}": v for k, v in scalars.items()}, step=step)
        if kind == "summary":
            self.run.summary.update(scalars)

    def close(self) -> None:
        self.run.finish()


class MlflowTracker:
    def __init__(self, log_cfg, out: Path, config: dict[str, Any], run_id: str | None, name: str):
        from mlflow.tracking import MlflowClient

        # The client, not mlflow's global active run: a notebook may hold its own.
        uri = log_cfg.mlflow_uri or Path("mlruns").resolve().as_uri()
        if not log_cfg.mlflow_uri:
            # MLflow 3 refuses the file store unless asked; it is the default here because it needs
            # no server and no database packages (a sqlite:/// URI works with `pip install mlflow`).
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        if run_id is None:
            exp = self.client.get_experiment_by_name(log_cfg.mlflow_experiment)
            exp_id = exp.experiment_id if exp else self.client.create_experiment(log_cfg.mlflow_experiment)
            run_id = self.client.create_run(exp_id, run_name=name).info.run_id
            _log_params(self.client, run_id, config)  # params are immutable in MLflow: once, at creation
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.client.log_dict(run_id, config, "config.json")
        self.id = run_id

    def log(self, kind: str, step: int, scalars: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.id, metrics=[Metric(f"{kind}/{k}", v, now, step) for k, v in scalars.items()])

    def close(self) -> None:
        self.client.set_terminated(self.id)


def _log_params(client, run_id: str, config: dict[str, Any]) -> None:
    from mlflow.entities import Param

    from fastssl.config import flat_config

    params = [Param(k, json.dumps(v) if not isinstance(v, str) else v) for k, v in flat_config(config).items()]
    for i in range(0, len(params), 100):  # MLflow's per-request limit
        client.log_batch(run_id, params=params[i : i + 100])


def open_trackers(cfg) -> list:
    """The trackers `cfg.log` turns on, each resumed into the run id stored in the run folder."""
    wanted = [(key, cls) for key, cls in (("wandb", WandbTracker), ("mlflow", MlflowTracker)) if getattr(cfg.log, key)]
    if not wanted:
        return []
    from fastssl.checkpoint.layout import atomic_write_text

    out = Path(cfg.train.out)
    ids_file = out / IDS_FILE
    ids = json.loads(ids_file.read_text()) if ids_file.is_file() else {}
    name = cfg.log.run_name or out.resolve().name
    trackers = [cls(cfg.log, out, cfg.to_dict(), ids.get(key), name) for key, cls in wanted]
    ids.update({key: t.id for (key, _), t in zip(wanted, trackers)})
    atomic_write_text(json.dumps(ids) + "\n", ids_file)
    return trackers
