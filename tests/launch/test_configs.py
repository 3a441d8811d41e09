"""The example launch configs must stay valid as config keys change."""

from pathlib import Path

import pytest

from fastssl.cli import resolve_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "launch" / "configs").glob("*.json"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_launch_config_applies_to_its_recipe(path):
    recipe = "-".join(path.stem.split("-")[:3])
    cfg = resolve_config(recipe, [], str(path))
    assert cfg.recipe == recipe and cfg.train.out


def test_there_are_launch_configs():
    assert len(CONFIGS) >= 2
