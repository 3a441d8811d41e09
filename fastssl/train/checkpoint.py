"""Checkpoints: atomic writes, the last K kept, exact resume, and loading for evaluation.

Layout of a run folder (`--train.out`):

    config.json                  the resolved config, written at start
    checkpoints/step_00001234.pt one file per save; only the newest `keep_last` remain
    metrics.jsonl, tb/           logs (fastssl.train.metrics)

A checkpoint is written to a temporary file in the same folder, flushed and fsynced, then
renamed over its final name, so a run killed at any moment leaves either the old set of
checkpoints or the new one, never a truncated file. Resume picks the newest complete file.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastssl.config import Config
from fastssl.errors import FastSSLError

FORMAT = "fastssl-ckpt-v1"
_NAME = re.compile(r"^step_(\d+)\.pt$")


def checkpoint_dir(out: str | Path) -> Path:
    return Path(out) / "checkpoints"


def list_checkpoints(out: str | Path) -> list[Path]:
    """Complete checkpoints in a run folder, oldest first."""
    d = checkpoint_dir(out)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(out: str | Path) -> Path | None:
    ckpts = list_checkpoints(out)
    return ckpts[-1] if ckpts else None


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a checkpoint file, a run folder, or its checkpoints/ folder."""
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        for run in (p, p.parent):
            found = latest_checkpoint(run)
            if found is not None:
                return found
        raise FastSSLError(f"no checkpoints (checkpoints/step_*.pt) in {p}; train first or pass a checkpoint file")
    raise FastSSLError(f"checkpoint {p} does not exist; pass a .pt file or a run folder (--train.out of a run)")


def atomic_save(obj: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    # Make the rename itself durable.
    try:
        fd = os.open(path.parent, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass


def atomic_write_text(text: str, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out: str | Path, state: dict[str, Any], step: int, keep_last: int = 3) -> Path:
    """Write `state` as checkpoints/step_<step>.pt atomically and prune all but the newest K."""
    path = checkpoint_dir(out) / f"step_{step:08d}.pt"
    atomic_save({"format": FORMAT, **state}, path)
    if keep_last > 0:
        for old in list_checkpoints(out)[:-keep_last]:
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = resolve_checkpoint(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise FastSSLError(f"cannot read checkpoint {path} ({type(e).__name__}); it is corrupt or not a fastssl checkpoint") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise FastSSLError(f"{path} is not a fastssl checkpoint (format {FORMAT}); pass one written by `fastssl train`")
    state["path"] = str(path)
    return state


def load_model_state(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], ckpt_cfg: dict, cfg: Config, path: str) -> None:
    """Load weights strictly; a mismatch becomes one line naming both models."""
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError:
        theirs = f"{ckpt_cfg.get('method', {}).get('name')}/{ckpt_cfg.get('model', {}).get('name')}"
        ours = f"{cfg.method.name}/{cfg.model.name}"
        raise FastSSLError(
            f"checkpoint {path} holds a {theirs} model but this run builds {ours}; "
            f"use the checkpoint's recipe or a fresh --train.out"
        ) from None


def load_pretrained(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[torch.nn.Module, Config]:
    """Rebuild the method (backbone + projector) of a checkpoint for evaluation."""
    from fastssl.methods import build_method

    state = load_checkpoint(path, map_location)
    cfg = Config.from_dict(state["config"])
    method = build_method(cfg)
    load_model_state(method, state["model"], state["config"], cfg, state["path"])
    method.eval()
    return method, cfg
