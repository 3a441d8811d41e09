"""The package's import graph has no cycles, between modules or between sub-packages.

Imports inside functions count: a lazy import still makes two modules depend on each other, and
the back-and-forth it hides (train <-> eval, a base class and the factory of its subclasses in
one file) is what this test exists to stop. `kernels/` must not import `fastssl` at all: the
kernels are the lower layer, `fastssl.losses` the one public API above them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _modules(pkg_dir: Path, pkg_name: str) -> dict[str, Path]:
    out = {}
    for path in pkg_dir.rglob("*.py"):
        rel = path.relative_to(pkg_dir).with_suffix("")
        parts = [pkg_name, *rel.parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(mod: str, path: Path, known: set[str]) -> set[str]:
    """Modules of `known` that `mod` imports anywhere in its file (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()

    def resolve(name: str) -> str | None:
        # "a.b.c" may name a module or an attribute of module "a.b": take the longest known prefix.
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            cand = ".".join(parts[:i])
            if cand in known:
                return cand
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if (r := resolve(a.name)) is not None:
                    found.add(r)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                r = resolve(f"{target}.{a.name}") or resolve(target)
                if r is not None:
                    found.add(r)
    found.discard(mod)
    return found


def _graph() -> dict[str, set[str]]:
    mods = {**_modules(ROOT / "fastssl", "fastssl"), **_modules(ROOT / "kernels", "fastssl_kernels")}
    known = set(mods)
    graph = {}
    for m, p in mods.items():
        graph[m] = _imports(m, p, known)
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        colour[n] = GREY
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if colour.get(d) == GREY:
                return stack[stack.index(d):] + [d]
            if colour.get(d) == WHITE and (c := visit(d)):
                return c
        stack.pop()
        colour[n] = BLACK
        return None

    for n in sorted(graph):
        if colour[n] == WHITE and (c := visit(n)):
            return c
    return None


def _package_of(mod: str) -> str:
    parts = mod.split(".")
    return ".".join(parts[:2]) if parts[0] == "fastssl" and len(parts) > 1 else parts[0]


def test_no_module_import_cycle():
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_subpackage_import_cycle():
    """train <-> eval and the like: sub-packages of fastssl form a DAG too."""
    pkgs: dict[str, set[str]] = {}
    for m, deps in _graph().items():
        a = _package_of(m)
        pkgs.setdefault(a, set())
        for d in deps:
            b = _package_of(d)
            # fastssl/__init__ and the CLI sit on top; they may import anything.
            if b != a and a not in ("fastssl", "fastssl.cli", "fastssl.__main__"):
                pkgs[a].add(b)
    cycle = _find_cycle(pkgs)
    assert cycle is None, "sub-package cycle: " + " -> ".join(cycle)


def test_kernels_do_not_import_fastssl():
    graph = _graph()
    bad = {m: sorted(d for d in deps if d.startswith("fastssl.") or d == "fastssl")
           for m, deps in graph.items() if m.startswith("fastssl_kernels")}
    assert not any(bad.values()), f"kernels import fastssl: {bad}"


def test_the_checker_finds_a_cycle():
    """The checker itself can fail: a two-module cycle is found."""
    assert _find_cycle({"a": {"b"}, "b": {"a"}}) is not None
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("mod", ["fastssl.config.config", "fastssl.methods.simclr", "fastssl.losses.contrastive"])
def test_graph_sees_real_edges(mod):
    graph = _graph()
    assert mod in graph and graph[mod], f"{mod} should import something; the parser missed its imports"
