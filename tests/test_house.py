"""House rules that a reader should not have to police by hand, checked on the source text.

- No function (or method) over 80 lines in fastssl/ or kernels/: a longer one hides steps that
  deserve names.
- No module under fastssl/ except fastssl/parallel_dims.py reads torch.distributed's global rank
  or world size (`get_rank`, `get_world_size`): code asks the parallel-dims object for the
  data-parallel rank and size, so a new parallel dim changes one file.

Each checker is also run on a planted violation, so a checker that stopped seeing anything fails.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 80
GLOBAL_READS = {"get_rank", "get_world_size"}
DIMS_MODULE = Path("fastssl/parallel_dims.py")


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int]]:
    """(qualified name, lines) of every function longer than `limit` lines, decorators excluded."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = prefix
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}."
                if not isinstance(child, ast.ClassDef) and child.end_lineno - child.lineno + 1 > limit:
                    found.append((name[:-1], child.end_lineno - child.lineno + 1))
            visit(child, name)

    visit(ast.parse(source), "")
    return found


def _distributed_aliases(tree: ast.AST) -> tuple[set[str], set[str]]:
    """(names bound to the torch.distributed module, names bound to the torch package)."""
    modules, torches = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("torch.distributed") and a.asname:
                    modules.add(a.asname)
                elif a.name.split(".")[0] == "torch":
                    torches.add(a.asname or "torch")
        elif isinstance(node, ast.ImportFrom) and node.module == "torch":
            modules.update(a.asname or a.name for a in node.names if a.name == "distributed")
    return modules, torches


def _is_distributed(node: ast.AST, modules: set[str], torches: set[str]) -> bool:
    """Whether `node` names torch.distributed (or a submodule): `dist`, `torch.distributed`, ..."""
    if isinstance(node, ast.Name):
        return node.id in modules
    if isinstance(node, ast.Attribute):
        if node.attr == "distributed" and isinstance(node.value, ast.Name) and node.value.id in torches:
            return True
        return _is_distributed(node.value, modules, torches)
    return False


def global_rank_reads(source: str) -> list[tuple[int, str]]:
    """(line, what) of every read of torch.distributed's get_rank / get_world_size: a call through
    any alias of the module (`dist.get_rank`, `torch.distributed.get_world_size`) or an import of
    the function itself (`from torch.distributed import get_rank`)."""
    tree = ast.parse(source)
    modules, torches = _distributed_aliases(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torch.distributed"):
            found += [(node.lineno, f"from {node.module} import {a.name}") for a in node.names if a.name in GLOBAL_READS]
        elif isinstance(node, ast.Attribute) and node.attr in GLOBAL_READS and _is_distributed(node.value, modules, torches):
            found.append((node.lineno, ast.unparse(node)))
    return found


def too_long(root: Path, folders: tuple[str, ...] = ("fastssl", "kernels")) -> list[str]:
    """`path: name is N lines` for every function over the limit in `folders` of `root`."""
    return [f"{p.relative_to(root)}: {name} is {n} lines"
            for p in sorted(q for f in folders for q in (root / f).rglob("*.py"))
            for name, n in long_functions(p.read_text())]


def global_reads(root: Path) -> list[str]:
    """`path:line: what` for every global rank / world size read under root/fastssl, but the dims module's."""
    return [f"{p.relative_to(root)}:{line}: {what}" for p in sorted((root / "fastssl").rglob("*.py"))
            if p.relative_to(root) != DIMS_MODULE for line, what in global_rank_reads(p.read_text())]


# --- the checkers, on planted violations ---------------------------------------------------------
def _plant(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_long_function_check_reports_name_and_length(tmp_path):
    body = "\n".join(f"        x{i} = {i}" for i in range(MAX_FUNCTION_LINES))  # + the def line: 81 lines
    ok = "def f():\n" + "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES - 1)) + "\n"  # 80: allowed
    nested = "def outer():\n    def inner():\n" + "\n".join(f"        x{i} = {i}" for i in range(90)) + "\n"
    root = _plant(tmp_path, {"fastssl/a.py": f"class C:\n    @staticmethod\n    def long():\n{body}\n", "fastssl/ok.py": ok,
                             "kernels/b.py": nested, "elsewhere/c.py": nested})
    assert too_long(root) == [f"fastssl/a.py: C.long is {MAX_FUNCTION_LINES + 1} lines",
                              "kernels/b.py: outer is 92 lines", "kernels/b.py: outer.inner is 91 lines"]


SPELLINGS = [
    "import torch.distributed as dist\nr = dist.get_rank()\n",
    "import torch.distributed as d\nn = d.get_world_size(group)\n",
    "import torch\nr = torch.distributed.get_rank()\n",
    "import torch.distributed\nn = torch.distributed.get_world_size()\n",
    "from torch import distributed as dist\nr = dist.get_rank()\n",
    "from torch import distributed\nr = distributed.get_rank()\n",
    "from torch.distributed import get_rank\n",
    "from torch.distributed import get_world_size as ws\n",
    "import torch.distributed.distributed_c10d as c10d\nr = c10d.get_rank()\n",
    "def f():\n    import torch.distributed as dist\n    return dist.get_rank\n",
]


@pytest.mark.parametrize("source", SPELLINGS)
def test_global_rank_check_catches_every_spelling(tmp_path, source):
    root = _plant(tmp_path, {"fastssl/sub/bad.py": source, str(DIMS_MODULE): source})
    assert [r.split(":")[0] for r in global_reads(root)] == ["fastssl/sub/bad.py"]  # the dims module may


@pytest.mark.parametrize("source", [
    "import deepspeed.comm as dist\nr = dist.get_rank()\n",  # not torch.distributed
    "r = mesh.get_rank()\n",
    "import torch.distributed as dist\nr = dist.get_backend()\n",
])
def test_global_rank_check_leaves_other_get_ranks_alone(tmp_path, source):
    assert global_reads(_plant(tmp_path, {"fastssl/ok.py": source})) == []


# --- the real tree -------------------------------------------------------------------------------
def test_no_function_over_80_lines():
    found = too_long(ROOT)
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines (split them):\n" + "\n".join(found)


def test_only_the_parallel_dims_module_reads_the_global_rank():
    found = global_reads(ROOT)
    assert not found, ("ask the parallel dims (fastssl/parallel_dims.py, world.dims, dp_rank()/dp_size()) instead "
                       "of torch.distributed:\n" + "\n".join(found))
    assert global_rank_reads((ROOT / DIMS_MODULE).read_text()), "the checker no longer sees parallel_dims.py's reads"
