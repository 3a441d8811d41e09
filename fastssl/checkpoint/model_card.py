"""The README.md model card of an `--format hf` export: what was trained, on what, how long, how well.

The figure is the run's own measurement (the `knn_top1` of its `summary` record in metrics.jsonl),
never a quoted one; a run that measured none says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def measured_knn(checkpoint: str | Path) -> float | None:
    """The last summary's kNN top-1 of the run a checkpoint (`<run>/checkpoints/step_N`) belongs to."""
    metrics = Path(checkpoint).parent.parent / "metrics.jsonl"
    if not metrics.is_file():
        return None
    knn = None
    for line in metrics.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line cut by a killed run
            continue
        if record.get("kind") == "summary" and record.get("knn_top1") is not None:
            knn = float(record["knn_top1"])
    return knn


def _load_lines(spec: dict[str, Any]) -> str:
    if spec["custom"]:
        return ("import fastssl\n"
                "backbone, spec = fastssl.load_backbone(\"path/to/this/folder\")  # a custom backbone: "
                "timm cannot build it by name\n")
    return ("import timm\n"
            "model = timm.create_model(\"hf-hub:<user>/<repo>\", pretrained=True)  # or \"local-dir:path/to/this/folder\"\n")


def model_card(spec: dict[str, Any], num_features: int) -> str:
    knn = measured_knn(spec["checkpoint"])
    figure = f"{100 * knn:.1f}% kNN top-1 (measured at the end of this run)" if knn is not None else \
        "not measured (the run logged no kNN summary)"
    # "auto" with no path is the built-in digits (fastssl/config/sections.py DataConfig.dataset).
    data = spec["data_path"] or "the built-in digits"
    data = data if spec["dataset"] == "auto" else f"{spec['dataset']} ({data})"
    return (f"---\nlibrary_name: timm\ntags:\n- image-feature-extraction\n- fastssl\n- {spec['method']}\n---\n\n"
            f"# {spec['model']} pretrained with {spec['method']} (fastssl)\n\n"
            f"- Method: {spec['method']} ({spec['weights']} weights)\n"
            f"- Data: {data}, {spec['img_size']} px\n"
            f"- Steps: {spec['step']}\n"
            f"- Evaluation: {figure}\n"
            f"- Backbone: {spec['model']} (timm `{spec['architecture']}`), {num_features}-d pooled features, "
            f"stem {spec['stem'] or 'patch'}{', custom' if spec['custom'] else ''}\n\n"
            f"## Load\n\n```python\n{_load_lines(spec)}```\n")
