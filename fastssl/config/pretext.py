"""Method configs of the pretext family, registered into METHOD_CONFIGS (see methods.py).

Each class is decorated with `@register_method_config`; every default cites its paper or repository.
"""

from __future__ import annotations

from dataclasses import dataclass  # noqa: F401

from fastssl.config.methods import MethodConfig, register_method_config  # noqa: F401
