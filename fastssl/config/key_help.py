"""Each config key's help, read from the comments beside its dataclass field: the one source of it.

A field's help is the comment block right above it plus any comment on its own line, as written in
sections.py and the method configs. `fastssl config --keys` prints the first sentence of each;
`fastssl config --save` writes the whole comment above each key of the file.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import textwrap

_FIELD = re.compile(r"^(\w+)\s*:[^=]*?(=.*)?$")


def _inline_comment(code: str) -> tuple[str, str]:
    """`x: int = 1  # note` -> ("x: int = 1", "note"); a '#' inside a string literal is not a comment."""
    quote = None
    for i, ch in enumerate(code):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            return code[:i].rstrip(), code[i + 1 :].strip()
    return code, ""


@functools.cache
def _own_comments(cls: type) -> dict[str, str]:
    lines = textwrap.dedent(inspect.getsource(cls)).splitlines()
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith("class ")):]
    body_indent = None
    out: dict[str, str] = {}
    # A comment block describes every field below it up to the next comment or blank line:
    # `# ... a 2-layer MLP head, 2048 wide, 128-d output.` above proj_hidden_dim, proj_dim and
    # proj_layers. An inline comment is the field's own.
    pending: list[str] = []
    group: list[str] = []
    for line in lines[1:]:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if not stripped or stripped.startswith('"""'):
            pending, group = [], []
            continue
        if body_indent is None:
            body_indent = indent
        if indent != body_indent:
            continue  # inside a method or a continued expression
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        code, inline = _inline_comment(stripped)
        m = _FIELD.match(code)
        if m and not code.startswith(("def ", "class ", "@", "return")):
            group = pending or group
            out[m.group(1)] = inline if inline and not pending else " ".join([*group, inline]).strip()
        else:
            group = []
        pending = []
    return out


def field_help(cls: type) -> dict[str, str]:
    """{field: its comment} for a config dataclass, a subclass's comment winning over its base's."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            out.update({k: v for k, v in _own_comments(klass).items() if v or k not in out})
    return {f.name: out.get(f.name, "") for f in dataclasses.fields(cls)}


# Abbreviations whose period ends no sentence ("Chen et al. 2020", "Sec. 3.3", "e.g. 8").
_NOT_AN_END = ("al", "e.g", "i.e", "Sec", "Fig", "Eq", "App", "Tab", "cf", "vs", "approx", "etc")


def first_sentence(text: str, limit: int = 110) -> str:
    """The comment's first sentence (one line of `fastssl config --keys`), cut at `limit` characters."""
    end = len(text)
    for m in re.finditer(r"\.(?=\s|$)", text):
        before = text[: m.start()]
        word = re.split(r"[\s(]", before)[-1]
        if word not in _NOT_AN_END and before.count("(") <= before.count(")"):
            end = m.start()
            break
    line = text[:end]
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def key_lines(cfg) -> list[str]:
    """`section.key = value  # first sentence of its help`, for every key of `cfg` (its method's keys)."""
    from fastssl.config.config import sections

    rows = []
    for name, section in sections(cfg).items():
        helps = field_help(type(section))
        for f in dataclasses.fields(section):
            rows.append((f"{name}.{f.name} = {getattr(section, f.name)!r}", first_sentence(helps[f.name])))
    width = max(len(left) for left, _ in rows)
    return [f"{left:<{width}}  # {right}" for left, right in rows]
