import pytest
import torch

from fastssl.errors import FastSSLError
from fastssl.models.backbone import build_backbone


@pytest.mark.parametrize("name, size, patch", [("resnet-tiny", 16, 16), ("resnet18-cifar", 8, 16), ("vit_tiny", 16, 4)])
def test_contract(name, size, patch):
    b = build_backbone(name, size, patch)
    x = torch.randn(3, 3, size, size)
    f = b(x)
    assert f.shape == (3, b.num_features)
    head = b.reset_head(5)
    assert b.classify(x).shape == (3, 5) and head is b.head
    b.reset_head(0)
    assert b.classify(x).shape == (3, b.num_features)


def test_cifar_stem_keeps_resolution():
    b = build_backbone("resnet18-cifar", 32)
    assert b.trunk.conv1.stride == (1, 1) and isinstance(b.trunk.maxpool, torch.nn.Identity)
    std = build_backbone("resnet18", 32)
    assert std.trunk.conv1.stride == (2, 2)


def test_unknown_and_impossible():
    with pytest.raises(FastSSLError, match="resnet18"):
        build_backbone("resnet19")
    with pytest.raises(FastSSLError, match="patch_size"):
        build_backbone("vit_tiny", image_size=30, patch_size=16)
