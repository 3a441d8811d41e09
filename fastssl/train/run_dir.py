"""The run folder and its config: start afresh, refuse a folder that holds a run, or resume it.

    fastssl train --train.out=runs/x                 a new run: refused if runs/x holds one
    fastssl train --train.out=runs/x --overwrite     clear runs/x's run files, then start afresh
    fastssl train --train.out=runs/x --resume [k=v]  continue runs/x with ITS config, changed only
                                                     by the flags on this command line

A folder "holds a run" when it has checkpoints, `metrics.jsonl` or TensorBoard events: a second run
there would interleave its records with the first's. `--overwrite` removes exactly those files and
`config.json`, never anything else in the folder (it may be a user's working directory).

`config.json` is the run's config as it is now, plus `history`: one entry per resume with the keys
it changed (`{"train.max_steps": [30, 60]}`), so it is never silently rewritten. Rank 0 decides and
writes; every rank gets the decision, so no rank trains on another config or folder.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch.distributed as dist

from fastssl.checkpoint import atomic_write_text, check_resumable, latest_checkpoint, read_train_state
from fastssl.config import Config, diff_configs
from fastssl.distributed import World, is_dist
from fastssl.errors import FastSSLError

CONFIG_FILE = "config.json"
# What a run writes into its folder besides config.json (checkpoints/ is checked separately).
RUN_FILES = ("metrics.jsonl", "tb")
# Keys that describe one invocation, not the run: never saved as set, never reported as changes.
_INVOCATION_KEYS = ("train.resume", "train.overwrite")


def _read_record(out: str | Path) -> dict[str, Any] | None:
    """A run folder's `config.json` as written (config sections and history), or None if it has none."""
    path = Path(out) / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise FastSSLError(f"{path} is not valid JSON, so --resume cannot read the run's config; "
                           f"restore it or start afresh with --overwrite") from None


def saved_config(out: str | Path) -> Config | None:
    """The config a run folder's `config.json` holds (the base of a resume), or None if it has none."""
    record = _read_record(out)
    return Config.from_dict(record) if record is not None else None


def config_changes(before: dict[str, Any], after: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """The keys a resume (or a run against its recipe) changes, ignoring the invocation flags."""
    return [d for d in diff_configs(before, after) if d[0] not in _INVOCATION_KEYS]


def _recorded(cfg: Config) -> dict[str, Any]:
    d = cfg.to_dict()
    d["train"]["resume"] = d["train"]["overwrite"] = False
    return d


class RunDir:
    """Owns `train.out`: decides the start, writes `config.json`, reports what differs."""

    def __init__(self, cfg: Config, world: World):
        self.cfg, self.world = cfg, world
        self.out = Path(cfg.train.out)

    def open(self) -> Path | None:
        """Collective. The checkpoint to resume from (None: start at step 0); raises if refused."""
        decision: list[Any] = [None, None, []]
        if self.world.is_main:
            try:
                decision[0], decision[2] = self._decide()
            except FastSSLError as e:
                decision[1] = str(e)
            except OSError as e:
                decision[1] = f"cannot use {self.out} as the run folder ({e.strerror}); choose another --train.out"
        if is_dist():
            dist.broadcast_object_list(decision, src=0)
        if decision[1]:
            raise FastSSLError(decision[1])
        return Path(decision[0]) if decision[0] else None

    def _decide(self) -> tuple[str | None, list]:
        cfg = self.cfg
        blocker = next((p for p in (self.out, *self.out.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise FastSSLError(f"--train.out={self.out} cannot be a run folder: {blocker} is a file; "
                               f"choose another --train.out")
        if cfg.train.resume and cfg.train.overwrite:
            raise FastSSLError("--resume continues the run in --train.out and --overwrite clears it; pass one of them")
        found = latest_checkpoint(self.out) if self.out.is_dir() else None
        if cfg.train.resume:
            state = read_train_state(found) if found is not None else None
            if state is not None:
                check_resumable(state["config"], cfg, str(found))
            record = _read_record(self.out)
            # Against the saved config as this version reads it, so keys it added are not "changes".
            changes = config_changes(Config.from_dict(record).to_dict(), cfg.to_dict()) if record else []
            history = []
            if record is not None:
                history = record.get("history", []) + [{
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "resumed_at_step": state["step"] if state else 0,
                    "changes": {k: [a, b] for k, a, b in changes}}]
            self._write_config(history)
            self._print_resume(found, changes, record is not None)
            return (str(found) if found else None), changes
        held = self._held_files(found)
        if held and not cfg.train.overwrite:
            raise FastSSLError(f"{self.out} already holds a run ({', '.join(held)}); pass --resume to continue it, "
                               f"--overwrite to start it afresh, or choose another --train.out")
        if held:
            self._clear()
            print(f"fastssl: --overwrite: removed {', '.join(held)} from {self.out}", flush=True)
        self._write_config([])
        self._print_start()
        return None, []

    def _held_files(self, found: Path | None) -> list[str]:
        held = ["checkpoints"] if found is not None else []
        return held + [name for name in RUN_FILES if (self.out / name).exists()]

    def _clear(self) -> None:
        for name in ("checkpoints", *RUN_FILES, CONFIG_FILE):
            p = self.out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()

    def _write_config(self, history: list) -> None:
        record = _recorded(self.cfg)
        record["history"] = history
        atomic_write_text(json.dumps(record, indent=2) + "\n", self.out / CONFIG_FILE)

    def _print_resume(self, found: Path | None, changes: list, had_config: bool) -> None:
        where = f"from {found}" if found else "with no checkpoint yet: from step 0"
        base = "the run's saved config" if had_config else f"recipe '{self.cfg.recipe}' (no {CONFIG_FILE} yet)"
        lines = [f"fastssl: resuming {self.out} {where}, with {base}"]
        lines += [f"  {k}: {a!r} -> {b!r}" for k, a, b in changes] or ["  (no config changes)"]
        print("\n".join(lines), flush=True)

    def _print_start(self) -> None:
        from fastssl.recipes import RECIPES, get_recipe

        cfg = self.cfg
        base = get_recipe(cfg.recipe).to_dict() if cfg.recipe in RECIPES else Config().to_dict()
        changes = config_changes(base, cfg.to_dict())
        # Only what differs, in the same `key: recipe's -> this run's` form a resume prints: the
        # full config is a hundred lines that would bury the few the user chose.
        lines = [f"fastssl: recipe '{cfg.recipe}'" + (", changed:" if changes else " as it is")]
        lines += [f"  {k}: {a!r} -> {b!r}" for k, a, b in changes]
        lines.append(f"fastssl: full config in {self.out / CONFIG_FILE}")
        print("\n".join(lines), flush=True)
