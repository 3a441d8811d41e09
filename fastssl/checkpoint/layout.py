"""Where checkpoints live in a run folder, and how one becomes visible atomically.

    <train.out>/
      config.json                      the resolved config, written at start
      checkpoints/
        step_00001234/                 one distributed checkpoint (torch.distributed.checkpoint)
          .metadata                    DCP's index of every tensor and its chunks
          __0_0.distcp, __1_0.distcp   the tensors, one file per writing rank
          train_state.pt               step, epoch, bad_steps, config, each rank's RNG state
          COMPLETE                     written last: a folder without it is never resumed from
        .tmp-step_00001240/            a save in progress (or killed midway): ignored

Every rank writes its shards into `.tmp-step_N/`; after a barrier rank 0 writes `COMPLETE`,
fsyncs, and renames the folder to `step_N/` (one `rename(2)`, atomic on POSIX file systems),
then prunes all but the newest `keep_last`. A save killed at any moment therefore leaves the
previous `step_*` folders as they were, and `latest_checkpoint` only ever returns complete ones.
The checkpoint folder must be on a file system every rank can read (DCP's requirement).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from fastssl.errors import FastSSLError

COMPLETE = "COMPLETE"
TRAIN_STATE = "train_state.pt"
_NAME = re.compile(r"^step_(\d+)$")
_TMP_PREFIX = ".tmp-"
# fastssl-ckpt-v1, one torch.save file per checkpoint: no longer read, but still found, so that
# loading one is refused by name (dcp_io.py) rather than reported missing.
_SINGLE_FILE = re.compile(r"^step_(\d+)\.pt$")


def checkpoint_dir(out: str | Path) -> Path:
    return Path(out) / "checkpoints"


def step_name(step: int) -> str:
    return f"step_{step:08d}"


def step_of(path: str | Path) -> int:
    m = _NAME.match(Path(path).name) or _SINGLE_FILE.match(Path(path).name)
    if not m:
        raise FastSSLError(f"{path} is not a checkpoint folder (checkpoints/step_NNNNNNNN)")
    return int(m.group(1))


def is_complete(path: Path) -> bool:
    return path.is_dir() and _NAME.match(path.name) is not None and (path / COMPLETE).is_file()


def list_checkpoints(out: str | Path) -> list[Path]:
    """Complete checkpoints of a run folder, oldest first (single-file ones included, to be refused)."""
    d = checkpoint_dir(out)
    if not d.is_dir():
        return []
    found = []
    for p in d.iterdir():
        if is_complete(p):
            found.append((int(_NAME.match(p.name).group(1)), p))
        elif (m := _SINGLE_FILE.match(p.name)) and p.is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def is_single_file_checkpoint(path: Path) -> bool:
    return path.is_file() and _SINGLE_FILE.match(path.name) is not None


def latest_checkpoint(out: str | Path) -> Path | None:
    ckpts = list_checkpoints(out)
    return ckpts[-1] if ckpts else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, a run folder (its newest checkpoint) or its checkpoints/ folder."""
    p = Path(path)
    if is_complete(p) or p.is_file():
        return p  # a file: the loader says what it is, or was
    if p.is_dir() and _NAME.match(p.name):
        raise FastSSLError(f"{p} is an incomplete checkpoint (no {COMPLETE} marker: its save was interrupted); "
                           f"pass the run folder to use its newest complete checkpoint")
    if p.is_dir():
        for run in (p, p.parent):
            found = latest_checkpoint(run)
            if found is not None:
                return found
        raise FastSSLError(f"no checkpoints (complete checkpoints/step_* folders) in {p}; train first or pass a checkpoint folder")
    raise FastSSLError(f"checkpoint {p} does not exist; pass a run folder (--train.out of a run) or one of its checkpoints/step_* folders")


def tmp_dir(out: str | Path, step: int) -> Path:
    return checkpoint_dir(out) / f"{_TMP_PREFIX}{step_name(step)}"


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def atomic_write_text(text: str, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def prepare_tmp(out: str | Path, step: int) -> Path:
    """Rank 0: an empty `.tmp-step_N/`, and no leftovers of earlier killed saves."""
    d = checkpoint_dir(out)
    d.mkdir(parents=True, exist_ok=True)
    for stale in d.glob(f"{_TMP_PREFIX}*"):
        moved_aside = d / stale.name[len(f"{_TMP_PREFIX}old-"):]
        if stale.name.startswith(f"{_TMP_PREFIX}old-") and not moved_aside.exists():
            os.replace(stale, moved_aside)  # a publish killed between its two renames: put it back
        else:
            shutil.rmtree(stale, ignore_errors=True)
    tmp = tmp_dir(out, step)
    tmp.mkdir()
    return tmp


def publish(out: str | Path, step: int, keep_last: int) -> Path:
    """Rank 0, after every rank finished writing: mark complete, rename into place, prune."""
    tmp, final = tmp_dir(out, step), checkpoint_dir(out) / step_name(step)
    atomic_write_text(f"{step}\n", tmp / COMPLETE)
    fsync_dir(tmp)
    # The same step saved twice (a stop signal right after a periodic save): the older copy is moved
    # aside, not deleted, until the new one is in place, so a failed rename never loses the step.
    old = checkpoint_dir(out) / f"{_TMP_PREFIX}old-{step_name(step)}"
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except OSError:
        if old.exists():
            os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)
    fsync_dir(final.parent)
    if keep_last > 0:
        for old in list_checkpoints(out)[:-keep_last]:
            shutil.rmtree(old) if old.is_dir() else old.unlink(missing_ok=True)
    return final
