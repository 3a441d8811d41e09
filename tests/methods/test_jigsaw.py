import pytest
import torch

import fastssl.methods.batch_draws as batch_draws
from fastssl.config import Config, validate
from fastssl.errors import FastSSLError
from fastssl.methods import build_method, method_class
from fastssl.recipes import get_recipe
from fastssl.methods.jigsaw import Jigsaw, cut_tiles, maximal_hamming_permutations, tile_size_for
from tests.methods.pretext_runs import assert_two_ranks_equal_one, train_cli


def _cfg(size=12, **method):
    c = Config()
    c.set_method("jigsaw")
    c.model.name, c.data.image_size = "resnet-tiny", size
    c.method.num_permutations, c.method.tile_dim, c.method.head_hidden_dim = 10, 16, 16
    for k, v in method.items():
        setattr(c.method, k, v)
    return c


def _pairwise_hamming(p):
    d = (p[:, None, :] != p[None, :, :]).sum(-1)
    return d + torch.eye(len(p), dtype=d.dtype) * 99  # ignore each permutation against itself


def test_tiles_reassemble_to_the_image_under_the_inverse_permutation():
    torch.manual_seed(0)
    m = build_method(_cfg(12, tile_size=4, tile_normalize=False))  # tile = cell: no gaps, no jitter
    x = torch.randn(6, 3, 12, 12)
    shuffled, labels = m.make_puzzles(x, step=0)  # [6, 9, 3, 4, 4]
    for n in range(6):
        order = m.permutations[labels[n]]  # position i holds tile order[i]
        tiles = torch.empty_like(shuffled[n])
        tiles[order] = shuffled[n]  # the inverse permutation
        rows = [torch.cat(list(tiles[r * 3 : r * 3 + 3]), dim=2) for r in range(3)]
        torch.testing.assert_close(torch.cat(rows, dim=1), x[n])
    assert len(set(labels.tolist())) > 1  # not every image got the same permutation


def test_jittered_tiles_stay_inside_their_cell():
    torch.manual_seed(0)
    m = build_method(_cfg(15, tile_size=3, tile_normalize=False))  # 5 px cells, 3 px tiles
    x = torch.randn(4, 3, 15, 15)
    shuffled, labels = m.make_puzzles(x, step=1)
    seen_offsets = set()
    for n in range(4):
        order = m.permutations[labels[n]]
        for i in range(9):
            cell = int(order[i])
            r0, c0 = (cell // 3) * 5, (cell % 3) * 5
            found = [(dy, dx) for dy in range(3) for dx in range(3)
                     if torch.equal(shuffled[n, i], x[n, :, r0 + dy : r0 + dy + 3, c0 + dx : c0 + dx + 3])]
            assert found, f"tile {i} of image {n} is not a crop of cell {cell}"
            seen_offsets.update(found)
    assert len(seen_offsets) > 1  # the crops really move inside their cells


def test_cut_tiles_reads_the_requested_window():
    x = torch.arange(2 * 9 * 9, dtype=torch.float).view(2, 1, 9, 9).expand(-1, 3, -1, -1)
    offsets = torch.zeros(2, 9, 2, dtype=torch.long)
    offsets[1, 5] = torch.tensor([1, 0])
    tiles = cut_tiles(x, 2, offsets)  # [2, 9, 3, 2, 2]
    assert torch.equal(tiles[0, 4], x[0, :, 3:5, 3:5])
    assert torch.equal(tiles[1, 5], x[1, :, 4:6, 6:8])


def test_permutation_set_is_reproducible_and_far_apart():
    a = maximal_hamming_permutations(100, seed=3)
    assert torch.equal(a, maximal_hamming_permutations(100, seed=3))
    assert not torch.equal(a, maximal_hamming_permutations(100, seed=4))
    assert a.shape == (100, 9) and len({tuple(p) for p in a.tolist()}) == 100
    assert all(sorted(p) == list(range(9)) for p in a.tolist())
    d = _pairwise_hamming(a)
    # Greedy maximal mean distance (Noroozi & Favaro, Algorithm 1): 9! permutations average
    # ~8 apart at random, the greedy set a bit more.
    assert (d.masked_fill(d > 9, 0).sum() / (100 * 99)).item() > 8.0


@pytest.mark.parametrize("min_hamming", [5, 7])
def test_permutation_set_has_the_requested_minimum_hamming_distance(min_hamming):
    p = maximal_hamming_permutations(30, seed=0, min_hamming=min_hamming)
    assert _pairwise_hamming(p).min().item() >= min_hamming
    with pytest.raises(FastSSLError, match="min_hamming"):
        maximal_hamming_permutations(2000, seed=0, min_hamming=9)


def test_permutations_are_a_buffer_restored_from_a_checkpoint():
    a, b = build_method(_cfg(perm_seed=1)), build_method(_cfg(perm_seed=2))
    assert "permutations" in a.state_dict() and not torch.equal(a.permutations, b.permutations)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.permutations, b.permutations)


def test_puzzles_do_not_depend_on_the_number_of_ranks(monkeypatch):
    m = build_method(_cfg(12, tile_normalize=False))
    x = torch.randn(8, 3, 12, 12)
    whole, labels = m.make_puzzles(x, step=2)
    for rank in range(2):
        monkeypatch.setattr(batch_draws, "dp_size", lambda: 2)
        monkeypatch.setattr(batch_draws, "dp_rank", lambda r=rank: r)
        part, part_labels = m.make_puzzles(x[rank * 4 : (rank + 1) * 4], step=2)
        assert torch.equal(part, whole[rank * 4 : (rank + 1) * 4])
        assert torch.equal(part_labels, labels[rank * 4 : (rank + 1) * 4])


def test_forward_classifies_permutations_with_normalised_tiles():
    torch.manual_seed(0)
    m = build_method(_cfg())
    x = torch.randn(4, 3, 12, 12)
    tiles, _ = m.make_puzzles(x, step=0)
    flat = tiles.flatten(2)
    torch.testing.assert_close(flat.mean(-1), torch.zeros(4, 9), atol=1e-5, rtol=0)  # Sec. 3.1: per-tile mean/std
    torch.testing.assert_close(flat.std(-1, unbiased=False), torch.ones(4, 9), atol=1e-3, rtol=0)
    out = m([x])
    assert set(out) == {"loss", "jigsaw_acc"}
    out["loss"].backward()
    assert m.backbone.trunk.conv1.weight.grad is not None and m.fc8.weight.shape[0] == 10


def test_tile_size_follows_the_paper_and_must_fit():
    assert tile_size_for(75, 0) == 64 and tile_size_for(8, 0) == 7 and tile_size_for(8, 5) == 5
    with pytest.raises(FastSSLError, match="--method.tile_size"):
        Jigsaw.view_spec(_cfg(12, tile_size=5))


@pytest.mark.parametrize("recipe", ['jigsaw-cpu', 'jigsaw-resnet50-imagenet'])
def test_recipes_validate_and_build_their_views(recipe):
    cfg = validate(get_recipe(recipe))
    assert cfg.method.name == "jigsaw" and len(method_class("jigsaw").view_spec(cfg).views) == 1

def test_trains_a_short_run_through_the_cli(tmp_path):
    rows, weights = train_cli(tmp_path / "run", "jigsaw-cpu", "--train.max_steps=3", "--data.image_size=12",
                              "--method.tile_size=0", "--method.num_permutations=10", "--method.tile_dim=16",
                              "--method.head_hidden_dim=16")
    assert len(rows) == 3 and all("jigsaw_acc" in r for r in rows)
    assert torch.equal(weights["permutations"], maximal_hamming_permutations(10, 0))


@pytest.mark.distributed
@pytest.mark.slow
def test_world_size_2_equals_world_size_1(tmp_path):
    # Dropout masks come from each rank's own RNG, so the comparison runs without dropout.
    assert_two_ranks_equal_one(tmp_path, "jigsaw-cpu", "--data.image_size=12", "--method.tile_size=0",
                               "--method.num_permutations=10", "--method.tile_dim=16", "--method.head_hidden_dim=16",
                               "--method.dropout=0")
