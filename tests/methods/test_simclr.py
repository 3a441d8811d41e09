import torch

from fastssl.config import Config
from fastssl.losses import nt_xent
from fastssl.methods import build_method


def _cfg():
    c = Config()
    c.model.name, c.data.image_size = "resnet-tiny", 8
    c.method.proj_hidden_dim, c.method.proj_dim, c.method.temperature = 16, 8, 0.3
    return c


def test_forward_returns_loss_and_scalars():
    m = build_method(_cfg())
    views = [torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)]
    out = m(views)
    assert set(out) >= {"loss", "pos_sim"} and out["loss"].requires_grad
    out["loss"].backward()
    assert m.backbone.trunk.conv1.weight.grad is not None


def test_loss_is_nt_xent_of_projections():
    m = build_method(_cfg()).eval()  # eval: BN uses running stats, so one pass == two passes
    x1, x2 = torch.randn(5, 3, 8, 8), torch.randn(5, 3, 8, 8)
    out = m([x1, x2])
    expect = nt_xent(m.forward_encoder(x1), m.forward_encoder(x2), 0.3, impl="torch")
    torch.testing.assert_close(out["loss"], expect)


def test_identical_views_give_lower_loss_than_random():
    m = build_method(_cfg()).eval()
    x = torch.randn(6, 3, 8, 8)
    assert m([x, x])["loss"] < m([x, torch.randn(6, 3, 8, 8)])["loss"]


def test_projection_head_ends_with_scale_only_batchnorm_as_in_simclr_code():
    from fastssl.models.heads import ScaleOnlyBatchNorm1d

    m = build_method(_cfg())
    last = m.projector[-1]
    assert isinstance(last, ScaleOnlyBatchNorm1d) and last.weight is not None and last.bias is None
    c = _cfg()
    c.method.proj_last_bn = False
    assert isinstance(build_method(c).projector[-1], torch.nn.Linear)
