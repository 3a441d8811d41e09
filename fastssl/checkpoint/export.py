"""`fastssl export`: a checkpoint's backbone as a plain state_dict with timm's key names.

    fastssl export --ckpt runs/byol --out backbone.pt            # the online backbone
    fastssl export --ckpt runs/byol --out teacher.pt --weights ema  # its EMA target (BYOL, MoCo, DINO)

Reads a checkpoint of any strategy and world size on one process (no process group, no GPU) and
writes `{timm key: tensor}`: the trunk's keys with the `backbone.trunk.` prefix stripped, so that
`timm.create_model(name, num_classes=0).load_state_dict(sd, strict=False)` loads the trunk.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch

from fastssl.errors import FastSSLError


def _trunk_prefix(path: str | Path, weights: str) -> str:
    if weights == "online":
        return "model.backbone.trunk."
    from fastssl.checkpoint.pretrained import read_config
    from fastssl.methods import build_method

    cfg = read_config(path)
    method = build_method(cfg)
    names = {id(m): n for n, m in method.named_modules()}
    for online, target in method.momentum_pairs():
        if online is method.backbone:
            return f"model.{names[id(target)]}.trunk."
    raise FastSSLError(f"method {cfg.method.name} keeps no EMA copy of its backbone; use --weights online")


def export_backbone(ckpt: str | Path, out: str | Path, weights: str = "online") -> dict[str, Any]:
    from fastssl.checkpoint.dcp_io import read_tensors, read_train_state

    state = read_train_state(ckpt)
    tensors = read_tensors(state["path"], _trunk_prefix(state["path"], weights))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    torch.save(tensors, tmp)
    os.replace(tmp, out)
    n_params = sum(t.numel() for k, t in tensors.items() if t.is_floating_point())
    return {"out": str(out), "ckpt": state["path"], "step": state["step"], "model": state["config"]["model"]["name"],
            "weights": weights, "tensors": len(tensors), "numel": n_params}


def _run(args: argparse.Namespace) -> int:
    info = export_backbone(args.ckpt, args.out, args.weights)
    if args.json:
        print(json.dumps(info))
    else:
        print(f"fastssl: wrote {info['tensors']} tensors ({info['numel']:,} values) of the {info['weights']} "
              f"{info['model']} trunk at step {info['step']} to {info['out']}")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("export", help="write a checkpoint's backbone as a plain timm state_dict",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, metavar="RUN", help="run folder (its newest checkpoint) or checkpoints/step_* folder")
    p.add_argument("--out", required=True, help="output .pt file")
    p.add_argument("--weights", choices=("online", "ema"), default="online",
                   help="the trained backbone, or its EMA target (teacher) where the method keeps one")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=_run)
    return p
