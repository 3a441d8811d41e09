"""The example launch configs must stay valid as config keys change, and fit their strategy."""

from pathlib import Path

import pytest

from fastssl.cli import resolve_config
from fastssl.config import validate
from fastssl.recipes import RECIPES

LAUNCH = Path(__file__).resolve().parents[2] / "launch"
CONFIGS = sorted((LAUNCH / "configs").glob("*.json"))


def _recipe_of(path: Path) -> str:
    """The longest recipe name the file name starts with (`<recipe>-<what>.json`)."""
    names = [r for r in RECIPES if path.stem.startswith(r + "-")]
    assert names, f"{path.name} does not start with a recipe name"
    return max(names, key=len)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_launch_config_applies_to_its_recipe(path):
    recipe = _recipe_of(path)
    cfg = resolve_config(recipe, [], str(path))
    assert cfg.recipe == recipe and cfg.train.out
    validate(cfg)  # the strategy and its ZeRO stage too
    if cfg.dist.strategy == "deepspeed":
        assert cfg.optim.name != "lars", "DeepSpeed ZeRO refuses LARS (flat partitions)"


def test_there_are_launch_configs_for_every_strategy():
    strategies = {resolve_config(_recipe_of(p), [], str(p)).dist.strategy for p in CONFIGS}
    assert {"ddp", "fsdp", "deepspeed"} <= strategies


@pytest.mark.parametrize("script", ["torchrun.sh", "multinode.sh", "slurm.sbatch"])
def test_launchers_run_fastssl_train(script):
    text = (LAUNCH / script).read_text()
    assert "-m fastssl train" in text and '"$@"' in text
