"""Optimisers: LARS (SimCLR/BYOL's standard), AdamW and SGD, with the usual parameter groups.

Biases and normalisation parameters get no weight decay and no LARS trust-ratio adaptation,
as in SimCLR, BYOL and MoCo v3.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from fastssl.config import OptimConfig
from fastssl.errors import FastSSLError
from fastssl.methods.base import SSLMethod


class LARS(torch.optim.Optimizer):
    """SGD with momentum where each layer's step is scaled by eta * ||w|| / ||g + wd * w||.

    With eta = 0.001 (SimCLR, BYOL) a first step moves a layer by lr * 0.001 of its norm.
    `clip_lr` caps the trust ratio at 1 / lr, so the adaptive step never exceeds the plain
    SGD step (NVIDIA Apex LARC clip mode, used by solo-learn with eta = 0.02).
    Parameter groups with `lars_exclude=True` take a plain SGD-momentum step with no decay.

    A layer is one parameter, unless tensor p is a flat piece of several (DeepSpeed ZeRO hands the
    optimizer those): then `flat_layers[id(p)]` (fastssl/parallel/engines/zero_layout.py
    `FlatLayers`) gives each layer's norms over all its pieces on every rank, `layer_norms(w, g)`,
    and scales each piece by its layer's ratio, `scale_(g, ratios)`: LARS's update on the layers
    themselves, up to the order of summation in the norms.
    """

    def __init__(self, params, lr: float = 0.0, weight_decay: float = 0.0, momentum: float = 0.9,
                 eta: float = 0.001, clip_lr: bool = False):
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta, clip_lr=clip_lr,
                        lars_exclude=False)
        super().__init__(params, defaults)
        self.flat_layers: dict[int, Any] = {}

    @staticmethod
    def trust_ratio(w_norm: torch.Tensor, g_norm: torch.Tensor, group: dict) -> torch.Tensor:
        trust = torch.where((w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm, torch.ones_like(w_norm))
        if group["clip_lr"] and group["lr"] > 0:
            trust = trust.clamp(max=1.0 / group["lr"])
        return trust

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if not group["lars_exclude"]:
                    g = g.add(p, alpha=group["weight_decay"])
                    flat = self.flat_layers.get(id(p))
                    if flat is None:
                        g = g.mul(self.trust_ratio(torch.norm(p), torch.norm(g), group))
                    else:
                        flat.scale_(g, self.trust_ratio(*flat.layer_norms(p, g), group))
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(group["momentum"]).add_(g)
                p.add_(mu, alpha=-group["lr"])
        return loss


def layer_lr_scales(model: nn.Module, layer_decay: float) -> dict[int, float]:
    """{id(param): lr multiplier} of layer-wise lr decay (Bao et al. 2022, BEiT; DINOv2
    dinov2/utils/param_groups.py get_vit_lr_decay_rate): block i of L gets decay^(L - i), the stem
    (patch and position embedding, class and register tokens) decay^(L + 1), the rest 1 (final
    norm, heads). Only the method's backbone is decayed; parameters not listed here get 1."""
    if layer_decay == 1.0 or not isinstance(model, SSLMethod):
        return {}
    blocks = model.backbone.blocks()
    n = len(blocks)
    scales = {id(p): layer_decay ** (n + 1) for p in model.backbone.stem_params()}
    for i, block in enumerate(blocks):
        scales.update({id(p): layer_decay ** (n - i) for p in block.parameters()})
    return scales


def param_groups(model: nn.Module, weight_decay: float, fixed_lr: Iterable[nn.Parameter] = (),
                 layer_decay: float = 1.0) -> list[dict]:
    """Decay / no-decay groups; parameters in `fixed_lr` go to twin groups marked `fixed_lr=True`;
    with `layer_decay` < 1 each lr multiplier (`layer_lr_scales`) gets its own pair, marked `lr_scale`."""
    fixed = {id(p) for p in fixed_lr}
    scales = layer_lr_scales(model, layer_decay)
    buckets: dict[tuple[bool, bool, float], list[nn.Parameter]] = {(d, False, 1.0): [] for d in (True, False)}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # 1-D tensors are biases and norm scales; ViT's pos_embed/cls_token are excluded too.
        no_decay = p.ndim <= 1 or name.endswith(".bias") or "pos_embed" in name or "cls_token" in name
        buckets.setdefault((not no_decay, id(p) in fixed, scales.get(id(p), 1.0)), []).append(p)
    groups = []
    # The two plain groups always exist; decay groups first, fixed after plain (the order before layer decay).
    for (decay, is_fixed, scale), params in sorted(buckets.items(), key=lambda kv: (not kv[0][0], kv[0][1])):
        extra = {"fixed_lr": True} if is_fixed else {}
        if scale != 1.0:
            extra["lr_scale"] = scale
        groups.append({"params": params, "weight_decay": weight_decay if decay else 0.0,
                       "lars_exclude": not decay, **extra})
    return groups


def build_optimizer(model: nn.Module, cfg: OptimConfig, lr: float) -> torch.optim.Optimizer:
    """`lr` is the peak lr. Each group's lr is it times the group's `lr_scale`: the layer-decay
    multiplier (`layer_lr_scales`) times, for biases and norms, cfg.bias_lr_scale (Barlow Twins'
    main.py --learning-rate-biases); `Engine.set_lr` applies the same to the schedule's lr. A
    method's `fixed_lr_params()` keep the peak lr, scaled so, all run (SimSiam's main_simsiam.py
    adjust_learning_rate: `fix_lr` groups keep init_lr): their groups carry it as `fixed_lr`, which
    `Engine.set_lr` gives them in place of the schedule's value."""
    fixed = model.fixed_lr_params() if isinstance(model, SSLMethod) else []
    groups = param_groups(model, cfg.weight_decay, fixed, cfg.layer_decay)
    for g in groups:
        g["lr_scale"] = g.get("lr_scale", 1.0) * (cfg.bias_lr_scale if g["lars_exclude"] else 1.0)
        if g.get("fixed_lr"):
            g["fixed_lr"] = lr * g["lr_scale"]
        g["lr"] = lr * g["lr_scale"]
    return _make(groups, cfg, lr)


def _make(groups: list[dict], cfg: OptimConfig, lr: float) -> torch.optim.Optimizer:
    if cfg.name == "lars":
        return LARS(groups, lr=lr, momentum=cfg.momentum, eta=cfg.lars_eta, clip_lr=cfg.lars_clip_lr)
    for g in groups:
        g.pop("lars_exclude")
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=cfg.betas)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum)
    raise FastSSLError(f"unknown --optim.name={cfg.name!r}; use lars, adamw or sgd")
