"""The few-label rows as a CSV file and a markdown table (mean ± std over seeds per cell)."""

from __future__ import annotations

import csv
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

COLUMNS = ("dataset", "encoder", "evaluation", "labels_per_class", "seed", "top1", "seconds", "best_step", "steps",
           "n_pseudo", "pseudo_accuracy")


def write_csv(rows: list[dict[str, Any]], path: str | Path, dataset: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({"dataset": dataset, **r})
    return path


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    with Path(path).open() as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["labels_per_class"], r["seed"], r["top1"] = int(r["labels_per_class"]), int(r["seed"]), float(r["top1"])
    return rows


def _cell(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """One line per (encoder, evaluation) in first-seen order, one column per labels-per-class."""
    ns = sorted({int(r["labels_per_class"]) for r in rows})
    keys = list(dict.fromkeys((r["encoder"], r["evaluation"]) for r in rows))
    lines = ["| encoder | evaluation | " + " | ".join(f"{n} labels/class" for n in ns) + " |",
             "|---|---|" + "---:|" * len(ns)]
    for enc, ev in keys:
        cells = [_cell([float(r["top1"]) for r in rows if (r["encoder"], r["evaluation"]) == (enc, ev)
                        and int(r["labels_per_class"]) == n]) for n in ns]
        lines.append(f"| {enc} | {ev} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def hardware_line() -> str:
    """CPU model, core count and torch threads, as measured on this machine."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads{gpu}"


def markdown_report(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """Title, how it was measured (`meta`: dataset, sizes, hardware, wall time...), the table."""
    seeds = sorted({int(r["seed"]) for r in rows})
    head = [f"## Few-label top-1 (%) on {meta.get('dataset', '?')}", ""]
    head += [f"- {k}: {v}" for k, v in meta.items() if k != "dataset"]
    head += [f"- cells: mean ± std over {len(seeds)} label draws (seeds {', '.join(map(str, seeds))})"
             if len(seeds) > 1 else f"- cells: one label draw (seed {seeds[0] if seeds else '?'})", ""]
    return "\n".join(head) + markdown_table(rows) + "\n"
