"""Whether a checkpoint may be resumed by this run's config.

A resume may change how the run proceeds (a larger `train.max_steps`, `train.epochs` or
`train.time_budget`, another `dist.strategy`, world size, `train.ckpt_every_steps` ...) but not what
is trained: every key of the `model` and `method` sections, and `optim.name` (its state could not be
restored), must be the checkpoint's. Nor may the data under the step counter change: the step counts
global batches of `train.batch_size` images of the dataset `data.dataset`/`data.path`/`data.limit`
names, and the data order, the epoch and the schedule are functions of it; a new global batch or
dataset would resume at another point of all three. (The world size may change: the per-rank batch
follows it.) The first key that differs is named.
"""

from __future__ import annotations

from typing import Any

from fastssl.config import Config, flat_config
from fastssl.errors import FastSSLError

_SECTIONS = ("model", "method")
# Keys outside those sections that fix what the step counter means (see the module docstring).
_FIXED_KEYS = ("optim.name", "train.batch_size", "data.dataset", "data.path", "data.limit")


def differing_keys(ckpt_cfg: dict[str, Any], cfg: Config) -> list[tuple[str, Any, Any]]:
    """[(section.key, checkpoint's value, this run's value)] over the keys a resume may not change."""
    theirs, ours = flat_config(ckpt_cfg), flat_config(cfg.to_dict())
    diffs = []
    for section in _SECTIONS:
        name = f"{section}.name"
        keys = [name] if theirs.get(name) != ours.get(name) else sorted(
            k for k in set(theirs) | set(ours) if k.startswith(section + "."))
        diffs += [(k, theirs.get(k), ours.get(k)) for k in keys if theirs.get(k) != ours.get(k)]
    return diffs + [(k, theirs.get(k), ours[k]) for k in _FIXED_KEYS if theirs.get(k) != ours[k]]


_WHY = {"optim": "the optimizer state could not be restored",
        "train": "the step counts global batches of that size (change the world size instead)",
        "data": "the step counts batches of that data"}


def check_resumable(ckpt_cfg: dict[str, Any], cfg: Config, path: str) -> None:
    diffs = differing_keys(ckpt_cfg, cfg)
    if not diffs:
        return
    key, theirs, ours = diffs[0]
    if not key.startswith(_SECTIONS):
        raise FastSSLError(
            f"checkpoint {path} was trained with --{key}={theirs!r} and a resume cannot change it (to {ours!r}): "
            f"{_WHY.get(key.split('.')[0], 'it fixes what a step means')}; drop --{key} or use a fresh --train.out"
        )
    held = f"{ckpt_cfg.get('method', {}).get('name')}/{ckpt_cfg.get('model', {}).get('name')}"
    built = f"{cfg.method.name}/{cfg.model.name}"
    raise FastSSLError(
        f"checkpoint {path} holds a {held} model but this run builds {built}: --{key} is {theirs!r} there and "
        f"{ours!r} here; resume with --{key}={theirs} or use a fresh --train.out"
    )
