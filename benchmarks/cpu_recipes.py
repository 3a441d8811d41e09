"""What each `*-cpu` recipe learns, and in how long: trained vs random-init kNN on held-out data.

    python benchmarks/cpu_recipes.py                       # every *-cpu recipe on the built-in digits
    python benchmarks/cpu_recipes.py --recipes mocov2-cpu,dino-cpu

Each recipe is trained as a user would run it (`fastssl train --recipe R`, a fresh process, its
own defaults), its wall time taken from start to exit, and its held-out kNN top-1 (from the run's
end-of-run kNN) set against the random init of the same network on the same images
(`fastssl eval knn --random-init --like RUN`). Rows go to benchmarks/results/cpu_recipes.csv with
provenance. MAE is judged by fine-tuning rather than kNN (He et al. 2022, Sec. 4.3): see
`fastssl report few-label`, which this script's runs feed (--runs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastssl.bench.harness import Provenance, load_average  # noqa: E402
from fastssl.bench.report import CsvWriter, default_csv, format_table  # noqa: E402

COLUMNS = ["recipe", "method", "knn_top1", "random_init_top1", "gain", "steps", "train_s", "wall_s", "load_1m"]


def _cpu_recipes() -> list[str]:
    from fastssl.recipes import RECIPES

    return ["default"] + [r for r in RECIPES if r.endswith("-cpu") and RECIPES[r]().data.dataset == "digits"]


def _run(cmd: list[str], log: Path) -> tuple[int, float]:
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
    return rc, time.perf_counter() - t0


def measure(recipe: str, runs: Path, extra: list[str]) -> dict:
    out = runs / recipe
    load = load_average()
    rc, wall = _run([sys.executable, "-m", "fastssl", "train", "--recipe", recipe, f"--train.out={out}",
                     "--train.progress=false", *extra], runs / f"{recipe}.log")
    if rc:
        raise SystemExit(f"{recipe}: training failed (exit {rc}); see {runs / (recipe + '.log')}")
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    summary = [r for r in records if r["kind"] == "summary"][-1]
    cfg = json.loads((out / "config.json").read_text())
    rnd = subprocess.run([sys.executable, "-m", "fastssl", "eval", "knn", "--random-init", "--like", str(out), "--json"],
                         capture_output=True, text=True)
    if rnd.returncode:
        raise SystemExit(f"{recipe}: random-init kNN failed: {rnd.stderr.strip().splitlines()[-1:]}")
    r0 = json.loads(rnd.stdout.strip().splitlines()[-1])["top1"]
    top1 = summary.get("knn_top1")
    return {"recipe": recipe, "method": cfg["method"]["name"], "knn_top1": top1, "random_init_top1": r0,
            "gain": None if top1 is None else round(top1 - r0, 2), "steps": summary["step"],
            "train_s": summary.get("train_seconds", summary["seconds"]), "wall_s": round(wall, 1), "load_1m": load}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", default="", help="comma-separated (default: every *-cpu recipe on the digits)")
    p.add_argument("--runs", default="runs/cpu_recipes", help="where the runs are written (reused by report few-label)")
    p.add_argument("--set", nargs="*", default=[], metavar="--SECTION.KEY=VALUE", help="overrides for every run")
    args = p.parse_args(argv)
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()] or _cpu_recipes()
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    prov = dataclasses.asdict(Provenance.collect())
    writer = CsvWriter(default_csv("cpu_recipes"), COLUMNS + list(prov))
    rows = []
    for recipe in recipes:
        row = measure(recipe, runs, args.set)
        rows.append(row)
        writer.append([{**row, **prov}])
        print(f"{recipe:>16}: kNN {row['knn_top1']} vs random init {row['random_init_top1']} "
              f"({row['steps']} steps, wall {row['wall_s']:.0f} s)", flush=True)
    print(format_table(rows, COLUMNS))
    print(f"wrote {writer.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
