import torch
from torch import nn

from fastssl.eval.linear import compare_backbone_projector, linear_probe, standardise


def clusters(n_per_class, num_classes=5, dim=24, noise=0.5, seed=0, noise_seed=100):
    """Gaussian blobs around `seed`'s centres; another noise_seed draws a fresh test set."""
    centres = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(seed)) * 2
    y = torch.arange(num_classes).repeat(n_per_class)
    x = centres[y] + noise * torch.randn(len(y), dim, generator=torch.Generator().manual_seed(noise_seed))
    return x, y


def test_probe_learns_separable_features():
    x_train, y_train = clusters(40, seed=0)
    x_test, y_test = clusters(10, seed=0, noise_seed=101)
    r = linear_probe(x_train, y_train, x_test, y_test, num_classes=5, epochs=20, lr=0.1)
    assert r["top1"] > 90.0
    assert r["top5"] == 100.0


def test_probe_is_chance_level_on_random_labels():
    g = torch.Generator().manual_seed(1)
    x_train, x_test = torch.randn(200, 8, generator=g), torch.randn(400, 8, generator=g)
    y_train, y_test = torch.randint(0, 4, (200,), generator=g), torch.randint(0, 4, (400,), generator=g)
    r = linear_probe(x_train, y_train, x_test, y_test, num_classes=4, epochs=10)
    assert r["top1"] < 45.0  # chance is 25%; this fails if labels leak or evaluation is on train
    assert "top5" not in r


def test_standardisation_makes_the_probe_scale_invariant():
    x_train, y_train = clusters(30, seed=2)
    a = linear_probe(x_train, y_train, x_train, y_train, 5, epochs=5)
    b = linear_probe(x_train * 1e4 + 3.0, y_train, x_train * 1e4 + 3.0, y_train, 5, epochs=5)
    assert abs(a["top1"] - b["top1"]) < 1e-6
    s_train, s_test = standardise(x_train * 50, x_train)
    assert torch.allclose(s_train.mean(0), torch.zeros(x_train.shape[1]), atol=1e-4)
    assert torch.allclose(s_train.std(0), torch.ones(x_train.shape[1]), atol=1e-4)
    assert s_test.shape == x_train.shape


def test_probe_is_deterministic_given_seed():
    x, y = clusters(20, noise=2.0, seed=3)
    a = linear_probe(x, y, x, y, 5, epochs=3, seed=7)
    b = linear_probe(x, y, x, y, 5, epochs=3, seed=7)
    assert a == b


def test_compare_backbone_projector_reports_both():
    x_train, y_train = clusters(30, seed=4)
    x_test, y_test = clusters(10, seed=4, noise_seed=101)
    # A projector that throws away all but one dimension must probe worse than the backbone.
    projector = nn.Sequential(nn.Linear(24, 1), nn.BatchNorm1d(1))
    projector.train()  # compare must switch it to eval (BN running stats) and back
    r = compare_backbone_projector(projector, x_train, y_train, x_test, y_test, 5, epochs=10)
    assert set(r) == {"backbone", "projector"}
    assert 0.0 <= r["projector"]["top1"] <= 100.0
    assert r["backbone"]["top1"] > r["projector"]["top1"]
    assert projector.training
    assert compare_backbone_projector(None, x_train, y_train, x_test, y_test, 5, epochs=1)["projector"] is None
