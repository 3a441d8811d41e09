"""Backbones: timm ResNets and ViTs behind one small contract.

Every method and evaluator uses only this contract:

- `backbone(x)`: images `[N, 3, H, W]` -> pooled features `[N, num_features]`;
- `backbone.num_features`: the feature width D;
- `backbone.head`: a classifier on those features (Identity until `reset_head(num_classes)`),
  and `backbone.classify(x)` = `head(backbone(x))` for probing and fine-tuning;
- `backbone.blocks()`: the units that sharding and activation checkpointing wrap one by one
  (ResNet stages, ViT blocks), in forward order;
- ViTs only (`backbone.is_vit`), for token methods (MAE): `embed_patches(x)` -> patch tokens with
  their position embedding `[N, L, D]`; `forward_tokens(tokens)` prepends the class token and runs
  the blocks and final norm -> `[N, 1 + L', D]`; `patch_size`, `num_patches`, `embed_dim`;
  `freeze_patch_embed()` (MoCo v3's frozen random patch projection).

Model code is single-device: no DDP, FSDP, compile or checkpointing here; `fastssl.parallel`
applies those from outside.
"""

from __future__ import annotations

import torch
from torch import nn

from fastssl.errors import FastSSLError, did_you_mean

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
    # For 2-core CPUs: 4 blocks, 96 wide, 3 heads (~0.5 M parameters); use with small patches.
    "vit_nano": dict(embed_dim=96, depth=4, num_heads=3),
    "vit_tiny": "vit_tiny_patch16_224",
    "vit_small": "vit_small_patch16_224",
    "vit_base": "vit_base_patch16_224",
    "vit_large": "vit_large_patch16_224",
    "vit_huge": "vit_huge_patch14_224",
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

    @property
    def is_vit(self) -> bool:
        return hasattr(self.trunk, "blocks") and hasattr(self.trunk, "patch_embed")

    def blocks(self) -> list[nn.Module]:
        if self.is_vit:
            return list(self.trunk.blocks)
        return [getattr(self.trunk, f"layer{i}") for i in range(1, 5) if hasattr(self.trunk, f"layer{i}")]

    # --- ViT token interface -------------------------------------------------------------------
    def _vit(self) -> nn.Module:
        if not self.is_vit:
            raise FastSSLError(f"model.name={self.name} has no patch tokens; this method needs a ViT (e.g. --model.name=vit_tiny)")
        return self.trunk

    @property
    def patch_size(self) -> int:
        return int(self._vit().patch_embed.patch_size[0])

    @property
    def num_patches(self) -> int:
        return int(self._vit().patch_embed.num_patches)

    @property
    def embed_dim(self) -> int:
        return int(self._vit().embed_dim)

    def embed_patches(self, x: torch.Tensor) -> torch.Tensor:
        vit = self._vit()
        tokens = vit.patch_embed(x).flatten(1, -2)  # [N, L, D] (dynamic_img_size makes it [N, h, w, D])
        return tokens + vit.pos_embed[:, vit.num_prefix_tokens :]  # position of each patch; the class token's comes later

    def forward_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        vit = self._vit()
        cls = (vit.cls_token + vit.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)  # [N, 1, D]
        x = vit.norm_pre(torch.cat([cls, tokens], dim=1))  # [N, 1 + L', D]
        x = vit.blocks(x)
        return vit.norm(x)

    def freeze_patch_embed(self) -> None:
        for p in self._vit().patch_embed.parameters():
            p.requires_grad_(False)


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
        # dynamic_img_size: inputs of any multiple of the patch size (DINO's local crops), the
        # position embedding resampled bicubically as DINO's interpolate_pos_encoding does.
        if image_size % patch_size:
            raise FastSSLError(
                f"data.image_size={image_size} is not a multiple of model.patch_size={patch_size}; "
                f"pick sizes so that image_size % patch_size == 0"
            )
        spec = _VITS[name]
        if isinstance(spec, dict):
            from timm.models.vision_transformer import VisionTransformer

            trunk = VisionTransformer(img_size=image_size, patch_size=patch_size, num_classes=0,
                                      drop_path_rate=drop_path, dynamic_img_size=True, **spec)
        else:
            trunk = timm.create_model(spec, pretrained=False, num_classes=0, img_size=image_size,
                                      patch_size=patch_size, drop_path_rate=drop_path, dynamic_img_size=True)
        return Backbone(trunk, trunk.num_features, name)
    raise FastSSLError(f"unknown model.name '{name}'.{did_you_mean(name, BACKBONES)} Choose one of: {', '.join(BACKBONES)}")
