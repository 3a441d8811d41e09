"""Saving and loading distributed checkpoints with torch.distributed.checkpoint (DCP).

One DCP state dict per checkpoint, the same for every strategy (DCP flattens it to dotted keys):

    model.<name>          each parameter and persistent buffer of the single-device method, by its
                          own name (no `module.` / `_orig_mod.` wrappers): DTensor shards under
                          FSDP2, full tensors under DDP and DeepSpeed (DCP writes each once);
    optim.<name>.<key>    that parameter's optimizer state (exp_avg, momentum_buffer, LARS' mu: the
                          parameter's full logical shape, sharded or not; AdamW's step: 0-d).

Method state that is not a weight (MoCo's queue, DINO's centre) is a buffer, so it is in `model`.
`train_state.pt` (rank 0) holds the step, epoch, bad-step count, config, strategy and every
rank's RNG state. Since names and logical shapes never depend on the strategy, DCP reshards on
load: any checkpoint loads under any strategy and world size, and on one process without a
process group (`read_tensors`, for `fastssl eval` and `fastssl export`).
"""

from __future__ import annotations

import contextlib
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from fastssl.checkpoint.layout import TRAIN_STATE, prepare_tmp, publish, resolve_checkpoint, step_name, tmp_dir
from fastssl.checkpoint.rng import rng_state
from fastssl.distributed import parallel_dims
from fastssl.errors import FastSSLError, environment_error
from fastssl.parallel_dims import ParallelDims, global_rank, group_ready

FORMAT = "fastssl-ckpt-v2"
# Checkpoints were one torch.save file each (format v1) until DCP folders replaced them (commit
# 5bb3290, still version 0.1.0); the last commit that read them is named in the refusal.
SINGLE_FILE_FORMAT = "fastssl-ckpt-v1"
SINGLE_FILE_VERSION = "0.1.0"
LAST_SINGLE_FILE_READER = "81efa73"


@contextlib.contextmanager
def _single_process_is_intended():
    """DCP warns on every save/load without a process group; one process is what we mean then."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def save_checkpoint(out: str | Path, step: int, model: dict[str, torch.Tensor],
                    optim: dict[str, dict[str, torch.Tensor]], train_state: dict[str, Any], keep_last: int,
                    dims: ParallelDims | None = None) -> Path:
    """Collective: every rank writes its shards; rank 0 publishes `checkpoints/step_N/` atomically.

    The RNG states are one per data-parallel rank of `dims` (None: the registered dims,
    `fastssl.distributed.parallel_dims()`), in that rank order: the trainer restores them by
    data-parallel rank.

    A write that fails (disk full, read-only or vanished folder) removes the torn `.tmp-step_N/`
    and raises FastSSLError on every rank; the published checkpoints stay as they were.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException  # a BaseException, not an Exception

    tmp = tmp_dir(out, step)
    try:
        _on_rank0(lambda: prepare_tmp(out, step))
        with _single_process_is_intended():
            dcp.save({"model": model, "optim": optim}, checkpoint_id=str(tmp), no_dist=not group_ready())
        dims = dims or parallel_dims()
        rngs = [None] * (dims.dp_size if group_ready() else 1)
        if group_ready():
            dist.all_gather_object(rngs, rng_state(), group=dims.dp_group)
        else:
            rngs[0] = rng_state()
        _on_rank0(lambda: _write_train_state(tmp / TRAIN_STATE, {"format": FORMAT, **train_state, "rng": rngs}))
        # dcp.save returns on rank 0 only after every rank's files are written, so publishing is safe.
        return _on_rank0(lambda: publish(out, step, keep_last))
    except (Exception, CheckpointException) as e:
        if global_rank() == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        reason = _write_failure(e, Path(out))
        if reason is None:
            raise  # a bug, not the disk: keep the traceback
        _release_frames(e)
        raise FastSSLError(f"cannot write checkpoint {step_name(step)} in {tmp.parent}: {reason}") from None


def _release_frames(e: BaseException) -> None:
    """Clear the locals of the failed save's frames. DCP keeps each exception in a local of a frame
    on its own traceback: a cycle that holds the whole run (through the frames' callers) until the
    garbage collector runs, which finalizes it in any order. The loader's queues can then close
    before its persistent workers are told to stop, and those workers ignore SIGTERM
    (stop_signals.py), so the interpreter would wait for them at exit forever."""
    import traceback

    for cause in _causes(e):
        if cause.__traceback__ is not None:
            traceback.clear_frames(cause.__traceback__)


def _write_train_state(path: Path, state: dict[str, Any]) -> None:
    with open(path, "wb") as f:
        torch.save(state, f)
        f.flush()


def _on_rank0(fn):
    """`fn()` on rank 0, its result on every rank. A failure there raises on every rank too, so no
    rank is left waiting at the next collective for a save that will never come."""
    box: list[Any] = [None, None]
    error = None
    if global_rank() == 0:
        try:
            box[0] = fn()
        except Exception as e:  # noqa: BLE001 - shared first, then re-raised as it was
            error, box[1] = e, _write_failure(e, None) or f"{type(e).__name__}: {e}"
    if group_ready():
        dist.broadcast_object_list(box, src=0)
    if error is not None:
        try:
            raise error
        finally:
            # The frame would hold its own traceback: a cycle that outlives the run's end, and with
            # it the loader's persistent workers, which then block the interpreter's exit.
            error = None
    if box[1] is not None:
        raise FastSSLError(f"rank 0 could not write the checkpoint: {box[1]}")
    return box[0]


def _causes(e: BaseException):
    """`e`, what it wraps (DCP's per-rank failures) and what it was raised from."""
    seen, todo = set(), [e]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        for failure in (getattr(e, "failures", None) or {}).values():  # CheckpointException
            todo.append(failure[0] if isinstance(failure, tuple) else getattr(failure, "exc", None))
        todo += [e.__cause__, e.__context__]


def _write_failure(e: BaseException, out: Path | None) -> str | None:
    """Why a save failed, when the file system refused it; None for anything else (a bug)."""
    for cause in _causes(e):
        if isinstance(cause, FastSSLError):
            return str(cause)
        if isinstance(cause, OSError) and cause.errno is not None:
            mapped = environment_error(cause, "")
            return str(mapped) if mapped else f"{cause.strerror}; check that disk and --train.out"
        # torch.save reports a short write without its errno: "[enforce fail at inline_container.cc]"
        # or "PytorchStreamWriter failed writing file"; a full disk is the usual reason.
        if isinstance(cause, RuntimeError) and any(m in str(cause) for m in ("inline_container", "failed writing")):
            return f"the write failed{_free_space(out)}; free space there or point --train.out at another disk"
    return None


def _free_space(out: Path | None) -> str:
    try:
        return f" with {shutil.disk_usage(out).free / 2**20:.0f} MiB free on that disk" if out else ""
    except OSError:
        return ""


def _checkpoint_folder(path: str | Path) -> Path:
    """`resolve_checkpoint`'s answer, which must be a checkpoint folder: a file is refused, in one
    line that says what it is."""
    path = resolve_checkpoint(path)
    if path.is_file():
        raise FastSSLError(_not_a_folder(path))
    return path


def _not_a_folder(path: Path) -> str:
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        return f"cannot read checkpoint {path} ({type(e).__name__}); it is corrupt or not a fastssl checkpoint"
    if isinstance(state, dict) and state.get("format") == SINGLE_FILE_FORMAT:
        return (f"{path} was written by fastssl {SINGLE_FILE_VERSION} (single-file format {SINGLE_FILE_FORMAT}), "
                f"which this version no longer reads; re-export it with fastssl {SINGLE_FILE_VERSION} up to commit "
                f"{LAST_SINGLE_FILE_READER} (`fastssl export`) or retrain")
    return f"{path} is not a fastssl checkpoint; pass a run folder or a checkpoints/step_* folder written by `fastssl train`"


def read_train_state(path: str | Path) -> dict[str, Any]:
    """step, epoch, bad_steps, config, strategy, world_size, rng (a list, one per rank), path."""
    path = _checkpoint_folder(path)
    try:
        state = torch.load(path / TRAIN_STATE, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise FastSSLError(f"cannot read {path / TRAIN_STATE} ({type(e).__name__}); the checkpoint is corrupt") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise FastSSLError(f"{path} is not a fastssl checkpoint (format {FORMAT}); pass one written by `fastssl train`")
    return {**state, "path": str(path)}


def tensor_metadata(path: Path) -> dict[str, Any]:
    """DCP's index: flattened key -> TensorStorageMetadata (size, dtype) or BytesStorageMetadata."""
    from torch.distributed.checkpoint import FileSystemReader

    try:
        return FileSystemReader(str(path)).read_metadata().state_dict_metadata
    except Exception as e:  # noqa: BLE001
        raise FastSSLError(f"cannot read the DCP index of {path} ({type(e).__name__}); the checkpoint is corrupt") from None


def load_in_place(path: Path, state: dict[str, Any]) -> None:
    """dcp.load into `state`'s tensors (collective when a process group exists)."""
    import torch.distributed.checkpoint as dcp

    with _single_process_is_intended():
        dcp.load(state, checkpoint_id=str(path), no_dist=not group_ready())


def check_matches(path: Path, section: str, template: dict[str, Any], what: str, strict: bool = True) -> dict[str, Any]:
    """`template` restricted to what the checkpoint holds, after checking every logical shape.

    strict: every tensor of `template` must be there. Otherwise entries the checkpoint lacks are
    dropped (optimizer state of a parameter that had no gradient yet when it was saved).
    """
    meta = tensor_metadata(path)

    def keep(prefix: str, d: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                sub = keep(f"{prefix}{k}.", v)
                if sub:
                    out[k] = sub
                continue
            m = meta.get(f"{prefix}{k}")
            if m is None:
                if strict:
                    raise FastSSLError(f"checkpoint {path} has no {prefix}{k}; it was written for another {what}")
                continue
            if tuple(m.size) != tuple(v.shape):
                raise FastSSLError(f"checkpoint {path} holds {prefix}{k} of shape {tuple(m.size)}, this run's is "
                                   f"{tuple(v.shape)}; it was written for another {what}")
            out[k] = v
        return out

    return keep(f"{section}.", template)


def load_model_weights(method: torch.nn.Module, path: str | Path) -> None:
    """Load every parameter and persistent buffer of the single-device `method` in place."""
    path = _checkpoint_folder(path)
    template = method.state_dict()
    check_matches(path, "model", template, "model")
    load_in_place(path, {"model": template})
    # state_dict() shares storage with the parameters and buffers; this also covers any that it copied.
    method.load_state_dict(template, strict=True)


def has_optimizer_state(path: Path) -> bool:
    return any(k.startswith("optim.") for k in tensor_metadata(path))


def read_tensors(path: str | Path, prefix: str = "model.") -> dict[str, torch.Tensor]:
    """The full tensors under `prefix` (prefix stripped), on this process alone, with no model built."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    path = _checkpoint_folder(path)
    meta = tensor_metadata(path)
    state = {k: torch.empty(tuple(m.size), dtype=m.properties.dtype) for k, m in meta.items()
             if k.startswith(prefix) and isinstance(m, TensorStorageMetadata)}
    if not state:
        raise FastSSLError(f"checkpoint {path} holds no tensors under '{prefix}'")
    # No process group involved, whatever the caller's: one process reads every shard.
    with _single_process_is_intended():
        dcp.load(state, checkpoint_id=str(path), no_dist=True)
    return {k[len(prefix):]: v for k, v in state.items()}


def load_checkpoint(path: str | Path, optimizer: bool = False) -> dict[str, Any]:
    """A checkpoint read whole on this process: its train state plus `model` ({name: full tensor})
    and, with `optimizer=True`, `optim` ({"<name>.<key>": full tensor})."""
    state = read_train_state(path)
    state["model"] = read_tensors(state["path"], "model.")
    if optimizer:
        state["optim"] = read_tensors(state["path"], "optim.") if has_optimizer_state(Path(state["path"])) else {}
    return state
