"""`fastssl export`: a checkpoint's backbone as weights plus the config that rebuilds them anywhere.

    fastssl export --ckpt runs/byol --out backbone.pt                 # backbone.pt + backbone.config.json
    fastssl export --ckpt runs/byol --out teacher.pt --weights ema    # its EMA target (BYOL, MoCo, DINO)
    fastssl export --ckpt runs/byol --out byol-vit --format hf        # a folder timm loads (hf-hub:, local-dir:)

Reads a checkpoint of any strategy and world size on one process (no process group, no GPU).
The weights are `{timm key: tensor}` (the `backbone.trunk.` prefix stripped). The sidecar
`<out stem>.config.json` (the `config.json` of the hf folder) is in timm's `pretrained_cfg` layout
(architecture, num_features, model_args, pretrained_cfg) plus a `fastssl` block: model name,
img_size, patch_size, stem, whether the backbone is custom, and the run it came from.
The export prints the exact `timm.create_model(...)` call that loads it; backbones timm cannot
build by name (`resnet-tiny`, the CIFAR stem) are rebuilt by `fastssl.load_backbone(path)`.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch

from fastssl.checkpoint.layout import is_single_file_checkpoint
from fastssl.checkpoint.timm_spec import backbone_spec, create_model_call, load_backbone_call
from fastssl.errors import FastSSLError

SIDECAR_SUFFIX = ".config.json"
HF_WEIGHTS = "model.safetensors"


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


def _build(spec: dict[str, Any], tensors: dict[str, torch.Tensor], where: str):
    from fastssl.models.backbone import build_backbone

    backbone = build_backbone(spec["model"], spec["img_size"], spec["patch_size"] or 16)
    try:
        backbone.trunk.load_state_dict(tensors, strict=True)
    except RuntimeError:
        raise FastSSLError(f"{where}'s weights do not fit a {spec['model']} backbone; "
                           f"it was written by another fastssl version") from None
    return backbone.eval()


def _read_checkpoint(ckpt: str | Path, weights: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(trunk tensors, spec with the run's provenance) of a run folder or checkpoint."""
    from fastssl.checkpoint.dcp_io import read_tensors, read_train_state

    state = read_train_state(ckpt)
    cfg = state["config"]
    spec = backbone_spec(cfg["model"]["name"], cfg["data"]["image_size"], cfg["model"]["patch_size"])
    spec.update(method=cfg["method"]["name"], dataset=cfg["data"]["dataset"], data_path=cfg["data"]["path"],
                step=state["step"], weights=weights, checkpoint=state["path"])
    return read_tensors(state["path"], _trunk_prefix(state["path"], weights)), spec


def _read_export(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, spec) of a file export (with its sidecar) or an hf folder."""
    config = path / "config.json" if path.is_dir() else path.with_suffix(SIDECAR_SUFFIX)
    if not config.is_file():
        raise FastSSLError(f"{path} has no {config.name} beside it; export it again with `fastssl export`")
    spec = json.loads(config.read_text()).get("fastssl")
    if spec is None:
        raise FastSSLError(f"{config} was not written by `fastssl export`; load it with timm.create_model")
    if path.is_dir():
        from safetensors.torch import load_file

        return load_file(str(path / HF_WEIGHTS)), spec
    return torch.load(path, map_location="cpu", weights_only=True), spec


def load_backbone(source: str | Path, weights: str = "online") -> tuple[torch.nn.Module, dict[str, Any]]:
    """(Backbone in eval mode, its rebuild spec) from a run folder, checkpoint, `.pt` export or hf folder.

    Rebuilds every registered backbone, custom ones (`resnet-tiny`, CIFAR stems) included.
    `weights="ema"` reads a checkpoint's EMA target; an export holds the weights it was made with.
    """
    path = Path(source)
    # A run folder holds a config.json too (the run's), beside its checkpoints/.
    is_export = ((path.is_file() and not is_single_file_checkpoint(path))  # that one is refused by its reader
                 or ((path / "config.json").is_file() and not (path / "checkpoints").is_dir()))
    tensors, spec = _read_export(path) if is_export else _read_checkpoint(path, weights)
    return _build(spec, tensors, str(path)), spec


def _atomic(out: Path, write) -> None:
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    write(tmp)
    os.replace(tmp, out)


def _timm_config(spec: dict[str, Any], num_features: int) -> dict[str, Any]:
    """timm's config.json layout for a file export or a custom backbone (hf exports get timm's own)."""
    size = spec["img_size"]
    return {"architecture": spec["architecture"], "num_classes": 0, "num_features": num_features,
            "model_args": spec["model_args"],
            "pretrained_cfg": {"input_size": [3, size, size], "fixed_input_size": spec["family"] != "vit",
                               "num_classes": 0, "custom_load": False},
            "fastssl": spec}


def _write_file(out: Path, backbone, spec: dict[str, Any]) -> tuple[Path, str]:
    _atomic(out, lambda p: torch.save(backbone.trunk.state_dict(), p))
    sidecar = out.with_suffix(SIDECAR_SUFFIX)
    config = _timm_config(spec, backbone.num_features)
    _atomic(sidecar, lambda p: p.write_text(json.dumps(config, indent=2) + "\n"))
    return sidecar, create_model_call(spec, str(out.resolve()))


def _write_hf(out: Path, backbone, spec: dict[str, Any]) -> tuple[Path, str]:
    from fastssl.checkpoint.model_card import model_card

    out.mkdir(parents=True, exist_ok=True)
    if spec["custom"]:  # timm cannot build it, so no timm model to hand save_for_hf
        from safetensors.torch import save_file

        save_file(backbone.trunk.state_dict(), str(out / HF_WEIGHTS))
        config = _timm_config(spec, backbone.num_features)
        (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    else:
        import timm
        from timm.models._hub import save_for_hf

        model = timm.create_model(spec["architecture"], pretrained=False, **spec["model_args"])
        model.load_state_dict(backbone.trunk.state_dict(), strict=True)
        size = spec["img_size"]
        save_for_hf(model, str(out), model_args=spec["model_args"], safe_serialization=True,
                    model_config={"fastssl": spec, "pretrained_cfg": {"tag": f"fastssl_{spec['method']}"}},
                    data_config={"input_size": (3, size, size)})
    (out / "README.md").write_text(model_card(spec, backbone.num_features))
    return out / "config.json", f'timm.create_model("local-dir:{out.resolve()}", pretrained=True)'


def export_backbone(ckpt: str | Path, out: str | Path, weights: str = "online", fmt: str = "pt") -> dict[str, Any]:
    tensors, spec = _read_checkpoint(ckpt, weights)
    backbone = _build(spec, tensors, spec["checkpoint"])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    config, timm_call = (_write_hf if fmt == "hf" else _write_file)(out, backbone, spec)
    n_params = sum(t.numel() for t in tensors.values() if t.is_floating_point())
    return {"out": str(out), "config": str(config), "ckpt": spec["checkpoint"], "step": spec["step"],
            "model": spec["model"], "weights": weights, "format": fmt, "tensors": len(tensors), "numel": n_params,
            "custom": spec["custom"], "architecture": spec["architecture"], "model_args": spec["model_args"],
            "timm": None if spec["custom"] else timm_call, "fastssl": load_backbone_call(str(out.resolve()))}


def _run(args: argparse.Namespace) -> int:
    info = export_backbone(args.ckpt, args.out, args.weights, args.format)
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"fastssl: wrote {info['tensors']} tensors ({info['numel']:,} values) of the {info['weights']} "
          f"{info['model']} trunk at step {info['step']} to {info['out']} (config: {info['config']})")
    if info["custom"]:
        print(f"fastssl: {info['model']} is a custom backbone timm cannot build by name; load it with\n"
              f"  import fastssl; backbone, spec = {info['fastssl']}")
    else:
        print(f"fastssl: load it with\n  import timm; model = {info['timm']}")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("export", help="write a checkpoint's backbone with the config that rebuilds it in timm",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, metavar="RUN", help="run folder (its newest checkpoint) or checkpoints/step_* folder")
    p.add_argument("--out", required=True,
                   help="output .pt file (config beside it as <stem>.config.json), or folder with --format hf")
    p.add_argument("--weights", choices=("online", "ema"), default="online",
                   help="the trained backbone, or its EMA target (teacher) where the method keeps one")
    p.add_argument("--format", choices=("pt", "hf"), default="pt",
                   help="pt: one state_dict file; hf: a folder in timm's Hugging Face Hub layout, with a model card")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=_run)
    return p
