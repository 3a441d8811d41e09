"""Every tile config compiles for its GPU, fits its shared memory and does not spill: no GPU needed.

Triton compiles for any NVIDIA target with its bundled ptxas (fastssl_kernels/aot.py). The
compilation runs in a subprocess because tests/conftest.py sets TRITON_INTERPRET=1, under which
`triton.jit` hands out interpreted functions that cannot be compiled; `triton.compile` itself
ignores the flag. Compiled kernels are cached by Triton (~/.triton/cache), so reruns are fast.

The full matrix (7 architectures x 3 dtypes x 3 d buckets x 4 kernel variants) takes minutes on
a cold cache and is marked slow; one representative config per architecture always runs: the
fp16 forward at d = 256 (the most shared memory) and the fp32 key pass at d = 256 (the most
registers).
"""

import json
import os
import subprocess
import sys

import pytest
from fastssl_kernels import configs

from fastssl_kernels.aot import VARIANTS, backend_missing

_MISSING = backend_missing()

pytestmark = pytest.mark.skipif(_MISSING is not None, reason=f"Triton's CUDA backend is absent: {_MISSING}")


def _all():
    """(arch, dtype, d bucket, variant) for every entry of configs.TILES."""
    out = []
    for arch, by_dtype in sorted(configs.TILES.items()):
        for dtype, by_kind in sorted(by_dtype.items()):
            for variant in VARIANTS:
                for bucket in sorted(by_kind[variant.removesuffix("_symmetric")]):
                    out.append((arch, dtype, bucket, variant))
    return out


# Per architecture: the most shared memory (fp16 forward) and the most registers (fp32 key pass).
REPRESENTATIVE = {(a, dt, 256, kernel) for a in configs.TILES for dt, kernel in [("fp16", "fwd"), ("fp32", "cols")]}
CONFIGS = [
    pytest.param(c, id="-".join(map(str, c)), marks=() if c in REPRESENTATIVE else pytest.mark.slow) for c in _all()
]

_COMPILE = """
import json, sys
from fastssl_kernels import aot, configs
items = [(a, dt, b, v, configs.TILES[a][dt][v.removesuffix("_symmetric")][b]) for a, dt, b, v in json.load(sys.stdin)]
for u in aot.compile_many(items, int(sys.argv[1])):
    print(json.dumps(u._asdict()))
"""


@pytest.fixture(scope="module")
def usage(request):
    """Resources of every config selected in this session, compiled in one subprocess."""
    wanted = sorted(
        {
            tuple(item.callspec.params["config"])
            for item in request.session.items
            if item.module is request.module and hasattr(item, "callspec") and "config" in item.callspec.params
        }
    )
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    workers = str(min(4, os.cpu_count() or 1))
    out = subprocess.run(
        [sys.executable, "-c", _COMPILE, workers], input=json.dumps(wanted), env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-4000:]
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    return {(r["arch"], r["dtype"], r["d_bucket"], r["variant"]): r for r in rows}


@pytest.mark.parametrize("config", CONFIGS)
def test_config_fits_shared_memory_and_does_not_spill(usage, config):
    arch = config[0]
    u = usage[config]
    assert u["shared"] <= configs.SMEM_BYTES[arch], f"needs {u['shared']} B of shared memory on sm_{arch}"
    assert u["spill"] <= configs.SPILL_BYTES, f"spills {u['spill']} B/thread ({u['registers']} registers)"
    assert 0 < u["registers"] <= 255
