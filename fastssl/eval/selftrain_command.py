"""`fastssl selftrain`: teacher on N labels per class, pseudo-labels, noised student rounds.

    fastssl selftrain --ckpt runs/swav-cpu --labels-per-class 5 --rounds 2 --threshold 0.9
    fastssl selftrain --random-init --recipe default --labels-per-class 20 --json

Data, image size and normalisation come from the checkpoint (or `--data.train` / `--data.test`)
as for `fastssl eval`. Prints each round's held-out top-1 (round 0 is the fine-tuned teacher).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from fastssl.errors import FastSSLError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from fastssl.eval.selftrain import DEFAULT_DROP_PATH, DEFAULT_DROPOUT, DEFAULT_THRESHOLD

    p = subparsers.add_parser(
        "selftrain", help="self-training: few-label teacher, pseudo-labels, noised students",
        description="Fine-tune a teacher on N labels per class, pseudo-label the other training images "
                    "above a confidence threshold, and train noised students on both; reports each round.",
    )
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--ckpt", metavar="PATH", help="checkpoint or run folder (its newest checkpoint)")
    model.add_argument("--random-init", action="store_true", help="start from a seeded random init of --recipe")
    p.add_argument("--recipe", default=None, help="recipe for --random-init (default: default)")
    p.add_argument("--data.train", dest="data_train", metavar="PATH", help="training data (labelled + unlabelled)")
    p.add_argument("--data.test", dest="data_test", metavar="PATH", help="held-out data for the per-round top-1")
    p.add_argument("--data.dataset", dest="data_dataset", metavar="NAME", default=None)
    p.add_argument("--labels-per-class", type=int, default=None, metavar="N", help="default: eval.labels_per_class")
    p.add_argument("--rounds", type=int, default=1, help="student rounds (default: 1)")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help=f"keep pseudo-labels whose softmax probability is at least this (default: {DEFAULT_THRESHOLD})")
    p.add_argument("--dropout", type=float, default=DEFAULT_DROPOUT,
                   help=f"student dropout before the head (default: {DEFAULT_DROPOUT})")
    p.add_argument("--drop-path", type=float, default=DEFAULT_DROP_PATH,
                   help=f"student stochastic depth at the last block (default: {DEFAULT_DROP_PATH})")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per model (default: eval.finetune_steps)")
    p.add_argument("--lr", type=float, default=None, help="default: eval.finetune_lr")
    p.add_argument("--seed", type=int, default=0, help="which labels are drawn, and the inits")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=None, help="default: eval.batch_size")
    p.add_argument("--num-workers", type=int, default=None, help="default: data.num_workers")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_selftrain)
    return p


def run_selftrain(args: argparse.Namespace) -> int:
    from fastssl.eval.commands import open_eval_data
    from fastssl.eval.features import load_eval_model, resolve_device
    from fastssl.eval.selftrain import self_train

    start = time.perf_counter()
    if args.ckpt is not None and args.recipe is not None:
        raise FastSSLError("--recipe only applies with --random-init; a checkpoint carries its own config")
    for flag, value in (("--dropout", args.dropout), ("--drop-path", args.drop_path)):
        if not 0.0 <= value < 1.0:
            raise FastSSLError(f"{flag} is a probability; use a value in [0, 1), not {value}")
    method, cfg, ckpt_path = load_eval_model(args.ckpt, args.recipe)
    device = resolve_device(args.device)
    workers = cfg.data.num_workers if args.num_workers is None else args.num_workers
    train_src, test_src = open_eval_data(cfg, args.data_train, args.data_test, args.data_dataset)
    r = self_train(method, train_src, test_src, cfg, device, args.labels_per_class, args.rounds, args.threshold,
                   args.steps, args.lr, args.batch_size, args.seed, workers, args.dropout, args.drop_path)
    r.pop("backbone")
    summary = {"task": "selftrain", **r, "n_test": len(test_src), "ckpt": ckpt_path, "model": cfg.model.name,
               "method": cfg.method.name, "device": str(device), "seconds": round(time.perf_counter() - start, 3)}
    if args.json:
        print(json.dumps(summary), flush=True)
        return 0
    for rd in r["rounds"]:
        extra = "" if rd["round"] == 0 else (f", {rd['n_pseudo']} pseudo-labels" +
                                            (f" ({rd['pseudo_accuracy']:.1f}% correct)" if rd["n_pseudo"] else ""))
        print(f"round {rd['round']} {rd['role']}: top-1 {rd['top1']:.1f}% "
              f"({rd['n_train']} training images{extra})", flush=True)
    return 0
