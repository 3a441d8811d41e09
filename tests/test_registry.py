"""One registry pattern (fastssl/registry.py), and every method registered whole.

A method is registered whole when it has a config class (whose `name` is its key), a CPU recipe on
the built-in digits, a row in the README's recipe table and a test file under tests/methods/.
`missing_parts` is checked against a method that lacks all four, so the check itself can fail.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from fastssl.config import MethodConfig
from fastssl.errors import FastSSLError
from fastssl.registry import BACKBONES, BENCHMARKS, ENGINES, METHODS, RECIPES, SOURCES, Entry, Registry

ROOT = Path(__file__).resolve().parents[1]


def _cpu_recipes() -> dict[str, str]:
    """method name -> its first CPU recipe on the built-in digits."""
    out: dict[str, str] = {}
    for name, make in RECIPES.items():
        cfg = make()
        if (name == "default" or name.endswith("-cpu")) and cfg.data.dataset == "digits":
            out.setdefault(cfg.method.name, name)
    return out


def missing_parts(entry: Entry, cpu_recipes: dict[str, str], readme: str) -> list[str]:
    missing = []
    config = entry.meta.get("config")
    if not (inspect.isclass(config) and issubclass(config, MethodConfig) and config().name == entry.name):
        missing.append(f"a config class whose name is '{entry.name}'")
    recipe = cpu_recipes.get(entry.name)
    if recipe is None:
        missing.append("a *-cpu recipe on the built-in digits")
    elif not any(line.startswith("|") and f"`{recipe}`" in line for line in readme.splitlines()):
        missing.append(f"a README table row for `{recipe}`")
    module = inspect.getmodule(entry.obj).__name__.rsplit(".", 1)[-1]
    if not (ROOT / "tests" / "methods" / f"test_{module}.py").exists():
        missing.append(f"tests/methods/test_{module}.py")
    return missing


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_is_registered_whole(name):
    readme = (ROOT / "README.md").read_text()
    assert missing_parts(METHODS.entry(name), _cpu_recipes(), readme) == []


def test_the_check_flags_a_method_registered_without_its_parts():
    class Orphan:
        pass

    missing = missing_parts(Entry("orphan", Orphan, {}), _cpu_recipes(), "")
    assert len(missing) == 3, missing  # no config, no CPU recipe, no test file
    with_recipe = missing_parts(Entry("orphan", Orphan, {}), {"orphan": "orphan-cpu"}, "| `simclr-cpu` |")
    assert "a README table row for `orphan-cpu`" in with_recipe


@pytest.mark.parametrize("registry", [METHODS, ENGINES, SOURCES, BACKBONES, RECIPES, BENCHMARKS],
                         ids=lambda r: r.kind)
def test_every_registry_fills_itself_and_names_its_flag_on_a_typo(registry):
    names = registry.names()
    assert names and all(registry.get(n) is registry.entry(n).obj for n in names)
    with pytest.raises(FastSSLError, match=f"unknown {registry.flag}='{names[0]}x'. Did you mean '{names[0]}'"):
        registry.get(names[0] + "x")


def test_a_second_object_under_a_taken_name_is_refused():
    reg: Registry[object] = Registry("thing", "--thing", "fastssl.registry")

    @reg.register("a")
    class A:
        pass

    reg.register("a")(A)  # the same object again (a module reloaded) is fine
    with pytest.raises(ValueError, match="registered twice"):
        @reg.register("a")
        class B:
            pass
