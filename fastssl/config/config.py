"""`Config`: a run, fully described; `--section.key=value` overrides with type checks.

A run is one `Config`. Recipes (fastssl/recipes/) are named `Config`s; the CLI applies overrides on
top with `apply_overrides`, which type-checks values, rejects unknown keys with the closest valid
one, and applies `method.name` first (it chooses the method section's class: methods.py).
`validate` checks ranges; every error names the `--section.key` to change.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from fastssl.config.methods import MethodConfig, SimCLRConfig, method_config_class, method_keys
from fastssl.config.sections import (
    AugConfig,
    DataConfig,
    DistConfig,
    EvalConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)
from fastssl.errors import FastSSLError, did_you_mean


# Keys a run's config.json holds beside the config sections (fastssl/train/run_dir.py): the record
# of each resume's changes. Readers of config.json skip them.
RUN_RECORD_KEYS = ("history",)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=SimCLRConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    recipe: str = "default"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        """Inverse of to_dict. Unknown keys fail like CLI overrides do."""
        cfg = cls()
        items = []
        for section, values in d.items():
            if section == "recipe":
                cfg.recipe = str(values)
                continue
            if section in RUN_RECORD_KEYS:
                continue
            if not isinstance(values, dict):
                raise FastSSLError(f"config section '{section}' must be an object of keys, got {values!r}")
            items += [(f"{section}.{k}", v) for k, v in values.items()]
        for key, value in sorted(items, key=lambda kv: kv[0] != "method.name"):
            set_value(cfg, key, value)
        return cfg

    def set_method(self, name: str) -> MethodConfig:
        """Switch the method section to `name`'s class (what `--method.name=` does)."""
        set_value(self, "method.name", name)
        return self.method


def _sections(cfg: Config) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "recipe"}


def all_keys(cfg: Config | None = None) -> list[str]:
    """Every `section.key` of `cfg`'s sections (the method section as configured)."""
    cfg = cfg or Config()
    return [f"{name}.{f.name}" for name, section in _sections(cfg).items() for f in dataclasses.fields(section)]


def _unknown(key: str, choices: list[str], what: str) -> FastSSLError:
    return FastSSLError(f"unknown {what} '{key}'.{did_you_mean(key, choices)} Run `fastssl config --keys` to list them.")


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Convert a CLI string (or JSON value) to the field's declared type, or fail clearly."""
    origin = typing.get_origin(typ)
    if origin is tuple:
        args = typing.get_args(typ)
        items = value.split(",") if isinstance(value, str) else list(value)
        if len(items) != len(args):
            raise FastSSLError(
                f"{key} takes {len(args)} comma-separated values, got {value!r}; "
                f"write e.g. --{key}={','.join(str(_example(a)) for a in args)}"
            )
        return tuple(_coerce(v.strip() if isinstance(v, str) else v, a, key) for v, a in zip(items, args))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        return _coerce(value, args[0], key)
    if typ is bool:
        if isinstance(value, bool):
            return value
        s = str(value).strip().lower()
        if s in ("1", "true", "yes", "on"):
            return True
        if s in ("0", "false", "no", "off"):
            return False
        raise FastSSLError(f"{key} is a bool; write --{key}=true or --{key}=false, not {value!r}")
    if typ is int:
        if isinstance(value, bool):
            raise FastSSLError(f"{key} is an int, got {value!r}")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise FastSSLError(f"{key} is an int; write e.g. --{key}=8, not {value!r}") from None
        if f != int(f):
            raise FastSSLError(f"{key} is an int; write e.g. --{key}=8, not {value!r}")
        return int(f)
    if typ is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise FastSSLError(f"{key} is a float; write e.g. --{key}=0.1, not {value!r}") from None
    if typ is str:
        return str(value)
    raise TypeError(f"unsupported config type {typ!r} for {key}")


def _example(typ: Any) -> Any:
    return {int: 1, float: 0.5, bool: "true", str: "x"}.get(typ, "x")


def _switch_method(cfg: Config, name: str) -> None:
    cls = method_config_class(name)
    old = cfg.method
    if type(old) is cls:
        return
    new = cls()
    old_defaults = type(old)()
    # Keep what the recipe or an earlier override deliberately set, where the new method has it.
    for f in dataclasses.fields(new):
        if f.name != "name" and hasattr(old, f.name) and getattr(old, f.name) != getattr(old_defaults, f.name, None):
            setattr(new, f.name, getattr(old, f.name))
    cfg.method = new


def set_value(cfg: Config, key: str, value: Any) -> None:
    """Set `section.key` on cfg with type checking. Unknown sections/keys name the closest key."""
    if key.count(".") != 1:
        raise _unknown(key, all_keys(cfg), "config key")
    section_name, name = key.split(".")
    sections = _sections(cfg)
    if section_name not in sections:
        raise _unknown(key, all_keys(cfg), "config key")
    if key == "method.name":
        _switch_method(cfg, str(value))
        return
    section = sections[section_name]
    hints = typing.get_type_hints(type(section))
    if name not in hints:
        owners = method_keys().get(name) if section_name == "method" else None
        if owners:
            raise FastSSLError(
                f"--{key} is not a key of method '{cfg.method.name}' (it belongs to {', '.join(owners)}); "
                f"set --method.name={owners[0]} or drop --{key}"
            )
        raise _unknown(key, all_keys(cfg), "config key")
    setattr(section, name, _coerce(value, hints[name], key))


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply `--section.key=value` (or `section.key=value`) strings; `method.name` goes first."""
    parsed = []
    for item in overrides:
        s = item[2:] if item.startswith("--") else item
        if "=" not in s:
            raise FastSSLError(f"override {item!r} has no value; write --{s}=VALUE")
        key, value = s.split("=", 1)
        parsed.append((key.strip(), value))
    for key, value in sorted(parsed, key=lambda kv: kv[0] != "method.name"):
        set_value(cfg, key, value)
    return cfg


def validate(cfg: Config) -> Config:
    """Range checks that types alone cannot make; each error names the key to change."""
    for key, problem in cfg.method.check():
        raise FastSSLError(f"--method.{key} {problem}")
    checks = [
        ("train.batch_size", cfg.train.batch_size >= 1, "must be >= 1"),
        ("train.epochs", cfg.train.epochs >= 0, "must be >= 0"),
        ("train.max_steps", cfg.train.max_steps >= 0, "must be >= 0"),
        ("optim.base_lr", cfg.optim.base_lr > 0, "must be > 0"),
        ("optim.weight_decay", cfg.optim.weight_decay >= 0, "must be >= 0"),
        ("optim.lars_eta", cfg.optim.lars_eta > 0, "must be > 0"),
        ("optim.clip_grad", cfg.optim.clip_grad >= 0, "must be >= 0 (0 disables clipping)"),
        ("data.image_size", cfg.data.image_size >= 1, "must be >= 1"),
        ("data.shuffle_buffer", cfg.data.shuffle_buffer >= 1, "must be >= 1 (1 reads each stream in tar order)"),
        ("eval.knn_t", cfg.eval.knn_t > 0, "must be > 0"),
        ("dist.zero_stage", cfg.dist.zero_stage in (1, 2, 3), "must be 1, 2 or 3 (DeepSpeed ZeRO stages)"),
    ]
    for key, ok, problem in checks:
        if not ok:
            raise FastSSLError(f"--{key}={_get(cfg, key)!r} {problem}")
    return cfg


def _get(cfg: Config, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def flat_config(d: dict[str, Any]) -> dict[str, Any]:
    """A config dict (Config.to_dict or config.json) as {"section.key": value}, JSON-normalised so that
    tuples and lists compare equal."""
    d = json.loads(json.dumps(d))
    out = {"recipe": d.get("recipe")}
    for section, values in d.items():
        if isinstance(values, dict) and section not in RUN_RECORD_KEYS:
            out.update({f"{section}.{k}": v for k, v in values.items()})
    return out


def diff_configs(before: dict[str, Any], after: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """[(key, before, after)] for every `section.key` whose value differs, in key order."""
    a, b = flat_config(before), flat_config(after)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def format_config(cfg: Config) -> str:
    """The resolved config as `section.key = value` lines, printed at the start of a run."""
    lines = [f"recipe = {cfg.recipe}"]
    for name, section in _sections(cfg).items():
        for f in dataclasses.fields(section):
            lines.append(f"{name}.{f.name} = {getattr(section, f.name)!r}")
    return "\n".join(lines)
