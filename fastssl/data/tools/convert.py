"""`fastssl data convert`: move a dataset between on-disk formats without re-encoding images.

    fastssl data convert SRC OUT --to {npz,folder,filelist,webdataset} [--from FORMAT]
                         [--shard-size N] [--validate] [--limit N]

Formats (the encoded JPEG/PNG bytes are copied as they are):
- npz: `OUT/train-00000.npz` ... shards of `jpeg`, `offsets`, `labels` (sources/npz_shards.py);
- folder: ImageFolder tree `OUT/<class>/<index>.<ext>`, class folders named `0000`, `0001`, ...
  so that sorted order gives the original label; unlabelled data goes flat into OUT;
- filelist: images under `OUT/images/` and `OUT/list.txt`, one `images/<file> <label>` per line
  (the label is left out when unknown); paths are relative to the list's folder (DALI's format);
- webdataset: `OUT/shard-000000.tar` ... with `<key>.<ext>` + `<key>.cls` (ASCII label) per
  sample, plus a DALI index `shard-000000.idx` beside each tar (what `wds2idx` writes).

SRC is anything `open_source` reads (npz, folder, digits, torchvision sets; `--from auto`), a
file list (.txt) or webdataset tars. Every image's signature is checked; `--validate`
also fully decodes each one with Pillow and drops (with a warning) the ones that fail.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tarfile
from typing import Any, Iterator

from fastssl.data.sources.decode import decodes, image_ext
from fastssl.data.sources.factory import open_source
from fastssl.data.sources.file_list import read_file_list
from fastssl.data.sources.npz_shards import write_shard
from fastssl.data.sources.webdataset import IMAGE_EXTS, count_wds_samples, iter_wds, list_wds_tars
from fastssl.errors import FastSSLError

FORMATS = ("npz", "folder", "filelist", "webdataset")


# --- readers -----------------------------------------------------------------------------------


def _records(src: str, fmt: str) -> tuple[int, Iterator[tuple[str, bytes, int]]]:
    """(count or -1 when unknown, iterator of (name, bytes, label)) for any readable source."""
    if fmt == "webdataset" or (fmt == "auto" and list_wds_tars(src)):
        tars = list_wds_tars(src)
        if not tars:
            raise FastSSLError(f"no .tar shards at '{src}'; point SRC at a .tar file or a folder of them")
        return count_wds_samples(tars), iter_wds(tars)
    if fmt == "filelist" or (fmt == "auto" and src.endswith(".txt")):
        files, labels = read_file_list(src)

        def gen():
            for p, y in zip(files, labels):
                with open(p, "rb") as f:
                    yield p, f.read(), int(y)

        return len(files), gen()
    # The built-in digits read no path: `convert digits OUT --from digits` (or SRC "") means them.
    path = "" if fmt == "digits" and src in ("", "digits") else src
    source = open_source(path, fmt, "all", key="SRC")
    return len(source), ((source.name(i), source.encoded(i), int(source.labels[i])) for i in range(len(source)))


# --- writers -----------------------------------------------------------------------------------


class _NpzWriter:
    def __init__(self, out: str, shard_size: int):
        self.out, self.shard_size = out, shard_size
        self.blobs: list[bytes] = []
        self.labels: list[int] = []
        self.shard = 0

    def add(self, key: str, data: bytes, ext: str, label: int) -> None:
        self.blobs.append(data)
        self.labels.append(label)
        if len(self.blobs) == self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not self.blobs:
            return
        write_shard(os.path.join(self.out, f"train-{self.shard:05d}.npz"), self.blobs, self.labels)
        self.blobs, self.labels = [], []
        self.shard += 1


class _FolderWriter:
    def __init__(self, out: str, labelled: bool):
        self.out, self.labelled = out, labelled

    def add(self, key: str, data: bytes, ext: str, label: int) -> None:
        if self.labelled and label < 0:
            raise FastSSLError(
                f"image {key} has no label but others do; an ImageFolder needs every image in a class "
                "folder: use --to npz or --to webdataset"
            )
        folder = os.path.join(self.out, f"{label:04d}") if self.labelled else self.out
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{key}.{ext}"), "wb") as f:
            f.write(data)

    def flush(self) -> None:
        pass


class _FileListWriter:
    def __init__(self, out: str):
        self.out = out
        os.makedirs(os.path.join(out, "images"), exist_ok=True)
        self.lines: list[str] = []

    def add(self, key: str, data: bytes, ext: str, label: int) -> None:
        rel = f"images/{key}.{ext}"
        with open(os.path.join(self.out, rel), "wb") as f:
            f.write(data)
        self.lines.append(f"{rel} {label}" if label >= 0 else rel)

    def flush(self) -> None:
        with open(os.path.join(self.out, "list.txt"), "w") as f:
            f.write("\n".join(self.lines) + "\n")


class _WdsWriter:
    def __init__(self, out: str, shard_size: int):
        self.out, self.shard_size = out, shard_size
        self.shard, self.count = 0, 0
        self.tar: tarfile.TarFile | None = None
        self.index: list[str] = []

    def _member(self, name: str, data: bytes) -> tuple[int, int]:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        self.tar.addfile(info, io.BytesIO(data))
        # Data starts right after this member's 512-byte header; addfile leaves offset past the
        # padded data, so work backwards from it.
        end = self.tar.offset
        padded = (len(data) + 511) // 512 * 512
        return end - padded, len(data)

    def add(self, key: str, data: bytes, ext: str, label: int) -> None:
        if self.tar is None:
            path = os.path.join(self.out, f"shard-{self.shard:06d}.tar")
            self.tar = tarfile.open(path, "w", format=tarfile.USTAR_FORMAT)
        parts = [(ext, data)]
        if label >= 0:
            parts.append(("cls", str(label).encode()))
        entry = []
        for e, blob in parts:
            off, size = self._member(f"{key}.{e}", blob)
            entry.append(f"{e} {off} {size} {key}.{e}")
        self.index.append(" ".join(entry))
        self.count += 1
        if self.count == self.shard_size:
            self.flush()

    def flush(self) -> None:
        if self.tar is None:
            return
        self.tar.close()
        idx = os.path.join(self.out, f"shard-{self.shard:06d}.idx")
        with open(idx, "w") as f:
            f.write(f"v1.2 {len(self.index)}\n" + "\n".join(self.index) + "\n")
        self.tar, self.index, self.count = None, [], 0
        self.shard += 1


def convert(
    src: str,
    out: str,
    to: str,
    src_format: str = "auto",
    shard_size: int = 10000,
    validate: bool = False,
    limit: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Copy every image of `src` into format `to` under `out`. Returns counts for the summary."""
    if to not in FORMATS:
        raise FastSSLError(f"unknown output format '{to}'; use --to one of {', '.join(FORMATS)}")
    if shard_size < 1:
        raise FastSSLError(f"--shard-size={shard_size} must be at least 1")
    if os.path.isdir(out) and os.listdir(out):
        raise FastSSLError(f"output folder '{out}' is not empty; choose a new OUT or empty it")
    total, records = _records(src, src_format)
    if limit > 0:
        total = min(total, limit) if total >= 0 else limit
    os.makedirs(out, exist_ok=True)

    # Whether a folder gets class sub-folders depends on the labels: peek at the first one.
    buffered = [rec for _, rec in zip(range(1), records)]
    labelled = bool(buffered) and buffered[0][2] >= 0
    writer: Any = {
        "npz": lambda: _NpzWriter(out, shard_size),
        "folder": lambda: _FolderWriter(out, labelled),
        "filelist": lambda: _FileListWriter(out),
        "webdataset": lambda: _WdsWriter(out, shard_size),
    }[to]()

    written = dropped = 0
    for n, (name, data, label) in enumerate(_chain(buffered, records)):
        if limit > 0 and n >= limit:
            break
        ext = image_ext(data)
        ext = ext if ext in IMAGE_EXTS else ""  # what every format's readers accept
        if not ext or (validate and not decodes(data)):
            if not validate:
                raise FastSSLError(
                    f"image {name} is not a JPEG/PNG/WEBP/BMP file; re-run with --validate to drop "
                    "undecodable images"
                )
            print(f"warning: dropping undecodable image {name}", file=sys.stderr)
            dropped += 1
            continue
        writer.add(f"{written:08d}", data, ext, int(label))
        written += 1
        if progress and written % 10000 == 0:
            print(f"{written}/{total} images", file=sys.stderr)
    writer.flush()
    if written == 0:
        raise FastSSLError(f"no images could be read from '{src}'; check SRC and --from")
    return {"src": src, "out": out, "format": to, "images": written, "dropped": dropped}


def _chain(first: list, rest: Iterator) -> Iterator:
    yield from first
    yield from rest


# --- CLI ---------------------------------------------------------------------------------------


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """`fastssl data convert ...` (registers the `data` command group, and `data index`)."""
    from fastssl.data.tools.index import add_index_parser

    p = subparsers.add_parser("data", help="dataset tools: convert between formats, index listings")
    sub = p.add_subparsers(dest="data_cmd", metavar="{convert,index}", required=True)
    c = sub.add_parser(
        "convert", help="convert npz shards / image folder / file list / webdataset tars",
        description=__doc__.split("\n\n")[0],
    )
    c.add_argument("src", help="source: npz file or folder, image folder, list.txt, .tar or folder of .tar")
    c.add_argument("out", help="output folder (created; must be empty)")
    c.add_argument("--to", required=True, choices=FORMATS)
    c.add_argument("--from", dest="src_format", default="auto",
                   help="source format: auto | npz | folder | filelist | webdataset | digits | cifar10 | ...")
    c.add_argument("--shard-size", type=int, default=10000, help="images per npz / tar shard")
    c.add_argument("--validate", action="store_true", help="decode every image; drop undecodable ones")
    c.add_argument("--limit", type=int, default=0, help="convert only the first N images")
    c.add_argument("--json", action="store_true", help="print the summary as JSON")
    c.set_defaults(func=run_convert)
    add_index_parser(sub)
    return p


def run_convert(args: argparse.Namespace) -> int:
    import json

    summary = convert(
        args.src, args.out, args.to, args.src_format, args.shard_size, args.validate, args.limit, progress=True
    )
    if args.json:
        print(json.dumps(summary))
    else:
        extra = f" ({summary['dropped']} undecodable dropped)" if summary["dropped"] else ""
        print(f"wrote {summary['images']} images as {args.to} to {args.out}{extra}")
    return 0
