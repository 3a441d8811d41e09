import pytest
import torch

import fastssl.methods.batch_draws as batch_draws
from fastssl.config import Config, validate
from fastssl.methods import build_method, method_class
from fastssl.recipes import get_recipe
from fastssl.methods.rotation import Rotation, all_rotations, rotate_quarter_turns
from tests.methods.pretext_runs import assert_two_ranks_equal_one, train_cli


def _cfg(rotations="all"):
    c = Config()
    c.set_method("rotation")
    c.model.name, c.data.image_size = "resnet-tiny", 8
    c.method.rotations = rotations
    return c


def _marked(n=3, size=5):
    """Images that are zero except one pixel at the top-left: [n, 3, size, size]."""
    x = torch.zeros(n, 3, size, size)
    x[:, :, 0, 0] = torch.arange(1, n + 1, dtype=torch.float)[:, None]
    return x


def test_all_rotations_labels_match_the_rotation_applied():
    x = _marked()
    rotated, labels = all_rotations(x)
    assert rotated.shape == (12, 3, 5, 5) and labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    # k quarter turns counter-clockwise carry the top-left pixel to: top-left, bottom-left,
    # bottom-right, top-right.
    corner = {0: (0, 0), 1: (4, 0), 2: (4, 4), 3: (0, 4)}
    for img, k in zip(rotated, labels.tolist()):
        r, c = corner[k]
        assert img[0, r, c] > 0 and img[0].count_nonzero() == 1


def test_random_rotation_labels_undo_the_rotation():
    torch.manual_seed(0)
    x = torch.randn(32, 3, 6, 6)
    m = build_method(_cfg("random"))
    rotated, labels = m.make_targets(x, step=5)
    assert set(labels.tolist()) == {0, 1, 2, 3}  # 32 draws cover every class
    for img, orig, k in zip(rotated, x, labels.tolist()):
        torch.testing.assert_close(torch.rot90(img, -k, dims=(1, 2)), orig)
    again, labels_again = m.make_targets(x, step=5)
    assert torch.equal(labels, labels_again) and torch.equal(rotated, again)  # a pure function of the step
    assert not torch.equal(m.make_targets(x, step=6)[1], labels)
    torch.testing.assert_close(rotate_quarter_turns(x, labels), rotated)


def test_random_rotations_do_not_depend_on_the_number_of_ranks(monkeypatch):
    x = torch.randn(8, 3, 4, 4)
    m = build_method(_cfg("random"))
    _, whole = m.make_targets(x, step=3)
    parts = []
    for rank in range(2):
        monkeypatch.setattr(batch_draws, "dp_size", lambda: 2)
        monkeypatch.setattr(batch_draws, "dp_rank", lambda r=rank: r)
        parts.append(m.make_targets(x[rank * 4 : (rank + 1) * 4], step=3)[1])
    assert torch.equal(torch.cat(parts), whole)


def test_loss_is_cross_entropy_of_the_head_on_the_four_copies():
    torch.manual_seed(0)
    m = build_method(_cfg()).eval()
    x = torch.randn(5, 3, 8, 8)
    out = m([x])
    rotated, labels = all_rotations(x)
    expect = torch.nn.functional.cross_entropy(m.head(m.backbone(rotated)), labels)
    torch.testing.assert_close(out["loss"], expect)
    assert 0 <= out["rotation_acc"].item() <= 1
    assert isinstance(m.head, torch.nn.Linear)  # RotNet's head: one linear layer on pooled features


def test_rotation_is_learnable_on_a_fixed_batch():
    torch.manual_seed(0)
    m = build_method(_cfg())
    x = torch.rand(8, 3, 8, 8)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    first = None
    for _ in range(25):
        out = m([x])
        first = first if first is not None else out["loss"].item()
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert out["loss"].item() < 0.5 * first and out["rotation_acc"].item() > 0.7


def test_one_view_spec_and_unknown_mode_rejected():
    c = _cfg()
    assert len(Rotation.view_spec(c).views) == 1
    c.method.rotations = "sometimes"
    assert any(k == "rotations" for k, _ in c.method.check())


@pytest.mark.parametrize("recipe", ['rotation-cpu', 'rotation-resnet18-cifar10', 'rotation-resnet50-imagenet'])
def test_recipes_validate_and_build_their_views(recipe):
    cfg = validate(get_recipe(recipe))
    assert cfg.method.name == "rotation" and len(method_class("rotation").view_spec(cfg).views) == 1

def test_trains_a_short_run_through_the_cli(tmp_path):
    rows, weights = train_cli(tmp_path / "run", "rotation-cpu", "--train.max_steps=3")
    assert len(rows) == 3 and all("rotation_acc" in r for r in rows)
    assert "head.weight" in weights


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["all", "random"])
def test_world_size_2_equals_world_size_1(tmp_path, mode):
    assert_two_ranks_equal_one(tmp_path, "rotation-cpu", f"--method.rotations={mode}")
