"""`data.backend=dali | dali-cpu`: a PretrainLoader over the DALI pipelines of dali_pipeline.py.

Which reader runs:
- webdataset tars (no ImageSource; `build_dali_webdataset_loader`): `fn.external_source` fed by
  fastssl's slot streams (dali_stream.py), in the torch backend's order, with its position;
- sources whose images are files (image folders, file lists): `fn.readers.file` over this
  rank's `rank_plan` order;
- everything else (npz shards, digits, torchvision sets): `fn.external_source` fed from
  `ImageSource.encoded` by a Python callable.

The backend ("dali" or "dali-cpu") is passed in, already resolved; the views come from the
ViewSpec, one pipeline output per view.

Position and resume. `set_epoch(e, start_step)` is exact for the feeder and file readers: the
order is `rank_plan(seed, e)` and reading starts at start_step. The feeder pipeline lives across
epochs (its prefetch runs into the next epoch); it is rebuilt only when set_epoch asks for a
position other than the next one. File-reader pipelines are rebuilt each epoch (milliseconds on
CPU; decoder setup on GPU). Webdataset tars are fed by fastssl's own streams
(fastssl/data/backends/dali_stream.py), the same as the torch backend's, so they resume at the
saved per-worker position. Augmentation randomness is re-seeded from (seed, rank, epoch, step) at every
build, so a resumed run sees the same images in the same order with fresh augmentations.

Corrupt images. The feeder checks each image's signature before DALI sees it. When DALI still
fails to decode (e.g. a truncated JPEG), the batches in flight are decoded with Pillow to find
the culprit: without `data.skip_corrupt` that raises FastSSLError naming the file, with it the
file is replaced by the next good image of the plan (same step count on every rank) and the
pipeline is rebuilt at the failed step. In webdataset streams the feeder skips (and counts) members
without an image or with a wrong signature; an image that passes that but fails in DALI's decoder
(a truncated JPEG) raises an error naming the tars (`fastssl data convert --validate` drops them;
the torch backend decodes with Pillow and skips them). Each skipped file is named once per run
and later skips are counted per epoch (corrupt_report.py).
"""

from __future__ import annotations

import os
from typing import Iterator

import numpy as np
import torch

from fastssl.config import Config
from fastssl.data.backends import dali_pipeline as dp
from fastssl.data.backends import dali_stream
from fastssl.data.backends.torch_stream import RECORD_KEYS, Shards, write_keys
from fastssl.data.backends.corrupt_report import CorruptReport
from fastssl.data.backends.indexed_loader import IndexedLoader
from fastssl.data.backends.sharding import data_parallel_coords, step_seed
from fastssl.data.sources.base import ImageSource, source_paths
from fastssl.data.sources.decode import decodes
from fastssl.data.stream.position import StreamPosition
from fastssl.data.views import ViewSpec
from fastssl.distributed import World
from fastssl.errors import FastSSLError

DALI_BACKENDS = ("dali", "dali-cpu")


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except (ImportError, OSError):  # OSError: a wheel whose CUDA libraries do not load
        return False
    return True


def dali_unavailable_reason(backend: str, device: torch.device) -> str | None:
    """Why `backend` ("dali" | "dali-cpu") cannot run here, as a one-line fix; None if it can."""
    if not dali_available():
        return (
            f"--data.backend={backend} needs NVIDIA DALI: `pip install fastssl[dali]` "
            "(or use --data.backend=torch)"
        )
    if backend == "dali" and device.type != "cuda":
        return (
            f"--data.backend=dali needs a CUDA GPU (the device is {device.type}); "
            "use --data.backend=dali-cpu or --data.backend=torch"
        )
    return None


def _substitute(plan: np.ndarray, skip: set[int]) -> np.ndarray:
    """Replace skipped indices by the next good one of the plan (keeps the length)."""
    if not skip:
        return plan
    good = np.array([i for i in plan if int(i) not in skip], dtype=np.int64)
    if len(good) == 0:
        raise FastSSLError("every image of this rank's shard is corrupt; check --data.path")
    out = plan.copy()
    g = 0
    for k, i in enumerate(plan):
        if int(i) in skip:
            out[k] = good[g % len(good)]
            g += 1
    return out


class DaliLoader(IndexedLoader):
    """PretrainLoader: yields `(views, labels)`; views `[B, 3, S, S]` in cfg.data.dtype on world.device."""

    def __init__(
        self,
        cfg: Config,
        world: World,
        *,
        backend: str,
        spec: ViewSpec,
        mode: str,
        num_images: int,
        labels: np.ndarray | None = None,
        paths: list[str] | None = None,
        source: ImageSource | None = None,
        shards: Shards | None = None,
    ):
        super().__init__(cfg, world, spec, num_images)
        self.cfg, self.mode, self.backend = cfg, mode, backend
        self.labels = labels
        self.paths, self.source, self.shards = paths, source, shards
        cpu = backend == "dali-cpu"
        self.device_id = None if cpu else (world.device.index if world.device.index is not None else world.local_rank)
        self.prefetch = 2
        self.prefetch_depth = self.prefetch  # DALI's prefetch_queue_depth
        self.skip: set[int] = set()  # indices known corrupt: the plan replaces them (_substitute)
        self.report = CorruptReport("image" if shards is None else "webdataset sample")
        self._pipe = None
        self._it = None
        self._it_pos: tuple[int, int] | None = None  # (epoch, step) the live iterator yields next
        self._feeder: dp.ExternalFeeder | None = None
        self._stream: dali_stream.StreamFeeder | None = None  # webdataset's feeder
        self._fed: np.ndarray | None = None  # files mode: index order of the live pipeline
        self._fed_from = 0
        self.pos: StreamPosition | None = None  # webdataset: the streams' position
        if shards is not None:
            rank, ranks = data_parallel_coords(world)
            self.pos = StreamPosition(num_images, self.batch_size, rank, ranks, max(1, cfg.data.num_workers),
                                      self.seed, cfg.data.shuffle_buffer)
        self._record = os.environ.get(RECORD_KEYS, "")

    # --- PretrainLoader ------------------------------------------------------------------------

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        super().set_epoch(epoch, start_step)
        if self.pos is not None:
            note = self.pos.begin(epoch, start_step)
            self._close()  # the feeder holds the old plan
            if note and self.pos.rank == 0:
                print(note, flush=True)

    def state_dict(self, epoch: int, step: int) -> dict:
        return self.pos.state_dict(epoch, step) if self.pos is not None else super().state_dict(epoch, step)

    def load_state_dict(self, states: list[dict]) -> None:
        if self.pos is not None:
            self.pos.load_state_dict(states)
        else:
            super().load_state_dict(states)

    def __iter__(self) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        epoch, step = self._epoch, self._start
        steps = len(self)
        while step < steps:
            it = self._iterator_at(epoch, step)
            try:
                out = next(it)[0]
            except StopIteration:
                raise RuntimeError("DALI iterator ended early; this is a bug in fastssl") from None
            except Exception as exc:
                self._recover(exc, epoch, step)
                continue
            step += 1
            if self.pos is not None:
                self._record_stream()
            nxt = (epoch, step) if step < steps else (epoch + 1, 0)
            self._epoch, self._start = nxt
            # Only the feeder carries on into the next epoch; reader pipelines hold one epoch's order.
            self._it_pos = nxt if step < steps or self.mode == "external" else None
            self._warn_skipped()
            if step == steps:
                self._end_epoch(epoch)
            yield self._to_torch(out)

    # --- pipelines -----------------------------------------------------------------------------

    def _iterator_at(self, epoch: int, step: int):
        if self._it is not None and self._it_pos == (epoch, step):
            return self._it
        self._close()
        seed = step_seed(self.seed, self.world.dims.dp_rank, epoch, step)
        if self.mode == "external":
            src = self.source
            self._feeder = dp.ExternalFeeder(
                src.encoded, self.labels, src.name, self._plan, self.batch_size, epoch, step,
                self.cfg.data.skip_corrupt, self.skip,
            )
            read = dp.external_reader(self._feeder)
        elif self.mode == "files":
            self._fed = _substitute(self._plan(epoch), self.skip)[step * self.batch_size :]
            self._fed_from = step
            read = dp.files_reader([self.paths[i] for i in self._fed], self.labels[self._fed])
        else:
            self._stream = dali_stream.StreamFeeder(self.shards, self.pos)
            read = dp.external_reader(self._stream)
        self._pipe = dp.build_pipeline(
            read, self.spec, self.cfg.data.dtype, batch=self.batch_size, device_id=self.device_id, seed=seed,
            num_threads=self.cfg.data.num_workers, prefetch=self.prefetch,
        )
        from nvidia.dali.plugin.pytorch import DALIGenericIterator

        names = [f"view{k}" for k in range(self.num_views)] + ["labels"]
        # size=-1: we count steps ourselves; prepare_first_batch=False keeps errors inside next().
        self._it = DALIGenericIterator(self._pipe, names, size=-1, auto_reset=False, prepare_first_batch=False)
        self._it_pos = (epoch, step)
        return self._it

    def _record_stream(self) -> None:
        slot, b = self._stream.pop_report()
        write_keys(self._record, self.pos, b.keys)
        self.pos.record(slot, b.emitted, len(b.corrupt), b.padded)
        for name in b.corrupt:
            self.report.skipped(name)

    def _warn_skipped(self) -> None:
        if self._feeder is not None and self._feeder.newly_skipped:
            for name in self._feeder.newly_skipped:
                self.report.skipped(name)
            self._feeder.newly_skipped.clear()

    def _end_epoch(self, epoch: int) -> None:
        # Known corrupt images are replaced in the plan, so DALI never meets them again: they are
        # counted here (the report counts each once per epoch, new or not).
        if self.skip and self.mode != "webdataset":
            for i in sorted(self.skip.intersection(self._plan(epoch).tolist())):
                self.report.skipped(self._name(i))
        self.report.end_epoch()

    def _close(self) -> None:
        self._it = self._pipe = self._feeder = self._stream = None
        self._it_pos = None

    def close(self) -> None:
        self._close()

    def _to_torch(self, out: dict[str, torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        dev = self.world.device
        views = [out[f"view{k}"].to(dev, non_blocking=True).to(self.out_dtype) for k in range(self.num_views)]
        labels = out["labels"].reshape(-1).to(torch.int64)
        return views, labels.to(dev, non_blocking=True)

    # --- corrupt images ------------------------------------------------------------------------

    def _recover(self, exc: Exception, epoch: int, step: int) -> None:
        """After a failed batch: raise a FastSSLError naming the culprit, or skip it and go on."""
        feeder_error = self._feeder.error if self._feeder is not None else None
        self._warn_skipped()
        self._close()
        if feeder_error is not None:
            raise feeder_error from None
        if self.mode == "webdataset":
            raise FastSSLError(
                f"DALI failed to read/decode a sample of the webdataset tars {self.shards.tars[0]}...: "
                f"{_first_line(exc)}; re-create them with `fastssl data convert --validate` "
                "or use --data.backend=torch"
            ) from None
        bad = [i for i in self._in_flight(epoch, step) if not decodes(self._encoded(i))]
        if not bad:
            raise exc
        names = [self._name(i) for i in bad]
        if not self.cfg.data.skip_corrupt:
            raise FastSSLError(
                f"corrupt image {names[0]} (cannot be decoded); delete or re-encode it, "
                "or set --data.skip_corrupt=true"
            ) from None
        for name in names:
            self.report.skipped(name)
        self.skip.update(bad)

    def _in_flight(self, epoch: int, step: int) -> list[int]:
        """Indices the pipeline may have been decoding when it failed: this batch and the prefetched."""
        n = (self.prefetch + 2) * self.batch_size
        if self.mode == "files" and self._fed is not None:
            lo = (step - self._fed_from) * self.batch_size
            window = self._fed[lo : lo + n]
        else:
            plan = np.concatenate([self._plan(epoch), self._plan(epoch + 1)])
            window = _substitute(plan, self.skip)[step * self.batch_size : step * self.batch_size + n]
        return sorted({int(i) for i in window} - self.skip)

    def _encoded(self, i: int) -> bytes:
        if self.mode == "files":
            with open(self.paths[i], "rb") as f:
                return f.read()
        return self.source.encoded(i)

    def _name(self, i: int) -> str:
        return self.paths[i] if self.mode == "files" else self.source.name(i)


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if "error" not in ln.lower()[:20] and "pipeline" not in ln.lower()]
    return (useful or lines or [type(exc).__name__])[-1][:200]


def _check(backend: str, world: World) -> None:
    if backend not in DALI_BACKENDS:
        raise ValueError(f"backend={backend!r} is not a DALI backend; resolve it with resolve_backend first")
    reason = dali_unavailable_reason(backend, world.device)
    if reason:
        raise FastSSLError(reason)


def build_dali_loader(cfg: Config, world: World, backend: str, spec: ViewSpec, source: ImageSource) -> DaliLoader:
    """The loader for `backend` "dali" (GPU decode) or "dali-cpu" (CPU-only pipeline) over `source`.

    A source of plain files is read by DALI's file reader, anything else through the feeder.
    """
    _check(backend, world)
    common = dict(cfg=cfg, world=world, backend=backend, spec=spec)
    labels = np.asarray(source.labels, dtype=np.int64)
    paths = source_paths(source)
    if paths is not None:
        return DaliLoader(mode="files", num_images=len(paths), paths=paths, labels=labels, **common)
    return DaliLoader(mode="external", num_images=len(source), labels=labels, source=source, **common)


def build_dali_webdataset_loader(cfg: Config, world: World, backend: str, spec: ViewSpec, shards: Shards) -> DaliLoader:
    """The loader over webdataset tars (`--data.limit` caps the samples per epoch)."""
    _check(backend, world)
    return DaliLoader(cfg=cfg, world=world, backend=backend, spec=spec, mode="webdataset",
                      num_images=shards.num_samples, shards=shards)
