"""Where benchmark rows go: CSV files, PNG plots, a console table and `--json`.

Every `fastssl bench` subcommand takes the same output flags (`add_output_options`) and hands
its rows to `emit`, so all benchmarks write results the same way.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

# The committed results (benchmarks/results/) change only when asked (`--csv benchmarks/results/x.csv`,
# or the scripts in benchmarks/ that regenerate the README's figures); a plain `fastssl bench` run,
# from a checkout or not, writes under the current directory.
RESULTS_DIR = os.path.join("benchmarks", "results")
RUN_DIR = os.path.join("runs", "bench")


def default_csv(name: str) -> str:
    """The tracked results file (benchmarks/ scripts that regenerate committed figures)."""
    return os.path.join(RESULTS_DIR, f"{name}.csv")


def run_csv(name: str) -> str:
    """Where `fastssl bench NAME` appends rows unless --csv says otherwise."""
    return os.path.join(RUN_DIR, f"{name}.csv")


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        return f"{v:.{digits}g}"
    return str(v)


class CsvWriter:
    """Appends rows under a fixed header, written once.

    A file that already holds a different header is left alone: rows go to the first free
    `<name>-2.csv`, `<name>-3.csv`, ... whose header matches (or that is new), and `note` says so.
    """

    def __init__(self, path: str, fields: Sequence[str]):
        self.fields = list(fields)
        self.requested = path
        self.path = path
        self.note = ""
        stem, ext = os.path.splitext(path)
        k = 1
        while os.path.exists(self.path) and os.path.getsize(self.path) > 0 and self._header() != self.fields:
            k += 1
            self.path = f"{stem}-{k}{ext or '.csv'}"
        if self.path != path:
            self.note = f"{path} has a different header; wrote to {self.path} instead"

    def _header(self) -> list[str]:
        with open(self.path, newline="") as f:
            return next(csv.reader(f), [])

    def append(self, rows: Iterable[dict[str, Any]]) -> str:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        new = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerows({k: _fmt(r.get(k), 6) for k in self.fields} for r in rows)
        return self.path


class RowSink:
    """A benchmark's rows (`rows`), each to the CSV as it is measured (`--csv ''`: nowhere).

    Each row is appended and the file closed at once, so a run stopped by a time limit (the GPU
    suite's `timeout`) or a crash keeps every row measured before it; writing at exit would lose
    them all. The header rule is CsvWriter's.
    """

    def __init__(self, path: str, fields: Sequence[str]):
        self.writer = CsvWriter(path, fields) if path else None
        self.rows: list[dict[str, Any]] = []
        self.count = 0

    def add(self, row: dict[str, Any]) -> dict[str, Any]:
        self.rows.append(row)
        if self.writer is not None:
            self.writer.append([row])
            self.count += 1
        return row

    @property
    def path(self) -> str | None:
        return self.writer.path if self.writer is not None and self.count else None

    @property
    def note(self) -> str:
        return self.writer.note if self.writer is not None and self.count else ""


def _key(row: dict[str, Any], group: str | Sequence[str]) -> str:
    cols = [group] if isinstance(group, str) else list(group)
    return " ".join(f"{row.get(c)}" if i == 0 else f"{c}={row.get(c)}" for i, c in enumerate(cols))


def plot(
    rows: Sequence[dict[str, Any]],
    x: str,
    y: str | Sequence[str],
    group: str | Sequence[str],
    path: str,
    *,
    title: str = "",
    logx: bool = False,
    logy: bool = False,
    kind: str = "line",
) -> str | None:
    """One panel per `y` column, one line (or, with kind="bar", one bar) per `group` value.

    Rows lacking a numeric value are left out.
    Returns the PNG path, or None when no row had anything to plot.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ys = [y] if isinstance(y, str) else list(y)
    fig = Figure(figsize=(5.0 * len(ys), 3.6), dpi=80)
    FigureCanvasAgg(fig)
    drawn = 0
    for i, col in enumerate(ys):
        ax = fig.add_subplot(1, len(ys), i + 1)
        if kind == "bar":
            bars = [(_key(r, group), float(r[col])) for r in rows
                    if isinstance(r.get(col), (int, float)) and not isinstance(r.get(col), bool)]
            ax.bar([b[0] for b in bars], [b[1] for b in bars])
            ax.set_ylabel(col)
            ax.tick_params(axis="x", labelsize=7, rotation=20)
            if logy and bars:
                ax.set_yscale("log")
            ax.grid(True, axis="y", alpha=0.3)
            drawn += len(bars)
            continue
        series: dict[str, list[tuple[float, float]]] = {}
        for r in rows:
            xv, yv = r.get(x), r.get(col)
            if isinstance(xv, (int, float)) and isinstance(yv, (int, float)) and not isinstance(yv, bool):
                series.setdefault(_key(r, group), []).append((float(xv), float(yv)))
        for label, pts in series.items():
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
            drawn += 1
        ax.set_xlabel(x)
        ax.set_ylabel(col)
        if logx:
            ax.set_xscale("log", base=2)
        if logy and series:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        if series:
            ax.legend(fontsize=7)
    if not drawn:
        return None
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    return path


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def add_output_options(p: argparse.ArgumentParser, name: str) -> None:
    p.add_argument("--csv", default=run_csv(name),
                   help=f"append rows here (default: {run_csv(name)}; '' = none; the tracked results: "
                        f"{default_csv(name)}); the plot goes beside it")
    p.add_argument("--plot", default=None, help="PNG path (default: the CSV path with .png; '' = none)")
    p.add_argument("--json", action="store_true", help="print one JSON object (provenance, rows, notes) on stdout")


def log(args: argparse.Namespace, msg: str) -> None:
    """Progress lines: stdout normally, stderr under --json so stdout stays one JSON object."""
    print(msg, file=sys.stderr if getattr(args, "json", False) else sys.stdout, flush=True)


def emit(
    name: str,
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    fields: Sequence[str],
    *,
    provenance: dict[str, Any],
    columns: Sequence[str],
    plot_spec: dict[str, Any],
    notes: list[str],
    plot_rows: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
    sink: RowSink | None = None,
) -> dict[str, Any]:
    """Write the CSV (unless `sink` already holds the rows) and PNG (of `plot_rows`, default all),
    print the table or JSON; return the JSON object."""
    csv_path = plot_path = None
    if sink is not None:
        csv_path = sink.path
        if sink.note:
            notes.append(sink.note)
    elif args.csv and rows:
        writer = CsvWriter(args.csv, fields)
        csv_path = writer.append(rows)
        if writer.note:
            notes.append(writer.note)
    plot_to = args.plot if args.plot is not None else (os.path.splitext(args.csv)[0] + ".png" if args.csv else "")
    if plot_to and rows:
        plot_path = plot(rows if plot_rows is None else plot_rows, path=plot_to, **plot_spec)
    result = {"benchmark": name, "provenance": provenance, "rows": rows, "notes": notes,
              "csv": csv_path, "plot": plot_path, **(extra or {})}
    if args.json:
        print(json.dumps(result, default=str))
    else:
        print(format_table(rows, columns))
        for n in notes:
            print(f"note: {n}")
        if csv_path:
            print(f"appended {sink.count if sink else len(rows)} rows to {csv_path}" + (f"; plot {plot_path}" if plot_path else ""))
    return result
