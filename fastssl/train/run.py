"""`fastssl.train(cfg) -> RunResult`: one pretraining run in this process, for the Python API
(fastssl/api.py re-exports it; the CLI calls the trainer directly)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastssl.config import Config
from fastssl.errors import FastSSLError
from fastssl.train.trainer import train as run


@dataclass
class RunResult:
    out: Path  # the run folder
    checkpoint: Path | None  # the last checkpoint written
    summary: dict[str, Any]  # the run's summary record (knn_top1, images_per_s, ...)
    metrics: list[dict[str, Any]] = field(default_factory=list)  # every record of metrics.jsonl (rank 0)
    stopped: str | None = None  # the signal that stopped the run, if one did (resume it with --resume)


def train(cfg: Config, *, resume: bool = False, overwrite: bool = False) -> RunResult:
    """Pretrain `cfg` in this process (world size 1; use torchrun and the CLI for more)."""
    if not isinstance(cfg, Config):
        raise FastSSLError(f"fastssl.train takes a Config (fastssl.load_config(...)), not {type(cfg).__name__}")
    cfg.train.resume, cfg.train.overwrite = resume or cfg.train.resume, overwrite or cfg.train.overwrite
    summary = run(cfg)
    out = Path(cfg.train.out)
    path = out / "metrics.jsonl"
    metrics = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    ckpt = summary.get("checkpoint")
    return RunResult(out, Path(ckpt) if ckpt and ckpt != "None" else None, summary, metrics, summary.get("stopped"))
