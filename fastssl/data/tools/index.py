"""`fastssl data index PATH [--index-dir DIR]`: build the listing index of an image folder or file
list ahead of training, so that no rank of the first run lists the data either
(fastssl/data/sources/listing_index.py)."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from fastssl.data.sources.factory import resolve_dataset
from fastssl.data.sources.file_list import list_file_list
from fastssl.data.sources.image_folder import list_image_folder
from fastssl.data.sources.listing_index import build_index
from fastssl.errors import FastSSLError

_LISTERS = {"folder": list_image_folder, "filelist": list_file_list}


def index_path(path: str, index_dir: str = "") -> tuple[str, int, float]:
    """(index file, images, seconds) after building the index of `path`."""
    dataset = resolve_dataset("auto", path)
    if dataset not in _LISTERS:
        raise FastSSLError(f"'{path}' reads as --data.dataset={dataset}, which needs no index; "
                           "`fastssl data index` takes an image folder or a .txt file list")
    t0 = time.perf_counter()
    out, listing = build_index(os.path.normpath(path), _LISTERS[dataset], index_dir)
    return str(out), len(listing.paths), time.perf_counter() - t0


def add_index_parser(sub: Any) -> None:
    i = sub.add_parser("index", help="cache an image folder's or file list's listing for fast start-up",
                       description=__doc__.split("\n\n")[0])
    i.add_argument("path", help="image folder or .txt file list")
    i.add_argument("--index-dir", default="", help="write the index here (as --data.index_dir); default: beside the data")
    i.set_defaults(func=run_index)


def run_index(args: argparse.Namespace) -> int:
    out, n, seconds = index_path(args.path, args.index_dir)
    print(f"fastssl: indexed {n} images of {args.path} in {seconds:.1f} s -> {out}")
    return 0
