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
    set_values,
    validate,
)
from fastssl.config.methods import (
    BYOLConfig,
    DINOConfig,
    MAEConfig,
    MethodConfig,
    MoCoV2Config,
    MoCoV3Config,
    SimCLRConfig,
    method_config_class,
    method_configs,
)
from fastssl.config.sections import (
    AugConfig,
    DataConfig,
    DistConfig,
    EvalConfig,
    LogConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)

__all__ = [
    "AugConfig", "BYOLConfig", "Config", "DINOConfig", "DataConfig", "DistConfig", "EvalConfig", "LogConfig",
    "MAEConfig", "MethodConfig", "ModelConfig", "MoCoV2Config", "MoCoV3Config", "OptimConfig", "SimCLRConfig",
    "RUN_RECORD_KEYS", "TrainConfig", "all_keys", "apply_overrides", "diff_configs", "flat_config", "format_config", "method_config_class", "method_configs", "set_value", "set_values", "validate",
]
