import pytest

from fastssl.errors import FastSSLError
from fastssl.recipes import RECIPES, get_recipe


def test_required_recipes_exist():
    for name in ["default", "simclr-resnet18-cifar10", "byol-resnet18-cifar10", "simclr-resnet50-imagenet"]:
        cfg = get_recipe(name)
        assert cfg.recipe == name


def test_recipes_are_fresh_copies():
    a, b = get_recipe("default"), get_recipe("default")
    a.train.epochs = 999
    assert b.train.epochs != 999


def test_recipe_settings_follow_papers():
    byol = get_recipe("byol-resnet18-cifar10")
    assert byol.method.name == "byol" and byol.aug.solarize_p == (0.0, 0.2)
    assert get_recipe("simclr-resnet18-cifar10").model.name == "resnet18-cifar"
    assert get_recipe("default").data.dataset == "digits"


def test_unknown_recipe_names_closest():
    with pytest.raises(FastSSLError, match="simclr-resnet18-cifar10"):
        get_recipe("simclr-resnet18-cifar")
    assert len(RECIPES) >= 4
