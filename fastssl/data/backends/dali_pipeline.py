"""DALI pipeline definitions: what each rank reads, and the per-view augmentation graph.

A pipeline reads encoded images (from a Python feeder over an `ImageSource` or over webdataset
streams, or from files with `fn.readers.file`), decodes each image ONCE (`device="mixed"` on a GPU,
`"cpu"` for dali-cpu) and branches the decoded batch into every view of the ViewSpec. Each view
draws its own per-sample randomness, with every probability and range read from its `View`:

    RandomResizedCrop -> colour jitter (p) + grayscale (p) -> gaussian blur (p) -> solarise (p)
    -> flip + normalise + HWC->CHW (one crop_mirror_normalize)

Probabilities are realised with per-sample coin flips that turn an op into its identity
(factor 1, window 1, mask 0), so the graph is static and every op runs batched. Differences from
torchvision that the statistics tests tolerate: jitter is applied in a fixed order
(brightness, contrast, saturation, hue) instead of a random one, and DALI's contrast pivots on
mid-grey rather than the image mean.

Sharding: for the feeder and file readers the per-rank order is `rank_plan` (shared with every
backend), so it is exact, reproducible from (seed, epoch) and resumable at any step; webdataset
streams follow fastssl/data/stream/.

`nvidia.dali` is imported inside the graph builders only, so this module imports without DALI.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from fastssl.data.sources.decode import image_ext
from fastssl.data.views import View, ViewSpec, blur_kernel_size
from fastssl.errors import FastSSLError

# Solarize inverts pixels >= this uint8 value, as every backend.
_SOLARIZE_THRESHOLD = 128
_INTERP = {"bilinear": "INTERP_LINEAR", "bicubic": "INTERP_CUBIC"}


class ExternalFeeder:
    """Batch callable for `fn.external_source`: encoded bytes + labels in `rank_plan` order.

    It never raises StopIteration: after the last step of an epoch it continues with step 0 of the
    next, so one pipeline (and its prefetch queue) lives across epochs. `skip` holds indices known to
    be corrupt; each is replaced by the next good index of the plan, which keeps the step count
    equal on every rank. Errors are stored in `error` as well as raised, because DALI re-wraps
    exceptions thrown inside callbacks.
    """

    def __init__(
        self,
        encoded: Callable[[int], bytes],
        labels: np.ndarray,
        name: Callable[[int], str],
        plan_for_epoch: Callable[[int], np.ndarray],
        batch: int,
        epoch: int,
        step: int,
        skip_corrupt: bool,
        skip: set[int] | None = None,
    ):
        self.encoded, self.labels, self.name = encoded, labels, name
        self.plan_for_epoch = plan_for_epoch
        self.batch = batch
        self.skip_corrupt = skip_corrupt
        self.skip = skip if skip is not None else set()
        self.newly_skipped: list[str] = []
        self.error: Exception | None = None
        self.epoch, self.step = epoch, step
        self.plan = plan_for_epoch(epoch)

    def _fetch(self, pos: int) -> tuple[np.ndarray, int]:
        n = len(self.plan)
        for k in range(n):
            i = int(self.plan[(pos + k) % n])
            if i in self.skip:
                continue
            data = self.encoded(i)
            if image_ext(data):
                return np.frombuffer(data, dtype=np.uint8), i
            if not self.skip_corrupt:
                self.error = FastSSLError(
                    f"corrupt image {self.name(i)!r} (not a JPEG/PNG/BMP/WEBP/TIFF); delete or "
                    "re-encode it, or set --data.skip_corrupt=true"
                )
                raise self.error
            self.skip.add(i)
            self.newly_skipped.append(self.name(i))
        self.error = FastSSLError("every image of this rank's shard is corrupt; check --data.path")
        raise self.error

    def __call__(self) -> tuple[list[np.ndarray], np.ndarray]:
        if self.step * self.batch >= len(self.plan):
            self.epoch, self.step = self.epoch + 1, 0
            self.plan = self.plan_for_epoch(self.epoch)
        base = self.step * self.batch
        images, idx = [], []
        for j in range(self.batch):
            data, i = self._fetch(base + j)
            images.append(data)
            idx.append(i)
        self.step += 1
        # [B] int64; labels are -1 where unknown.
        return images, self.labels[np.asarray(idx)].astype(np.int64)


# --- graph -------------------------------------------------------------------------------------


def _coin(p: float):
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types

    return fn.random.coin_flip(probability=float(p), dtype=types.INT32)


def augment_view(images, view: View, mean: Sequence[float], std: Sequence[float], out_dtype):
    """One view from decoded HWC uint8 images (CPU or GPU DataNode) -> normalised CHW."""
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types

    x = fn.random_resized_crop(
        images,
        size=(view.size, view.size),
        random_area=list(view.scale),
        random_aspect_ratio=list(view.ratio),
        num_attempts=10,
        interp_type=getattr(types, _INTERP[view.interpolation]),
        antialias=True,
    )

    if view.jitter_p > 0 or view.grayscale_p > 0:
        jit = _coin(view.jitter_p)

        def factor(strength: float):
            if strength <= 0:  # DALI rejects an empty range
                return 1.0
            u = fn.random.uniform(range=(max(0.0, 1.0 - strength), 1.0 + strength))
            return 1.0 + jit * (u - 1.0)

        gray = _coin(view.grayscale_p)
        # hue is a fraction of the colour wheel in torchvision, degrees in DALI.
        hue = jit * fn.random.uniform(range=(-view.hue * 360.0, view.hue * 360.0)) if view.hue > 0 else 0.0
        # Saturation 0 is exactly torchvision's grayscale (ITU-R 601 luma), so one op does both.
        x = fn.color_twist(
            x,
            brightness=factor(view.brightness),
            contrast=factor(view.contrast),
            saturation=factor(view.saturation) * (1 - gray),
            hue=hue,
        )

    if view.blur_p > 0:
        blur = _coin(view.blur_p)
        sigma = fn.random.uniform(range=list(view.blur_sigma))
        # A window of 1 is the identity: un-blurred samples cost almost nothing.
        window = blur * (blur_kernel_size(view.size) - 1) + 1
        x = fn.gaussian_blur(x, sigma=sigma, window_size=window)

    if view.solarize_p > 0:
        sol = _coin(view.solarize_p)
        # int32 arithmetic: uint8 - uint8 would wrap.
        mask = (x >= _SOLARIZE_THRESHOLD) * sol
        x = fn.cast(x + mask * (255 - 2 * x), dtype=types.UINT8)

    return fn.crop_mirror_normalize(
        x,
        dtype=out_dtype,
        output_layout="CHW",
        mean=[255.0 * m for m in mean],
        std=[255.0 * s for s in std],
        mirror=_coin(view.flip_p),
    )


def _dali_out_dtype(dtype: str):
    import nvidia.dali.types as types

    # DALI has no bfloat16: emit fp32 and let the loader cast on the device.
    return types.FLOAT16 if dtype == "fp16" else types.FLOAT


def build_pipeline(
    read: Callable[[], tuple[Any, Any]],
    spec: ViewSpec,
    dtype: str,
    *,
    batch: int,
    device_id: int | None,
    seed: int,
    num_threads: int,
    prefetch: int = 2,
):
    """Wrap a reader into a full pipeline. Outputs: one per view of `spec`, then labels.

    `read()` runs inside the pipeline scope and returns (encoded bytes, labels) DataNodes.
    `device_id=None` builds a CPU-only pipeline (dali-cpu); otherwise decoding is "mixed".
    """
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    from nvidia.dali import Pipeline

    pipe = Pipeline(
        batch_size=batch,
        num_threads=max(1, num_threads),
        device_id=device_id,
        seed=seed,
        prefetch_queue_depth=prefetch,
    )
    out_dtype = _dali_out_dtype(dtype)
    with pipe:
        encoded, labels = read()
        decode_device = "cpu" if device_id is None else "mixed"
        images = fn.decoders.image(encoded, device=decode_device, output_type=types.RGB)
        views = [augment_view(images, view, spec.mean, spec.std, out_dtype) for view in spec.views]
        pipe.set_outputs(*views, labels)
    pipe.build()
    return pipe


def external_reader(feeder: ExternalFeeder) -> Callable[[], tuple[Any, Any]]:
    def read():
        import nvidia.dali.fn as fn
        import nvidia.dali.types as types

        encoded, labels = fn.external_source(
            source=feeder, num_outputs=2, batch=True, dtype=[types.UINT8, types.INT64]
        )
        return encoded, labels

    return read


def files_reader(files: Sequence[str], labels: Sequence[int]) -> Callable[[], tuple[Any, Any]]:
    """Read `files` in the given order (already this rank's plan); DALI wraps around at the end."""

    def read():
        import nvidia.dali.fn as fn

        encoded, lab = fn.readers.file(
            files=list(files), labels=[int(v) for v in labels], random_shuffle=False, name="Reader"
        )
        return encoded, lab

    return read
