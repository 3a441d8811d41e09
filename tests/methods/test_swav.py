"""SwAV: swapped prediction over multi-crop, prototype handling, the queue, a short run."""

import pytest
import torch
import torch.nn.functional as F

from fastssl.cluster import sinkhorn_knopp
from fastssl.config import Config
from fastssl.methods import build_method


def _cfg(**method):
    c = Config()
    c.model.name, c.data.image_size = "resnet-tiny", 8
    m = c.set_method("swav")
    m.proj_hidden_dim, m.proj_dim, m.num_prototypes = 16, 8, 10
    for k, v in method.items():
        setattr(m, k, v)
    return c


def _views(b=6, local=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 3, 8, 8, generator=g) for _ in range(2)] + [torch.randn(b, 3, 4, 4, generator=g)
                                                                        for _ in range(local)]


def test_forward_returns_loss_and_scalars_and_trains_the_backbone():
    m = build_method(_cfg())
    out = m(_views())
    assert {"loss", "code_max", "queue_in_use"} <= set(out) and out["loss"].requires_grad
    out["loss"].backward()
    assert m.backbone.trunk.conv1.weight.grad is not None
    assert m.prototypes.weight.grad is not None


def test_loss_is_swapped_prediction_of_sinkhorn_codes():
    m = build_method(_cfg(temperature=0.2)).eval()  # eval: BN on running stats, so views are independent
    views = _views(local=2)
    out = m(views)
    z = [m.forward_embed(v) for v in views]
    s = [m.prototypes(zi) for zi in z]
    expect = 0.0
    for a in (0, 1):
        q = sinkhorn_knopp(s[a], 0.05, 3)
        others = [v for v in range(4) if v != a]
        expect += sum(-(q * F.log_softmax(s[v] / 0.2, dim=1)).sum(1).mean() for v in others) / 3
    torch.testing.assert_close(out["loss"], expect / 2, rtol=1e-5, atol=1e-6)


def test_codes_come_from_global_crops_only():
    m = build_method(_cfg(num_assign_crops=2)).eval()
    views = _views(local=2)
    with torch.no_grad():
        q = m.codes(m.prototypes(m.forward_embed(views[0])), 0)
    # A local crop changing cannot change the global crops' codes (only the predictions).
    views[2] = torch.randn_like(views[2])
    with torch.no_grad():
        q2 = m.codes(m.prototypes(m.forward_embed(views[0])), 0)
    assert torch.equal(q, q2)
    one = build_method(_cfg(num_assign_crops=1)).eval()
    assert one._pending == []
    one(views)
    assert one._pending[0].shape[0] == 1


def test_prototypes_are_unit_and_renormalised_after_each_step():
    m = build_method(_cfg())
    torch.testing.assert_close(m.prototypes.weight.norm(dim=1), torch.ones(10))
    with torch.no_grad():
        m.prototypes.weight.mul_(3.0)
    m(_views())
    m.commit_step(0, 10)
    torch.testing.assert_close(m.prototypes.weight.norm(dim=1), torch.ones(10))


def test_prototype_gradients_dropped_in_the_frozen_epochs_only():
    m = build_method(_cfg(freeze_prototypes_epochs=1))
    m.configure_schedule(steps_per_epoch=5, total_steps=20)
    m(_views())["loss"].backward()
    m.after_backward(step=4, epoch=0)
    assert m.prototypes.weight.grad is None
    assert m.projector[0].weight.grad is not None  # everything else keeps its gradient
    m.zero_grad()
    m(_views())["loss"].backward()
    m.after_backward(step=5, epoch=1)
    assert m.prototypes.weight.grad is not None


def test_queue_fills_only_in_commit_step_from_its_start_epoch_and_is_used_when_full():
    m = build_method(_cfg(queue_length=12, queue_start_epoch=1))
    m.configure_schedule(steps_per_epoch=2, total_steps=10)
    views = _views(b=6)
    m(views)
    m.commit_step(1, 10)  # epoch 0: before queue_start_epoch
    assert int(m.queue_filled) == 0 and not bool(m.queue.any())
    m(views)  # forward alone (a step that will be skipped) changes nothing
    assert int(m.queue_filled) == 0
    m.start_step()  # the next step drops what the skipped one accumulated, as train_step does
    m(views)
    m.commit_step(2, 10)  # epoch 1
    assert int(m.queue_filled) == 6 and not m.queue_in_use()
    # The two global crops' embeddings (one BN batch, as in forward), newest first.
    pushed = m.forward_embed(torch.cat(views[:2])).detach().view(2, 6, -1)
    torch.testing.assert_close(m.queue[:, :6], pushed, rtol=1e-4, atol=1e-5)
    m(views)
    m.commit_step(3, 10)
    assert int(m.queue_filled) == 12 and m.queue_in_use()
    assert m(views)["queue_in_use"].item() == 1.0


def test_queue_enters_the_sinkhorn_problem():
    m = build_method(_cfg(queue_length=8, queue_start_epoch=0)).eval()
    views = _views(b=4)
    scores = m.prototypes(m.forward_embed(views[0])).detach()
    without = m.codes(scores, 0)
    with torch.no_grad():
        m.queue.copy_(F.normalize(torch.randn_like(m.queue), dim=-1))
    m.queue_filled.fill_(8)
    with_queue = m.codes(scores, 0)
    queued = m.prototypes(m.queue[0])
    torch.testing.assert_close(with_queue, sinkhorn_knopp(torch.cat([queued, scores]))[-4:])
    assert not torch.allclose(with_queue, without)


def test_state_dict_holds_the_queue_for_resume():
    m = build_method(_cfg(queue_length=12, queue_start_epoch=0))
    m(_views())
    m.commit_step(0, 4)
    fresh = build_method(_cfg(queue_length=12, queue_start_epoch=0))
    fresh.load_state_dict(m.state_dict())
    assert torch.equal(fresh.queue, m.queue) and int(fresh.queue_filled) == 6


def test_a_short_run_lowers_the_loss():
    torch.manual_seed(0)
    m = build_method(_cfg(freeze_prototypes_epochs=0, temperature=0.1))
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    images = torch.rand(32, 3, 8, 8, generator=g)

    def augment(x):  # noisy copies: the two views of an image share most of their content
        return x + 0.1 * torch.randn(x.shape, generator=g)

    losses = []
    for step in range(30):
        batch = images[torch.randperm(32, generator=g)[:16]]
        out = m([augment(batch), augment(batch)], step, 30)
        opt.zero_grad()
        out["loss"].backward()
        m.after_backward(step, 0)
        opt.step()
        m.commit_step(step, 30)
        losses.append(out["loss"].item())
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.1


@pytest.mark.parametrize("key,value", [("epsilon", 0.0), ("num_assign_crops", 3), ("queue_length", -1),
                                       ("num_prototypes", 0), ("temperature", 0.0)])
def test_invalid_settings_name_the_key(key, value):
    from fastssl.config import validate
    from fastssl.errors import FastSSLError

    c = _cfg()
    setattr(c.method, key, value)
    with pytest.raises(FastSSLError, match=f"--method.{key}"):
        validate(c)


def test_trains_a_short_run_through_the_cli(tmp_path):
    from tests.methods.pretext_runs import train_cli

    rows, weights = train_cli(tmp_path / "run", "swav-cpu", "--train.max_steps=3", "--method.proj_hidden_dim=16",
                              "--method.proj_dim=8", "--method.num_prototypes=10")
    assert len(rows) == 3 and all("code_max" in r for r in rows)
    torch.testing.assert_close(weights["prototypes.weight"].norm(dim=1), torch.ones(10))


@pytest.mark.distributed
@pytest.mark.slow
def test_world_size_2_equals_world_size_1_through_the_cli(tmp_path):
    from tests.methods.pretext_runs import assert_two_ranks_equal_one

    assert_two_ranks_equal_one(tmp_path, "swav-cpu", "--method.proj_hidden_dim=16", "--method.proj_dim=8",
                               "--method.num_prototypes=10", "--method.freeze_prototypes_epochs=0")
