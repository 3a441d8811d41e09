"""fastssl: high-throughput, distributed self-supervised pretraining of vision encoders.

The Python API (fastssl/api.py): `load_config`, `train`, `evaluate`, `load_backbone`, and `Config`
and `FastSSLError`. They are imported on first use, so `import fastssl` stays cheap.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = {"load_config", "train", "evaluate", "load_backbone", "RunResult"}


def __getattr__(name: str) -> Any:
    if name in _API:
        from fastssl import api

        return getattr(api, name)
    if name == "Config":
        from fastssl.config import Config

        return Config
    if name == "FastSSLError":
        from fastssl.errors import FastSSLError

        return FastSSLError
    raise AttributeError(f"module 'fastssl' has no attribute {name!r}")


__all__ = ["Config", "FastSSLError", "RunResult", "evaluate", "load_backbone", "load_config", "train", "__version__"]
