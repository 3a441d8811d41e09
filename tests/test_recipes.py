import fnmatch
import re
from pathlib import Path

import pytest

from fastssl.config import validate
from fastssl.errors import FastSSLError
from fastssl.recipes import RECIPES, get_recipe

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
# Recipes whose name does not start with their method; their docstrings say SimCLR.
METHOD_OF = {"default": "simclr", "cifar10-cpu": "simclr"}


def _named_model(name: str) -> str | None:
    """The backbone a recipe's name promises: resnet18 on CIFAR-10 is the 3x3-stem resnet18-cifar;
    `*-cpu` recipes name none."""
    if m := re.search(r"-(resnet\d+|vit-\w+?)-", name):
        model = m.group(1).replace("-", "_")
        return f"{model}-cifar" if model.startswith("resnet") and "cifar10" in name else model
    return None


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_trains_what_its_name_says_and_validates(name):
    cfg = RECIPES.get(name)()
    validate(cfg)
    assert cfg.recipe == name  # what config.json and `fastssl config` record
    assert cfg.method.name == METHOD_OF.get(name, name.split("-")[0])
    if model := _named_model(name):
        assert cfg.model.name == model
    if "cifar10" in name:
        assert (cfg.data.dataset, cfg.aug.normalize_mean) == ("npz", CIFAR10_MEAN)
    elif "imagenet" in name:
        assert (cfg.data.dataset, cfg.aug.normalize_mean) == ("folder", IMAGENET_MEAN)
    else:
        assert cfg.data.dataset == "digits"


def test_required_recipes_exist():
    # The README's quick start and launch examples name these.
    expected = {
        "default": ("simclr", "resnet-tiny", "digits", 16),
        "simclr-resnet18-cifar10": ("simclr", "resnet18-cifar", "npz", 32),
        "byol-resnet18-cifar10": ("byol", "resnet18-cifar", "npz", 32),
        "simclr-resnet50-imagenet": ("simclr", "resnet50", "folder", 224),
    }
    for name, want in expected.items():
        cfg = get_recipe(name)
        assert (cfg.method.name, cfg.model.name, cfg.data.dataset, cfg.data.image_size) == want


def test_recipe_list_is_the_documented_one():
    # README.md's recipe table (tests/test_readme.py checks each row's numbers) lists every recipe,
    # by name or by a `family-*` row.
    section = README[README.index("\n## Recipes"):]
    section = section[: section.index("\n## ", 1)]
    documented = {n for line in section.splitlines() if line.startswith("| `")
                  for n in re.findall(r"`([^`]+)`", line.split("|")[1])}
    patterns = {n for n in documented if "*" in n}
    assert documented - patterns <= set(RECIPES), "a README row names a recipe that does not exist"
    undocumented = [r for r in RECIPES if r not in documented and not any(fnmatch.fnmatch(r, p) for p in patterns)]
    assert not undocumented, f"recipes missing from README.md's recipe table: {undocumented}"


def test_recipes_are_fresh_copies():
    a, b = get_recipe("default"), get_recipe("default")
    a.train.epochs = 999
    assert b.train.epochs != 999


def test_recipe_settings_follow_papers():
    assert get_recipe("byol-resnet18-cifar10").aug.solarize_p == (0.0, 0.2)  # BYOL Table 6: asymmetric


def test_unknown_recipe_names_closest():
    with pytest.raises(FastSSLError, match="simclr-resnet18-cifar10"):
        get_recipe("simclr-resnet18-cifar")
