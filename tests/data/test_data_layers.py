"""fastssl.data's modules import in the direction the data flows:
sources -> views -> stream -> backends -> factory -> tools (dtypes is a leaf anyone may use).

A lower layer never imports a higher one, lazily or not, and no module inside the package imports
the package's own `__init__` (whose re-exports would make every module depend on every other).
"""

import ast
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "fastssl" / "data"
LAYERS = ["dtypes", "sources", "views", "stream", "backends", "factory", "tools"]


def _layer(module: str) -> str:
    """'fastssl.data.backends.gpu_tensor' -> 'backends'."""
    return module.split(".")[2]


def _data_imports(path: Path) -> set[str]:
    """fastssl.data modules imported anywhere in `path` (absolute imports: the package uses no other kind)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            names = [f"{node.module}.{a.name}" for a in node.names]
            found.update(n for n in [node.module, *names] if n and n.startswith("fastssl.data"))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("fastssl.data"))
    return found


MODULES = sorted(p for p in DATA.rglob("*.py") if p.name != "__init__.py" or p.parent != DATA)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(DATA)))
def test_imports_follow_the_data_flow(path):
    layer = path.relative_to(DATA).parts[0].removesuffix(".py")
    assert layer in LAYERS, f"{path}: a new top-level module of fastssl.data belongs in LAYERS"
    for target in _data_imports(path):
        assert target != "fastssl.data", f"{path} imports the fastssl.data package itself; import the defining module"
        other = _layer(target)
        if other in LAYERS and other != "dtypes":
            assert LAYERS.index(other) <= LAYERS.index(layer), f"{path} ({layer}) imports {target} ({other})"


def test_the_checker_sees_imports():
    """The factory imports every backend layer; a parser that saw nothing would pass vacuously."""
    layers = {_layer(t) for t in _data_imports(DATA / "factory.py")}
    assert {"backends", "sources", "views"} <= layers
