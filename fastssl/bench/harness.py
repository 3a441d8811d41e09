"""How every `fastssl bench` number is taken: timing, peak memory and provenance.

Timing (`measure`): the first call is timed on its own; unless it alone eats half of `max_s`,
`warmup` calls (the first among them) are discarded and `repeats` calls are timed, fewer when
`max_s` would be exceeded. A case too slow to repeat reports its one first call, flagged
`cold=True` (it includes one-time costs such as allocator growth; at seconds per call those are
noise). `sync` runs after every call so queued GPU work is counted. Reported: median, p10, p90.

Peak memory above the inputs:
- CUDA: `torch.cuda.max_memory_allocated()` after the call minus `memory_allocated()` before,
  in process (the caching allocator makes that exact for tensors; cuBLAS workspaces are not seen).
- CPU: a fresh Python process per case (`measure_peak_memory_subprocess`). The case's factory
  builds its inputs there; then the kernel's resident-set high-water mark (VmHWM) is reset to the
  current RSS by writing "5" to /proc/self/clear_refs, the case runs once, and the result is
  VmHWM minus the RSS at the reset. glibc is told to serve every block of 128 KiB or more with
  mmap (MALLOC_MMAP_THRESHOLD_), so freed tensors leave the resident set at once instead of
  lingering in malloc arenas where a later allocation could reuse them unseen. A fresh process
  keeps earlier cases' caches and fragmentation out of the figure. Where clear_refs cannot be
  written (non-Linux), getrusage's ru_maxrss before/after is used instead, which under-counts
  when set-up peaked above the run; the row's `mem_method` says which method was used.
  One-time costs of a fresh process (library code paged in on first use, thread pools) would
  add ~12 MiB to every figure here; the case is therefore first run once at a toy size
  (`prime_kwargs`) and dropped before the reset.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from fastssl.errors import FastSSLError

MIB = 2**20
# Blocks at least this large are mmapped by glibc and unmapped on free (see the module doc).
_MMAP_THRESHOLD = 128 * 1024
_CHILD_MARKER = "FASTSSL_PEAK_MEMORY "


# ----------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile with linear interpolation between order statistics (numpy's default)."""
    if not values:
        raise ValueError("quantile of no values")
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclasses.dataclass(frozen=True)
class Timing:
    median_s: float
    p10_s: float
    p90_s: float
    min_s: float
    repeats: int
    cold: bool  # the only sample is a first call (the case was too slow to warm up and repeat)

    @classmethod
    def from_samples(cls, samples: Sequence[float], cold: bool = False) -> Timing:
        return cls(
            statistics.median(samples), quantile(samples, 0.1), quantile(samples, 0.9), min(samples),
            len(samples), cold,
        )


def measure(
    fn: Callable[[], Any],
    warmup: int = 1,
    repeats: int = 5,
    sync: Callable[[], None] | None = None,
    max_s: float | None = None,
) -> Timing:
    """Time `fn()`; see the module docstring for the warm-up and `max_s` rules."""
    if repeats < 1 or warmup < 0:
        raise FastSSLError("--repeats must be >= 1 and --warmup >= 0")
    sync = sync or (lambda: None)

    def once() -> float:
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0

    sync()
    first = once()
    if max_s is not None and first >= max_s / 2:
        return Timing.from_samples([first], cold=True)
    samples = [] if warmup else [first]
    for _ in range(warmup - 1):
        once()
    n = repeats - len(samples)
    if max_s is not None:
        n = min(n, max(0, int(max_s / max(first, 1e-9)) - max(warmup, 1)))
    samples += [once() for _ in range(n)]
    if not samples:  # max_s left no room after warm-up: the warm-up call is the sample
        return Timing.from_samples([first], cold=True)
    return Timing.from_samples(samples)


def bench_device(requested: str = "auto") -> Any:
    """--device auto | cpu | cuda as this process's torch.device: cuda:LOCAL_RANK on CUDA.

    `fastssl.distributed.local_device` decides, as for training: asking torch for its current
    device would give cuda:0 on every rank under torchrun (nothing has called set_device yet),
    and NCCL refuses two ranks on one GPU.
    """
    from fastssl.distributed import local_device

    return local_device(requested, "--device")


def set_threads(n: int | None) -> None:
    """CPU threads for this process and the memory-measuring children (None: torch's default)."""
    if n is None:
        return
    if n < 1:
        raise FastSSLError("--threads must be >= 1")
    import torch

    torch.set_num_threads(n)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(n)


def cuda_sync(device: Any) -> Callable[[], None]:
    """A sync for `measure`: waits for `device`'s queue on CUDA, nothing on CPU."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


# ----------------------------------------------------------------------------------------------
# Peak memory
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PeakMemory:
    extra_bytes: int  # peak above the inputs during the call
    method: str  # "cuda-max-allocated" | "vmhwm-reset" | "ru-maxrss"
    run_s: float  # duration of the measured (first, cold on CPU) call

    @property
    def extra_mb(self) -> float:
        return self.extra_bytes / MIB


def measure_peak_memory_cuda(fn: Callable[[], Any], device: Any) -> PeakMemory:
    import torch

    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize(device)
    run_s = time.perf_counter() - t0
    return PeakMemory(torch.cuda.max_memory_allocated(device) - base, "cuda-max-allocated", run_s)


def measure_peak_memory_in_process(fn: Callable[[], Any], device: Any) -> PeakMemory:
    """Peak memory of one `fn()` above what is held before it, in this process: CUDA's allocator
    peak, or on CPU the resident set's high-water mark (VmHWM) reset just before the call. In a
    long-lived process freed blocks linger in malloc's arenas, where the call may reuse them
    unseen: start it with MALLOC_MMAP_THRESHOLD_=131072 (as the subprocess measurement does)."""
    from fastssl.bench.peak_rss_child import reset_hwm, status_kib

    if getattr(device, "type", device) == "cuda":
        return measure_peak_memory_cuda(fn, device)
    if not reset_hwm():
        raise FastSSLError("peak memory on CPU needs Linux's /proc/self/clear_refs; run on Linux or on CUDA")
    base = status_kib("VmRSS") * 1024
    t0 = time.perf_counter()
    fn()
    run_s = time.perf_counter() - t0
    return PeakMemory(status_kib("VmHWM") * 1024 - base, "vmhwm-reset", run_s)


def target_name(target: Callable[..., Any] | str) -> str:
    """"module:function" for a module-level function (what the child process imports)."""
    if isinstance(target, str):
        return target
    if "<locals>" in target.__qualname__ or target.__module__ == "__main__":
        raise ValueError(f"{target.__qualname__} must be a module-level function of an importable module")
    return f"{target.__module__}:{target.__qualname__}"


def measure_peak_memory_subprocess(
    target: Callable[..., Any] | str,
    kwargs: dict[str, Any] | None = None,
    prime_kwargs: dict[str, Any] | None = None,
    timeout_s: float = 600.0,
) -> PeakMemory:
    """Peak RSS increase of one call, in a fresh Python process.

    `target(**kwargs)` runs in the child and does the set-up (inputs, model); it returns the
    zero-argument callable whose peak is measured. With `prime_kwargs`, `target(**prime_kwargs)()`
    (the same case at a toy size) runs first and is dropped, so one-time costs of the process
    (library code paged in, thread pools) stay out of the figure. kwargs must be JSON-serialisable.
    """
    spec = json.dumps({"target": target_name(target), "kwargs": kwargs or {}, "prime_kwargs": prime_kwargs})
    env = dict(os.environ)
    env["MALLOC_MMAP_THRESHOLD_"] = str(_MMAP_THRESHOLD)
    # The child imports the target like this process would (pytest puts test dirs on sys.path).
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
    try:
        out = subprocess.run(
            [sys.executable, "-m", "fastssl.bench.peak_rss_child", spec],
            capture_output=True, text=True, timeout=timeout_s, env=env,
        )
    except subprocess.TimeoutExpired:
        raise FastSSLError(f"memory measurement of {spec} ran past {timeout_s:.0f} s; use smaller sizes") from None
    for line in reversed(out.stdout.splitlines()):
        if line.startswith(_CHILD_MARKER):
            r = json.loads(line[len(_CHILD_MARKER):])
            return PeakMemory(r["extra_bytes"], r["method"], r["run_s"])
    why = "killed (out of memory?)" if out.returncode < 0 else f"exit status {out.returncode}"
    tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
    raise FastSSLError(f"memory measurement of {spec} failed, {why}: {tail}")


def measure_peak_memory(
    make: Callable[..., Callable[[], Any]],
    kwargs: dict[str, Any],
    device: Any,
    prime_kwargs: dict[str, Any],
    built: Callable[[], Any] | None = None,
) -> PeakMemory:
    """Peak memory of one call of the case `make(**kwargs)` sets up: on CUDA in this process (of
    `built`, the case already made and warmed, when given), elsewhere in a fresh process, since a
    long-lived one reuses freed blocks unseen (`measure_peak_memory_subprocess`)."""
    if device.type == "cuda":
        return measure_peak_memory_cuda(built or make(device=str(device), **kwargs), device)
    return measure_peak_memory_subprocess(make, kwargs, prime_kwargs=prime_kwargs)


# ----------------------------------------------------------------------------------------------
# Provenance
# ----------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _dist_version(*prefixes: str) -> str:
    """Installed version of the first distribution whose name starts with a prefix; "" if none."""
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if any(name == p or name.startswith(p + "-") for p in prefixes):
            return dist.version
    return ""


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def copied_commit() -> str:
    """The commit of a copy without .git (a GPU machine gets the working tree, not the repository):
    $FASTSSL_COMMIT, else the first line of a COMMIT file at the repository root, else ""."""
    env = os.environ.get("FASTSSL_COMMIT", "").strip()
    if env:
        return env
    try:
        with open(os.path.join(REPO_ROOT, "COMMIT")) as f:
            return f.readline().strip()
    except OSError:
        return ""


def source_commit() -> str:
    """HEAD's short hash, with "+dirty" when tracked files differ from it (numbers from unstaged code);
    without git, the copy's stamp (`copied_commit`)."""
    from fastssl.provenance import git_commit

    commit = git_commit()
    if commit == "unknown":
        return copied_commit() or commit
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                             text=True, timeout=10, cwd=os.path.dirname(os.path.abspath(__file__)))
        return commit + "+dirty" if out.returncode == 0 and out.stdout.strip() and commit != "unknown" else commit
    except (OSError, subprocess.SubprocessError):
        return commit


def load_average() -> float:
    """1-minute load average: other work on the machine while a row was measured."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return -1.0


@dataclasses.dataclass(frozen=True)
class Provenance:
    """Where a row's numbers came from; stamped on every CSV row."""

    device: str
    cpu_model: str
    cpu_cores: int
    gpu_name: str
    commit: str
    date: str
    torch: str
    triton: str
    dali: str
    python: str
    torch_threads: int

    @classmethod
    def collect(cls, device: Any = None) -> Provenance:
        import datetime

        import torch

        from fastssl.provenance import device_name

        device = torch.device(device) if device is not None else None
        gpu = torch.cuda.get_device_name(device if device and device.type == "cuda" else 0) \
            if torch.cuda.is_available() else ""
        return cls(
            device=device_name(device),
            cpu_model=_cpu_model(),
            cpu_cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
            gpu_name=gpu,
            commit=source_commit(),
            date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
            torch=torch.__version__,
            triton=_dist_version("triton", "pytorch-triton"),
            dali=_dist_version("nvidia-dali"),
            python=platform.python_version(),
            torch_threads=torch.get_num_threads(),
        )

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def as_row(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        gpu = f", GPU {self.gpu_name}" if self.gpu_name else ""
        versions = ", ".join(f"{k} {v}" for k, v in (("torch", self.torch), ("triton", self.triton),
                                                       ("dali", self.dali)) if v)
        return (f"{self.device}: {self.cpu_model}, {self.cpu_cores} cores ({self.torch_threads} torch threads){gpu}; "
                f"{versions}; "
                f"commit {self.commit}, {self.date}, load {load_average()}")
