"""Held-out kNN top-1 against wall time: a recipe under several time budgets, and its sweeps.

    python benchmarks/time_to_accuracy.py --data ../shared/data/cifar10 --budgets 2m,5m,10m,30m
    python benchmarks/time_to_accuracy.py --data ../shared/data/cifar10 --budgets 2m \\
        --variant "res16: --data.image_size=16" --variant "byol: --method.name=byol" --name sweep

Each (variant, budget) is one `fastssl train --recipe R --train.time_budget=B` in a fresh
process, so it pays its own start-up, exactly as a user's run does. A row records the run's
held-out kNN, its steps, its training time, and the whole wall time (start-up, training, final
checkpoint and evaluation). With `--random-init`, the same network's random init is evaluated on
the same bank and queries (`fastssl eval knn --random-init --like RUN`) as the 0-minute point.

Does a run keep its budget when the machine gets busier after the plan is made? `--busy 40s:2`
starts 2 CPU-bound processes 40 s into each run, until it ends:

    python benchmarks/time_to_accuracy.py --data ../shared/data/cifar10 --budgets 2m --busy 40s:2 \
        --variant "fixed: --train.time_budget_tolerance=0" --variant "replan:" --name budget_drift

Rows are appended to benchmarks/results/<name>.csv with provenance, and the plot (kNN top-1 vs
training minutes, a line per variant) goes beside it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dataclasses  # noqa: E402

from fastssl.bench.harness import Provenance, load_average  # noqa: E402
from fastssl.bench.report import CsvWriter, default_csv, format_table, plot  # noqa: E402
from fastssl.errors import FastSSLError  # noqa: E402
from fastssl.config.durations import parse_duration  # noqa: E402

COLUMNS = ["variant", "budget", "budget_s", "knn_top1", "steps", "train_s", "wall_s", "images_per_s",
           "overrides", "load_1m"]


def _variant(text: str) -> tuple[str, list[str]]:
    name, _, rest = text.partition(":")
    if not name.strip() or not _:
        raise SystemExit(f"--variant {text!r}: write NAME: --section.key=value ..., e.g. \"res16: --data.image_size=16\"")
    return name.strip(), shlex.split(rest)


def _summary(out: Path) -> dict:
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["kind"] == "summary"][-1]


def _busy(spec: str) -> tuple[float, int]:
    """'40s:2' -> (40.0, 2): 2 CPU-bound processes from 40 s into each run."""
    when, _, n = spec.partition(":")
    try:
        return parse_duration(when), int(n or 1)
    except (ValueError, FastSSLError):
        raise SystemExit(f"--busy {spec!r}: write AFTER:PROCESSES, e.g. 40s:2") from None


def run_one(args, name: str, overrides: list[str], budget: str, out: Path) -> dict:
    cmd = [sys.executable, "-m", "fastssl", "train", "--recipe", args.recipe, "--data.path", args.data,
           f"--train.time_budget={budget}", f"--train.out={out}", "--train.progress=false", *overrides]
    load = load_average()
    t0 = time.perf_counter()
    hogs: list[subprocess.Popen] = []
    with open(out.with_suffix(".log"), "w") as logf:
        run = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT)
        try:
            if args.busy:
                after, n = args.busy_at
                try:
                    rc = run.wait(timeout=after)
                except subprocess.TimeoutExpired:
                    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
            rc = run.wait()
        finally:
            for h in hogs:
                h.kill()
            if run.poll() is None:
                run.kill()
    wall = time.perf_counter() - t0
    if rc:
        raise SystemExit(f"{name} @ {budget} failed (exit {rc}); see {out.with_suffix('.log')}")
    s = _summary(out)
    return {"variant": name, "budget": budget, "budget_s": parse_duration(budget), "knn_top1": s.get("knn_top1"),
            "steps": s["step"], "train_s": s.get("train_seconds", s["seconds"]), "wall_s": round(wall, 1),
            "images_per_s": s["images_per_s"], "load_1m": load,
            "overrides": " ".join(overrides) + (f" (busy {args.busy})" if args.busy else "")}


def random_init(args, like: Path) -> dict:
    cmd = [sys.executable, "-m", "fastssl", "eval", "knn", "--random-init", "--like", str(like), "--json"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"random-init kNN failed: {out.stderr.strip().splitlines()[-1:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {"variant": "random-init", "budget": "0", "budget_s": 0, "knn_top1": result["top1"], "steps": 0,
            "train_s": 0, "wall_s": round(time.perf_counter() - t0, 1), "images_per_s": "", "overrides": "",
            "load_1m": load_average()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="", help="the CIFAR-10 npz folder, e.g. ../shared/data/cifar10")
    p.add_argument("--recipe", default="cifar10-cpu")
    p.add_argument("--budgets", default="2m,5m,10m,30m")
    p.add_argument("--variant", action="append", default=[], metavar="NAME: OVERRIDES",
                   help="a sweep point (repeatable); default: the recipe as it is")
    p.add_argument("--random-init", action="store_true", help="add the random-init point of the first run")
    p.add_argument("--name", default="time_to_accuracy", help="CSV/plot name under benchmarks/results")
    p.add_argument("--runs", default="runs/time_to_accuracy", help="where the runs are written")
    p.add_argument("--plot-only", action="store_true", help="redraw the plot from the CSV's rows, run nothing")
    p.add_argument("--busy", default="", metavar="AFTER:N",
                   help="start N CPU-bound processes AFTER into each run (e.g. 40s:2): does the budget hold?")
    args = p.parse_args(argv)
    if args.plot_only:
        return _plot(default_csv(args.name))
    if not args.data or not Path(args.data).is_dir():
        raise SystemExit(f"--data {args.data} is not a folder; pass the CIFAR-10 npz folder, e.g. ../shared/data/cifar10")
    args.busy_at = _busy(args.busy) if args.busy else None  # a bad spec fails before any run starts
    budgets = [b.strip() for b in args.budgets.split(",") if b.strip()]
    for b in budgets:
        parse_duration(b)
    variants = [_variant(v) for v in args.variant] or [("recipe", [])]
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    prov = dataclasses.asdict(Provenance.collect())
    writer = CsvWriter(default_csv(args.name), COLUMNS + list(prov))
    rows: list[dict] = []
    for name, overrides in variants:
        for budget in budgets:
            out = runs / f"{stamp}-{name}-{budget}"
            row = run_one(args, name, overrides, budget, out)
            rows.append(row)
            writer.append([{**row, **prov}])
            print(f"{name:>14} {budget:>5}: kNN {row['knn_top1']:.2f}%  {row['steps']} steps  "
                  f"train {row['train_s']:.0f} s  wall {row['wall_s']:.0f} s", flush=True)
            if args.random_init and len(rows) == 1:
                r0 = random_init(args, out)
                rows.insert(0, r0)
                writer.append([{**r0, **prov}])
                print(f"   random-init     : kNN {r0['knn_top1']:.2f}%", flush=True)
    print(format_table(rows, COLUMNS[:-2]))
    return _plot(writer.path)


def _plot(csv_path: str) -> int:
    """Every row of the CSV, a line per variant; the random init is the 0-minute point of each."""
    import csv

    with open(csv_path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["knn_top1"]]
    if not rows:
        raise SystemExit(f"{csv_path} has no rows to plot")
    base = [r for r in rows if r["variant"] == "random-init"]
    points = []
    for r in rows:
        if r["variant"] != "random-init":
            points.append({"variant": r["variant"], "train_min": float(r["train_s"]) / 60, "knn_top1": float(r["knn_top1"])})
    for v in {p["variant"] for p in points}:
        points += [{"variant": v, "train_min": 0.0, "knn_top1": float(b["knn_top1"])} for b in base[-1:]]
    cpu = f"{rows[-1].get('cpu_model', '')}, {rows[-1].get('cpu_cores', '')} cores"
    png = plot(points, x="train_min", y="knn_top1", group="variant", path=csv_path.replace(".csv", ".png"),
               title=f"held-out kNN vs training minutes ({cpu})")
    print(f"wrote {csv_path}" + (f" and {png}" if png else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
