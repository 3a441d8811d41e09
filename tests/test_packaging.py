"""Every package folder must be listed in pyproject.toml, or a wheel install silently drops it."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_all_packages_listed():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "fastssl").rglob("__init__.py")
    }
    assert found <= listed, f"add to pyproject packages: {sorted(found - listed)}"
    assert cfg["package-dir"]["fastssl_kernels"] == "kernels"


def test_kernels_import_under_their_own_name():
    import fastssl_kernels

    assert Path(fastssl_kernels.__file__).resolve().parent == ROOT / "kernels"
