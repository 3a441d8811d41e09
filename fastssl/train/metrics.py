"""Metrics: a rank-0 progress bar, `metrics.jsonl`, and TensorBoard scalars.

Only rank 0 writes; other ranks get a logger whose methods do nothing, so the training loop
never branches on rank. JSONL lines are appended and flushed per record, so a killed run keeps
every record it logged. A resumed run (`resume_step=S`) first drops the records of steps after S
(they belong to steps the resume will train again), so no step is logged twice; TensorBoard marks
its later events superseded the same way (`purge_step`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any


class MetricLogger:
    def __init__(self, out: str | Path, enabled: bool = True, tensorboard: bool = True, progress: bool = True,
                 total_steps: int = 0, initial_step: int = 0, resume_step: int | None = None):
        self.enabled = enabled
        self._jsonl = None
        self._tb = None
        self._bar = None
        if not enabled:
            return
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            _drop_records_after(out / "metrics.jsonl", resume_step)
        self._jsonl = open(out / "metrics.jsonl", "a", buffering=1)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                purge = resume_step + 1 if resume_step is not None else None
                self._tb = SummaryWriter(str(out / "tb"), purge_step=purge)
            except ImportError:  # tensorboard is a dependency, but a trimmed install should still train
                print("fastssl: tensorboard is not installed; logging to metrics.jsonl only", file=sys.stderr)
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total_steps, initial=initial_step, unit="step", dynamic_ncols=True,
                             file=sys.stderr, disable=None)

    def log(self, step: int, metrics: dict[str, Any], kind: str = "train") -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, "time": round(time.time(), 3)}
        record.update({k: _scalar(v) for k, v in metrics.items()})
        self._jsonl.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if k not in ("kind", "step", "time") and isinstance(v, (int, float)):
                    self._tb.add_scalar(f"{kind}/{k}", v, step)

    def set_total(self, total_steps: int) -> None:
        """A time budget fixes the step count after a few steps; the bar follows."""
        if self._bar is not None:
            self._bar.total = total_steps
            self._bar.refresh()

    def progress(self, n: int, **postfix: Any) -> None:
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix({k: _fmt(v) for k, v in postfix.items()}, refresh=False)

    def write(self, message: str) -> None:
        """Print a line on rank 0 without breaking the progress bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if self._jsonl is not None:
            self._jsonl.close()


def _drop_records_after(path: Path, step: int) -> None:
    """Keep the records of steps <= `step` (atomically: a crash leaves the old file or the new)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines(keepends=True)
            if (s := _step_of(line)) is not None and s <= step]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)


def _step_of(line: str) -> int | None:
    """The record's step; None for a blank line or the torn last line a killed run can leave (dropped)."""
    if not line.strip():
        return None
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return None


def _scalar(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float):
        return round(v, 6)
    return v


def _fmt(v: Any) -> str:
    v = _scalar(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
