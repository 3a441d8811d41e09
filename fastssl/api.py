"""The Python API: what a notebook or a script calls instead of the command line.

    import fastssl

    cfg = fastssl.load_config("vicreg-cpu", {"train.epochs": 2, "train.out": "runs/nb"})
    cfg.train.batch_size = 64                 # type-checked as --train.batch_size=64 would be
    result = fastssl.train(cfg)               # RunResult: out, checkpoint, summary, metrics
    top1 = fastssl.evaluate(result.out, "knn")["top1"]
    backbone, spec = fastssl.load_backbone(result.out)   # an nn.Module, and how timm rebuilds it

Each is the command's own code path, so a config, a run and a figure are the same whichever way
they were made. Nothing here exits the interpreter: every user error is a `FastSSLError` (the
line the CLI would print), and a run stopped by a signal returns with `result.stopped` set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from fastssl.config import Config, set_values, validate
from fastssl.config.files import read_config_file
from fastssl.errors import FastSSLError, did_you_mean
from fastssl.train.run import RunResult, train


def load_config(recipe: str | None = None, overrides: Mapping[str, Any] | str | Path | None = None) -> Config:
    """A recipe (default: "default", or the one a config file names) with overrides on top.

    `overrides` is a mapping of `"section.key": value` (or `{"section": {"key": value}}`), or the
    path of a YAML / JSON config file (`fastssl config --save` writes one). Values are checked as
    command-line flags are, and the result is validated.
    """
    from fastssl.recipes import get_recipe

    if isinstance(overrides, (str, Path)):
        file_recipe, keys = read_config_file(str(overrides))
        cfg = get_recipe(recipe or file_recipe or "default")
    else:
        cfg, keys = get_recipe(recipe or "default"), _flat(overrides or {})
    return validate(set_values(cfg, keys.items()))


def _flat(overrides: Mapping[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        if isinstance(value, Mapping):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def load_backbone(source: str | Path, weights: str = "online") -> tuple[Any, dict[str, Any]]:
    """(backbone in eval mode, its rebuild spec) from a run folder, checkpoint or `fastssl export`
    output; `weights="ema"` takes a checkpoint's EMA target. `spec` names the timm architecture and
    its arguments (fastssl/checkpoint/timm_spec.py)."""
    from fastssl.checkpoint.export import load_backbone as load

    return load(source, weights)


def evaluate(source: str | Path | None, task: str = "knn", **options: Any) -> dict[str, Any]:
    """`fastssl eval TASK --ckpt SOURCE ...` as a dict: task is knn | linear | finetune | plot, and
    options are the command's flags in Python spelling (`data_train="x.npz"`, `k=20`,
    `random_init=True`, `labels_per_class=5`)."""
    from fastssl.cli import build_parser
    from fastssl.eval.commands import evaluate_args

    if task not in ("knn", "linear", "finetune", "plot"):
        raise FastSSLError(f"unknown task '{task}'.{did_you_mean(task, ['knn', 'linear', 'finetune', 'plot'])} "
                           f"Use knn, linear, finetune or plot")
    argv = ["eval", task] + (["--ckpt", str(source)] if source is not None else ["--random-init"])
    args = build_parser().parse_args(argv)
    for name, value in options.items():
        if not hasattr(args, name) or name in ("command", "func", "eval_task"):
            known = [k for k in vars(args) if k not in ("command", "func", "eval_task")]
            raise FastSSLError(f"fastssl.evaluate has no option '{name}'.{did_you_mean(name, known)}")
        setattr(args, name, value)
    return evaluate_args(args)[0]


__all__ = ["RunResult", "evaluate", "load_backbone", "load_config", "train"]
