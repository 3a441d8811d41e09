"""LARS on a flat tensor holding pieces of several layers (as DeepSpeed ZeRO hands it) equals
LARS on the layers themselves: one process, the flat tensor holding every piece, so the
all-reduce is the identity and the only difference is summation order (fp32 round-off)."""

import torch

from fastssl.parallel.engines.zero_layout import FlatLayers
from fastssl.train.optim import LARS

SHAPES = [(3, 4), (5, 2), (7,)]


def _layers(seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g) for s in SHAPES]


def test_flat_lars_equals_per_layer_lars():
    weights, grads = _layers(0), [[g * 0.1 for g in _layers(s)] for s in (1, 2)]
    group = dict(weight_decay=0.05, lars_exclude=False)
    params = [torch.nn.Parameter(w.clone()) for w in weights]
    ref = LARS([{"params": params, **group}], lr=0.5, momentum=0.9, eta=0.02, clip_lr=True)

    pad = 3  # DeepSpeed pads a partition to a multiple of its alignment; no layer owns those values
    flat = torch.nn.Parameter(torch.cat([w.flatten() for w in weights] + [torch.zeros(pad)]))
    opt = LARS([{"params": [flat], **group}], lr=0.5, momentum=0.9, eta=0.02, clip_lr=True)
    sizes = [w.numel() for w in weights]
    starts = [0, 5, sizes[0], sizes[0] + sizes[1]]  # layer 0 in two pieces, as cut between ranks
    numels = [5, sizes[0] - 5, sizes[1], sizes[2]]
    opt.flat_layers[id(flat)] = FlatLayers(starts, numels, [0, 0, 1, 2], 3, all_reduce=lambda t: None)

    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        flat.grad = torch.cat([g.flatten() for g in step_grads] + [torch.zeros(pad)])
        ref.step()
        opt.step()
    got = torch.split(flat.detach()[:-pad], sizes)
    for p, w0, g in zip(params, weights, got):
        assert not torch.equal(p.detach(), w0)
        torch.testing.assert_close(g.view_as(p), p.detach(), rtol=1e-6, atol=1e-7)
