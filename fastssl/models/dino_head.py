"""DINO's projection head (Caron et al. 2021, Sec. 3.1 and App.; facebookresearch/dino vision_transformer.py).

A 3-layer MLP (hidden 2048, GELU, no BatchNorm by default) down to a bottleneck (256), L2
normalisation, then a weight-normalised linear layer to K = out_dim "prototypes" with no bias.
With `norm_last_layer` the weight norm's magnitude g is fixed to 1, so every prototype is a unit
vector and the logits are cosine similarities; the paper reports this stabilises ViT training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class WeightNormLinear(nn.Module):
    """y = x W^T with W_k = g_k v_k / ||v_k|| (Salimans & Kingma 2016), no bias.

    Written out rather than `nn.utils.weight_norm` / parametrizations, so that the engines see two
    plain parameters (`weight_g` [out, 1], `weight_v` [out, in], the names of DINO's checkpoints)
    that FSDP and DeepSpeed shard like any other; the norm is taken on the gathered weight in forward.
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        w = nn.Linear(in_dim, out_dim, bias=False).weight.detach()  # nn.Linear's init, as DINO's
        self.weight_v = nn.Parameter(w.clone())  # [out, in]
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1))  # DINO: weight_g.fill_(1)

    @property
    def weight(self) -> torch.Tensor:
        return self.weight_g * F.normalize(self.weight_v, dim=1)  # [out, in]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class DINOHead(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 num_layers: int = 3, norm_last_layer: bool = True, use_bn: bool = False):
        super().__init__()
        num_layers = max(num_layers, 1)
        if num_layers == 1:
            self.mlp: nn.Module = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers: list[nn.Module] = []
            dim = in_dim
            for _ in range(num_layers - 1):
                layers.append(nn.Linear(dim, hidden_dim))
                if use_bn:
                    layers.append(nn.BatchNorm1d(hidden_dim))
                layers.append(nn.GELU())
                dim = hidden_dim
            layers.append(nn.Linear(dim, bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
        # vision_transformer.py DINOHead._init_weights: trunc_normal(std=0.02), zero bias.
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim)
        if norm_last_layer:
            self.last_layer.weight_g.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mlp(x)  # [N, bottleneck]
        x = F.normalize(x, dim=-1, p=2)
        return self.last_layer(x)  # [N, out_dim]
