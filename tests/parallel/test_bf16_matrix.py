"""`--train.precision=bf16` on CPU runs each engine's CUDA bf16 path, for every EMA / queue / centre method.

The matrix: DDP (autocast bf16), FSDP2 (`MixedPrecisionPolicy(param bf16, reduce fp32)`) and
DeepSpeed ZeRO 1/2/3 (DeepSpeed's bf16 mode: bf16 module weights, fp32 master weights) x SimCLR,
BYOL, MoCo v2, DINO and MAE, 3 steps each on 2 gloo ranks. One `torch.multiprocessing` spawn per
engine config builds the engine as the trainer does (`build_engine` -> `wrap` -> `train_step`)
and loops over the methods in bf16; one more spawn runs the fp32 reference from the same initial
weights and images.

Each bf16 run must show, against one fp32 reference run (DDP; in fp32 the engines agree to 1e-4,
test_engine_equivalence.py):
- the engine's inputs in the dtype it expects: the backbone's first layer (patch embedding, stem
  convolution) receives bf16 images under DeepSpeed (its bf16 weights take no fp32 input) and
  FSDP2 (the policy casts the root's inputs), fp32 under DDP's autocast; its output is bf16 under
  all three (the compute really is bf16);
- the state accumulated across steps in fp32: every EMA accumulator (`Engine.ema_state`), DINO's
  centre and MoCo's queue after every step, and every tensor of `model_state` (the checkpoint);
  the fp32 weights the engine steps start as the method's own, not their bf16 rounding;
- the EMA target moving as far as in the fp32 run: sqrt(sum of squared displacements) within
  RATIO_TOL of fp32's (measured 0.999-1.001). An EMA kept in bf16 fails it (measured 15.4: the
  (1 - m) increments are rounded to whole bf16 units, away or up) as well as the dtype checks;
- finite losses within LOSS_RTOL = 10% of the fp32 run's at each of the 3 steps on each rank.
  Measured (largest over engines, ranks and steps): SimCLR 5.9%, BYOL 2.4%, MoCo v2 1.9%, DINO
  1.1%, MAE 0.13%. The first step (forward rounding only) is within 1%; AdamW then turns bf16
  rounding of near-zero gradients into full lr-sized steps, and SimCLR's temperature-0.1 softmax
  over 8 images magnifies the resulting change of the embedding most.

AdamW at lr 2e-3 and EMA momentum 0.99: each step moves a weight by ~2e-3, several bf16 units
(2^-8 relative: ~2e-4 at 0.05), and the EMA increment (1 - m) * 2e-3 = 2e-5 is under half a unit,
so a bf16 accumulator shows. The whole matrix (fp32 reference + 5 engines) and the CLI smoke take
~2.5 min on 2 cores.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

WORLD, N, STEPS = 2, 4, 3  # ranks, images per rank, steps
LOSS_RTOL = 0.1
RATIO_TOL = (0.8, 1.25)
EMA = ["--method.momentum_base=0.99", "--method.momentum_final=0.99"]
HEAD = ["--method.proj_hidden_dim=16", "--method.proj_dim=8"]
VIT = ["--model.name=vit_nano", "--model.patch_size=4"]
METHODS = {
    "simclr": ["--method.name=simclr", *VIT, *HEAD],
    "byol": ["--method.name=byol", "--model.name=resnet-tiny", *HEAD, "--method.pred_hidden_dim=16", *EMA],
    "mocov2": ["--method.name=mocov2", "--model.name=resnet-tiny", *HEAD, "--method.queue_size=16",
               "--method.shuffle_bn_groups=2", *EMA],
    "dino": ["--method.name=dino", *VIT, "--aug.local_crops=2", "--aug.local_size=4", "--method.out_dim=32",
             "--method.proj_hidden_dim=16", "--method.bottleneck_dim=8", "--method.center_momentum=0.5", *EMA],
    "mae": ["--method.name=mae", *VIT, "--method.decoder_dim=16", "--method.decoder_depth=1",
            "--method.decoder_heads=2"],
}
# An EMA target's parameters, by the prefix of their checkpoint names.
TARGETS = {"byol": "target_backbone.", "mocov2": "key_backbone.", "dino": "teacher_backbone."}
ENGINES = {"ddp": ["--dist.strategy=ddp"], "fsdp": ["--dist.strategy=fsdp"],
           **{f"zero{s}": ["--dist.strategy=deepspeed", f"--dist.zero_stage={s}"] for s in (1, 2, 3)}}
# What the backbone receives in bf16 (the dtype its first layer sees) and its start-line mode.
BF16_INPUT = {"ddp": torch.float32, "fsdp": torch.bfloat16, "zero1": torch.bfloat16, "zero2": torch.bfloat16,
              "zero3": torch.bfloat16}
MODE = {"ddp": "ddp autocast bf16", "fsdp": "MixedPrecisionPolicy(param bf16, reduce fp32)",
        **{f"zero{s}": f"deepspeed ZeRO-{s} bf16 (fp32 master weights)" for s in (1, 2, 3)}}


def cfg_args(method: str, engine: str, precision: str, out) -> list[str]:
    """AdamW at lr 0.064 * 8 / 256 = 2e-3: each step moves a weight by ~2e-3, 10x a bf16 unit at 0.05."""
    return [f"--train.out={out}", "--data.image_size=8", f"--train.batch_size={WORLD * N}", "--dist.backend=gloo",
            "--optim.name=adamw", "--optim.base_lr=0.064", "--optim.weight_decay=0", "--optim.clip_grad=0",
            f"--train.precision={precision}", *METHODS[method], *ENGINES[engine]]


def make_cfg(method: str, engine: str, precision: str, out):
    from fastssl.config import apply_overrides
    from fastssl.recipes import get_recipe

    return apply_overrides(get_recipe("default"), cfg_args(method, engine, precision, out))


def make_views(method_cls, cfg, rank: int) -> list[list[torch.Tensor]]:
    """STEPS x views of this rank's N images, each [N, 3, S, S], the same in every run."""
    g = torch.Generator().manual_seed(11)
    sizes = [v.size for v in method_cls.view_spec(cfg).views]
    steps = [[torch.randn(WORLD * N, 3, s, s, generator=g) for s in sizes] for _ in range(STEPS)]
    return [[v[rank * N:(rank + 1) * N] for v in views] for views in steps]


def floats(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating tensors of a model_state, whole (FSDP2's DTensors gathered: a collective)."""
    from torch.distributed.tensor import DTensor

    return {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().float().clone()
            for k, v in state.items() if v.is_floating_point()}


def run_method(method_name: str, engine_name: str, precision: str, rank: int, out) -> dict:
    """STEPS training steps through the trainer's engine path; what the checks above need."""
    from fastssl.distributed import World
    from fastssl.methods import build_method
    from fastssl.parallel.engines import build_engine
    from fastssl.train.bn_guard import BatchNormGuard
    from fastssl.train.optim import build_optimizer
    from fastssl.train.schedule import scaled_lr
    from fastssl.train.step import OK, train_step

    cfg = make_cfg(method_name, engine_name, precision, out)
    world = World(rank=rank, local_rank=rank, world_size=WORLD)
    engine = build_engine(cfg, world)
    torch.manual_seed(cfg.train.seed)
    method = build_method(cfg)
    views = make_views(type(method), cfg, rank)
    lr = scaled_lr(cfg.optim, cfg.train.batch_size)
    prefix = TARGETS.get(method_name, "-")
    exact = {n: p.detach().clone() for n, p in method.named_parameters() if p.requires_grad or n.startswith(prefix)}
    engine.wrap(method, lambda m: build_optimizer(m, cfg.optim, lr))
    method = engine.method
    method.configure_schedule(STEPS, STEPS)
    seen: dict[str, torch.dtype] = {}
    trunk = method.backbone.trunk
    stem = trunk.patch_embed if method.backbone.is_vit else trunk.conv1  # the first layer the images meet
    hook = stem.register_forward_hook(lambda _m, args, out_: seen.update(input=args[0].dtype, output=out_.dtype))
    guard = BatchNormGuard(method)
    start = floats(engine.model_state())
    # The fp32 weights the engine steps (and checkpoints) start as the method's, not their bf16 rounding.
    init_exact = all(torch.equal(start[k], exact[k]) for k in exact if k in start)
    losses, fp32_state = [], []
    for step in range(STEPS):
        res = train_step(engine, method, views[step], step, STEPS, method.epoch_of(step), lr, guard)
        assert res.status == OK, (method_name, engine_name, precision, step, res.status)
        losses.append(float(res.outputs["loss"].detach()))
        # Accumulated state: EMA accumulators, DINO's centre, MoCo's queue; checked after every step.
        fp32_state += [t.dtype for t in engine.ema_state()] + [t.dtype for t in method.fp32_state()]
    hook.remove()
    end = engine.model_state()
    result = {"losses": losses, "init_exact": init_exact, "seen": seen,
              "state_dtypes": sorted({str(d) for d in fp32_state}),
              "ckpt_dtypes": sorted({str(v.dtype) for v in end.values() if v.is_floating_point()}),
              "describe": engine.describe()}
    if method_name in TARGETS:  # how far the EMA target moved: squared, summed over its parameters
        end = floats(end)
        params = {n for n, _ in method.named_parameters() if n.startswith(prefix)}
        mine = {k: float((end[k] - start[k]).pow(2).sum()) for k in params if k in end}
        every = [{} for _ in range(WORLD)]
        dist.all_gather_object(every, mine)  # ZeRO-3's model_state: each rank holds some of them
        result["target_moved"] = sum({k: v for d in every for k, v in d.items()}.values())
    return result


def _worker(rank: int, store: str, engine_name: str, precision: str, methods: list[str], out_dir: str) -> None:
    torch.set_num_threads(1)
    for k, v in {"RANK": rank, "LOCAL_RANK": rank, "WORLD_SIZE": WORLD, "MASTER_ADDR": "127.0.0.1"}.items():
        os.environ[k] = str(v)  # as torchrun sets them (DeepSpeed reads them)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        results = {m: run_method(m, engine_name, precision, rank, os.path.join(out_dir, m)) for m in methods}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def spawn(engine_name: str, precision: str, methods: list[str], tmp_path) -> list[dict]:
    """One 2-rank spawn: {method: result} of each rank."""
    tmp_path.mkdir(parents=True, exist_ok=True)  # the file store's folder must exist, or init waits forever
    mp.spawn(_worker, args=(str(tmp_path / "store"), engine_name, precision, methods, str(tmp_path)),
             nprocs=WORLD, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]


@pytest.fixture(scope="module")
def fp32_runs(tmp_path_factory):
    """The fp32 reference, once for all engines: in fp32 they agree to 1e-4 (test_engine_equivalence.py)."""
    ranks = spawn("ddp", "fp32", list(METHODS), tmp_path_factory.mktemp("fp32"))
    for m in METHODS:
        assert ranks[0][m]["seen"] == {"input": torch.float32, "output": torch.float32}, (m, ranks[0][m]["seen"])
        assert MODE["ddp"] not in ranks[0][m]["describe"] and "ddp fp32" in ranks[0][m]["describe"]
    return ranks


def loss_rel_diff(fp32: list[dict], bf16: list[dict], method: str) -> float:
    pairs = [(a, b) for f, r in zip(fp32, bf16) for a, b in zip(f[method]["losses"], r[method]["losses"])]
    return max(abs(b - a) / abs(a) for a, b in pairs)


def check(engine_name: str, method: str, fp32: list[dict], bf16: list[dict]) -> None:
    first = bf16[0][method]
    assert MODE[engine_name] in first["describe"], first["describe"]
    assert first["seen"] == {"input": BF16_INPUT[engine_name], "output": torch.bfloat16}, (method, first["seen"])
    for r in bf16:
        b = r[method]
        assert b["state_dtypes"] in ([], ["torch.float32"]), (method, b["state_dtypes"])
        assert b["ckpt_dtypes"] == ["torch.float32"], (method, b["ckpt_dtypes"])
        assert b["init_exact"], method
        assert all(torch.isfinite(torch.tensor(b["losses"]))), (method, b["losses"])
    assert loss_rel_diff(fp32, bf16, method) < LOSS_RTOL, (method, [r[method]["losses"] for r in fp32 + bf16])
    if method in TARGETS:
        moved_fp32, moved_bf16 = fp32[0][method]["target_moved"], bf16[0][method]["target_moved"]
        assert moved_fp32 > 0
        ratio = (moved_bf16 / moved_fp32) ** 0.5
        assert RATIO_TOL[0] < ratio < RATIO_TOL[1], (method, ratio)


@pytest.mark.parametrize("engine_name", list(ENGINES))
def test_bf16_matrix(engine_name, fp32_runs, tmp_path):
    if engine_name.startswith("zero"):
        pytest.importorskip("deepspeed")
    bf16 = spawn(engine_name, "bf16", list(METHODS), tmp_path)
    print(engine_name, "loss rel. diff by step:",  # the measured differences (pytest -s)
          {m: [round(max(abs(r[m]["losses"][i] / f[m]["losses"][i] - 1) for f, r in zip(fp32_runs, bf16)), 4)
               for i in range(STEPS)] for m in METHODS})
    print({m: round((bf16[0][m]["target_moved"] / fp32_runs[0][m]["target_moved"]) ** 0.5, 4) for m in TARGETS})
    for method in METHODS:
        check(engine_name, method, fp32_runs, bf16)


def test_cli_deepspeed_bf16_start_line(tmp_path):
    """The trainer itself under torchrun: `--train.precision=bf16` on CPU is DeepSpeed's bf16 mode."""
    pytest.importorskip("deepspeed")
    run = ["--data.limit=16", "--data.num_workers=0", "--train.max_steps=2", "--train.epochs=1",
           "--train.progress=false", "--train.tensorboard=false", "--train.knn_at_end=false", "--train.log_every=1"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "fastssl",
           "train", *cfg_args("byol", "zero2", "bf16", tmp_path / "run"), *run]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    line = next((x for x in r.stdout.splitlines() if x.startswith("fastssl: strategy deepspeed")), "")
    assert MODE["zero2"] in line, r.stdout[-2000:]
    assert '"bf16": {"check_grad_overflow": true, "enabled": true}' in line, line


if __name__ == "__main__":  # python tests/parallel/test_bf16_matrix.py ENGINE [METHOD...]: print the results
    import pathlib
    import tempfile

    eng, ms = sys.argv[1], sys.argv[2:] or list(METHODS)
    with tempfile.TemporaryDirectory() as d:
        for p in ("fp32", "bf16"):
            res = spawn(eng, p, ms, pathlib.Path(d) / p)
            for m in ms:
                print(m, p, [r[m]["losses"] for r in res], {k: v for k, v in res[0][m].items() if k != "losses"})
