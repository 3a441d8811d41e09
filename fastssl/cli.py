"""The `fastssl` command line.

    fastssl train [--recipe NAME] [--resume] [--section.key=value ...]
    fastssl eval {knn,linear,finetune,plot} --ckpt RUN_OR_PT | --random-init ...
    fastssl selftrain --ckpt RUN --labels-per-class N [--rounds R]
    fastssl report few-label --ckpt NAME=RUN ... [--labels-per-class 2,5,20]
    fastssl recipes
    fastssl config [--recipe NAME] [--keys] [--section.key=value ...]
    fastssl export --ckpt RUN --out backbone.pt
    fastssl data convert ...
    fastssl bench {loss,loader,backbone} ...

Run under torchrun for several processes: `torchrun --nproc_per_node=2 -m fastssl train ...`.
User errors print one line, `fastssl: error: ...`, and exit with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

from pathlib import Path

from fastssl.config import Config, apply_overrides, format_config, set_values, validate
from fastssl.config.key_help import key_lines
from fastssl.config.files import read_config_file, save_config
from fastssl.errors import FastSSLError, environment_error

# What to change when a command runs out of memory; commands without their own knob get the last.
_OOM_FIXES = {
    "train": "lower --train.batch_size, or set --train.activation_checkpointing=true (ViT blocks, ResNet stages)",
    "eval": "lower --batch-size",
}
_OOM_FIX_OTHER = "use a smaller batch or a machine with more memory"


def resolve_config(recipe: str | None, overrides: list[str], config_file: str | None = None,
                   base: Config | None = None) -> Config:
    """`base` (a run's saved config, on resume) or the recipe (--recipe, else the one the config file
    names, else "default"), then the config file's keys (a full or partial config), then the command
    line's overrides."""
    from fastssl.recipes import get_recipe

    file_recipe, file_keys = read_config_file(config_file) if config_file else (None, {})
    cfg = base if base is not None else get_recipe(recipe or file_recipe or "default")
    set_values(cfg, file_keys.items())
    return apply_overrides(cfg, overrides)


def _cmd_train(args: argparse.Namespace, rest: list[str]) -> int:
    from fastssl.train.run_dir import saved_config
    from fastssl.train.trainer import train

    # --out is --train.out, applied after every other source (a later --train.out loses to it).
    rest = rest + ([f"--train.out={args.out}"] if args.out else [])
    cfg = resolve_config(args.recipe, rest, args.config)
    if args.resume:
        # A resume continues the run as it was configured: its saved config, changed only by the
        # flags on this command line (the run folder reports each change as `key: old -> new`).
        base = saved_config(cfg.train.out)
        if base is not None:
            if args.recipe and args.recipe != base.recipe:
                raise FastSSLError(f"--recipe {args.recipe} differs from the recipe of the run in {cfg.train.out} "
                                   f"({base.recipe}); a resume keeps its run's config: drop --recipe")
            cfg = resolve_config(None, rest, args.config, base=base)
        cfg.train.resume = True
    if args.overwrite:
        cfg.train.overwrite = True
    if args.json:  # stdout carries the JSON alone; what the run prints goes to stderr
        stdout = sys.stdout
        with contextlib.redirect_stdout(sys.stderr):
            summary = train(cfg)
        print(json.dumps(summary), file=stdout, flush=True)
    else:
        summary = train(cfg)
    return int(summary.get("exit_status", 0))


def _cmd_recipes(args: argparse.Namespace, rest: list[str]) -> int:
    from fastssl.recipes import RECIPES

    configs = {name: fn() for name, fn in RECIPES.items()}
    # Columns as wide as their longest entry, so long names (deepcluster-resnet50-imagenet) align.
    wr = max(len("recipe"), *map(len, configs))
    wm = max(len("method"), *(len(c.method.name) for c in configs.values()))
    wb = max(len("model"), *(len(c.model.name) for c in configs.values()))
    print(f"{'recipe':<{wr}} {'method':<{wm}} {'model':<{wb}} {'data':<8} {'size':>4} {'batch':>6} {'length':>7}  summary")
    for name, c in configs.items():
        doc = (RECIPES[name].__doc__ or "").strip().splitlines()[0]
        length = c.train.time_budget or f"{c.train.epochs} ep"
        print(f"{name:<{wr}} {c.method.name:<{wm}} {c.model.name:<{wb}} {c.data.dataset:<8} {c.data.image_size:>4} "
              f"{c.train.batch_size:>6} {length:>7}  {doc}")
    return 0


def _cmd_config(args: argparse.Namespace, rest: list[str]) -> int:
    cfg = resolve_config(args.recipe, rest, args.config)
    if args.keys:
        print("\n".join(key_lines(cfg)))
        return 0
    validate(cfg)  # the same checks `train` makes before any work
    if args.save:
        save_config(cfg, args.save)
        print(f"fastssl: wrote {args.save}; train it with: fastssl train --config {args.save}", file=sys.stderr)
        return 0
    print(cfg.to_json() if args.json else format_config(cfg))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastssl", description="Self-supervised pretraining of vision encoders.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="pretrain an encoder", description="Pretrain; any --section.key=value overrides the recipe.")
    t.add_argument("--recipe", default=None, help="named config to start from (see `fastssl recipes`; default: default)")
    t.add_argument("--config", help="YAML or JSON config (full or partial) applied over the recipe, before overrides")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --train.out from its newest checkpoint, with its saved config; "
                        "flags given here change only their own keys")
    t.add_argument("--overwrite", action="store_true",
                   help="clear --train.out's checkpoints, metrics and config, then start afresh")
    t.add_argument("--out", help="run folder; the same as --train.out")
    t.add_argument("--json", action="store_true", help="print the final summary as JSON")
    t.set_defaults(func=_cmd_train)

    r = sub.add_parser("recipes", help="list the named recipes")
    r.set_defaults(func=_cmd_recipes)

    c = sub.add_parser("config", help="print a resolved config or the valid keys")
    c.add_argument("--recipe", default=None, help="named config to start from (default: the config file's, else default)")
    c.add_argument("--config", help="YAML or JSON config (full or partial) applied over the recipe")
    c.add_argument("--keys", action="store_true", help="list every section.key with its value and help")
    c.add_argument("--save", help="write the resolved config to this .yaml (commented) or .json file")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_cmd_config)

    _add_module_parsers(sub)
    return p


def _add_module_parsers(sub) -> None:
    """Subcommands whose logic lives beside what they drive register their own arguments."""
    from fastssl.bench.commands import add_parser as add_bench
    from fastssl.checkpoint.export import add_parser as add_export
    from fastssl.data.tools.convert import add_parser as add_data
    from fastssl.eval.commands import add_parser as add_eval
    from fastssl.eval.selftrain_command import add_parser as add_selftrain
    from fastssl.report.commands import add_parser as add_report

    add_eval(sub)
    add_selftrain(sub)
    add_report(sub)
    add_export(sub)
    add_data(sub)
    add_bench(sub)


# Subcommands whose handlers take argparse args only (no free-form overrides).
_NO_OVERRIDES = ("eval", "export", "data", "bench", "selftrain", "report")


def _error(message: str) -> None:
    """The one error line; under torchrun only rank 0 prints it (every rank hits the same check, so
    the others would repeat it), and every rank exits with the same status."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"fastssl: error: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = None
    try:
        args, rest = parser.parse_known_args(argv)
        if args.command in _NO_OVERRIDES:
            if rest:
                parser.error(f"unrecognized arguments: {' '.join(rest)}")
            return int(args.func(args) or 0)
        return int(args.func(args, rest) or 0)
    except FastSSLError as e:
        _error(str(e))
        return 2
    except (OSError, MemoryError, RuntimeError) as e:
        # A full disk, a read-only folder or too little memory is the machine's, not a bug: one line.
        mapped = environment_error(e, _OOM_FIXES.get(getattr(args, "command", ""), _OOM_FIX_OTHER))
        if mapped is None:
            raise
        _error(mapped)
        return 2


if __name__ == "__main__":
    sys.exit(main())
