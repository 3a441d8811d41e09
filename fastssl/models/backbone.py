"""Backbones: timm ResNets and ViTs behind one small contract.

Every method and evaluator uses only this contract:

- `backbone(x)`: images `[N, 3, H, W]` -> pooled features `[N, num_features]`;
- `backbone.num_features`: the feature width D;
- `backbone.head`: a classifier on those features (Identity until `reset_head(num_classes)`),
  and `backbone.classify(x)` = `head(backbone(x))` for probing and fine-tuning;
- `backbone.blocks()`: the units that sharding and activation checkpointing wrap one by one
  (ResNet stages, ViT blocks), in forward order;
- `backbone.stem_params()`: the parameters before the first block (patch embedding, position
  embedding, class and register tokens; a ResNet's stem), for layer-wise lr decay;
- ViTs only (`backbone.is_vit`), for token methods (MAE, DINOv2, I-JEPA): `embed_patches(x)` ->
  patch tokens with their position embedding `[N, L, D]`; `forward_tokens(tokens)` prepends the
  class token and the registers and runs the blocks and final norm -> `[N, 1 + R + L', D]`
  (`class_token=False`: the patch tokens alone -> `[N, L', D]`); `tokens(x, mask, mask_token)` ->
  `ViTTokens` (class token `[N, D]`, registers `[N, R, D]`, patch tokens `[N, L, D]`, all after the
  final norm), where patches with `mask` `[N, L]` True have their embedding replaced by
  `mask_token` `[D]` before the position embedding (iBOT, DINOv2); `patch_size`, `num_patches`,
  `num_registers`, `embed_dim`; `freeze_patch_embed()` (MoCo v3's frozen random patch projection);
  `drop_class_token()` (I-JEPA's ViT has none: the class token is frozen and `backbone(x)` becomes
  the mean of the patch tokens); `fix_sincos_positions()` (a frozen 2-D sine-cosine position
  embedding, as I-JEPA's encoder).

Registers (Darcet et al. 2024, "Vision Transformers Need Registers"): `registers=R` extra learned
tokens after the class token that every block attends to and nothing reads: `backbone(x)` is the
class token, so they never reach pooled or exported features.

Model code is single-device: no DDP, FSDP, compile or checkpointing here; `fastssl.parallel`
applies those from outside.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from torch import nn

from fastssl.errors import FastSSLError
from fastssl.registry import BACKBONES

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


class ViTTokens(NamedTuple):
    cls: torch.Tensor  # [N, D]
    registers: torch.Tensor  # [N, R, D]
    patches: torch.Tensor  # [N, L, D]


class Backbone(nn.Module):
    """A timm trunk with its classifier removed, plus a resettable head."""

    def __init__(self, trunk: nn.Module, num_features: int, name: str):
        super().__init__()
        self.trunk = trunk
        self.num_features = num_features
        self.name = name
        self.head: nn.Module = nn.Identity()
        self.patch_mean = False  # drop_class_token(): pool the patch tokens, run without the class token

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.patch_mean:
            return self.forward_tokens(self.embed_patches(x), class_token=False).mean(dim=1)  # [N, D]
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

    def stem_params(self) -> list[nn.Parameter]:
        t = self.trunk
        if self.is_vit:
            tokens = [t.cls_token, t.reg_token, t.pos_embed]
            return [p for p in tokens if p is not None] + list(t.patch_embed.parameters())
        return [*t.conv1.parameters(), *t.bn1.parameters()]

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
    def num_registers(self) -> int:
        return int(self._vit().num_reg_tokens)

    @property
    def embed_dim(self) -> int:
        return int(self._vit().embed_dim)

    def embed_patches(self, x: torch.Tensor) -> torch.Tensor:
        vit = self._vit()
        tokens = vit.patch_embed(x).flatten(1, -2)  # [N, L, D] (dynamic_img_size makes it [N, h, w, D])
        return tokens + vit.pos_embed[:, vit.num_prefix_tokens :]  # each patch's position; the prefix tokens' come later

    def forward_tokens(self, tokens: torch.Tensor, class_token: bool = True) -> torch.Tensor:
        vit = self._vit()
        if not class_token:  # I-JEPA: no class token (and no registers) in the sequence
            return vit.norm(vit.blocks(vit.norm_pre(tokens)))  # [N, L', D]
        prefix = vit.cls_token
        if vit.reg_token is not None:
            prefix = torch.cat([prefix, vit.reg_token], dim=1)  # [1, 1 + R, D]
        prefix = (prefix + vit.pos_embed[:, : vit.num_prefix_tokens]).expand(tokens.shape[0], -1, -1)
        x = vit.norm_pre(torch.cat([prefix, tokens], dim=1))  # [N, 1 + R + L', D]
        x = vit.blocks(x)
        return vit.norm(x)

    def tokens(self, x: torch.Tensor, mask: torch.Tensor | None = None,
               mask_token: torch.Tensor | None = None) -> ViTTokens:
        vit = self._vit()
        t = vit.patch_embed(x)  # [N, h, w, D]
        if mask is not None:
            # DINOv2 prepare_tokens_with_masks: the embedding is replaced, the position is kept.
            t = torch.where(mask.view(*t.shape[:-1], 1), mask_token.to(t.dtype), t)
        t = vit.norm_pre(vit.patch_drop(vit._pos_embed(t)))  # [N, 1 + R + L, D]; resamples positions
        t = vit.norm(vit.blocks(t))
        p = vit.num_prefix_tokens
        return ViTTokens(t[:, 0], t[:, 1:p], t[:, p:])

    def fix_sincos_positions(self) -> None:
        from fastssl.models.pos_embed import sincos_pos_embed_2d

        vit = self._vit()
        grid = tuple(int(g) for g in vit.patch_embed.grid_size)
        with torch.no_grad():
            vit.pos_embed.copy_(sincos_pos_embed_2d(self.embed_dim, *grid, cls_token=True))
        vit.pos_embed.requires_grad_(False)

    def drop_class_token(self) -> None:
        """Never use the class token again (I-JEPA's ViT has none, Assran et al. 2023).

        It is frozen, so that DDP sees no parameter left without a gradient, and the pooled features
        `backbone(x)` become the mean of the final-norm patch tokens, computed without it, for the
        evaluators as for training.
        """
        vit = self._vit()
        vit.cls_token.requires_grad_(False)
        self.patch_mean = True

    def freeze_patch_embed(self) -> None:
        for p in self._vit().patch_embed.parameters():
            p.requires_grad_(False)


def _cifar_stem(model: nn.Module) -> None:
    """3x3 stride-1 stem with no max-pool, as in SimCLR's CIFAR experiments."""
    width = model.conv1.out_channels
    model.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()


def _build_resnet(name: str, image_size: int, patch_size: int, drop_path: float, registers: int) -> Backbone:
    from timm.models.resnet import BasicBlock, ResNet

    if registers:
        raise FastSSLError(f"model.registers={registers} needs a ViT, but model.name={name}; set --model.registers=0")
    timm_name, cifar = _RESNETS[name]
    if timm_name == "tiny":
        trunk = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=0, channels=(32, 64, 128, 256), stem_width=32)
    else:
        import timm

        trunk = timm.create_model(timm_name, pretrained=False, num_classes=0, drop_path_rate=drop_path)
    if cifar:
        _cifar_stem(trunk)
    return Backbone(trunk, trunk.num_features, name)


def _build_vit(name: str, image_size: int, patch_size: int, drop_path: float, registers: int) -> Backbone:
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
                                  drop_path_rate=drop_path, dynamic_img_size=True, reg_tokens=registers, **spec)
    else:
        import timm

        trunk = timm.create_model(spec, pretrained=False, num_classes=0, img_size=image_size,
                                  patch_size=patch_size, drop_path_rate=drop_path, dynamic_img_size=True,
                                  reg_tokens=registers)
    return Backbone(trunk, trunk.num_features, name)


# Each row of the tables above is a backbone, registered under its `--model.name` with its
# family's builder (fastssl/registry.py); `meta["family"]` says which contract extras it has.
for _name in _RESNETS:
    BACKBONES.register(_name, family="resnet")(functools.partial(_build_resnet, _name))
for _name in _VITS:
    BACKBONES.register(_name, family="vit")(functools.partial(_build_vit, _name))


def build_backbone(name: str, image_size: int = 224, patch_size: int = 16, drop_path: float = 0.0,
                   registers: int = 0) -> Backbone:
    return BACKBONES.get(name)(image_size, patch_size, drop_path, registers)
