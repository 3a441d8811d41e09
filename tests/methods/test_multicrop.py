"""The one multi-crop forward (DINO, DINOv2, SwAV, DeepCluster v2): one pass per run of equal-size views."""

import torch

from fastssl.methods.multicrop import forward_multicrop


def _crops():
    return [torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4), torch.randn(2, 3, 8, 8)]


def _mean_encoder(calls):
    def encoder(x):
        calls.append(tuple(x.shape))
        return x.mean(dim=(1, 2, 3)).unsqueeze(1)  # [n, 1]
    return encoder


def test_runs_of_equal_size_share_one_pass_view_major():
    calls, crops = [], _crops()
    out = forward_multicrop(_mean_encoder(calls), crops)
    assert calls == [(4, 3, 8, 8), (2, 3, 4, 4), (2, 3, 8, 8)]
    torch.testing.assert_close(out[:, 0], torch.cat([c.mean(dim=(1, 2, 3)) for c in crops]))


def test_head_runs_once_over_every_view():
    calls, heads, crops = [], [], _crops()
    out = forward_multicrop(_mean_encoder(calls), crops, head=lambda z: heads.append(z.shape[0]) or z * 2)
    assert heads == [8]
    torch.testing.assert_close(out[:, 0], 2 * torch.cat([c.mean(dim=(1, 2, 3)) for c in crops]))
