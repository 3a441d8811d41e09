"""Compile the contrastive kernels ahead of time for every config in `configs.TILES`, no GPU needed.

Why: a config that overflows a chip's shared memory only fails when launched on that chip, and
one that spills registers only runs slowly there. Both are known at compile time: Triton
compiles for any NVIDIA target with its bundled ptxas, so a CPU machine can check every
(architecture, dtype, d bucket, kernel) and report shared memory, registers and spills.

    python -m fastssl_kernels.aot                   # table over all configs
    python -m fastssl_kernels.aot --arch 86 --json  # one architecture, JSON lines

Shared memory is Triton's own figure (`metadata.shared`, what the launch requests); registers
and spills (the stack frame) are read from the cubin with the bundled cuobjdump.
Compiled kernels land in Triton's cache (~/.triton/cache), so a second run is fast.

Limits: the kernels must be real `triton.jit` functions, i.e. `fastssl_kernels.nt_xent` must have
been imported without TRITON_INTERPRET=1 (run this in its own process; __main__ clears the flag).
Needs Triton's CUDA backend (bundled with Linux x86-64/aarch64 wheels).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from typing import NamedTuple

# Kernel variants compiled per config: the symmetric row pass (single-process NT-Xent) keeps
# more live values than the general one, so both are checked.
VARIANTS = ("fwd", "rows", "rows_symmetric", "cols")
_DTYPE_SIG = {"fp32": "fp32", "bf16": "bf16", "fp16": "fp16"}


class Usage(NamedTuple):
    arch: int
    dtype: str
    d_bucket: int
    variant: str
    tile: tuple
    shared: int  # bytes of shared memory per block
    registers: int  # per thread
    spill: int  # bytes of stack frame per thread: registers spilled to local memory


def _kernel_and_signature(variant: str, dtype: str, d: int):
    """(jit function, {arg: type}, {arg: constexpr value}, divisible-by-16 args) for one variant."""
    from fastssl_kernels import nt_xent as K

    fn = {"fwd": K._fwd_kernel, "rows": K._bwd_rows_kernel, "rows_symmetric": K._bwd_rows_kernel}.get(
        variant, K._bwd_cols_kernel
    )
    if not hasattr(fn, "arg_names"):
        raise RuntimeError("fastssl_kernels.nt_xent was imported with TRITON_INTERPRET=1: compile in a fresh process")
    elt = "*" + _DTYPE_SIG[dtype]
    sig, const = {}, {}
    for name in fn.arg_names:
        if name in ("q_ptr", "k_ptr", "neg_ptr", "dq_ptr", "dk_ptr"):
            sig[name] = elt
        elif name in ("pos_ptr", "self_ptr"):
            sig[name] = "*i32"
        elif name.endswith("_ptr"):
            sig[name] = "*fp32"  # lse, positive logit, upstream gradient
        elif name in ("qk_scale", "grad_scale"):
            sig[name] = "fp32"
        elif name.startswith("stride_") and name.endswith("d"):
            const[name] = 1  # contiguous rows: Triton specialises a stride of 1 as a constant
        else:
            sig[name] = "i32"
    if "SYMMETRIC" in fn.arg_names:
        const["SYMMETRIC"] = variant == "rows_symmetric"
    # Allocations are 16-byte aligned and row strides equal d (a multiple of 16 at each bucket):
    # the launcher would mark them divisible by 16, which enables vector loads.
    divisible = [
        n for n in fn.arg_names if n.endswith("_ptr") or n == "D" or (n.startswith("stride_") and n.endswith("m"))
    ]
    return fn, sig, const, divisible


def compile_config(arch: int, dtype: str, d: int, variant: str, tile) -> Usage:
    """Compile one kernel variant with `tile` (a configs.Tile) for sm_<arch>; report its resources."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn, sig, const, divisible = _kernel_and_signature(variant, dtype, d)
    const.update(
        BLOCK_M=tile.block_m,
        BLOCK_N=tile.block_n,
        BLOCK_D=d,
        PRECISION=tile.precision if dtype == "fp32" else "tf32",
        UPCAST=False,
    )
    for name in const:
        sig[name] = "constexpr"
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in divisible}
    compiled = triton.compile(
        ASTSource(fn, sig, const, attrs),
        target=GPUTarget("cuda", arch, 32),
        options={"num_warps": tile.num_warps, "num_stages": tile.num_stages},
    )
    registers, spill = _cubin_resources(compiled.asm["cubin"])
    return Usage(arch, dtype, d, variant, tuple(tile), compiled.metadata.shared, registers, spill)


def _cubin_resources(cubin: bytes) -> tuple[int, int]:
    """(registers, stack-frame bytes) per thread from cuobjdump's resource usage.

    The kernels keep no arrays on the stack, so the frame holds spilled registers only: ptxas -v
    reports the same frame next to its spill stores (sm_90 fp32 d=256 key pass before this table:
    6,992-byte frame, 9,096 bytes of spill stores).
    """
    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True, check=True).stdout
    found = re.search(r"REG:(\d+) STACK:(\d+)", out)
    if found is None:
        raise RuntimeError(f"cannot read resource usage from cuobjdump output:\n{out}")
    return int(found.group(1)), int(found.group(2))


def _compile_args(args) -> Usage:
    return compile_config(*args)


def compile_many(items, workers: int = 1) -> list[Usage]:
    """compile_config over (arch, dtype, d bucket, variant, tile) tuples, in `workers` processes."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        return [compile_config(*it) for it in items]
    import multiprocessing

    # spawn: fresh interpreters that import the kernels compiled (the env says TRITON_INTERPRET=0).
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return pool.map(_compile_args, items, chunksize=1)


def all_configs(arches=None, dtypes=None, buckets=None, variants=VARIANTS):
    """Every (arch, dtype, d bucket, variant, tile) in configs.TILES, filtered by the arguments."""
    from fastssl_kernels import configs

    for arch, by_dtype in sorted(configs.TILES.items()):
        if arches and arch not in arches:
            continue
        for dtype, by_kind in by_dtype.items():
            if dtypes and dtype not in dtypes:
                continue
            for variant in variants:
                for bucket, tile in sorted(by_kind[variant.removesuffix("_symmetric")].items()):
                    if not buckets or bucket in buckets:
                        yield arch, dtype, bucket, variant, tile


def backend_missing() -> str | None:
    """Why Triton cannot compile for CUDA here; None if it can."""
    try:
        import triton  # noqa: F401
        from triton.backends import backends
    except ImportError as e:
        return f"triton is not importable ({e})"
    if "nvidia" not in backends:
        return "this triton build has no CUDA backend"
    bin_dir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    if not os.path.exists(os.path.join(bin_dir, "cuobjdump")):
        return f"triton's CUDA backend ships no cuobjdump in {bin_dir}"
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", type=int, action="append", help="e.g. 86; repeatable (default: all)")
    p.add_argument("--dtype", action="append", choices=sorted(_DTYPE_SIG))
    p.add_argument("--d", type=int, action="append", help="d bucket: 64, 128 or 256")
    p.add_argument("--variant", action="append", choices=VARIANTS)
    p.add_argument("--json", action="store_true", help="one JSON object per config")
    p.add_argument("--workers", type=int, default=1, help="compile in this many processes")
    args = p.parse_args(argv)
    from fastssl_kernels import configs

    if not args.json:
        print(f"{'arch':>5} {'dtype':>5} {'d':>4} {'kernel':>15} {'tile (m,n,warps,stages)':>24} "
              f"{'smem B':>8} {'limit B':>8} {'regs':>5} {'spill B':>8}")  # fmt: skip
    items = list(all_configs(args.arch, args.dtype, args.d, args.variant or VARIANTS))
    for u in compile_many(items, args.workers):
        arch, dtype, bucket, variant, tile = u.arch, u.dtype, u.d_bucket, u.variant, u.tile
        if args.json:
            print(json.dumps(u._asdict()), flush=True)
        else:
            t = ",".join(str(x) for x in tile[:4])
            print(f"{arch:>5} {dtype:>5} {bucket:>4} {variant:>15} {t:>24} {u.shared:>8} "
                  f"{configs.SMEM_BYTES[arch]:>8} {u.registers:>5} {u.spill:>8}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    # The kernels must be compiled, not interpreted: decide before fastssl_kernels.nt_xent loads.
    os.environ["TRITON_INTERPRET"] = "0"
    sys.exit(main())
