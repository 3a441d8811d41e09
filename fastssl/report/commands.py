"""`fastssl report few-label`: the few-label table of one dataset, as CSV + markdown.

    fastssl report few-label --ckpt swav=runs/swav-cpu --ckpt deepcluster=runs/deepcluster-cpu
    fastssl report few-label --ckpt simclr=runs/c10 --data.train ../shared/data/cifar10 --out reports/c10

Every encoder is evaluated on the same data: `--data.train` / `--data.test`, else the first
checkpoint's data and its held-out split. The scratch baseline is the first checkpoint's
network, randomly initialised. Writes OUT/few_label.csv and OUT/few_label.md and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from fastssl.errors import FastSSLError


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise FastSSLError(f"{flag} takes comma-separated integers, e.g. {flag} 2,5,20; got {text!r}") from None
    low = 0 if flag == "--seeds" else 1
    if not values or min(values) < low:
        raise FastSSLError(f"{flag} needs at least one value, each >= {low}; got {text!r}")
    return values


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("report", help="results tables: few-label", description="Measure and write results tables.")
    sub = p.add_subparsers(dest="report_task", metavar="{few-label}", required=True)
    fl = sub.add_parser("few-label", help="scratch vs linear vs fine-tune vs self-training at N labels per class")
    fl.add_argument("--ckpt", action="append", required=True, metavar="NAME=RUN",
                    help="an encoder to evaluate (repeatable); NAME labels its rows")
    fl.add_argument("--data.train", dest="data_train", metavar="PATH", help="default: the first checkpoint's data")
    fl.add_argument("--data.test", dest="data_test", metavar="PATH", help="default: the held-out split")
    fl.add_argument("--data.dataset", dest="data_dataset", metavar="NAME", default=None)
    fl.add_argument("--labels-per-class", default="2,5,20", metavar="N,N,...", help="default: 2,5,20")
    fl.add_argument("--seeds", default="0,1,2", metavar="S,S,...", help="label draws per setting (default: 0,1,2)")
    fl.add_argument("--steps", type=int, default=None, help="fine-tune steps (default: eval.finetune_steps)")
    fl.add_argument("--lr", type=float, default=None, help="fine-tune lr (default: eval.finetune_lr)")
    fl.add_argument("--probe-steps", default="50,100,200,500,1000", metavar="S,S,...",
                    help="step counts the linear probes choose from on the validation labels")
    fl.add_argument("--selftrain-rounds", type=int, default=1, help="student rounds on top of the best (0: skip)")
    fl.add_argument("--threshold", type=float, default=0.9, help="self-training confidence threshold")
    fl.add_argument("--out", default="reports/few_label", metavar="DIR", help="where the CSV and markdown go")
    fl.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    fl.add_argument("--batch-size", type=int, default=None)
    fl.add_argument("--num-workers", type=int, default=None)
    fl.add_argument("--quiet", action="store_true", help="no progress lines")
    fl.add_argument("--json", action="store_true", help="print the rows as JSON instead of the table")
    fl.set_defaults(func=run_report)
    return p


def _named(specs: list[str]) -> list[tuple[str, str]]:
    out = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise FastSSLError(f"--ckpt takes NAME=RUN (e.g. --ckpt swav=runs/swav-cpu), got {spec!r}")
        out.append((name, path))
    if len({n for n, _ in out}) != len(out):
        raise FastSSLError("two --ckpt share a NAME; give each encoder its own")
    return out


def run_report(args: argparse.Namespace) -> int:
    from fastssl.eval.commands import open_eval_data
    from fastssl.eval.features import build_random_method, load_eval_model, resolve_device
    from fastssl.report.few_label import Encoder, ReportSettings, few_label_report
    from fastssl.report.table import hardware_line, markdown_report, markdown_table, write_csv

    start, load_start = time.perf_counter(), os.getloadavg()
    encoders = []
    for name, path in _named(args.ckpt):
        method, cfg, ckpt = load_eval_model(path)
        encoders.append(Encoder(name, method, cfg, ckpt))
    first = encoders[0].cfg
    scratch = Encoder("scratch", build_random_method(first), first)
    device = resolve_device(args.device)
    workers = first.data.num_workers if args.num_workers is None else args.num_workers
    train_src, test_src = open_eval_data(first, args.data_train, args.data_test, args.data_dataset)
    settings = ReportSettings(
        labels_per_class=_ints(args.labels_per_class, "--labels-per-class"), seeds=_ints(args.seeds, "--seeds"),
        steps=args.steps, lr=args.lr, selftrain_rounds=args.selftrain_rounds, threshold=args.threshold,
        batch_size=args.batch_size, num_workers=workers, device=device, val_fraction=first.eval.finetune_val_fraction,
        probe_steps=_ints(args.probe_steps, "--probe-steps"),
    )
    log = (lambda line: None) if args.quiet else (lambda line: print(f"fastssl report: {line}", flush=True))
    rows = few_label_report(encoders, scratch, train_src, test_src, settings, log)
    dataset = args.data_train or first.data.path or first.data.dataset
    out = Path(args.out)
    write_csv(rows, out / "few_label.csv", dataset)
    meta = {
        "dataset": f"{dataset} ({len(train_src)} training images, {len(test_src)} held-out test images)",
        "network": f"{first.model.name} at {first.data.image_size} px",
        "encoders": ", ".join(f"{e.name} ({e.cfg.method.name}, {e.ckpt})" for e in encoders),
        "protocol": f"fine-tunes of {settings.steps or first.eval.finetune_steps} steps, lr "
                    f"{settings.lr or first.eval.finetune_lr}, step count chosen on "
                    f"{settings.val_fraction:.0%} of the labels, refit on all (fastssl/eval/fewlabel.py)",
        "hardware": f"{hardware_line()}; load average {load_start[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end",
        "wall time": f"{time.perf_counter() - start:.0f} s",
    }
    (out / "few_label.md").write_text(markdown_report(rows, meta))
    print(json.dumps(rows) if args.json else markdown_table(rows), flush=True)
    return 0
