"""Config files: `--config run.yaml` (or .json) in, `fastssl config --save run.yaml` out.

YAML is read with PyYAML's `safe_load`, not OmegaConf: the typed dataclasses already are the schema
and the validator (`set_value` type-checks, names the closest key on a typo), so a second typed
config system with its own interpolation and merge rules would only add a way for the two to
disagree. A file holds sections of keys (`train: {batch_size: 256}`), full or partial, and may name
the `recipe` it starts from; `history` (a run's resume record) is skipped.

`--save` writes every key with its help above it, taken from the dataclass field comments
(key_help.py), so a saved file documents itself and trains as it is.
"""

from __future__ import annotations

import dataclasses
import json
import os
import textwrap
from pathlib import Path
from typing import Any

from fastssl.config.config import Config, section_items, sections
from fastssl.config.key_help import field_help
from fastssl.errors import FastSSLError

_YAML = (".yaml", ".yml")


def read_config_file(path: str) -> tuple[str | None, dict[str, Any]]:
    """(the recipe it names or None, {"section.key": value}) from a YAML or JSON config file."""
    p = Path(path)
    if not p.is_file():
        raise FastSSLError(f"config file {path} does not exist; pass a YAML or JSON file "
                           f"(`fastssl config --save run.yaml` writes one)")
    data = _parse(p)
    if not isinstance(data, dict):
        raise FastSSLError(f"config file {path} must hold sections of keys, like `train: {{batch_size: 256}}`")
    recipe = data.get("recipe")
    return (str(recipe) if recipe else None), dict(section_items(data, f"config file {path}"))


def _parse(p: Path) -> Any:
    text = p.read_text()
    if p.suffix.lower() in _YAML:
        import yaml

        try:
            return yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise FastSSLError(f"config file {p} is not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise FastSSLError(f"config file {p} is not valid JSON (line {e.lineno}): {e.msg}; "
                           f"name it .yaml for YAML") from None


def _yaml_value(value: Any) -> str:
    import yaml

    value = list(value) if isinstance(value, tuple) else value
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...").strip()


def config_yaml(cfg: Config) -> str:
    """`cfg` as a YAML file: each key under its section with its help as a comment above it."""
    lines = [f"# fastssl config (from recipe '{cfg.recipe}'). Train it with: fastssl train --config THIS_FILE",
             f"recipe: {_yaml_value(cfg.recipe)}"]
    for name, section in sections(cfg).items():
        lines += ["", f"{name}:"]
        helps = field_help(type(section))
        for f in dataclasses.fields(section):
            for line in textwrap.wrap(helps[f.name], 96):
                lines.append(f"  # {line}")
            lines.append(f"  {f.name}: {_yaml_value(getattr(section, f.name))}")
    return "\n".join(lines) + "\n"


def save_config(cfg: Config, path: str) -> None:
    """Write `cfg` to `path` atomically: YAML with key help for .yaml/.yml, else JSON."""
    p = Path(path)
    text = config_yaml(cfg) if p.suffix.lower() in _YAML else cfg.to_json() + "\n"
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, p)
