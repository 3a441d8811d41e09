"""`fastssl bench ...`: registers every benchmark subcommand under one `bench` group.

Each benchmark module holds its measurement and a `register(sub)` that adds its subparser.
Modules listed here but not present are skipped, so a benchmark can land later (for example
`step`, the real training step) without touching this file.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

BENCHMARKS = ("loss", "loader", "backbone", "step", "train")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("bench", help="benchmarks: loss, loader, backbone, step, train",
                              description="Benchmarks; each appends rows to a CSV and plots a PNG beside it.")
    sub = p.add_subparsers(dest="bench_cmd", required=True)
    for name in BENCHMARKS:
        try:
            mod = importlib.import_module(f"fastssl.bench.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"fastssl.bench.{name}":
                raise
            continue
        mod.register(sub)
    return p
