"""`fastssl bench ...`: every benchmark subcommand under one `bench` group.

Each benchmark module holds its measurement and the function that adds its subparser, registered
at its definition (`@BENCHMARKS.register("loss")`, fastssl/registry.py); importing the modules
below fills the registry, in the order `fastssl bench --help` lists them.
"""

from __future__ import annotations

import argparse
from typing import Any

from fastssl.bench import loss as _loss  # noqa: F401
from fastssl.bench import loader as _loader  # noqa: F401, I001
from fastssl.bench import backbone as _backbone  # noqa: F401, I001
from fastssl.bench import step as _step  # noqa: F401, I001
from fastssl.bench import train as _train  # noqa: F401, I001
from fastssl.registry import BENCHMARKS


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("bench", help=f"benchmarks: {', '.join(BENCHMARKS)}",
                              description="Benchmarks; each appends rows to a CSV and plots a PNG beside it.")
    sub = p.add_subparsers(dest="bench_cmd", required=True)
    for entry in BENCHMARKS.entries():
        entry.obj(sub)
    return p
