"""Typed configuration: one dataclass per section, defaults in code.

- `sections`: data, aug, model, optim, train, eval, dist;
- `methods`: the `method` section, one class per method, chosen by `method.name`;
- `config`: `Config`, `apply_overrides` / `set_value` (type-checked, unknown keys rejected),
  `validate` (ranges, naming the key), `format_config` (printed at the start of a run).
"""

from fastssl.config.config import (
    Config,
    all_keys,
    RUN_RECORD_KEYS,
    apply_overrides,
    diff_configs,
    flat_config,
    format_config,
    set_value,
    validate,
)
from fastssl.config.methods import (
    METHOD_CONFIGS,
    BYOLConfig,
    DINOConfig,
    MAEConfig,
    MethodConfig,
    MoCoV2Config,
    MoCoV3Config,
    SimCLRConfig,
    register_method_config,
)
# Families defined in their own files register themselves on import.
from fastssl.config import clustering as _clustering  # noqa: E402,F401
from fastssl.config import ijepa as _ijepa  # noqa: E402,F401
from fastssl.config import noncontrastive as _noncontrastive  # noqa: E402,F401
from fastssl.config import pretext as _pretext  # noqa: E402,F401
from fastssl.config.sections import (
    AugConfig,
    DataConfig,
    DistConfig,
    EvalConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)

__all__ = [
    "METHOD_CONFIGS", "AugConfig", "BYOLConfig", "Config", "DINOConfig", "DataConfig", "DistConfig", "EvalConfig",
    "MAEConfig", "MethodConfig", "ModelConfig", "MoCoV2Config", "MoCoV3Config", "OptimConfig", "SimCLRConfig",
    "RUN_RECORD_KEYS", "TrainConfig", "all_keys", "apply_overrides", "diff_configs", "flat_config", "format_config", "register_method_config", "set_value", "validate",
]
