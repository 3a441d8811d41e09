"""DeepCluster v2: epoch-start k-means per head, pseudo-labels from the epoch's frozen snapshot."""

import pytest
import torch
import torch.nn.functional as F

from fastssl.cluster import assign_nearest, spherical_kmeans
from fastssl.config import Config
from fastssl.methods import build_method


def _cfg(**method):
    c = Config()
    c.model.name, c.data.image_size = "resnet-tiny", 8
    m = c.set_method("deepcluster")
    m.proj_hidden_dim, m.proj_dim, m.num_prototypes = 16, 8, "3,5"
    for k, v in method.items():
        setattr(m, k, v)
    return c


def _images(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 8, 8, generator=g)


def _batches(images, b=8):
    return lambda: iter(images.split(b))


def test_forward_before_clustering_says_the_hook_is_missing():
    m = build_method(_cfg())
    with pytest.raises(RuntimeError, match="on_epoch_start"):
        m([torch.randn(4, 3, 8, 8)] * 2)


def test_epoch_start_clusters_every_head_on_the_snapshot_features():
    m = build_method(_cfg())
    images = _images()
    m.on_epoch_start(3, _batches(images))
    assert int(m.clustered_epoch) == 3
    feats = m.forward_snapshot(images)
    for h, k in enumerate((3, 5)):
        expect, _ = spherical_kmeans(feats, k, 10, seed=1000 * 3 + h)
        torch.testing.assert_close(getattr(m, f"centroids{h}"), expect)
        assert getattr(m, f"centroids{h}").shape == (k, 8)
    # The snapshot is an exact copy of the network at the epoch start, BN statistics included.
    for a, b in zip(m.backbone.state_dict().values(), m.snapshot_backbone.state_dict().values()):
        assert torch.equal(a, b)


def test_pseudo_labels_are_nearest_centroids_of_the_snapshot_and_fixed_for_the_epoch():
    m = build_method(_cfg(num_prototypes="4"))
    m.on_epoch_start(0, _batches(_images()))
    views = [_images(6, seed=1), _images(6, seed=2), torch.rand(6, 3, 4, 4)]
    out = m(views)
    z = torch.cat([m.forward_embed(torch.cat(views[:2])), m.forward_embed(views[2])])  # as forward groups them
    targets = assign_nearest(m.forward_snapshot(views[0]), m.centroids0)
    expect = F.cross_entropy(z @ m.centroids0.T / 0.1, targets.repeat(3))
    torch.testing.assert_close(out["loss"], expect, rtol=1e-5, atol=1e-6)
    # Training the online network does not move the labelling function until the next epoch.
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    out["loss"].backward()
    opt.step()
    assert torch.equal(assign_nearest(m.forward_snapshot(views[0]), m.centroids0), targets)
    assert not all(torch.equal(a, b) for a, b in zip(m.backbone.parameters(), m.snapshot_backbone.parameters()))


def test_heads_alternate_assignment_crops():
    m = build_method(_cfg(num_prototypes="4,4"))
    m.on_epoch_start(0, _batches(_images()))
    v0, v1 = _images(6, seed=1), _images(6, seed=2)
    t0 = assign_nearest(m.forward_snapshot(v0), m.centroids0)
    t1 = assign_nearest(m.forward_snapshot(v1), m.centroids1)
    z = m.forward_embed(torch.cat([v0, v1]))
    expect = (F.cross_entropy(z @ m.centroids0.T / 0.1, t0.repeat(2))
              + F.cross_entropy(z @ m.centroids1.T / 0.1, t1.repeat(2))) / 2
    torch.testing.assert_close(m([v0, v1])["loss"], expect, rtol=1e-5, atol=1e-6)


def test_prototypes_and_snapshot_get_no_gradient_and_are_not_optimised():
    from fastssl.config import OptimConfig
    from fastssl.train.optim import build_optimizer

    m = build_method(_cfg())
    m.on_epoch_start(0, _batches(_images()))
    m([_images(6, 1), _images(6, 2)])["loss"].backward()
    assert all(p.grad is None for p in m.snapshot_backbone.parameters())
    assert m.backbone.trunk.conv1.weight.grad is not None
    optimised = {id(p) for g in build_optimizer(m, OptimConfig(name="sgd"), 0.1).param_groups for p in g["params"]}
    assert not any(id(p) in optimised for p in m.snapshot_backbone.parameters())
    assert "centroids0" in dict(m.named_buffers())


def test_state_dict_resumes_mid_epoch_without_reclustering():
    m = build_method(_cfg())
    m.on_epoch_start(2, _batches(_images()))
    fresh = build_method(_cfg())
    fresh.load_state_dict(m.state_dict())
    views = [_images(6, 1), _images(6, 2)]
    torch.testing.assert_close(fresh(views)["loss"], m(views)["loss"])


def test_a_short_run_lowers_the_loss():
    torch.manual_seed(0)
    m = build_method(_cfg(num_prototypes="4,6"))
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=3e-3)
    g = torch.Generator().manual_seed(1)
    images = _images(32, seed=3)
    first, last = [], []
    for epoch in range(3):
        m.on_epoch_start(epoch, _batches(images))
        for step in range(8):
            batch = images[torch.randperm(32, generator=g)[:16]]
            views = [batch + 0.05 * torch.randn(batch.shape, generator=g) for _ in range(2)]
            out = m(views)
            opt.zero_grad()
            out["loss"].backward()
            opt.step()
            (first if epoch == 0 and step < 3 else last).append(out["loss"].item())
    assert sum(last[-3:]) / 3 < sum(first) / 3 - 0.1


@pytest.mark.parametrize("value", ["", "1", "3,x", "0,4"])
def test_invalid_num_prototypes_names_the_key(value):
    from fastssl.config import validate
    from fastssl.errors import FastSSLError

    c = _cfg()
    c.method.num_prototypes = value
    with pytest.raises(FastSSLError, match="--method.num_prototypes"):
        validate(c)


def test_trains_a_short_run_through_the_cli(tmp_path):
    from tests.methods.pretext_runs import train_cli

    rows, weights = train_cli(tmp_path / "run", "deepcluster-cpu", "--train.max_steps=4",
                              "--method.proj_hidden_dim=16", "--method.proj_dim=8", "--method.num_prototypes=4,6")
    assert len(rows) == 4 and all("pseudo_acc" in r for r in rows)
    assert int(weights["clustered_epoch"]) == 1  # 3 steps per epoch: the 4th step is epoch 1's
    torch.testing.assert_close(weights["centroids1"].norm(dim=1), torch.ones(6))


@pytest.mark.distributed
@pytest.mark.slow
def test_world_size_2_equals_world_size_1_through_the_cli(tmp_path):
    from tests.methods.pretext_runs import assert_two_ranks_equal_one

    assert_two_ranks_equal_one(tmp_path, "deepcluster-cpu", "--method.proj_hidden_dim=16", "--method.proj_dim=8",
                               "--method.num_prototypes=4,6")
