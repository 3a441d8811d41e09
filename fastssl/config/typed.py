"""Typed config values: `coerce` turns a flag's string (or a file's or Python's value) into the
field's declared type, and `Section`, the base of every config section, runs it on each attribute
assignment, so `cfg.train.batch_size = "many"` or a typo'd `cfg.train.bach_size = 8` fails in
Python as `--train.batch_size=many` fails on the command line.
"""

from __future__ import annotations

import functools
import types
import typing
from typing import Any, ClassVar

from fastssl.errors import FastSSLError, did_you_mean


def coerce(value: Any, typ: Any, key: str) -> Any:
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
        return tuple(coerce(v.strip() if isinstance(v, str) else v, a, key) for v, a in zip(items, args))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        return coerce(value, args[0], key)
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


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


class Section:
    """Base of the config dataclasses; `section` is the name the keys are written under."""

    section: ClassVar[str] = ""

    def __setattr__(self, name: str, value: Any) -> None:
        hints = {k: v for k, v in _hints(type(self)).items() if typing.get_origin(v) is not ClassVar}
        key = f"{self.section}.{name}"
        if name not in hints:
            raise FastSSLError(f"unknown config key '{key}'.{did_you_mean(name, list(hints))} "
                               f"Run `fastssl config --keys` to list them.")
        super().__setattr__(name, coerce(value, hints[name], key))
