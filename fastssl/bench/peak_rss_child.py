"""Child process of `harness.measure_peak_memory_subprocess`: one case's peak RSS increase.

    python -m fastssl.bench.peak_rss_child '{"target": "module:function", "kwargs": {...}}'

Prints one line, `FASTSSL_PEAK_MEMORY {"extra_bytes": ..., "method": ..., "run_s": ...}`.
The method is explained in `fastssl.bench.harness`.
"""

from __future__ import annotations

import gc
import importlib
import json
import re
import resource
import sys
import time

_MARKER = "FASTSSL_PEAK_MEMORY "


def status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M).group(1))


def reset_hwm() -> bool:
    """Set VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _maxrss_bytes() -> int:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    module, name = spec["target"].split(":")
    factory = getattr(importlib.import_module(module), name)
    if spec.get("prime_kwargs") is not None:
        factory(**spec["prime_kwargs"])()  # one-time process costs, outside the measurement
        gc.collect()
    run = factory(**spec["kwargs"])
    gc.collect()
    if reset_hwm():
        method, base = "vmhwm-reset", status_kib("VmRSS") * 1024
    else:
        method, base = "ru-maxrss", _maxrss_bytes()
    t0 = time.perf_counter()
    run()
    run_s = time.perf_counter() - t0
    peak = status_kib("VmHWM") * 1024 if method == "vmhwm-reset" else _maxrss_bytes()
    print(_MARKER + json.dumps({"extra_bytes": max(0, peak - base), "method": method, "run_s": run_s}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
