"""`bench step`'s backbone-alone baseline runs in the step's precision and memory format.

Otherwise `ssl_overhead` (backbone images/s / step images/s) would compare a bf16 channels_last
step with an fp32 NCHW backbone and report the dtype and layout as the method's cost.
"""

import argparse

import pytest
import torch

from fastssl.bench import step
from fastssl.config import Config


def _cfg(model="resnet-tiny", precision="auto", channels_last=True):
    cfg = Config()
    cfg.model.name, cfg.data.image_size = model, 16
    cfg.model.patch_size = 4
    cfg.train.precision, cfg.train.channels_last = precision, channels_last
    return cfg


def test_step_format_follows_the_engine_and_parallelize_rules():
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert step.step_format(_cfg(), cuda, is_vit=False) == (torch.bfloat16, torch.channels_last)
    assert step.step_format(_cfg(), cuda, is_vit=True) == (torch.bfloat16, torch.contiguous_format)
    assert step.step_format(_cfg(channels_last=False), cuda, is_vit=False)[1] == torch.contiguous_format
    assert step.step_format(_cfg(precision="fp32"), cuda, is_vit=False)[0] is None
    assert step.step_format(_cfg(), cpu, is_vit=False) == (None, torch.contiguous_format)


def _watch_backbone(monkeypatch):
    """Records (input is channels_last, output dtype) of every backbone forward in the baseline."""
    from fastssl.models import backbone as backbone_mod

    seen, build = [], backbone_mod.build_backbone

    def watched(*a, **kw):
        model = build(*a, **kw)
        model.register_forward_hook(lambda m, inp, out: seen.append(
            (inp[0].is_contiguous(memory_format=torch.channels_last) and not inp[0].is_contiguous(), out.dtype)))
        return model

    monkeypatch.setattr(backbone_mod, "build_backbone", watched)
    return seen


def _baseline(cfg):
    views = [torch.randn(2, 3, 16, 16) for _ in range(2)]
    args = argparse.Namespace(warmup=0, repeats=1)
    return step._backbone_baseline(cfg, views, args, torch.device("cpu"), 1)


def test_baseline_autocasts_like_the_step(monkeypatch):
    seen = _watch_backbone(monkeypatch)
    assert _baseline(_cfg(precision="bf16")) > 0
    assert seen and all(dtype == torch.bfloat16 for _, dtype in seen)


def test_baseline_uses_the_steps_memory_format(monkeypatch):
    seen = _watch_backbone(monkeypatch)
    monkeypatch.setattr(step, "step_format", lambda cfg, device, is_vit: (None, torch.channels_last))
    _baseline(_cfg())
    assert seen and all(cl for cl, _ in seen)


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_baseline_dtype_matches_precision(monkeypatch, precision, dtype):
    seen = _watch_backbone(monkeypatch)
    _baseline(_cfg(precision=precision))
    assert {d for _, d in seen} == {dtype}
