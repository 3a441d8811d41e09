"""Regenerate the measured figures that README.md and benchmarks/README.md quote, one group at a time.

    python benchmarks/readme_figures.py --list                       # groups, sections, commands, time
    python benchmarks/readme_figures.py --only quickstart            # run one group (or a,b,...)
    python benchmarks/readme_figures.py --only strategies --dry-run  # print its commands, run nothing
    python benchmarks/readme_figures.py --data ../shared/data        # every group: about 7 h on 2 cores

A group is the set of existing commands (benchmarks/*.py scripts, `fastssl` subcommands) whose
output one README table or sentence quotes; this file only names them, it measures nothing itself.
Each run writes `runs/readme_figures/<UTC timestamp>/`: `summary.md` (date, hardware, load average
at start and end, versions, commit, then each group's commands, exit status, time and output tail)
and one folder per group holding each command's log and the CSV/JSON/markdown it wrote. The tracked
`benchmarks/results/` change only with `--update-results`, which hands the commands the tracked
paths they already accept (`--csv`, `--out`) and runs the scripts that write there by default from
the checkout. Data sets come from `--data` (a copy of ../shared/data); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fastssl.registry import Registry  # noqa: E402

# The project's registry, not fastssl.registry.BENCHMARKS: that one is the list of `fastssl bench`
# subcommands (its entries become argparse parsers), while a figure group is a list of commands.
# `meta`: feeds ((file, heading, quoted text), ...), data (folders under --data), minutes (2-core CPU).
FIGURES: Registry = Registry("figure group", "--only", __name__)
README = "README.md"
BENCH_README = "benchmarks/README.md"


@dataclass(frozen=True)
class Ctx:
    """Where a group's commands read data and write results; placeholders under --list."""

    data: str
    out: str
    update: bool

    def tracked(self, name: str) -> str:
        """A results file: the committed one under --update-results, else one in the group folder."""
        return f"benchmarks/results/{name}" if self.update else f"{self.out}/{name}"

    def own(self, name: str) -> str:
        """A file with no committed copy (the README quotes it by hand): always the group folder."""
        return f"{self.out}/{name}"


# lightly's CIFAR-10 SimCLR example (torchvision ResNet-18, batch 256, SGD 0.06, 32 px) in fastssl.
LIGHTLY = ("--train.time_budget= --train.epochs=0 --model.name=resnet18 --data.image_size=32 "
           "--train.batch_size=256 --method.temperature=0.5 --method.proj_hidden_dim=512 --method.proj_dim=128 "
           "--method.proj_last_bn=false --optim.name=sgd --optim.base_lr=0.06 --optim.momentum=0 "
           "--optim.weight_decay=0 --optim.warmup_epochs=0 --optim.min_lr_ratio=1 --aug.crop_scale_min=0.08 "
           "--aug.brightness=0.8 --aug.contrast=0.8 --aug.saturation=0.8 --aug.hue=0.2 --aug.grayscale_p=0.2")
# The encoders of the digits few-label table: NAME=run folder of benchmarks/cpu_recipes.py.
FEW_LABEL_DIGITS = {"simclr": "default", "mocov2": "mocov2-cpu", "mocov3": "mocov3-cpu", "mae": "mae-cpu",
                    "dino": "dino-cpu", "rotation": "rotation-cpu", "colorize": "colorize-cpu", "cpc": "cpc-cpu",
                    "swav": "swav-cpu"}
# The 2-minute sweep that chose cifar10-cpu (24 px, batch 128 are the recipe's own values).
TTA_SWEEP = {"simclr-16": "--data.image_size=16 --train.batch_size=256",
             "simclr-24": "--data.image_size=24 --train.batch_size=256",
             "simclr-32": "--data.image_size=32 --train.batch_size=256",
             "byol-24": "--data.image_size=24 --train.batch_size=256 --method.name=byol --method.proj_dim=128 "
                        "--method.pred_hidden_dim=512 --method.momentum_base=0.99",
             "mocov2-24": "--data.image_size=24 --train.batch_size=256 --method.name=mocov2 "
                          "--method.queue_size=4096 --method.momentum_base=0.99 --method.momentum_final=0.99 "
                          "--method.shuffle_bn_groups=4",
             "simclr-24-bs128": ""}
STEP = "fastssl bench step --strategy ddp"
MESH = "torchrun --standalone --nproc_per_node={n} -m fastssl bench step --no-backbone-baseline --method simclr"


@FIGURES.register("quickstart", minutes=6, data=(),
                  feeds=((README, "Set up", "kNN top-1 after training against"),))
def quickstart(c: Ctx) -> list[str]:
    return [f"python benchmarks/cpu_recipes.py --recipes default --runs {c.out}/runs"]


@FIGURES.register("cpu-recipes", minutes=140, data=(),
                  feeds=((README, "Recipes", "| recipe | steps | wall s | kNN top-1 | random init |"),
                         (README, "Few-label results", "**Built-in digits**")))
def cpu_recipes(c: Ctx) -> list[str]:
    ckpts = " ".join(f"--ckpt {name}={c.out}/runs/{run}" for name, run in FEW_LABEL_DIGITS.items())
    return [f"python benchmarks/cpu_recipes.py --runs {c.out}/runs",
            f"fastssl report few-label {ckpts} --labels-per-class 2,5,20 --seeds 0 --steps 200 "
            f"--out {c.tracked('few_label_digits')}"]


@FIGURES.register("time-to-accuracy", minutes=55, data=("cifar10",),
                  feeds=((README, "Time to accuracy on a 2-core CPU",
                          "| budget | steps (batch 128) | training s | wall s (start to exit) | kNN top-1 |"),
                         (BENCH_README, "Time to accuracy:", "runs `fastssl train --recipe cifar10-cpu")))
def time_to_accuracy(c: Ctx) -> list[str]:
    return [f"python benchmarks/time_to_accuracy.py --data {c.data}/cifar10 --budgets 2m,5m,10m,30m "
            f"--random-init --runs {c.out}/runs"]


@FIGURES.register("lightly", minutes=8, data=("cifar10",),
                  feeds=((README, "Time to accuracy on a 2-core CPU", "| steps | lightly example | `cifar10-cpu` |"),
                         (BENCH_README, "Time to accuracy:", "lightly's CIFAR-10 SimCLR example, in fastssl")))
def lightly(c: Ctx) -> list[str]:
    train = f"fastssl train --recipe cifar10-cpu --data.path {c.data}/cifar10"
    return [f"{train} {LIGHTLY} --train.max_steps={n} --train.out {c.out}/lightly-{n}" for n in (60, 182)] + \
           [f"{train} --train.time_budget= --train.epochs=0 --train.max_steps=60 --train.out {c.out}/cifar10-cpu-60"]


@FIGURES.register("budget-drift", minutes=12, data=("cifar10",),
                  feeds=((README, "Time to accuracy on a 2-core CPU",
                          "| plan | steps | training s (budget 120) | kNN top-1 |"),))
def budget_drift(c: Ctx) -> list[str]:
    return [f"python benchmarks/time_to_accuracy.py --data {c.data}/cifar10 --budgets 2m --busy 40s:2 "
            f"--name budget_drift --variant 'fixed: --train.time_budget_tolerance=0' --variant 'replan:' "
            f"--runs {c.out}/runs"]


@FIGURES.register("tta-sweep", minutes=24, data=("cifar10",),
                  feeds=((BENCH_README, "Time to accuracy:", "| variant | px | batch | steps | kNN top-1 |"),))
def tta_sweep(c: Ctx) -> list[str]:
    variants = " ".join(f"--variant {shlex.quote(f'{name}: {flags}')}" for name, flags in TTA_SWEEP.items())
    return [f"python benchmarks/time_to_accuracy.py --data {c.data}/cifar10 --budgets 2m --name tta_sweep "
            f"{variants} --runs {c.out}/runs"]


@FIGURES.register("time-budgets", minutes=48, data=("cifar10",),
                  feeds=((README, "CLI reference",
                          "| budget | recipe | first plan | steps run (re-plans) | training s | target s |"),))
def time_budgets(c: Ctx) -> list[str]:
    cifar = f"--recipe cifar10-cpu --data.path {c.data}/cifar10"
    runs = {"default-30s": "--train.time_budget=30s", "default-1m": "--train.time_budget=1m",
            "cifar10-cpu-1m": f"{cifar} --train.time_budget=1m",
            "default-40s-knn15s": "--train.time_budget=40s --eval.knn_every=15s",
            "default-10m": "--train.time_budget=10m --train.knn_at_end=false",
            "cifar10-cpu-30m": f"{cifar} --train.time_budget=30m"}
    return [f"fastssl train {flags} --train.progress=false --train.out {c.out}/{name}" for name, flags in runs.items()]


@FIGURES.register("few-label-cifar10", minutes=45, data=("cifar10",),
                  feeds=((README, "Few-label results", "**CIFAR-10**"),))
def few_label_cifar10(c: Ctx) -> list[str]:
    return [f"fastssl train --recipe cifar10-cpu --data.path {c.data}/cifar10 --train.time_budget=10m "
            f"--train.progress=false --train.out {c.out}/cifar10-cpu-10m",
            f"fastssl report few-label --ckpt simclr={c.out}/cifar10-cpu-10m --labels-per-class 2,5,20 --seeds 0 "
            f"--steps 200 --out {c.tracked('few_label_cifar10')}"]


@FIGURES.register("strategies", minutes=6, data=(),
                  feeds=((README, "Scaling out", "| strategy | weights MiB | gradients MiB | optimizer MiB |"),))
def strategies(c: Ctx) -> list[str]:
    return ["torchrun --standalone --nproc_per_node=2 -m fastssl bench step --strategy ddp,fsdp,zero1,zero2,zero3 "
            f"--model vit_small --image-size 32 --patch-size 16 --batch 8 --csv {c.tracked('step.csv')}"]


def _mesh(c: Ctx, model: str, ddp_ranks: int) -> list[str]:
    args = (f"--model {model} --image-size 32 --patch-size 16 --batch 8 --optim adamw --warmup 2 --repeats 1 "
            f"--set train.activation_checkpointing=true --csv {c.tracked('step.csv')}")
    return [f"{MESH.format(n=ddp_ranks)} --strategy ddp {args}",
            f"{MESH.format(n=4)} --strategy fsdp --no-ddp-baseline --dp-shard 4 {args}",
            f"{MESH.format(n=4)} --strategy fsdp --no-ddp-baseline --dp-replicate 2 {args}"]


@FIGURES.register("dp-mesh", minutes=8, data=(),
                  feeds=((README, "Scaling out", "**A 2-D data-parallel mesh (HSDP).**"),
                         (BENCH_README, "Data-parallel mesh:", "| model | strategy (R x S) |")))
def dp_mesh(c: Ctx) -> list[str]:
    return _mesh(c, "vit_small", 4)


@FIGURES.register("dp-mesh-large", minutes=20, data=(),
                  feeds=((BENCH_README, "Data-parallel mesh:", "| vit_large | FSDP full shard (1 x 4) |"),))
def dp_mesh_large(c: Ctx) -> list[str]:
    # DDP on 2 ranks: 4 DDP copies of vit_large's state (5.6 GiB each) do not fit in 24 GiB.
    return _mesh(c, "vit_large", 2)


@FIGURES.register("grad-accum", minutes=10, data=(),
                  feeds=((README, "Scaling out", "benchmarks/results/grad_accum_memory.md)"),))
def grad_accum(c: Ctx) -> list[str]:
    return [f"MALLOC_MMAP_THRESHOLD_=131072 OMP_NUM_THREADS=1 {STEP} --method simclr --model vit_small "
            f"--image-size 32 --patch-size 8 --batch 128 --optim adamw --grad-accum {k} --threads 1 "
            f"--no-backbone-baseline --warmup 2 --repeats 1 --csv {c.own('grad_accum.csv')}" for k in (1, 4, 16)]


@FIGURES.register("startup-index", minutes=15, data=(),
                  feeds=((README, "Your own data", "benchmarks/results/startup_index.md)"),))
def startup_index(c: Ctx) -> list[str]:
    return [f"python benchmarks/startup_index.py --images 1000000 --classes 1000 "
            f"--out {c.tracked('startup_index.md')}"]


@FIGURES.register("loader-webdataset", minutes=8, data=("cifar10", "imagenet-sample"),
                  feeds=((README, "Your own data", "benchmarks/results/loader_webdataset.md)"),))
def loader_webdataset(c: Ctx) -> list[str]:
    # From ../shared/data (2,048 CIFAR-10 images; the ImageNet sample), converted without re-encoding.
    convert = [f"fastssl data convert {src} {c.out}/{fmt}{px} --to {to} --limit {n}"
               for src, px, n in ((f"{c.data}/cifar10/train-0.npz", 32, 2048), (f"{c.data}/imagenet-sample", 256, 512))
               for fmt, to in (("npz", "npz"), ("wds", "webdataset"))]
    loader = "fastssl bench loader --backend torch,dali-cpu --repeats 3 --workers 2"
    csv = c.own("loader_webdataset.csv")
    return convert + [f"{loader} --data {c.out}/npz{px},{c.out}/wds{px} --image-size {size} {sizes} --csv {csv}"
                      for px, size, sizes in ((32, 32, "--batch 64 --steps 8"), (256, 224, "--batch 32 --steps 4"))]


@FIGURES.register("bench-loss", minutes=12, data=(),
                  feeds=((BENCH_README, "Loss:", "| case | provider | 2N | d | dtype |"),))
def bench_loss(c: Ctx) -> list[str]:
    return [f"fastssl bench loss --csv {c.tracked('loss.csv')}",
            f"fastssl bench loss --sizes 8192,65536 --providers torch,chunked --csv {c.tracked('loss.csv')}"]


@FIGURES.register("bench-backbone", minutes=4, data=(),
                  feeds=((BENCH_README, "Backbones:", "| model | px | size from | batch | amp |"),))
def bench_backbone(c: Ctx) -> list[str]:
    return [f"fastssl bench backbone --csv {c.tracked('backbone.csv')}"]


@FIGURES.register("bench-loader", minutes=3, data=("cifar10", "imagenet-sample"),
                  feeds=((BENCH_README, "Loaders:", "| backend | px | data | batch | workers | images/s |"),))
def bench_loader(c: Ctx) -> list[str]:
    loader = "fastssl bench loader --backend torch,dali-cpu,gpu-tensor"
    csv = c.tracked("loader.csv")
    return [f"{loader} --data {c.data}/imagenet-sample --csv {csv}",
            f"{loader} --data {c.data}/cifar10 --image-size 32 --batch 256 --limit 10000 --csv {csv}"]


@FIGURES.register("step-overhead", minutes=4, data=(),
                  feeds=((BENCH_README, "Training step:", "| method | backbone | SSL step images/s |"),))
def step_overhead(c: Ctx) -> list[str]:
    models = {"resnet-tiny": "", "vit_tiny": " --patch-size 4"}
    return [f"{STEP} --method {m} --model {name}{patch} --image-size 16 --batch 32 --repeats 10 "
            f"--set method.proj_hidden_dim=256 method.proj_dim=64 --csv {c.own('step_overhead.csv')}"
            for m in ("simclr", "byol") for name, patch in models.items()]


def commands(name: str, ctx: Ctx) -> list[str]:
    return FIGURES.get(name)(ctx)


def argv_of(command: str) -> tuple[dict[str, str], list[str]]:
    """`A=1 python benchmarks/x.py ...` -> ({"A": "1"}, argv run here): `python`, `fastssl` and
    `torchrun` become this interpreter, and benchmarks/ scripts their path in this checkout."""
    words = shlex.split(command)
    env = {}
    while "=" in words[0] and not words[0].startswith("-"):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    program = {"python": [sys.executable], "fastssl": [sys.executable, "-m", "fastssl"],
               "torchrun": [sys.executable, "-m", "torch.distributed.run"]}[words[0]]
    rest = [str(REPO / w) if w.startswith("benchmarks/") and w.endswith(".py") else w for w in words[1:]]
    return env, program + rest


@dataclass(frozen=True)
class Result:
    command: str
    rc: int
    seconds: float
    log: str


def machine() -> dict:
    """The header's facts: the harness's provenance (the same fields as every benchmark row) + RAM."""
    from fastssl.bench.harness import Provenance

    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {**asdict(Provenance.collect()), "ram_gib": round(ram, 1)}


def header(m: dict, load_start: tuple, load_end: tuple) -> list[str]:
    def load(x: tuple) -> str:
        return " / ".join(f"{v:.1f}" for v in x)

    return ["# README figures", "",
            f"- date (UTC): {m['date']}",
            f"- hardware: {m['cpu_model']}, {m['cpu_cores']} cores, {m['ram_gib']} GiB RAM, "
            f"GPU: {m['gpu_name'] or 'none'}",
            f"- load average (1 / 5 / 15 min): {load(load_start)} at start, {load(load_end)} at end",
            f"- python {m['python']}, torch {m['torch']} ({m['torch_threads']} threads), "
            f"triton {m['triton'] or '-'}, DALI {m['dali'] or '-'}",
            f"- commit {m['commit']}", ""]


def group_section(name: str, ctx: Ctx, results: list[Result], tail_lines: int = 25) -> list[str]:
    feeds = "; ".join(f"{f} \"{h}\"" for f, h, _ in FIGURES.entry(name).meta["feeds"])
    lines = [f"## {name}", "", f"Feeds {feeds}.", "", "| # | command | exit | seconds |", "|---:|---|---:|---:|"]
    lines += [f"| {i} | `{r.command}` | {r.rc} | {r.seconds:.0f} |" for i, r in enumerate(results, 1)]
    out = Path(ctx.out)
    written = sorted(str(p.relative_to(out)) for ext in ("csv", "json", "md") for p in out.rglob(f"*.{ext}"))
    lines += ["", f"Files in {out}: " + (", ".join(f"`{w}`" for w in written) or "none"), ""]
    if ctx.update:
        lines += ["Tracked results written under benchmarks/results/ (`git status benchmarks/results`).", ""]
    if results:
        tail = Path(results[-1].log).read_text(errors="replace").splitlines()[-tail_lines:]
        lines += [f"Last {len(tail)} lines of command {len(results)}:", "", "```text", *tail, "```", ""]
    return lines


def run_group(name: str, ctx: Ctx, cwd: Path) -> list[Result]:
    """The group's commands in order; the first failure stops it (later ones read what it wrote)."""
    out = Path(ctx.out)
    out.mkdir(parents=True, exist_ok=True)
    # `-m fastssl` from the group folder must import this checkout, as the scripts do.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    results = []
    for i, command in enumerate(commands(name, ctx), 1):
        extra, argv = argv_of(command)
        log = out / f"{i:02d}.log"
        print(f"[{name} {i}] {command}", flush=True)
        t0 = time.perf_counter()
        with open(log, "w") as f:
            f.write(f"$ {command}\n")
            f.flush()
            rc = subprocess.run(argv, cwd=cwd, env={**env, **extra}, stdout=f, stderr=subprocess.STDOUT).returncode
        results.append(Result(command, rc, time.perf_counter() - t0, str(log)))
        print(f"[{name} {i}] exit {rc} after {results[-1].seconds:.0f} s (log {log})", flush=True)
        if rc:
            break
    return results


def print_list(names: list[str]) -> None:
    ctx = Ctx("DATA", "OUT", update=False)
    for name in names:
        meta = FIGURES.entry(name).meta
        data = ", ".join(f"DATA/{d}" for d in meta["data"]) or "none (built-in digits or synthetic)"
        print(f"{name}  (~{meta['minutes']} min on a 2-core CPU; data: {data})")
        for file, heading, _ in meta["feeds"]:
            print(f"  feeds {file} \"{heading}\"")
        for command in commands(name, ctx):
            print(f"  $ {command}")
    total = sum(FIGURES.entry(n).meta["minutes"] for n in names)
    print(f"{len(names)} groups, ~{total} min ({total / 60:.1f} h) in all; OUT: runs/readme_figures/<UTC time>/<group>")


def selected(only: str) -> list[str]:
    names = [n.strip() for n in only.split(",") if n.strip()]
    for n in names:
        FIGURES.entry(n)  # an unknown name fails here, naming the closest group
    return names or FIGURES.names()


def missing_data(names: list[str], data: Path) -> list[str]:
    return [str(data / d) for n in names for d in FIGURES.entry(n).meta["data"] if not (data / d).is_dir()]


def run(names: list[str], args: argparse.Namespace) -> int:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    root = Path(args.out or f"runs/readme_figures/{stamp}").resolve()
    data = Path(args.data).resolve()
    ctxs = {n: Ctx(str(data), str(root / n), args.update_results) for n in names}
    # Scripts that write benchmarks/results/ relative to their directory run in the group folder,
    # unless the tracked results are to be updated.
    cwd = {n: REPO if args.update_results else Path(ctxs[n].out) for n in names}
    if args.dry_run:
        for n in names:
            print(f"# {n} (in {cwd[n]})")
            print("\n".join(commands(n, ctxs[n])))
        return 0
    if missing := missing_data(names, data):
        print(f"readme_figures: error: {', '.join(missing)} not found; pass --data PATH (a copy of ../shared/data)",
              file=sys.stderr)
        return 2
    root.mkdir(parents=True, exist_ok=True)
    m, load_start, body, failed = machine(), os.getloadavg(), [], []
    for n in names:
        results = run_group(n, ctxs[n], cwd[n])
        failed += [n] if not results or results[-1].rc else []
        body += group_section(n, ctxs[n], results)
        # Rewritten after every group, so a run stopped midway keeps what it measured.
        (root / "summary.md").write_text("\n".join(header(m, load_start, os.getloadavg()) + body) + "\n")
    print(f"wrote {root / 'summary.md'}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--list", action="store_true", help="groups, the README sections they feed, commands, time")
    p.add_argument("--only", default="", metavar="A,B", help="run these groups (default: all)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--data", default="../shared/data", help="the shared data folder (cifar10/, imagenet-sample/)")
    p.add_argument("--out", default="", help="default: runs/readme_figures/<UTC timestamp>/")
    p.add_argument("--update-results", action="store_true",
                   help="write the tracked benchmarks/results/ files instead of the run folder")
    args = p.parse_args(argv)
    from fastssl.errors import FastSSLError

    try:
        names = selected(args.only)
    except FastSSLError as e:
        print(f"readme_figures: error: {e}", file=sys.stderr)
        return 2
    if args.list:
        print_list(names)
        return 0
    return run(names, args)


if __name__ == "__main__":
    raise SystemExit(main())
