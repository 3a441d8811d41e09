"""`Config`: a run, fully described; `--section.key=value` overrides with type checks.

A run is one `Config`. Recipes (fastssl/recipes/) are named `Config`s; the CLI applies overrides on
top with `apply_overrides`, which type-checks values, rejects unknown keys with the closest valid
one, and applies `method.name` first (it chooses the method section's class: methods.py).
`validate` checks ranges; every error names the `--section.key` to change.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Iterable

from fastssl.config.durations import parse_duration, parse_every
from fastssl.config.typed import coerce
from fastssl.config.methods import MethodConfig, SimCLRConfig, method_config_class, method_keys
from fastssl.config import sections as sec
from fastssl.errors import FastSSLError, did_you_mean


# Keys a run's config.json holds beside the config sections (fastssl/train/run_dir.py): the record
# of each resume's changes. Readers of config.json skip them.
RUN_RECORD_KEYS = ("history",)


@dataclass
class Config:
    data: sec.DataConfig = field(default_factory=sec.DataConfig)
    aug: sec.AugConfig = field(default_factory=sec.AugConfig)
    model: sec.ModelConfig = field(default_factory=sec.ModelConfig)
    method: MethodConfig = field(default_factory=SimCLRConfig)
    optim: sec.OptimConfig = field(default_factory=sec.OptimConfig)
    train: sec.TrainConfig = field(default_factory=sec.TrainConfig)
    eval: sec.EvalConfig = field(default_factory=sec.EvalConfig)
    dist: sec.DistConfig = field(default_factory=sec.DistConfig)
    log: sec.LogConfig = field(default_factory=sec.LogConfig)
    recipe: str = "default"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        """Inverse of to_dict. Unknown keys fail like CLI overrides do."""
        cfg = cls()
        if "recipe" in d:
            cfg.recipe = str(d["recipe"])
        return set_values(cfg, section_items(d, "config"))

    def set_method(self, name: str) -> MethodConfig:
        """Switch the method section to `name`'s class (what `--method.name=` does)."""
        set_value(self, "method.name", name)
        return self.method


def section_items(d: dict[str, Any], where: str) -> list[tuple[str, Any]]:
    """A config dict's sections (`{"train": {"epochs": 5}}`: to_dict, a config file) as
    [("train.epochs", 5)], for `set_values`; `recipe` and the run record are not sections."""
    items = []
    for section, values in d.items():
        if section == "recipe" or section in RUN_RECORD_KEYS:
            continue
        if not isinstance(values, dict):
            raise FastSSLError(f"{where}: '{section}' must be a section of keys, like "
                               f"`{section}: {{key: value}}`, not {values!r}")
        items += [(f"{section}.{k}", v) for k, v in values.items()]
    return items


def sections(cfg: Config) -> dict[str, Any]:
    """{section name: its dataclass} in file order (data, aug, model, method, ...)."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "recipe"}


def all_keys(cfg: Config | None = None) -> list[str]:
    """Every `section.key` of `cfg`'s sections (the method section as configured)."""
    cfg = cfg or Config()
    return [f"{name}.{f.name}" for name, section in sections(cfg).items() for f in dataclasses.fields(section)]


def _unknown(key: str, choices: list[str], what: str) -> FastSSLError:
    return FastSSLError(f"unknown {what} '{key}'.{did_you_mean(key, choices)} Run `fastssl config --keys` to list them.")


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
    by_name = sections(cfg)
    if section_name not in by_name:
        raise _unknown(key, all_keys(cfg), "config key")
    if key == "method.name":
        _switch_method(cfg, str(value))
        return
    section = by_name[section_name]
    hints = typing.get_type_hints(type(section))
    if name not in hints:
        owners = method_keys().get(name) if section_name == "method" else None
        if owners:
            raise FastSSLError(
                f"--{key} is not a key of method '{cfg.method.name}' (it belongs to {', '.join(owners)}); "
                f"set --method.name={owners[0]} or drop --{key}"
            )
        raise _unknown(key, all_keys(cfg), "config key")
    setattr(section, name, coerce(value, hints[name], key))


def set_values(cfg: Config, items: "Iterable[tuple[str, Any]]") -> Config:
    """`set_value` for each `("section.key", value)`, `method.name` first: it chooses the method
    section's class, whose keys the others may set (flags, config files, the Python API)."""
    for key, value in sorted(items, key=lambda kv: kv[0] != "method.name"):
        set_value(cfg, key, value)
    return cfg


def parse_overrides(tokens: list[str]) -> list[tuple[str, str]]:
    """`--section.key=value`, `--section.key value` (command lines) and `section.key=value` (bench
    --set, the Python API) as (key, value) pairs; anything else is an error naming the right form."""
    out, i = [], 0
    while i < len(tokens):
        tok = tokens[i]
        key, eq, value = tok.removeprefix("--").partition("=")
        if "." not in key or not (eq or tok.startswith("--")):
            raise FastSSLError(f"unexpected argument {tok!r}; config overrides look like --section.key=value")
        if not eq:  # `--a.b v`: the value is the next token, unless that is another flag
            if i + 1 >= len(tokens) or tokens[i + 1].startswith("--"):
                raise FastSSLError(f"override {tok!r} has no value; write --{key}=VALUE")
            i += 1
            value = tokens[i]
        out.append((key.strip(), value))
        i += 1
    return out


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply override tokens (`parse_overrides`); `method.name` goes first."""
    return set_values(cfg, parse_overrides(overrides))


def validate(cfg: Config) -> Config:
    """Every check on values alone, run by `fastssl config` and by `train` before any work; each
    error names the key to change. (What depends on the world size is checked at start.)"""
    from fastssl.registry import BACKBONES, ENGINES, METHODS, SOURCES

    for key, problem in cfg.method.check():
        raise FastSSLError(f"--method.{key} {problem}")
    for key, problem in cfg.dist.check():
        raise FastSSLError(f"--dist.{key}={getattr(cfg.dist, key)!r} {problem}")
    for key, registry in (("model.name", BACKBONES), ("dist.strategy", ENGINES)):
        registry.entry(_get(cfg, key))
    is_vit = BACKBONES.entry(cfg.model.name).meta["family"] == "vit"
    if METHODS.get(cfg.method.name).needs_vit and not is_vit:
        raise FastSSLError(f"--method.name={cfg.method.name} needs a ViT backbone, got --model.name={cfg.model.name}; "
                           "set --model.name=vit_nano (CPU), vit_small or vit_base")
    if cfg.model.registers and not is_vit:
        raise FastSSLError(f"--model.registers={cfg.model.registers} needs a ViT, but --model.name={cfg.model.name}; "
                           f"set --model.registers=0 or a ViT model")
    if is_vit and cfg.data.image_size % cfg.model.patch_size:
        raise FastSSLError(f"--data.image_size={cfg.data.image_size} is not a multiple of --model.patch_size="
                           f"{cfg.model.patch_size}; pick sizes so that image_size % patch_size == 0")
    if cfg.data.dataset != "auto":
        SOURCES.entry(cfg.data.dataset)
    budget_s = parse_duration(cfg.train.time_budget)
    parse_every(cfg.eval.knn_every)
    checks = [
        ("train.batch_size", cfg.train.batch_size >= 1, "must be >= 1"),
        ("train.epochs", cfg.train.epochs >= 0, "must be >= 0"),
        ("train.max_steps", cfg.train.max_steps >= 0, "must be >= 0"),
        ("train.epochs", cfg.train.epochs >= 1 or cfg.train.max_steps >= 1 or budget_s > 0,
         "leaves nothing to train: set --train.epochs or --train.max_steps to at least 1"),
        ("train.time_budget_tolerance", cfg.train.time_budget_tolerance >= 0, "must be >= 0 (0 = plan once)"),
        ("train.keep_last", cfg.train.keep_last >= 1, "must be >= 1"),
        ("train.log_every", cfg.train.log_every >= 1, "must be >= 1"),
        ("train.ckpt_every_steps", cfg.train.ckpt_every_steps >= 0, "must be >= 0 (0 = once per epoch)"),
        ("train.precision", cfg.train.precision in ("auto", "bf16", "fp32"), "must be auto, bf16 or fp32"),
        ("optim.name", cfg.optim.name in ("lars", "adamw", "sgd"), "must be lars, adamw or sgd"),
        ("optim.base_lr", cfg.optim.base_lr > 0, "must be > 0"),
        ("optim.weight_decay", cfg.optim.weight_decay >= 0, "must be >= 0"),
        ("optim.lars_eta", cfg.optim.lars_eta > 0, "must be > 0"),
        ("optim.bias_lr_scale", cfg.optim.bias_lr_scale > 0, "must be > 0"),
        ("optim.clip_grad", cfg.optim.clip_grad >= 0, "must be >= 0 (0 disables clipping)"),
        ("optim.warmup_epochs", cfg.optim.warmup_epochs >= 0, "must be >= 0"),
        ("optim.min_lr_ratio", 0 <= cfg.optim.min_lr_ratio <= 1, "must be in [0, 1]"),
        ("optim.layer_decay", 0 < cfg.optim.layer_decay <= 1, "must be in (0, 1] (1 disables layer-wise decay)"),
        ("model.registers", cfg.model.registers >= 0, "must be >= 0 (0 = no register tokens)"),
        ("data.image_size", cfg.data.image_size >= 1, "must be >= 1"),
        ("data.limit", cfg.data.limit >= 0, "must be >= 0 (0 = all images)"),
        ("data.num_workers", cfg.data.num_workers >= 0, "must be >= 0"),
        ("data.backend", cfg.data.backend in ("auto", "torch", "gpu-tensor", "dali", "dali-cpu"),
         "must be auto, torch, gpu-tensor, dali or dali-cpu"),
        ("model.patch_size", cfg.model.patch_size >= 1, "must be >= 1"),
        ("model.drop_path", 0 <= cfg.model.drop_path < 1, "must be in [0, 1)"),
        ("eval.knn_k", cfg.eval.knn_k >= 1, "must be >= 1"),
        ("data.shuffle_buffer", cfg.data.shuffle_buffer >= 1, "must be >= 1 (1 reads each stream in tar order)"),
        ("eval.knn_t", cfg.eval.knn_t > 0, "must be > 0"),
        ("eval.online_probe_lr", cfg.eval.online_probe_lr > 0, "must be > 0"),
        ("dist.zero_stage", cfg.dist.zero_stage in (1, 2, 3), "must be 1, 2 or 3 (DeepSpeed ZeRO stages)"),
        ("dist.timeout_s", cfg.dist.timeout_s >= 1, "must be >= 1"),
        ("log.wandb_mode", cfg.log.wandb_mode in ("online", "offline"), "must be online or offline"),
        ("log.wandb", not cfg.log.wandb or importlib.util.find_spec("wandb"), 'needs: pip install "fastssl[wandb]"'),
        ("log.mlflow", not cfg.log.mlflow or importlib.util.find_spec("mlflow"), 'needs: pip install "fastssl[mlflow]"'),
        ("model.init", not cfg.model.init or os.path.exists(cfg.model.init),
         "does not exist; point it at a timm state_dict, a `fastssl export` file or a fastssl checkpoint"),
        ("train.grad_accum_steps", cfg.train.grad_accum_steps >= 1, "must be >= 1"),
        ("train.grad_cache", cfg.train.grad_cache in ("auto", "on", "off"), "must be auto, on or off"),
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
    for name, section in sections(cfg).items():
        for f in dataclasses.fields(section):
            lines.append(f"{name}.{f.name} = {getattr(section, f.name)!r}")
    return "\n".join(lines)
