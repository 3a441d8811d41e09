import pytest

from fastssl.config import OptimConfig
from fastssl.train.schedule import lr_at, scaled_lr


def test_linear_scaling_rule():
    assert scaled_lr(OptimConfig(base_lr=0.3), 4096) == pytest.approx(4.8)


def test_warmup_then_cosine():
    peak = 1.0
    assert lr_at(0, 100, 10, peak) == pytest.approx(0.1)
    assert lr_at(9, 100, 10, peak) == pytest.approx(1.0)
    assert lr_at(10, 100, 10, peak) == pytest.approx(1.0)
    assert lr_at(55, 100, 10, peak) == pytest.approx(0.5)
    assert lr_at(100, 100, 10, peak, min_lr_ratio=0.1) == pytest.approx(0.1)
    lrs = [lr_at(s, 100, 10, peak) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
