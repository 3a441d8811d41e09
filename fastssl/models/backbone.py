"""Backbones: timm ResNets and ViTs behind one small contract.

Every method and evaluator uses only this contract:

- `backbone(x)`: images `[N, 3, H, W]` -> pooled features `[N, num_features]`;
- `backbone.num_features`: the feature width D;
- `backbone.head`: a classifier on those features (Identity until `reset_head(num_classes)`),
  and `backbone.classify(x)` = `head(backbone(x))` for probing and fine-tuning.

Model code is single-device: no DDP, FSDP, compile or checkpointing here; `fastssl.parallel`
applies those from outside.
"""

from __future__ import annotations

import torch
from torch import nn

from fastssl.errors import FastSSLError

# name -> (timm model or builder, cifar stem)
_RESNETS = {
    "resnet18": ("resnet18", False),
    "resnet50": ("resnet50", False),
    "resnet18-cifar": ("resnet18", True),
    "resnet50-cifar": ("resnet50", True),
    # For 2-core CPUs: one BasicBlock per stage at half width, CIFAR stem. ~1.2 M parameters.
    "resnet-tiny": ("tiny", True),
}
_VITS = {
    "vit_tiny": "vit_tiny_patch16_224",
    "vit_small": "vit_small_patch16_224",
    "vit_base": "vit_base_patch16_224",
}
BACKBONES = sorted([*_RESNETS, *_VITS])


class Backbone(nn.Module):
    """A timm trunk with its classifier removed, plus a resettable head."""

    def __init__(self, trunk: nn.Module, num_features: int, name: str):
        super().__init__()
        self.trunk = trunk
        self.num_features = num_features
        self.name = name
        self.head: nn.Module = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)  # [N, D]

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self(x))  # [N, num_classes]

    def reset_head(self, num_classes: int) -> nn.Module:
        device = next(self.trunk.parameters()).device
        self.head = nn.Linear(self.num_features, num_classes).to(device) if num_classes > 0 else nn.Identity()
        return self.head


def _cifar_stem(model: nn.Module) -> None:
    """3x3 stride-1 stem with no max-pool, as in SimCLR's CIFAR experiments."""
    width = model.conv1.out_channels
    model.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()


def build_backbone(name: str, image_size: int = 224, patch_size: int = 16, drop_path: float = 0.0) -> Backbone:
    import timm
    from timm.models.resnet import BasicBlock, ResNet

    if name in _RESNETS:
        timm_name, cifar = _RESNETS[name]
        if timm_name == "tiny":
            trunk = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=0, channels=(32, 64, 128, 256), stem_width=32)
        else:
            trunk = timm.create_model(timm_name, pretrained=False, num_classes=0, drop_path_rate=drop_path)
        if cifar:
            _cifar_stem(trunk)
        return Backbone(trunk, trunk.num_features, name)
    if name in _VITS:
        if image_size % patch_size:
            raise FastSSLError(
                f"data.image_size={image_size} is not a multiple of model.patch_size={patch_size}; "
                f"pick sizes so that image_size % patch_size == 0"
            )
        trunk = timm.create_model(
            _VITS[name], pretrained=False, num_classes=0, img_size=image_size,
            patch_size=patch_size, drop_path_rate=drop_path,
        )
        return Backbone(trunk, trunk.num_features, name)
    import difflib

    close = difflib.get_close_matches(name, BACKBONES, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise FastSSLError(f"unknown model.name '{name}'.{hint} Choose one of: {', '.join(BACKBONES)}")
