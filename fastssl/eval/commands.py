"""`fastssl eval {knn,linear,finetune,plot}`: argparse wiring for the evaluators.

    fastssl eval knn      --ckpt runs/default            [--data.train P --data.test P] [--json]
    fastssl eval linear   --ckpt runs/default/checkpoints/step_00000300
    fastssl eval finetune --random-init --recipe default --labels-per-class 10
    fastssl eval plot     --ckpt runs/default --out tsne.png

The model comes from `--ckpt` (a .pt file or a run folder: its newest checkpoint) or is a seeded
random init of `--recipe` (`--random-init`), the baseline a pretrained encoder must beat. Data
defaults to what the checkpoint trained on and its held-out split; the image size and
normalisation always come from the model's config. Accuracies are percentages (0-100), in the
JSON output too.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from typing import Any

from fastssl.errors import FastSSLError

TASKS = ("knn", "linear", "finetune", "plot")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "eval", help="evaluate an encoder: knn, linear, finetune, plot",
        description="Evaluate a pretrained (or randomly initialised) encoder on labelled data.",
    )
    sub = p.add_subparsers(dest="eval_task", metavar="{" + ",".join(TASKS) + "}", required=True)

    common = argparse.ArgumentParser(add_help=False)
    model = common.add_mutually_exclusive_group(required=True)
    model.add_argument("--ckpt", metavar="PATH", help="checkpoints/step_N folder or run folder (its newest checkpoint)")
    model.add_argument("--random-init", action="store_true", help="evaluate a seeded random init of --recipe")
    common.add_argument("--recipe", default=None, help="recipe for --random-init (default: default)")
    common.add_argument("--like", default=None, metavar="RUN",
                        help="with --random-init: use the config (model, image size, data) of this run or checkpoint")
    common.add_argument("--data.train", dest="data_train", metavar="PATH",
                        help="labelled training data (default: the checkpoint's data.path)")
    common.add_argument("--data.test", dest="data_test", metavar="PATH",
                        help="held-out data (default: the checkpoint's data.test_path or held-out split)")
    common.add_argument("--data.dataset", dest="data_dataset", metavar="NAME", default=None,
                        help="format of --data.train/--data.test (default: auto)")
    common.add_argument("--limit-train", type=int, default=0, metavar="N", help="use only the first N training images")
    common.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    common.add_argument("--batch-size", type=int, default=None, help="eval batch size (default: eval.batch_size)")
    common.add_argument("--num-workers", type=int, default=None, help="loader workers (default: data.num_workers)")
    common.add_argument("--json", action="store_true", help="print one JSON object instead of a sentence")

    k = sub.add_parser("knn", parents=[common], help="weighted kNN on frozen features")
    k.add_argument("--k", type=int, default=None, help="neighbours (default: eval.knn_k = 200)")
    k.add_argument("--t", type=float, default=None, help="temperature (default: eval.knn_t = 0.1)")

    lin = sub.add_parser("linear", parents=[common], help="linear probe on backbone and projector features")
    lin.add_argument("--epochs", type=int, default=None, help="default: eval.linear_epochs")
    lin.add_argument("--lr", type=float, default=None, help="default: eval.linear_lr")

    ft = sub.add_parser("finetune", parents=[common], help="fine-tune the backbone on N labels per class")
    ft.add_argument("--labels-per-class", type=int, default=None, metavar="N", help="default: eval.labels_per_class")
    ft.add_argument("--steps", type=int, default=None, help="optimizer steps (default: eval.finetune_steps)")
    ft.add_argument("--epochs", type=int, default=None, help="train for N epochs of the labelled images instead of --steps")
    ft.add_argument("--val-fraction", type=float, default=None,
                    help="share of each class's labels held out to pick the step count (default: eval.finetune_val_fraction)")
    ft.add_argument("--no-linear", action="store_true", help="skip the linear probe reported next to the fine-tune")
    ft.add_argument("--lr", type=float, default=None, help="default: eval.finetune_lr")
    ft.add_argument("--seed", type=int, default=0, help="which labels are drawn, and the head init")

    pl = sub.add_parser("plot", parents=[common], help="t-SNE of test features to a PNG")
    pl.add_argument("--out", default="tsne.png", metavar="PNG")
    pl.add_argument("--max-points", type=int, default=2000)
    pl.add_argument("--features", choices=["backbone", "projector"], default="backbone")

    for parser in (k, lin, ft, pl):
        parser.set_defaults(func=run_eval)
    return p


def _check_path(path: str, flag: str) -> None:
    from fastssl.data import parse_slice

    base = parse_slice(path)[0]
    if base and not os.path.exists(base):
        raise FastSSLError(f"{flag} '{base}' does not exist on this machine; pass {flag} PATH to labelled data")


def open_eval_data(cfg, train: str | None = None, test: str | None = None, dataset: str | None = None,
                   limit_train: int = 0):
    """(train, test) sources: the config's data unless the flags name other data.

    With --data.train and no --data.test, the test set is the held-out split of --data.train.
    """
    from fastssl.data import open_eval_sources

    data = copy.deepcopy(cfg.data)
    if train:
        data.path, data.test_path, data.dataset = train, test or "", dataset or "auto"
    else:
        if dataset:
            data.dataset = dataset
        if test:
            data.test_path = test
        if data.dataset not in ("digits", "auto") and not data.path:
            raise FastSSLError(
                f"the model's data is '{data.dataset}' with no path recorded; "
                "pass --data.train PATH (and --data.test PATH)"
            )
    _check_path(data.path, "--data.train")
    _check_path(data.test_path, "--data.test")
    train_source, test_source = open_eval_sources(data)
    if limit_train < 0:
        raise FastSSLError(f"--limit-train must be >= 0, got {limit_train}")
    return train_source.head(limit_train), test_source


def _knn(args, method, cfg, train_src, test_src, device, workers) -> tuple[dict, str]:
    from fastssl.eval.features import num_classes_of, source_features
    from fastssl.eval.knn import knn_accuracy

    k = cfg.eval.knn_k if args.k is None else args.k
    t = cfg.eval.knn_t if args.t is None else args.t
    if k < 1 or t <= 0:
        raise FastSSLError(f"kNN needs --k >= 1 and --t > 0, got k={k}, t={t}")
    num_classes = num_classes_of(train_src, test_src)
    train_x, train_y = source_features(method, train_src, cfg, device, args.batch_size, workers)
    test_x, test_y = source_features(method, test_src, cfg, device, args.batch_size, workers)
    r = knn_accuracy(train_x, train_y, test_x, test_y, num_classes, k, t)
    top5 = f", top-5 {r['top5']:.1f}%" if "top5" in r else ""
    line = f"knn top-1 {r['top1']:.1f}%{top5} (k={r['k']}, T={t:g}, {len(train_y)} train / {len(test_y)} test)"
    return r, line


def _linear(args, method, cfg, train_src, test_src, device, workers) -> tuple[dict, str]:
    from fastssl.eval.features import num_classes_of, projector_of, source_features
    from fastssl.eval.linear import compare_backbone_projector

    num_classes = num_classes_of(train_src, test_src)
    epochs = cfg.eval.linear_epochs if args.epochs is None else args.epochs
    lr = cfg.eval.linear_lr if args.lr is None else args.lr
    train_x, train_y = source_features(method, train_src, cfg, device, args.batch_size, workers)
    test_x, test_y = source_features(method, test_src, cfg, device, args.batch_size, workers)
    both = compare_backbone_projector(projector_of(method), train_x, train_y, test_x, test_y, num_classes,
                                      epochs=epochs, lr=lr)
    r = dict(both["backbone"])
    proj = both["projector"]
    r["projector_top1"] = proj["top1"] if proj else None
    vs = f", projector {proj['top1']:.1f}%" if proj else ""
    line = (f"linear top-1 {r['top1']:.1f}% backbone{vs} "
            f"({epochs} epochs, {len(train_y)} train / {len(test_y)} test)")
    return r, line


def _finetune(args, method, cfg, train_src, test_src, device, workers) -> tuple[dict, str]:
    from fastssl.eval.fewlabel import few_label_finetune

    r = few_label_finetune(method, train_src, test_src, cfg, device, args.labels_per_class, args.steps, args.lr,
                           args.batch_size, args.seed, workers, epochs=args.epochs, val_fraction=args.val_fraction,
                           linear=not args.no_linear)
    lin = f"; linear probe {r['linear']['top1']:.1f}%" if "linear" in r else ""
    line = (f"finetune top-1 {r['top1']:.1f}%{lin} ({r['labels_per_class']} labels/class = {r['n_labelled']} images, "
            f"{r['best_step']} of {r['steps']} steps chosen on {r['n_val']} held-out labels, {len(test_src)} test)")
    return r, line


def _plot(args, method, cfg, train_src, test_src, device, workers) -> tuple[dict, str]:
    from fastssl.eval.features import project, projector_of, source_features
    from fastssl.data import IndexedSource
    from fastssl.eval.plot import plot_tsne, subsample

    # Only the plotted subset is encoded: t-SNE of 2000 points never needs all of ImageNet val.
    shown = IndexedSource(test_src, subsample(len(test_src), args.max_points))
    feats, labels = source_features(method, shown, cfg, device, args.batch_size, workers)
    if args.features == "projector":
        projector = projector_of(method)
        if projector is None:
            raise FastSSLError("this model has no projector; use --features backbone")
        feats = project(projector, feats)
    what = "random-init" if args.random_init else os.path.basename(str(args.ckpt).rstrip("/"))
    out = plot_tsne(feats, labels, args.out, args.max_points, title=f"t-SNE of {args.features} features ({what})")
    result = {"out": str(out), "points": len(labels), "features": args.features}
    return result, f"t-SNE of {len(labels)} {args.features} features of test images -> {out}"


_HANDLERS = {"knn": _knn, "linear": _linear, "finetune": _finetune, "plot": _plot}


def run_eval(args: argparse.Namespace) -> int:
    """Handler of every `fastssl eval` subcommand. FastSSLError propagates to the CLI's one-liner."""
    summary, line = evaluate_args(args)
    print(json.dumps(summary) if args.json else line, flush=True)
    return 0


def evaluate_args(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """(summary, the sentence the CLI prints) of `fastssl eval` with these arguments; `fastssl.evaluate`
    calls it too."""
    from fastssl.eval.features import load_eval_model, resolve_device

    start = time.perf_counter()
    if args.ckpt is not None and args.recipe is not None:
        raise FastSSLError("--recipe only applies with --random-init; a checkpoint carries its own config")
    if args.like is not None:
        if args.ckpt is not None or args.recipe is not None:
            raise FastSSLError("--like replaces --recipe and only applies with --random-init")
        from fastssl.checkpoint import read_config
        from fastssl.eval.features import build_random_method

        cfg = read_config(args.like)
        method, ckpt_path = build_random_method(cfg), None
    else:
        method, cfg, ckpt_path = load_eval_model(args.ckpt, args.recipe)
    device = resolve_device(args.device)
    workers = cfg.data.num_workers if args.num_workers is None else args.num_workers
    train_src, test_src = open_eval_data(cfg, args.data_train, args.data_test, args.data_dataset, args.limit_train)
    result, line = _HANDLERS[args.eval_task](args, method, cfg, train_src, test_src, device, workers)
    summary = {
        "task": args.eval_task,
        **result,
        "n_train": len(train_src),
        "n_test": len(test_src),
        "ckpt": ckpt_path,
        "recipe": cfg.recipe,
        "model": cfg.model.name,
        "method": cfg.method.name,
        "image_size": cfg.data.image_size,
        "device": str(device),
        "seconds": round(time.perf_counter() - start, 3),
    }
    return summary, line
