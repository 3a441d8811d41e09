import math

import pytest
import torch

from fastssl.eval.knn import knn_accuracy, knn_classify, topk_accuracy


def brute_force(train, train_labels, test, num_classes, k, t, topk=5):
    """One test row at a time, neighbours sorted by (-sim, index), classes by (-vote, id)."""
    train = torch.nn.functional.normalize(train.double(), dim=1)
    test = torch.nn.functional.normalize(test.double(), dim=1)
    out = []
    for q in test:
        sims = (train @ q).tolist()
        order = sorted(range(len(sims)), key=lambda j: (-sims[j], j))[:k]
        votes = [0.0] * num_classes
        for j in order:
            votes[int(train_labels[j])] += math.exp(sims[j] / t)
        ranked = sorted(range(num_classes), key=lambda c: (-votes[c], c))
        out.append(ranked[: min(topk, num_classes)])
    return torch.tensor(out)


def test_matches_brute_force_on_random_features():
    g = torch.Generator().manual_seed(1)
    train, test = torch.randn(300, 16, generator=g), torch.randn(40, 16, generator=g)
    labels = torch.randint(0, 7, (300,), generator=g)
    for k in (1, 5, 50, 300, 1000):  # 1000 > n_train: capped
        got = knn_classify(train, labels, test, num_classes=7, k=k, t=0.1)
        assert torch.equal(got, brute_force(train, labels, test, 7, min(k, 300), 0.1)), k


def test_chunking_does_not_change_the_result():
    g = torch.Generator().manual_seed(2)
    train, test = torch.randn(200, 8, generator=g), torch.randn(33, 8, generator=g)
    labels = torch.randint(0, 10, (200,), generator=g)
    whole = knn_classify(train, labels, test, 10, k=20, t=0.07)
    tiny_chunks = knn_classify(train, labels, test, 10, k=20, t=0.07, max_elements=200 * 4)  # 4 rows at a time
    assert torch.equal(whole, tiny_chunks)
    assert torch.equal(whole, brute_force(train, labels, test, 10, 20, 0.07))


def test_weights_favour_closer_neighbours_over_the_majority():
    # One very close neighbour of class 1 vs two far ones of class 0: exp(sim/T) decides.
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([1, 0, 0])
    test = torch.tensor([[1.0, 0.2]])
    assert knn_classify(train, labels, test, 2, k=3, t=0.1)[0, 0].item() == 1
    # With a huge temperature all weights are ~1 and the majority wins.
    assert knn_classify(train, labels, test, 2, k=3, t=1000.0)[0, 0].item() == 0


def test_ties_are_broken_deterministically():
    # Duplicated training points: which of the tied neighbours fill the k-th place matters.
    train = torch.tensor([[1.0, 0.0]] * 4 + [[0.0, 1.0]])
    labels = torch.tensor([3, 2, 2, 2, 0])
    test = torch.tensor([[1.0, 0.0]])
    # k=2 takes indices 0 and 1 (lowest of the tied): classes 3 and 2 get equal votes -> lower id.
    ranked = knn_classify(train, labels, test, 4, k=2, t=0.1)
    assert ranked[0].tolist()[:2] == [2, 3]
    assert torch.equal(ranked, brute_force(train, labels, test, 4, 2, 0.1))
    # k=1 takes index 0 only.
    assert knn_classify(train, labels, test, 4, k=1, t=0.1)[0, 0].item() == 3
    # Class-vote ties with an empty class: zero-vote classes follow in id order.
    assert knn_classify(train, labels, test, 4, k=1, t=0.1)[0].tolist() == [3, 0, 1, 2]


def test_scale_invariant_because_features_are_normalised():
    g = torch.Generator().manual_seed(3)
    train, test = torch.randn(50, 4, generator=g), torch.randn(10, 4, generator=g)
    labels = torch.randint(0, 3, (50,), generator=g)
    a = knn_classify(train, labels, test, 3, k=10, t=0.1)
    b = knn_classify(train * 7.0, labels, test * 0.01, 3, k=10, t=0.1)
    assert torch.equal(a, b)


def test_topk_accuracy_in_percent_and_top5_only_with_five_classes():
    ranked = torch.tensor([[0, 1, 2, 3, 4], [4, 3, 2, 1, 0]])
    acc = topk_accuracy(ranked, torch.tensor([0, 0]))
    assert acc == {"top1": 50.0, "top5": 100.0}
    assert "top5" not in topk_accuracy(torch.tensor([[1, 0]]), torch.tensor([0]))


def test_knn_accuracy_separable_clusters_is_perfect():
    g = torch.Generator().manual_seed(4)
    centres = torch.randn(6, 32, generator=g) * 5
    y_train, y_test = torch.arange(6).repeat(20), torch.arange(6).repeat(5)
    x_train = centres[y_train] + 0.1 * torch.randn(120, 32, generator=g)
    x_test = centres[y_test] + 0.1 * torch.randn(30, 32, generator=g)
    r = knn_accuracy(x_train, y_train, x_test, y_test, 6, k=200, t=0.1)
    assert r["top1"] == 100.0 and r["top5"] == 100.0 and r["k"] == 120


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        knn_classify(torch.randn(5, 3), torch.zeros(5), torch.randn(2, 4), 2)
    with pytest.raises(ValueError):
        knn_classify(torch.randn(5, 3), torch.zeros(4), torch.randn(2, 3), 2)
