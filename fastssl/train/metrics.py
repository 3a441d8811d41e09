"""Metrics: a rank-0 progress bar, `metrics.jsonl`, TensorBoard scalars and trackers (W&B, MLflow).

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
                 total_steps: int = 0, initial_step: int = 0, resume_step: int | None = None, log_every: int = 10,
                 trackers: list | tuple = ()):
        self.enabled = enabled
        self._trackers = list(trackers)  # fastssl/train/trackers.py: W&B, MLflow
        self._jsonl = None
        self._tb = None
        self._bar = None
        self._lines = None
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
        if progress and _is_terminal(sys.stderr):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total_steps, initial=initial_step, unit="step", dynamic_ncols=True, file=sys.stderr)
        elif progress:  # a log file (batch jobs, `2> log.txt`): a bar would print nothing until the end
            self._lines = LineProgress(total_steps, initial_step, every=log_every)

    def log(self, step: int, metrics: dict[str, Any], kind: str = "train") -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, "time": round(time.time(), 3)}
        record.update({k: _scalar(v) for k, v in metrics.items()})
        self._jsonl.write(json.dumps(record) + "\n")
        scalars = {k: v for k, v in record.items()
                   if k not in ("kind", "step", "time") and isinstance(v, (int, float))}
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(f"{kind}/{k}", v, step)
        for tracker in self._trackers:
            tracker.log(kind, step, scalars)

    def set_total(self, total_steps: int) -> None:
        """A time budget fixes the step count after a few steps; the bar follows."""
        if self._bar is not None:
            self._bar.total = total_steps
            self._bar.refresh()
        if self._lines is not None:
            self._lines.total = total_steps

    def progress(self, n: int, **postfix: Any) -> None:
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix({k: _fmt(v) for k, v in postfix.items()}, refresh=False)
        if self._lines is not None:
            self._lines.update(n, postfix)

    def write(self, message: str) -> None:
        """Print a line on rank 0 without breaking the progress bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        for tracker in self._trackers:
            tracker.close()
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if self._jsonl is not None:
            self._jsonl.close()


class LineProgress:
    """Progress as plain lines: one every `every` steps or `every_s` seconds, whichever comes first,
    and one at the last step. `img/s` is over the steps since the previous line; the ETA is at the
    pace of this process so far (checkpoints and evaluations included, as they will recur)."""

    def __init__(self, total: int, initial: int, every: int, every_s: float = 30.0, clock=time.monotonic):
        self.total, self.step = total, initial
        self.every, self.every_s, self._clock = max(1, every), every_s, clock
        self._t0 = self._t_last = clock()
        self._step0 = self._step_last = initial
        self._postfix: dict[str, Any] = {}
        self._inv_rates: list[float] = []  # 1 / img_s per step: their mean gives images over time

    def update(self, n: int, postfix: dict[str, Any]) -> None:
        self.step += n
        img_s = postfix.get("img_s")
        if img_s:
            self._inv_rates.append(1.0 / float(img_s))
        self._postfix = postfix  # formatted only when printed: a CUDA tensor's .item() syncs
        now = self._clock()
        if self.step - self._step_last >= self.every or now - self._t_last >= self.every_s or self.step == self.total:
            print(self._line(now), file=sys.stderr, flush=True)
            self._t_last, self._step_last, self._inv_rates = now, self.step, []

    def _line(self, now: float) -> str:
        parts = [f"fastssl: step {self.step}/{self.total}"]
        parts += [f"{k} {_fmt(v)}" for k, v in self._postfix.items() if k != "img_s"]
        if self._inv_rates:
            parts.append(f"img/s {len(self._inv_rates) / sum(self._inv_rates):.1f}")
        done = self.step - self._step0
        if done > 0 and self.total > self.step:
            parts.append(f"ETA {_duration((now - self._t0) / done * (self.total - self.step))}")
        return " ".join(parts)


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream is not a terminal
        return False


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
