import torch
from torch import nn

from fastssl.parallel.sync_batchnorm import AllReduceBatchNorm, convert_sync_batchnorm


def test_convert_replaces_bn_and_shares_parameters():
    m = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)))
    w = m[1].weight
    c = convert_sync_batchnorm(m, torch.device("cpu"))
    assert isinstance(c[1], AllReduceBatchNorm) and isinstance(c[2][1], AllReduceBatchNorm)
    assert c[1].weight is w


def test_matches_batchnorm_without_process_group():
    bn = nn.BatchNorm2d(3)
    sbn = convert_sync_batchnorm(nn.Sequential(bn), torch.device("cpu"))[0]
    x = torch.randn(4, 3, 5, 5)
    torch.testing.assert_close(sbn(x), nn.BatchNorm2d(3)(x))
