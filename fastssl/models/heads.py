"""Projection and prediction MLPs (SimCLR, BYOL, MoCo v2/v3)."""

from __future__ import annotations

from torch import nn


class ScaleOnlyBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm with a learned scale and no learned shift (centre=False in TensorFlow's terms).

    SimCLR's projection head ends with one (google-research/simclr tf2/model.py, the last
    LinearLayer has use_bias=False, use_bn=True, so BatchNorm's centre is off).
    """

    def __init__(self, num_features: int):
        super().__init__(num_features, affine=True)
        self.bias = None  # F.batch_norm takes bias=None: no shift, and no parameter to decay or shard

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.weight is not None:
            nn.init.ones_(self.weight)


def mlp(
    in_dim: int,
    hidden_dim: int,
    out_dim: int,
    num_layers: int = 2,
    last_bn: bool | str = False,
    hidden_bn: bool = True,
    last_bias: bool | None = None,
) -> nn.Sequential:
    """(Linear-BN-ReLU) x (num_layers - 1), then a final Linear.

    hidden_bn: BN on hidden layers (SimCLR v2, BYOL, MoCo v3); MoCo v2's head has none.
    last_bn: False | True (BN without affine, MoCo v3's projector and predictor) | "scale"
    (BN with a scale and no shift, SimCLR's projector).
    last_bias: the final Linear's bias; None = only when no BN follows it. VICReg's and Barlow
    Twins' projectors end with a bias-free Linear and no BN (False).
    """
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers.append(nn.Linear(dim, hidden_dim, bias=not hidden_bn))
        if hidden_bn:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers.append(nn.ReLU(inplace=True))
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim, bias=not last_bn if last_bias is None else last_bias))
    if last_bn == "scale":
        layers.append(ScaleOnlyBatchNorm1d(out_dim))
    elif last_bn:
        layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)
