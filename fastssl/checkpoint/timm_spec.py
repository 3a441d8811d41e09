"""How to rebuild a registered backbone outside fastssl: timm's architecture name and arguments.

    backbone_spec("vit_nano", image_size=32, patch_size=4)
    # {"model": "vit_nano", "architecture": "vit_tiny_patch16_224", "custom": False, "stem": None,
    #  "img_size": 32, "patch_size": 4, "model_args": {"num_classes": 0, "img_size": 32, ...}}

A backbone timm builds from its name and `model_args` alone is "timm"; the others are "custom"
(`resnet-tiny`, whose widths no timm name has, and the CIFAR stem, a 3x3 stride-1 conv without
max-pool that timm's ResNet cannot express) and are rebuilt by `fastssl.load_backbone`.
The spec is read from the backbone tables in fastssl/models/backbone.py, so a new row is covered.
"""

from __future__ import annotations

from typing import Any

from fastssl.registry import BACKBONES


def backbone_spec(name: str, image_size: int, patch_size: int) -> dict[str, Any]:
    """What rebuilds `--model.name=name` at this image and patch size (JSON-serializable)."""
    from fastssl.models.backbone import _RESNETS, _VITS

    family = BACKBONES.entry(name).meta["family"]
    spec: dict[str, Any] = {"model": name, "family": family}
    if family == "resnet":
        arch, cifar = _RESNETS[name]
        # resnet-tiny's builder is named "tiny": no timm architecture has its widths.
        custom = cifar or arch == "tiny"
        spec.update(architecture=name if arch == "tiny" else arch, custom=custom,
                    stem="cifar" if cifar else "imagenet", img_size=image_size, patch_size=None,
                    model_args={"num_classes": 0})
        return spec
    row = _VITS[name]
    # vit_nano is vit_tiny_patch16_224 with its width/depth/heads overridden: create_model passes
    # the keyword arguments through to VisionTransformer, after the named defaults.
    arch, overrides = ("vit_tiny_patch16_224", dict(row)) if isinstance(row, dict) else (row, {})
    model_args = {"num_classes": 0, "img_size": image_size, "patch_size": patch_size, **overrides,
                  # fastssl trains with it (DINO's local crops); it also lets the rebuilt model take
                  # other multiples of the patch size, as the trained one does.
                  "dynamic_img_size": True}
    spec.update(architecture=arch, custom=False, stem=None, img_size=image_size, patch_size=patch_size,
                model_args=model_args)
    return spec


def _py(value: Any) -> str:
    return repr(value) if not isinstance(value, str) else f'"{value}"'


def create_model_call(spec: dict[str, Any], weights_file: str) -> str:
    """The one `timm.create_model(...)` expression that rebuilds a timm backbone with the export's weights."""
    args = ", ".join(f"{k}={_py(v)}" for k, v in spec["model_args"].items())
    return (f'timm.create_model("{spec["architecture"]}", pretrained=True, '
            f'pretrained_cfg_overlay=dict(file="{weights_file}"), {args})')


def load_backbone_call(path: str) -> str:
    """The call that rebuilds any backbone, custom ones included, from an export or checkpoint."""
    return f'fastssl.load_backbone("{path}")'
